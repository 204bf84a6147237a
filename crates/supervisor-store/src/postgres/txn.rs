//! One PostgreSQL transaction: reads in a `REPEATABLE READ` snapshot merged with the
//! buffered writes, and the commit — conflict check and apply — in one short SQL
//! transaction under the commit lock (see the parent module for the design).
//!
//! Why it looks like this: round trips are the cost. The first read starts the snapshot and
//! reads in one round trip; a commit takes two (lock and check, then apply and commit),
//! with every statement of a round trip pipelined on the connection. Pipelining needs the
//! statements prepared before the requests are queued — a request is queued when its future
//! is first polled, in the order they are polled — so each round trip prepares its
//! statements first (a cache hit after the connection's first use) and then polls all the
//! requests together.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::ops::Bound;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, join_all};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::group::{CommitJob, Committed};
use super::session::Session;
use super::{Phase, Shared, pg_error, sql};
use crate::buffer::{Entry, WriteBuffer, add_le, range_read_conflict, stamp_key};
use crate::keys::key_after;
use crate::watch::{PendingWatch, fail_all};
use crate::{CommitInfo, KeyValue, Priority, RangeOptions, RawTransaction, StoreError, Watch};

/// One key and value, owned.
type Pair = (Vec<u8>, Vec<u8>);
/// A statement parameter.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);
/// One pipelined request.
pub(super) type Request<'a> = BoxFuture<'a, Result<Vec<Row>, tokio_postgres::Error>>;

/// Most rows one page of a limited range read asks for.
const MAX_PAGE: usize = 10_000;

/// What a watch's transaction saw at its key.
enum Seen {
    /// The transaction took no snapshot and did not write the key: its view is whatever
    /// the store holds when the watch activates.
    Current,
    /// The value it saw (absent: `None`).
    Value(Option<Vec<u8>>),
}

/// The read snapshot: a pooled connection with an open `REPEATABLE READ` transaction,
/// started by the first read that needs the server.
struct Snapshot {
    shared: Arc<Shared>,
    /// Which pool its connection comes from.
    priority: Priority,
    session: Option<Session>,
    /// The commit version the snapshot is at, once started.
    read_version: Option<u64>,
}

impl Snapshot {
    fn error(&self, err: &tokio_postgres::Error) -> StoreError {
        pg_error(err, &self.shared.target, Phase::Read)
    }

    /// Runs a query in the snapshot, starting it first if needed (in the same round trip).
    async fn query(&mut self, query: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        if self.session.is_none() {
            self.session = Some(Session::new(self.shared.connection(self.priority).await?));
        }
        let target = self.shared.target.clone();
        let error = |err: &tokio_postgres::Error| pg_error(err, &target, Phase::Read);
        let Some(session) = self.session.as_mut() else {
            return Err(StoreError::Io("the snapshot lost its connection".into()));
        };
        let client = session.client();
        let statement = client.prepare_cached(query).await.map_err(|e| error(&e))?;
        if self.read_version.is_some() {
            return client
                .query(&statement, params)
                .await
                .map_err(|e| error(&e));
        }
        let version_statement = client
            .prepare_cached(sql::READ_VERSION)
            .await
            .map_err(|e| error(&e))?;
        session.set_in_txn(true);
        let client = session.client();
        let (begun, version, rows) = futures::join!(
            client.batch_execute(sql::BEGIN_SNAPSHOT),
            client.query_one(&version_statement, &[]),
            client.query(&statement, params),
        );
        let started = begun
            .and(version)
            .and_then(|row| row.try_get::<_, i64>(0))
            .map_err(|e| error(&e))
            .and_then(to_version);
        match started {
            Ok(version) => self.read_version = Some(version),
            Err(err) => {
                // Half started: never reuse it (dropping the session rolls it back).
                self.session = None;
                return Err(err);
            }
        }
        rows.map_err(|e| error(&e))
    }

