//! The single writer thread: conflict resolution and group commit.
//!
//! Why this exists: redb allows one write transaction at a time and each durable commit
//! costs an fsync. Funnelling every commit through one OS thread lets it (1) act as
//! FoundationDB's resolver — deciding conflicts against an in-memory history of recent
//! writes, in commit order, without locks on the read path — and (2) apply a whole batch of
//! independent transactions in one redb write transaction with one fsync (group commit).
//!
//! Conflict rule: a request read at version `rv`; it conflicts when any write committed at
//! a version greater than `rv` (including earlier requests of the same batch, which commit
//! at the batch's new version) intersects one of its read ranges. History is kept for
//! [`CONFLICT_WINDOW`] (FoundationDB's transaction time limit); older snapshots get
//! [`StoreError::TooOld`]. Over-approximating the history (for example, keeping entries of a
//! batch whose commit failed) can only cause false conflicts, never missed ones.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use redb::{ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::{DATA_TABLE, Durability, META_TABLE, META_VERSION_KEY, Shared, redb_error};
use crate::StoreError;
use crate::buffer::{Entry, RangeSet, add_le, stamped_keys};

/// How long conflict history is kept (FoundationDB's 5-second transaction limit).
pub(crate) const CONFLICT_WINDOW: Duration = Duration::from_secs(5);
/// Cap on the number of point writes kept in the history; beyond it the oldest batches are
/// dropped early (their readers then get [`StoreError::TooOld`]).
const MAX_HISTORY_KEYS: usize = 2_000_000;
/// In [`Durability::Relaxed`] mode, the longest time commits stay without an fsync.
pub(crate) const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A message to the writer thread.
pub(crate) enum Message {
    /// Commit one transaction.
    Commit(CommitRequest),
    /// Finish what is queued and exit.
    Shutdown,
    /// Take the file's space figures between two batches.
    Space(std::sync::mpsc::Sender<Result<super::StoreSpace, StoreError>>),
}

/// The writes of one transaction, in their net form (see [`crate::buffer::WriteBuffer`]).
pub(crate) struct WriteSet {
    /// Ranges to clear first.
    pub(crate) cleared: RangeSet,
    /// Then per-key writes.
    pub(crate) entries: BTreeMap<Vec<u8>, Entry>,
    /// Then versionstamped keys (with their offset suffix) and values.
    pub(crate) versionstamped: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One transaction asking to commit.
pub(crate) struct CommitRequest {
    /// The committed version its snapshot was taken at (or after).
    pub(crate) read_version: u64,
    /// Its read conflict ranges, `[begin, end)`.
    pub(crate) reads: Vec<(Vec<u8>, Vec<u8>)>,
    /// What it writes.
    pub(crate) writes: WriteSet,
    /// Whether its acknowledgement must wait for the fsync (in immediate mode).
    pub(crate) durable: bool,
    /// Where the outcome goes: the commit version, or why it failed.
    pub(crate) reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// Recent writes by version, for conflict checks.
#[derive(Debug)]
pub(crate) struct ConflictHistory {
    /// Key -> version of its last write within the window.
    keys: BTreeMap<Vec<u8>, u64>,
    /// Cleared ranges with their versions, oldest first.
    clears: VecDeque<(Vec<u8>, Vec<u8>, u64)>,
    /// Per committed version: when, and which keys it wrote (for pruning `keys`).
    versions: VecDeque<(u64, Instant, Vec<Vec<u8>>)>,
    /// Number of keys listed in `versions`.
    listed: usize,
    /// History is complete for every version greater than this.
    floor: u64,
}

impl ConflictHistory {
    /// An empty history: complete for versions after `floor`.
    pub(crate) fn new(floor: u64) -> Self {
        ConflictHistory {
            keys: BTreeMap::new(),
            clears: VecDeque::new(),
            versions: VecDeque::new(),
            listed: 0,
            floor,
        }
    }

    /// Point writes held.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Versions at or below this are no longer covered.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Whether a write after `read_version` intersects one of `reads`.
    pub(crate) fn conflicts(&self, read_version: u64, reads: &[(Vec<u8>, Vec<u8>)]) -> bool {
        let newer_clears = || {
            self.clears
                .iter()
                .rev()
                .take_while(move |(_, _, v)| *v > read_version)
        };
        reads.iter().any(|(begin, end)| {
            let point = self
                .keys
                .range::<[u8], _>((
                    Bound::Included(begin.as_slice()),
                    Bound::Excluded(end.as_slice()),
                ))
                .any(|(_, v)| *v > read_version);
            point
                || newer_clears().any(|(cb, ce, _)| {
                    cb.as_slice() < end.as_slice() && begin.as_slice() < ce.as_slice()
                })
        })
    }

    /// Starts recording the writes of `version`, committed at `now`.
    pub(crate) fn begin_version(&mut self, version: u64, now: Instant) {
        self.versions.push_back((version, now, Vec::new()));
    }

