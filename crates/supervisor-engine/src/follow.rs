//! Following an append-only log live: send what is there after a sequence number, then
//! wait on a store watch of the log's owner for more, until the owner has ended and every
//! event was sent. Task event logs and workflow run logs both follow this way.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures::Stream;
use supervisor_store::Watch;

use crate::EngineError;

/// One read of a log.
pub(crate) struct LogPage<E> {
    /// Events after the requested sequence number, in order.
    pub events: Vec<E>,
    /// Whether the log's owner has ended (no event will follow the last one).
    pub ended: bool,
    /// The sequence number the owner's next event would get.
    pub next_seq: u64,
    /// Fires when the owner changes next.
    pub watch: Watch,
}

/// How long to wait on a watch before reading again anyway (a watch may be lost with a
/// store connection).
const RECHECK: Duration = Duration::from_secs(30);

/// A stream of the events after `after`, starting with `first` and reading more with
/// `read(after)` as the owner changes. `seq` gives an event's sequence number.
pub(crate) fn follow<E, F, Fut>(
    first: LogPage<E>,
    after: u64,
    seq: fn(&E) -> u64,
    read: F,
) -> impl Stream<Item = Result<E, EngineError>> + Send + 'static
where
    E: Send + 'static,
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<LogPage<E>, EngineError>> + Send,
{
    struct State<E, F> {
        pending: VecDeque<E>,
        next: Option<(bool, u64, Watch)>,
        after: u64,
        done: bool,
        read: F,
    }
    let after = first.events.last().map(seq).unwrap_or(after);
    let state = State {
        pending: first.events.into(),
        next: Some((first.ended, first.next_seq, first.watch)),
        after,
        done: false,
        read,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            let (ended, next_seq, watch) = st.next.take()?;
            let caught_up = next_seq <= st.after + 1;
            if ended && caught_up {
                return None;
            }
            if caught_up {
                let _ = tokio::time::timeout(RECHECK, watch).await;
            }
            match (st.read)(st.after).await {
                Ok(page) => {
                    if let Some(last) = page.events.last() {
                        st.after = seq(last);
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
    })
}