    /// The snapshot's value at `key`.
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self.query(sql::GET, &[&key]).await?;
        match rows.first() {
            Some(row) => Ok(Some(row.try_get(0).map_err(|e| self.error(&e))?)),
            None => Ok(None),
        }
    }

    /// The snapshot's values at `keys` (absent keys are missing from the map).
    async fn get_many(&mut self, keys: &[&[u8]]) -> Result<HashMap<Vec<u8>, Vec<u8>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.query(sql::GET_MANY, &[&keys]).await?;
        pairs(&rows).map_err(|e| self.error(&e))
    }

    /// Up to `limit` pairs of `[begin, end)` in order (reverse order if `reverse`).
    async fn range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let query = if reverse {
            sql::RANGE_REVERSE
        } else {
            sql::RANGE_FORWARD
        };
        let rows = self.query(query, &[&begin, &end, &limit]).await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.error(&e))
    }
}

/// Rows of `(key, value)` as a map.
pub(super) fn pairs(rows: &[Row]) -> Result<HashMap<Vec<u8>, Vec<u8>>, tokio_postgres::Error> {
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

pub(super) fn to_version(version: i64) -> Result<u64, StoreError> {
    u64::try_from(version).map_err(|_| {
        StoreError::Corrupt(format!(
            "the commit version in supervisor_meta is negative ({version})"
        ))
    })
}

/// A transaction of the PostgreSQL store.
pub(crate) struct PgTxn {
    snapshot: Snapshot,
    buffer: WriteBuffer,
    /// Read conflict ranges, `[begin, end)`.
    reads: Vec<(Vec<u8>, Vec<u8>)>,
    watches: Vec<PendingWatch>,
    /// Whether the commit's acknowledgement waits for the WAL flush.
    durable: bool,
}

impl PgTxn {
    /// A transaction; it takes its snapshot at its first read.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        PgTxn {
            snapshot: Snapshot {
                shared,
                priority: Priority::Default,
                session: None,
                read_version: None,
            },
            buffer: WriteBuffer::default(),
            reads: Vec::new(),
            watches: Vec::new(),
            durable: true,
        }
    }

    /// The value this transaction sees at `key`: its snapshot plus its own writes.
    async fn visible(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(known) = self.buffer.known(key) {
            return Ok(known.map(<[u8]>::to_vec));
        }
        let base = self.snapshot.get(key).await?;
        Ok(self.buffer.over_snapshot(key, base))
    }

    /// Reads `[begin, end)` merged with the buffer, stopping after `limit` pairs.
    async fn merged_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 || begin >= end {
            return Ok(out);
        }
        let PgTxn {
            snapshot, buffer, ..
        } = self;
        let in_range = || {
            buffer
                .entries
                .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
        };
        // The transaction's own pairs in the range, in read order; pending adds need the
        // snapshot's values first.
        let add_keys: Vec<&[u8]> = in_range()
            .filter(|(_, entry)| matches!(entry, Entry::Add(_)))
            .map(|(key, _)| key.as_slice())
            .collect();
        let bases = snapshot.get_many(&add_keys).await?;
        let mut own: Vec<Pair> = in_range()
            .filter_map(|(key, entry)| match entry {
                Entry::Value(v) => Some((key.clone(), v.clone())),
                Entry::Cleared => None,
                Entry::Add(delta) => Some((
                    key.clone(),
                    add_le(bases.get(key).map(Vec::as_slice), *delta),
                )),
            })
            .collect();
        if reverse {
            own.reverse();
        }
        let mut own = own.into_iter().peekable();
        let page_size = if limit == usize::MAX {
            None
        } else {
            Some(in_range().count().saturating_add(limit).clamp(16, MAX_PAGE))
        };
        let mut cursor = SnapshotCursor::new(begin, end, reverse, page_size);
        let mut snap = cursor.next(snapshot, buffer).await?;
        while out.len() < limit {
            let take_snapshot = match (&snap, own.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                // Never equal: the cursor skips keys the buffer has an entry for.
                (Some((s, _)), Some((o, _))) => (s < o) != reverse,
            };
            let pair = if take_snapshot {
                let pair = snap.take();
                snap = cursor.next(snapshot, buffer).await?;
                pair
            } else {
                own.next()
            };
            let (key, value) =
                pair.ok_or_else(|| StoreError::Io("range merge lost its place".into()))?;
            out.push(KeyValue { key, value });
        }
        Ok(out)
    }

    /// What each watch's transaction saw at its key.
    async fn seen_values(&mut self) -> Result<Vec<Seen>, StoreError> {
        if self.watches.is_empty() {
            return Ok(Vec::new());
        }
        let unknown: Vec<&[u8]> = self
            .watches
            .iter()
            .map(|w| w.key.as_slice())
            .filter(|key| self.buffer.known(key).is_none())
            .collect();
        let snapshot_values = if self.snapshot.read_version.is_some() && !unknown.is_empty() {
            Some(self.snapshot.get_many(&unknown).await?)
        } else {
            None
        };
        Ok(self
            .watches
            .iter()
            .map(|w| {
                if let Some(known) = self.buffer.known(&w.key) {
                    return Seen::Value(known.map(<[u8]>::to_vec));
                }
                match &snapshot_values {
                    None => Seen::Current,
                    Some(values) => Seen::Value(
                        self.buffer
                            .over_snapshot(&w.key, values.get(&w.key).cloned()),
                    ),
                }
            })
            .collect())
    }

    /// Ends a read-only transaction: closes the snapshot and activates its watches against
    /// the current values.
    async fn finish_read_only(
        mut self,
        watches: Vec<(PendingWatch, Seen)>,
    ) -> Result<CommitInfo, StoreError> {
        let shared = self.snapshot.shared.clone();
        let error = |err: &tokio_postgres::Error| pg_error(err, &shared.target, Phase::Read);
        let session = self.snapshot.session.take();
        if watches.is_empty() {
            if let Some(session) = session {
                rollback(session).await;
            }
            return Ok(CommitInfo { version: None });
        }
        let outcome = async {
            let mut session = match session {
                Some(session) => session,
                None => Session::new(shared.connection(self.snapshot.priority).await?),
            };
            let keys: Vec<&[u8]> = watches.iter().map(|(w, _)| w.key.as_slice()).collect();
            let statement = session
                .client()
                .prepare_cached(sql::CURRENT_VALUES_AND_VERSION)
                .await
                .map_err(|e| error(&e))?;
            let params: [Param<'_>; 1] = [&keys];
            let ends_snapshot = session.in_txn();
            let client = session.client();
            let mut requests: Vec<Request<'_>> = Vec::new();
            if ends_snapshot {
                requests.push(batch(client, sql::ROLLBACK));
            }
            requests.push(query(client, &statement, &params));
            let mut results = join_all(requests).await;
            let rows = results.pop().unwrap_or_else(|| Ok(Vec::new()));
            if results.pop().is_none_or(|ended| ended.is_ok()) {
                session.set_in_txn(false);
            }
            let rows = rows.map_err(|e| error(&e))?;
            let mut base = 0u64;
            let mut current = Vec::with_capacity(rows.len());
            for row in &rows {
                base = to_version(row.try_get(0).map_err(|e| error(&e))?)?;
                current.push(
                    row.try_get::<_, Option<Vec<u8>>>(1)
                        .map_err(|e| error(&e))?,
                );
            }
            Ok::<_, StoreError>((base, current))
        }
        .await;
        match outcome {
            Ok((base, current)) => {
                // Only the watches whose transaction saw a value compare it.
                let current = watches
                    .iter()
                    .zip(current)
                    .filter(|((_, seen), _)| matches!(seen, Seen::Value(_)))
                    .map(|(_, value)| value)
                    .collect();
                activate(&shared, watches, current, base);
                Ok(CommitInfo { version: None })
            }
            Err(err) => {
                fail_all(watches.into_iter().map(|(w, _)| w), &err);
                Err(err)
            }
        }
    }

    /// Commits the buffered writes through the process's committer (see `group`);
    /// returns the commit version and, for each watch whose transaction saw a value, the
    /// key's value right after the commit.
    async fn commit_writes(&mut self, watched: Vec<Vec<u8>>) -> Result<Committed, StoreError> {
        // The snapshot only read: its connection goes back to the pool, rolled back on
        // the side, while the commit waits for its batch.
        drop(self.snapshot.session.take());
        let reads = mem::take(&mut self.reads);
        let check = match self.snapshot.read_version {
            // Reads served from the buffer alone took no snapshot: nothing to check.
            Some(version) if !reads.is_empty() => Some(version),
            _ => None,
        };
        let job = CommitJob {
            check,
            reads,
            buffer: mem::take(&mut self.buffer),
            watched,
            durable: self.durable,
        };
        self.snapshot.shared.committer.commit(job).await
    }
}