    /// Records a point write at the version begun last.
    pub(crate) fn record_key(&mut self, key: &[u8], version: u64) {
        self.keys.insert(key.to_vec(), version);
        if let Some((_, _, list)) = self.versions.back_mut() {
            list.push(key.to_vec());
            self.listed += 1;
        }
    }

    /// Records a cleared range at `version`.
    pub(crate) fn record_clear(&mut self, begin: &[u8], end: &[u8], version: u64) {
        self.clears
            .push_back((begin.to_vec(), end.to_vec(), version));
    }

    /// Forgets versions no live transaction needs (at or below `oldest_live_read`),
    /// versions committed before `now - window`, and the oldest ones beyond the size cap,
    /// raising the floor. Readers older than the floor get [`StoreError::TooOld`].
    pub(crate) fn prune(&mut self, now: Instant, window: Duration, oldest_live_read: u64) {
        while let Some((version, at, _)) = self.versions.front() {
            let expired = now.saturating_duration_since(*at) > window;
            let unneeded = *version <= oldest_live_read;
            if !unneeded && !expired && self.listed <= MAX_HISTORY_KEYS {
                break;
            }
            let version = *version;
            let Some((_, _, list)) = self.versions.pop_front() else {
                break;
            };
            self.listed -= list.len();
            for key in list {
                if self.keys.get(&key) == Some(&version) {
                    self.keys.remove(&key);
                }
            }
            self.floor = self.floor.max(version);
        }
        while self
            .clears
            .front()
            .is_some_and(|(_, _, v)| *v <= self.floor)
        {
            self.clears.pop_front();
        }
    }
}

/// State of the writer thread.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    receiver: Receiver<Message>,
    durability: Durability,
    max_batch: usize,
    /// The last version handed to a batch.
    version: u64,
    history: ConflictHistory,
    /// Relaxed mode: commits made since the last fsync.
    dirty: bool,
    last_durable: Instant,
}

impl Writer {
    /// A writer continuing after `version`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        receiver: Receiver<Message>,
        durability: Durability,
        max_batch: usize,
        version: u64,
    ) -> Self {
        Writer {
            shared,
            receiver,
            durability,
            max_batch: max_batch.clamp(1, usize::from(u16::MAX)),
            version,
            history: ConflictHistory::new(version),
            dirty: false,
            last_durable: Instant::now(),
        }
    }

