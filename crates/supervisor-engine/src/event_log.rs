//! Event logs: the append-only logs that tasks and workflow runs each keep beside their
//! record, read by sequence number and followed live.
//!
//! Both kinds of log work alike: events sit under keys ordered by sequence number, the
//! owner's record holds the number its next event will get and tells whether it has ended,
//! and every change of the owner rewrites one key that a watch can wait on. [`EventLog`]
//! names those parts for one owner; [`read`] and [`follow`] are written once over it, so
//! paging, watching and the end condition cannot drift apart between tasks and runs.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use supervisor_store::{Db, RangeOptions, Transaction, Watch};

use crate::EngineError;
use crate::codec::decode;

/// The event log of one owner (a task, a workflow run): where its events and its record
/// are, how an event is numbered and when the log has ended.
pub(crate) trait EventLog: Send + Sync + 'static {
    /// The record the log belongs to.
    type Owner: Send + 'static;
    /// One entry of the log, as stored.
    type Event: DeserializeOwned + Send + 'static;
    /// What an entry is called in the error about one that cannot be decoded.
    const EVENT: &'static str;

    /// Loads the owner, failing with the owner's "not found" error when it does not exist.
    fn load_owner<'t>(
        &'t self,
        txn: &'t mut Transaction<'_>,
    ) -> impl Future<Output = Result<Self::Owner, EngineError>> + Send + 't;

    /// The key every change of the owner rewrites; a watch on it fires when events may
    /// have been appended.
    fn owner_key(&self) -> Vec<u8>;

    /// The key range of the events with a sequence number above `after_seq`.
    fn events_after(&self, after_seq: u64) -> (Vec<u8>, Vec<u8>);

    /// An event's sequence number (from 1).
    fn seq(event: &Self::Event) -> u64;

    /// Whether the owner has ended, so that no event will follow its last one.
    fn ended(owner: &Self::Owner) -> bool;

    /// The sequence number the owner's next event would get.
    fn next_seq(owner: &Self::Owner) -> u64;
}

/// Events read per page while following a log.
pub(crate) const FOLLOW_PAGE: usize = 256;

/// How long to wait on a watch before reading again anyway (a watch may be lost with a
/// store connection).
pub(crate) const RECHECK: Duration = Duration::from_secs(30);

/// Reads up to `limit` events after `after_seq`, the owner, and a watch that fires when
/// the owner changes next, all from one snapshot. Fails with the owner's "not found"
/// error when there is no such owner, and with `Corrupt` when an event cannot be decoded.
pub(crate) async fn read<L: EventLog>(
    db: &Db,
    log: &L,
    after_seq: u64,
    limit: usize,
) -> Result<(Vec<L::Event>, L::Owner, Watch), EngineError> {
    let mut txn = db.begin().await?;
    let owner = log.load_owner(&mut txn).await?;
    let watch = txn.watch(&log.owner_key());
    let (begin, end) = log.events_after(after_seq);
    let kvs = txn
        .get_range(
            &begin,
            &end,
            RangeOptions::new().snapshot().limit(limit.max(1)),
        )
        .await?;
    let mut events = Vec::with_capacity(kvs.len());
    for kv in kvs {
        events.push(decode::<L::Event>(L::EVENT, &kv.value)?);
    }
    txn.commit().await?;
    Ok((events, owner, watch))
}

/// One read of a log, as the follower needs it.
struct Page<E> {
    /// Events after the requested sequence number, in order.
    events: Vec<E>,
    /// Whether the owner has ended (no event will follow the last one).
    ended: bool,
    /// The sequence number the owner's next event would get.
    next_seq: u64,
    /// Fires when the owner changes next.
    watch: Watch,
}

async fn read_page<L: EventLog>(
    db: &Db,
    log: &L,
    after_seq: u64,
) -> Result<Page<L::Event>, EngineError> {
    let (events, owner, watch) = read(db, log, after_seq, FOLLOW_PAGE).await?;
    Ok(Page {
        events,
        ended: L::ended(&owner),
        next_seq: L::next_seq(&owner),
        watch,
    })
}

/// A live stream of the log's events after `after_seq`: what is there, then more as the
/// owner changes, ending once the owner has ended and every event was sent. The first
/// read happens before this returns, so a missing owner fails here rather than in the
/// stream; a later failure is the stream's last item.
pub(crate) async fn follow<L: EventLog>(
    db: Db,
    log: L,
    after_seq: u64,
) -> Result<impl Stream<Item = Result<L::Event, EngineError>> + Send + 'static, EngineError> {
    struct State<L: EventLog> {
        db: Db,
        log: L,
        pending: VecDeque<L::Event>,
        next: Option<(bool, u64, Watch)>,
        after: u64,
        done: bool,
    }
    let first = read_page(&db, &log, after_seq).await?;
    let state = State {
        after: first.events.last().map(L::seq).unwrap_or(after_seq),
        pending: first.events.into(),
        next: Some((first.ended, first.next_seq, first.watch)),
        done: false,
        db,
        log,
    };
    Ok(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            let (ended, next_seq, watch) = st.next.take()?;
            let caught_up = next_seq <= st.after.saturating_add(1);
            if ended && caught_up {
                return None;
            }
            if caught_up {
                let _ = tokio::time::timeout(RECHECK, watch).await;
            }
            match read_page(&st.db, &st.log, st.after).await {
                Ok(page) => {
                    if let Some(last) = page.events.last() {
                        st.after = L::seq(last);
                    }
                    st.pending = page.events.into();
                    st.next = Some((page.ended, page.next_seq, page.watch));
                }
                Err(err) => {
                    st.done = true;
                    return Some((Err(err), st));
                }
            }
        }
    }))
}