/// A simple-protocol statement as a pipelined request.
pub(super) fn batch<'a>(client: &'a tokio_postgres::Client, statement: &'a str) -> Request<'a> {
    async move { client.batch_execute(statement).await.map(|()| Vec::new()) }.boxed()
}

/// A prepared statement as a pipelined request.
pub(super) fn query<'a>(
    client: &'a tokio_postgres::Client,
    statement: &'a tokio_postgres::Statement,
    params: &'a [Param<'a>],
) -> Request<'a> {
    client.query(statement, params).boxed()
}

/// The first error of a pipeline (later statements only report that the transaction was
/// aborted by it), or every result.
pub(super) fn first_error(
    results: Vec<Result<Vec<Row>, tokio_postgres::Error>>,
) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
    results.into_iter().collect()
}

/// Rolls back the commit transaction and returns the connection (or closes it if the
/// rollback fails).
pub(super) async fn rollback(mut session: Session) {
    if session.client().batch_execute(sql::ROLLBACK).await.is_ok() {
        session.set_in_txn(false);
    }
}

/// Activates watches: each fires at once if the key's current value (`current`, in the
/// same order, at commit version `base`) differs from what its transaction saw.
fn activate(
    shared: &Shared,
    watches: Vec<(PendingWatch, Seen)>,
    current: Vec<Option<Vec<u8>>>,
    base: u64,
) {
    let mut current = current.into_iter();
    for (watch, seen) in watches {
        let changed = match seen {
            Seen::Current => false,
            Seen::Value(seen) => current.next().is_some_and(|now| now != seen),
        };
        shared.watches.activate(watch, changed, base);
    }
}

