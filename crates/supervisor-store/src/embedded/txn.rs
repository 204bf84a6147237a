//! One embedded transaction: snapshot reads merged with buffered writes, read conflict
//! tracking, and the hand-off to the writer thread at commit.
//!
//! Why this exists: it is the client half of the optimistic-concurrency design described in
//! the parent module. Nothing here locks or blocks on other transactions: reads come from a
//! redb read snapshot (fast page-cache reads, done inline), writes are buffered, and the
//! only wait is for the writer's verdict at commit, over a oneshot channel.

use std::mem;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use super::writer::{CommitRequest, Message, WriteSet};
use super::{DATA_TABLE, Shared, redb_error};
use crate::buffer::{Entry, WriteBuffer, add_le, range_read_conflict, stamp_key};
use crate::keys::key_after;
use crate::watch::{PendingWatch, fail_all};
use crate::{CommitInfo, KeyValue, RangeOptions, RawTransaction, StoreError, Watch};

type Table = ReadOnlyTable<&'static [u8], &'static [u8]>;
type SnapshotRange = redb::Range<'static, &'static [u8], &'static [u8]>;
/// One key and value, owned.
type Pair = (Vec<u8>, Vec<u8>);
/// Watches with the value their transaction saw at the watched key.
type SeenWatches = Vec<(PendingWatch, Option<Vec<u8>>)>;

/// A transaction of the embedded store.
pub(crate) struct EmbeddedTxn {
    shared: Arc<Shared>,
    /// The committed version loaded before the snapshot was opened.
    read_version: u64,
    table: Table,
    _snapshot: ReadTransaction,
    buffer: WriteBuffer,
    /// Read conflict ranges, `[begin, end)`.
    reads: Vec<(Vec<u8>, Vec<u8>)>,
    watches: Vec<PendingWatch>,
    /// Whether the commit's acknowledgement waits for the fsync (in immediate mode).
    durable: bool,
}

impl Drop for EmbeddedTxn {
    fn drop(&mut self) {
        self.shared.unregister_read(self.read_version);
    }
}

impl EmbeddedTxn {
    /// Starts a transaction at the latest committed snapshot.
    pub(crate) fn begin(shared: Arc<Shared>) -> Result<Self, StoreError> {
        // Version first, snapshot second: the snapshot is then at least as new as the
        // version, which can only cause false conflicts, never missed ones.
        let read_version = shared.register_read();
        let opened = shared
            .db
            .begin_read()
            .map_err(redb_error)
            .and_then(|snapshot| {
                let table = snapshot.open_table(DATA_TABLE).map_err(redb_error)?;
                Ok((snapshot, table))
            });
        let (snapshot, table) = match opened {
            Ok(pair) => pair,
            Err(err) => {
                shared.unregister_read(read_version);
                return Err(err);
            }
        };
        Ok(EmbeddedTxn {
            shared,
            read_version,
            table,
            _snapshot: snapshot,
            buffer: WriteBuffer::default(),
            reads: Vec::new(),
            watches: Vec::new(),
            durable: true,
        })
    }

    /// Like FoundationDB, refuse reads of a snapshot older than the conflict window: the
    /// transaction could not commit anyway.
    fn check_fresh(&self) -> Result<(), StoreError> {
        if self.read_version < self.shared.floor.load(Ordering::Acquire) {
            return Err(StoreError::TooOld);
        }
        Ok(())
    }

    fn snapshot_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .table
            .get(key)
            .map_err(redb_error)?
            .map(|guard| guard.value().to_vec()))
    }

    /// The value this transaction sees at `key`: its snapshot plus its own writes.
    fn visible(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(known) = self.buffer.known(key) {
            return Ok(known.map(<[u8]>::to_vec));
        }
        let base = self.snapshot_get(key)?;
        Ok(self.buffer.over_snapshot(key, base))
    }

    /// Reads `[begin, end)` merged with the buffer, stopping after `limit` pairs.
    fn merged_range(
        &self,
        begin: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 || begin >= end {
            return Ok(out);
        }
        let in_range = self
            .buffer
            .entries
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)));
        let mut overlay: Box<dyn Iterator<Item = (&Vec<u8>, &Entry)> + '_> = if reverse {
            Box::new(in_range.rev())
        } else {
            Box::new(in_range)
        };
        let mut next_overlay = || -> Result<Option<Pair>, StoreError> {
            for (key, entry) in overlay.by_ref() {
                match entry {
                    Entry::Value(v) => return Ok(Some((key.clone(), v.clone()))),
                    Entry::Cleared => {}
                    Entry::Add(delta) => {
                        let base = self.snapshot_get(key)?;
                        return Ok(Some((key.clone(), add_le(base.as_deref(), *delta))));
                    }
                }
            }
            Ok(None)
        };
        let mut cursor = SnapshotCursor::new(&self.table, begin, end, reverse);
        let mut snap = cursor.next(&self.buffer)?;
        let mut own = next_overlay()?;
        while out.len() < limit {
            let take_snapshot = match (&snap, &own) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                // Never equal: the cursor skips keys the buffer has an entry for.
                (Some((s, _)), Some((o, _))) => (s < o) != reverse,
            };
            let (key, value) = if take_snapshot {
                let pair = snap.take();
                snap = cursor.next(&self.buffer)?;
                pair
            } else {
                let pair = own.take();
                own = next_overlay()?;
                pair
            }
            .ok_or_else(|| StoreError::Io("range merge lost its place".into()))?;
            out.push(KeyValue { key, value });
        }
        Ok(out)
    }

    /// The value each watch's transaction saw, for activation.
    fn watched_values(&mut self) -> Result<SeenWatches, (Vec<PendingWatch>, StoreError)> {
        let watches = mem::take(&mut self.watches);
        let mut seen = Vec::with_capacity(watches.len());
        for watch in &watches {
            match self.visible(&watch.key) {
                Ok(v) => seen.push(v),
                Err(err) => return Err((watches, err)),
            }
        }
        Ok(watches.into_iter().zip(seen).collect())
    }
}