    /// Runs until told to shut down (or until every sender is gone).
    pub(crate) fn run(mut self) {
        let mut shutdown = false;
        while !shutdown {
            let first = if self.dirty {
                let wait = RELAXED_FLUSH_INTERVAL.saturating_sub(self.last_durable.elapsed());
                match self.receiver.recv_timeout(wait) {
                    Ok(message) => message,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.receiver.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                }
            };
            let mut batch = Vec::new();
            match first {
                Message::Commit(request) => batch.push(request),
                Message::Shutdown => break,
                Message::Space(reply) => {
                    let _ = reply.send(self.space());
                    continue;
                }
            }
            self.shared.pause.wait_while_paused();
            while batch.len() < self.max_batch {
                match self.receiver.try_recv() {
                    Ok(Message::Commit(request)) => batch.push(request),
                    Ok(Message::Shutdown) => {
                        shutdown = true;
                        break;
                    }
                    Ok(Message::Space(reply)) => {
                        let _ = reply.send(self.space());
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.shared
                .stats
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.process(batch);
        }
        if self.dirty {
            self.flush();
        }
        // Whatever is still queued was never applied.
        while let Ok(message) = self.receiver.try_recv() {
            if let Message::Commit(request) = message {
                let _ = request.reply.send(Err(StoreError::Closed));
            }
        }
        self.shared.watches.close();
        tracing::debug!(version = self.version, "embedded store writer stopped");
    }

    /// The file's space figures (no batch is open: the walk sees the latest commit).
    fn space(&self) -> Result<super::StoreSpace, StoreError> {
        super::maintenance::space_of(&self.shared.db, &self.shared.path)
    }

    /// Makes every earlier commit durable (Relaxed mode).
    fn flush(&mut self) {
        let result = (|| -> Result<(), StoreError> {
            let mut txn = self.shared.db.begin_write().map_err(redb_error)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| StoreError::Io(format!("cannot set commit durability: {e}")))?;
            {
                let mut meta = txn.open_table(META_TABLE).map_err(redb_error)?;
                meta.insert(META_VERSION_KEY, self.version)
                    .map_err(redb_error)?;
            }
            txn.commit().map_err(redb_error)
        })();
        match result {
            Ok(()) => {
                self.dirty = false;
                self.last_durable = Instant::now();
                self.shared.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .stats
                    .durable_commits
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                // Retried at the next interval; the data stays visible in memory.
                self.last_durable = Instant::now();
                tracing::error!(error = %err, "embedded store could not fsync relaxed commits");
            }
        }
    }

    /// Resolves and applies one batch.
    fn process(&mut self, batch: Vec<CommitRequest>) {
        if supervisor_telemetry::metrics_on() {
            supervisor_telemetry::metrics().store_batch_size.record(
                batch.len() as u64,
                &crate::transaction::opentelemetry_backend("embedded"),
            );
        }
        let now = Instant::now();
        self.history
            .prune(now, CONFLICT_WINDOW, self.shared.oldest_live_read());
        self.shared
            .floor
            .store(self.history.floor(), Ordering::Release);

        let version = self.version + 1;
        // A batch of relaxed transactions only (see `Transaction::relax_durability`) is
        // made durable like relaxed mode's: by the next durable batch or within the
        // flush interval.
        let durable = match self.durability {
            Durability::Immediate if batch.iter().any(|r| r.durable) => true,
            Durability::Immediate | Durability::Relaxed => {
                self.last_durable.elapsed() >= RELAXED_FLUSH_INTERVAL
            }
        };
        let mut txn = match self.shared.db.begin_write() {
            Ok(txn) => txn,
            Err(err) => {
                let err = redb_error(err);
                for request in batch {
                    let _ = request.reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let level = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        if let Err(err) = txn.set_durability(level) {
            let err = StoreError::Io(format!("cannot set commit durability: {err}"));
            for request in batch {
                let _ = request.reply.send(Err(err.clone()));
            }
            return;
        }

        let mut applied: Vec<oneshot::Sender<Result<u64, StoreError>>> = Vec::new();
        let mut written: Vec<Vec<u8>> = Vec::new();
        let mut cleared: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut failure: Option<StoreError> = None;
        let mut remaining = batch.into_iter();
        match txn.open_table(DATA_TABLE) {
            Err(err) => failure = Some(redb_error(err)),
            Ok(mut table) => {
                for request in remaining.by_ref() {
                    if request.read_version < self.history.floor() {
                        self.shared.stats.too_old.fetch_add(1, Ordering::Relaxed);
                        let _ = request.reply.send(Err(StoreError::TooOld));
                        continue;
                    }
                    if self.history.conflicts(request.read_version, &request.reads) {
                        self.shared.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                        let _ = request.reply.send(Err(StoreError::Conflict));
                        continue;
                    }
                    // The writer clamps batches to u16::MAX requests, so this always fits.
                    let index = u16::try_from(applied.len()).unwrap_or(u16::MAX);
                    let stamped = stamped_keys(&request.writes.versionstamped, version, index);
                    let Some(stamped) = stamped else {
                        let _ = request.reply.send(Err(StoreError::InvalidVersionstamp(
                            "placeholder offset does not fit in the key".into(),
                        )));
                        continue;
                    };
                    if applied.is_empty() {
                        self.history.begin_version(version, now);
                    }
                    if let Err(err) = apply(&mut table, &request.writes, &stamped) {
                        failure = Some(err);
                        applied.push(request.reply);
                        break;
                    }
                    for (begin, end) in request.writes.cleared.iter() {
                        self.history.record_clear(begin, end, version);
                        cleared.push((begin.to_vec(), end.to_vec()));
                    }
                    for key in request.writes.entries.keys() {
                        self.history.record_key(key, version);
                        written.push(key.clone());
                    }
                    for (key, _) in stamped {
                        self.history.record_key(&key, version);
                        written.push(key);
                    }
                    applied.push(request.reply);
                }
            }
        }

        if failure.is_none() && applied.is_empty() {
            // Every request conflicted: nothing to commit, the version is not used.
            let _ = txn.abort();
            return;
        }
        self.version = version;
        let outcome = match failure {
            Some(err) => {
                let _ = txn.abort();
                Err(err)
            }
            None => commit(txn, version),
        };
        match outcome {
            Ok(()) => {
                self.shared.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .stats
                    .committed
                    .fetch_add(applied.len() as u64, Ordering::Relaxed);
                if durable {
                    self.shared
                        .stats
                        .durable_commits
                        .fetch_add(1, Ordering::Relaxed);
                    self.dirty = false;
                    self.last_durable = Instant::now();
                } else {
                    self.dirty = true;
                }
                self.shared.committed.store(version, Ordering::Release);
                self.shared
                    .stats
                    .history_keys
                    .store(self.history.len() as u64, Ordering::Relaxed);
                self.shared.watches.fire(
                    written.iter().map(Vec::as_slice),
                    cleared.iter().map(|(b, e)| (b.as_slice(), e.as_slice())),
                );
                for reply in applied {
                    let _ = reply.send(Ok(version));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, version, "embedded store batch commit failed");
                for reply in applied {
                    let _ = reply.send(Err(err.clone()));
                }
                for request in remaining {
                    let _ = request.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Applies one request's writes to the batch's write transaction.
fn apply(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    writes: &WriteSet,
    stamped: &[(Vec<u8>, &[u8])],
) -> Result<(), StoreError> {
    for (begin, end) in writes.cleared.iter() {
        table
            .retain_in(begin..end, |_, _| false)
            .map_err(redb_error)?;
    }
    for (key, entry) in &writes.entries {
        match entry {
            Entry::Value(value) => {
                table
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(redb_error)?;
            }
            Entry::Cleared => {
                table.remove(key.as_slice()).map_err(redb_error)?;
            }
            Entry::Add(delta) => {
                let base = table
                    .get(key.as_slice())
                    .map_err(redb_error)?
                    .map(|guard| guard.value().to_vec());
                let sum = add_le(base.as_deref(), *delta);
                table
                    .insert(key.as_slice(), sum.as_slice())
                    .map_err(redb_error)?;
            }
        }
    }
    for (key, value) in stamped {
        table.insert(key.as_slice(), *value).map_err(redb_error)?;
    }
    Ok(())
}

/// Records the version and commits the batch.
fn commit(txn: WriteTransaction, version: u64) -> Result<(), StoreError> {
    {
        let mut meta = txn.open_table(META_TABLE).map_err(redb_error)?;
        meta.insert(META_VERSION_KEY, version).map_err(redb_error)?;
    }
    txn.commit().map_err(redb_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(b: &[u8], e: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (b.to_vec(), e.to_vec())
    }

    #[test]
    fn conflicts_only_with_newer_intersecting_writes() {
        let t0 = Instant::now();
        let mut h = ConflictHistory::new(10);
        h.begin_version(11, t0);
        h.record_key(b"k", 11);
        h.begin_version(12, t0);
        h.record_clear(b"m", b"p", 12);
        assert!(h.conflicts(10, &[range(b"k", b"k\0")]));
        assert!(!h.conflicts(11, &[range(b"k", b"k\0")]));
        assert!(!h.conflicts(10, &[range(b"k\0", b"l")]));
        assert!(h.conflicts(11, &[range(b"a", b"n")]));
        assert!(h.conflicts(11, &[range(b"o", b"z")]));
        assert!(!h.conflicts(11, &[range(b"p", b"z")]));
        assert!(!h.conflicts(12, &[range(b"a", b"z")]));
    }

    #[test]
    fn pruning_raises_the_floor_and_forgets_old_writes() {
        let t0 = Instant::now();
        let mut h = ConflictHistory::new(0);
        h.begin_version(1, t0);
        h.record_key(b"a", 1);
        h.record_clear(b"x", b"y", 1);
        h.begin_version(2, t0 + Duration::from_secs(4));
        h.record_key(b"b", 2);
        h.prune(t0 + Duration::from_secs(6), CONFLICT_WINDOW, 0);
        assert_eq!(h.floor(), 1);
        // Version 1 is forgotten, so a snapshot at 0 must be refused by the caller...
        assert!(!h.conflicts(0, &[range(b"a", b"a\0")]));
        assert!(!h.conflicts(0, &[range(b"x", b"y")]));
        // ...while version 2 is still checked.
        assert!(h.conflicts(1, &[range(b"b", b"b\0")]));
        h.prune(t0 + Duration::from_secs(10), CONFLICT_WINDOW, 0);
        assert_eq!(h.floor(), 2);
        assert!(h.keys.is_empty() && h.clears.is_empty());
    }

    #[test]
    fn a_rewritten_key_keeps_its_newest_version_when_pruned() {
        let t0 = Instant::now();
        let mut h = ConflictHistory::new(0);
        h.begin_version(1, t0);
        h.record_key(b"a", 1);
        h.begin_version(2, t0 + Duration::from_secs(4));
        h.record_key(b"a", 2);
        h.prune(t0 + Duration::from_secs(6), CONFLICT_WINDOW, 0);
        assert!(h.conflicts(1, &[range(b"a", b"a\0")]));
    }

    #[test]
    fn history_below_the_oldest_live_reader_is_forgotten() {
        let t0 = Instant::now();
        let mut h = ConflictHistory::new(0);
        for v in 1..=10u64 {
            h.begin_version(v, t0);
            h.record_key(format!("k{v}").as_bytes(), v);
        }
        // A reader at version 6 still needs versions 7..=10.
        h.prune(t0, CONFLICT_WINDOW, 6);
        assert_eq!((h.len(), h.floor()), (4, 6));
        assert!(h.conflicts(6, &[range(b"k7", b"k7\0")]));
        // With no reader older than the newest version, nothing is kept.
        h.prune(t0, CONFLICT_WINDOW, 10);
        assert_eq!((h.len(), h.floor()), (0, 10));
    }
}