/// Iterates the snapshot over a range a page at a time, skipping keys the transaction's
/// buffer overrides and jumping over ranges it cleared.
struct SnapshotCursor {
    /// The part of the range not fetched yet.
    lo: Vec<u8>,
    hi: Vec<u8>,
    reverse: bool,
    /// Rows per fetch (`None`: the whole rest of the range at once).
    page_size: Option<usize>,
    page: VecDeque<Pair>,
    /// The unfetched part is known to be empty.
    exhausted: bool,
}

impl SnapshotCursor {
    fn new(begin: &[u8], end: &[u8], reverse: bool, page_size: Option<usize>) -> Self {
        SnapshotCursor {
            lo: begin.to_vec(),
            hi: end.to_vec(),
            reverse,
            page_size,
            page: VecDeque::new(),
            exhausted: begin >= end,
        }
    }

    async fn next(
        &mut self,
        snapshot: &mut Snapshot,
        buffer: &WriteBuffer,
    ) -> Result<Option<Pair>, StoreError> {
        loop {
            let Some((key, value)) = self.page.pop_front() else {
                if self.exhausted {
                    return Ok(None);
                }
                self.fetch(snapshot).await?;
                continue;
            };
            if let Some((cleared_begin, cleared_end)) = buffer.cleared.containing(&key) {
                // Skip the whole cleared range: what is left of it in this page, and the
                // unfetched part of it.
                if self.reverse {
                    while self
                        .page
                        .front()
                        .is_some_and(|(k, _)| k.as_slice() >= cleared_begin)
                    {
                        self.page.pop_front();
                    }
                    if self.page.is_empty() && cleared_begin < self.hi.as_slice() {
                        self.hi = cleared_begin.to_vec();
                    }
                } else {
                    while self
                        .page
                        .front()
                        .is_some_and(|(k, _)| k.as_slice() < cleared_end)
                    {
                        self.page.pop_front();
                    }
                    if self.page.is_empty() && cleared_end > self.lo.as_slice() {
                        self.lo = cleared_end.to_vec();
                    }
                }
                self.exhausted |= self.lo >= self.hi;
                continue;
            }
            if buffer.entries.contains_key(&key) {
                continue;
            }
            return Ok(Some((key, value)));
        }
    }