/// Activates watches: each fires at once if its key's current committed value differs from
/// what its transaction saw, and is registered otherwise — both under the registry lock.
fn activate(shared: &Shared, watches: SeenWatches) {
    if watches.is_empty() {
        return;
    }
    let mut registry = shared.watches.lock();
    let current = shared
        .db
        .begin_read()
        .map_err(redb_error)
        .and_then(|txn| txn.open_table(DATA_TABLE).map_err(redb_error));
    match current {
        Ok(table) => {
            for (watch, seen) in watches {
                match table.get(watch.key.as_slice()) {
                    Ok(now) => {
                        let changed = now.as_ref().map(|g| g.value()) != seen.as_deref();
                        registry.activate(watch, changed);
                    }
                    Err(err) => watch.fail(redb_error(err)),
                }
            }
        }
        Err(err) => {
            for (watch, _) in watches {
                watch.fail(err.clone());
            }
        }
    }
}

/// Iterates the snapshot over a range, skipping keys the transaction's buffer overrides and
/// jumping over ranges it cleared.
struct SnapshotCursor<'t> {
    table: &'t Table,
    lo: Vec<u8>,
    hi: Vec<u8>,
    reverse: bool,
    iter: Option<SnapshotRange>,
    done: bool,
}

impl<'t> SnapshotCursor<'t> {
    fn new(table: &'t Table, begin: &[u8], end: &[u8], reverse: bool) -> Self {
        SnapshotCursor {
            table,
            lo: begin.to_vec(),
            hi: end.to_vec(),
            reverse,
            iter: None,
            done: begin >= end,
        }
    }

    fn next(&mut self, buffer: &WriteBuffer) -> Result<Option<Pair>, StoreError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let iter = match &mut self.iter {
                Some(iter) => iter,
                None => self.iter.insert(
                    self.table
                        .range::<&[u8]>(self.lo.as_slice()..self.hi.as_slice())
                        .map_err(redb_error)?,
                ),
            };
            let item = if self.reverse {
                iter.next_back()
            } else {
                iter.next()
            };
            let (key, value) = match item {
                None => {
                    self.done = true;
                    return Ok(None);
                }
                Some(Err(err)) => return Err(redb_error(err)),
                Some(Ok(pair)) => pair,
            };
            let key = key.value();
            if let Some((cleared_begin, cleared_end)) = buffer.cleared.containing(key) {
                // Jump over the whole cleared range instead of walking through it.
                if self.reverse {
                    self.hi = cleared_begin.to_vec();
                } else {
                    self.lo = cleared_end.to_vec();
                }
                self.done = self.lo >= self.hi;
                self.iter = None;
                continue;
            }
            if buffer.entries.contains_key(key) {
                continue;
            }
            return Ok(Some((key.to_vec(), value.value().to_vec())));
        }
    }
}

#[async_trait::async_trait]
impl RawTransaction for EmbeddedTxn {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_fresh()?;
        let value = self.visible(key)?;
        if !snapshot {
            self.reads.push((key.to_vec(), key_after(key)));
        }
        Ok(value)
    }

    async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.check_fresh()?;
        let limit = opts.limit.unwrap_or(usize::MAX);
        let out = self.merged_range(begin, end, limit, opts.reverse)?;
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

    fn relax_durability(&mut self) {
        self.durable = false;
    }

    async fn commit(mut self: Box<Self>) -> Result<CommitInfo, StoreError> {
        let watches = match self.watched_values() {
            Ok(watches) => watches,
            Err((watches, err)) => {
                fail_all(watches, &err);
                return Err(err);
            }
        };
        if self.buffer.is_empty() {
            // Read-only: nothing to resolve or write; watches start now.
            activate(&self.shared, watches);
            return Ok(CommitInfo { version: None });
        }
        if self
            .buffer
            .versionstamped
            .iter()
            .any(|(key, _)| stamp_key(key, &[0; 10]).is_none())
        {
            let err = StoreError::InvalidVersionstamp(
                "placeholder offset does not fit in the key".into(),
            );
            fail_all(watches.into_iter().map(|(w, _)| w), &err);
            return Err(err);
        }
        let buffer = mem::take(&mut self.buffer);
        let (reply, verdict) = oneshot::channel();
        let request = CommitRequest {
            read_version: self.read_version,
            reads: mem::take(&mut self.reads),
            writes: WriteSet {
                cleared: buffer.cleared,
                entries: buffer.entries,
                versionstamped: buffer.versionstamped,
            },
            durable: self.durable,
            reply,
        };
        if !self.shared.send(Message::Commit(request)) {
            let err = StoreError::Closed;
            fail_all(watches.into_iter().map(|(w, _)| w), &err);
            return Err(err);
        }
        self.shared.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let outcome = match verdict.await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::CommitUnknown(
                "the store's writer stopped before answering".into(),
            )),
        };
        match outcome {
            Ok(version) => {
                activate(&self.shared, watches);
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