    async fn fetch(&mut self, snapshot: &mut Snapshot) -> Result<(), StoreError> {
        let rows = snapshot
            .range(&self.lo, &self.hi, self.page_size, self.reverse)
            .await?;
        let full = self.page_size.is_some_and(|size| rows.len() >= size);
        match rows.last() {
            Some((last, _)) if full => {
                if self.reverse {
                    self.hi = last.clone();
                } else {
                    self.lo = key_after(last);
                }
                self.exhausted = self.lo >= self.hi;
            }
            _ => self.exhausted = true,
        }
        self.page.extend(rows);
        Ok(())
    }
}

#[async_trait::async_trait]
impl RawTransaction for PgTxn {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.visible(key).await?;
        if !snapshot {
            self.reads.push((key.to_vec(), key_after(key)));
        }
        Ok(value)
    }

    async fn get_many(
        &mut self,
        keys: &[&[u8]],
        snapshot: bool,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // What the buffer decides needs no read; the rest is one query.
        let known: Vec<Option<Option<Vec<u8>>>> = keys
            .iter()
            .map(|k| self.buffer.known(k).map(|v| v.map(<[u8]>::to_vec)))
            .collect();
        let unknown: Vec<&[u8]> = keys
            .iter()
            .zip(&known)
            .filter(|(_, known)| known.is_none())
            .map(|(k, _)| *k)
            .collect();
        let fetched = self.snapshot.get_many(&unknown).await?;
        let out = keys
            .iter()
            .zip(known)
            .map(|(key, known)| match known {
                Some(value) => value,
                None => self.buffer.over_snapshot(key, fetched.get(*key).cloned()),
            })
            .collect();
        if !snapshot {
            for key in keys {
                self.reads.push((key.to_vec(), key_after(key)));
            }
        }
        Ok(out)
    }

    async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let limit = opts.limit.unwrap_or(usize::MAX);
        let out = self.merged_range(begin, end, limit, opts.reverse).await?;
        if !opts.snapshot && limit > 0 && begin < end {
            self.reads
                .push(range_read_conflict(begin, end, &out, limit, opts.reverse));
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.buffer.set(key, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.buffer.clear(key);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.buffer.clear_range(begin, end);
    }

    fn atomic_add(&mut self, key: &[u8], delta: i64) {
        self.buffer.atomic_add(key, delta);
    }

    fn set_versionstamped_key(&mut self, key_with_offset: &[u8], value: &[u8]) {
        self.buffer.set_versionstamped(key_with_offset, value);
    }

    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin < end {
            self.reads.push((begin.to_vec(), end.to_vec()));
        }
    }

    fn watch(&mut self, key: &[u8]) -> Watch {
        let (pending, watch) = PendingWatch::new(key);
        self.watches.push(pending);
        watch
    }

    fn set_priority(&mut self, priority: Priority) {
        self.snapshot.priority = priority;
    }

    fn relax_durability(&mut self) {
        self.durable = false;
    }

    async fn commit(mut self: Box<Self>) -> Result<CommitInfo, StoreError> {
        let seen = match self.seen_values().await {
            Ok(seen) => seen,
            Err(err) => {
                fail_all(mem::take(&mut self.watches), &err);
                return Err(err);
            }
        };
        let watches: Vec<(PendingWatch, Seen)> =
            mem::take(&mut self.watches).into_iter().zip(seen).collect();
        if self.buffer.is_empty() {
            return self.finish_read_only(watches).await;
        }
        if self
            .buffer
            .versionstamped
            .iter()
            .any(|(key, _)| stamp_key(key, &[0; crate::VERSIONSTAMP_BYTES]).is_none())
        {
            let err = StoreError::InvalidVersionstamp(
                "placeholder offset does not fit in the key".into(),
            );
            fail_all(watches.into_iter().map(|(w, _)| w), &err);
            return Err(err);
        }
        let watched: Vec<Vec<u8>> = watches
            .iter()
            .filter(|(_, seen)| matches!(seen, Seen::Value(_)))
            .map(|(w, _)| w.key.clone())
            .collect();
        match self.commit_writes(watched).await {
            Ok((version, current)) => {
                activate(&self.snapshot.shared, watches, current, version);
                Ok(CommitInfo {
                    version: Some(version),
                })
            }
            Err(err) => {
                fail_all(watches.into_iter().map(|(w, _)| w), &err);
                Err(err)
            }
        }
    }
}
