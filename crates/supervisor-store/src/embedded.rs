//! The embedded backend: the store in a single file, on redb, for single-node deployments,
//! development and tests.
//!
//! Why it is built this way: it must behave exactly like FoundationDB — serializable
//! transactions that fail with [`StoreError::Conflict`] rather than block — so that engine
//! code tested here behaves the same on a cluster. It therefore copies FoundationDB's
//! design instead of using redb's own write locking:
//!
//! - **Optimistic reads.** A transaction records the committed version, then opens a redb
//!   read snapshot (in that order: a snapshot newer than its recorded version can only cause
//!   false conflicts, never missed ones). Reads merge that snapshot with the transaction's
//!   own buffered writes and record read conflict ranges; nothing is locked.
//! - **A resolver and group commit.** Commits go over a channel to one writer OS thread
//!   (see `writer`), which checks each request's read ranges against an in-memory history
//!   of recent writes, then applies every non-conflicting request of the batch in one redb
//!   write transaction with one fsync.
//! - **Versions.** Every batch gets the next commit version, persisted in a separate meta
//!   table inside the batch, so versionstamps keep growing across restarts.
//! - **Watches** are fired by the writer after each batch (see `watches`). A watch becomes
//!   active when its transaction commits (a read-only one at `commit()`); if the commit
//!   fails, the watch resolves with the commit's error; if the transaction is dropped
//!   without committing, the watch never fires; when the store closes, active watches
//!   resolve with [`StoreError::Closed`].
//! - **Transaction age.** As in FoundationDB, conflict history covers about 5 seconds:
//!   an older transaction gets [`StoreError::TooOld`] (retryable) from its reads and its
//!   commit once newer commits have moved the window past it. An open transaction also
//!   keeps redb from reusing the pages of its snapshot, so transactions should be short.
//!
//! Durability: in [`Durability::Immediate`] mode a commit is acknowledged only after its
//! batch is fsynced. In [`Durability::Relaxed`] mode batches are committed without fsync and
//! an fsync follows at least every 100 ms (and at shutdown): a crash (of the machine, or a
//! `kill -9`) may lose the commits of those last moments, never leave a torn batch.
//!
//! Lifecycle: when the last [`Db`] handle on the store is dropped, the writer thread
//! finishes the queued commits, makes everything durable and exits (the drop waits for it).
//! The file itself is closed once transactions still in flight are dropped too.

mod maintenance;
mod txn;
mod watches;
mod writer;

pub use maintenance::{BackupInfo, Compaction, StoreSpace, accept_backup, compact, space};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use redb::{ReadableTable, TableDefinition};

use crate::{Backend, Db, RawTransaction, StoreError};

/// The user keyspace: every key and value the store's callers write.
pub(crate) const DATA_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("supervisor_kv");
/// Bookkeeping of the store itself, invisible to range reads of the keyspace.
pub(crate) const META_TABLE: TableDefinition<&str, u64> = TableDefinition::new("supervisor_meta");
/// Meta key holding the last commit version.
pub(crate) const META_VERSION_KEY: &str = "commit_version";
/// Meta key holding the on-disk format version of this backend.
const META_FORMAT_KEY: &str = "format_version";
/// The on-disk format this code writes and understands.
const FORMAT_VERSION: u64 = 1;

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every acknowledged commit is fsynced (group commit shares one fsync per batch).
    #[default]
    Immediate,
    /// Commits are acknowledged before fsync; a crash may lose the last moments of work
    /// (at most about 100 ms of acknowledged commits), but never leaves a partial batch.
    Relaxed,
}

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Durability of commits.
    pub durability: Durability,
    /// Most transactions applied in one redb write transaction (one fsync). Clamped to
    /// `1..=65535`, since a versionstamp numbers the transactions of a batch with 16 bits.
    pub max_batch: usize,
    /// Bytes of database pages kept in memory. The process's memory grows with the
    /// database up to about this much; reads beyond it go to the OS page cache.
    pub cache_bytes: usize,
}

/// Default page cache of the embedded store: 128 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 128 * 1024 * 1024;

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            durability: Durability::Immediate,
            max_batch: 1024,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Counters of the embedded store since it was opened, for tests, benchmarks and status
/// output. Reading them is cheap (a few relaxed atomic loads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Commit requests sent to the writer (transactions that wrote something or watched).
    pub submitted: u64,
    /// Commit requests the writer has taken off its queue.
    pub received: u64,
    /// Transactions whose writes were committed.
    pub committed: u64,
    /// Commit requests refused with [`StoreError::Conflict`].
    pub conflicts: u64,
    /// Commit requests refused with [`StoreError::TooOld`].
    pub too_old: u64,
    /// redb write transactions committed (one per batch, plus relaxed-mode flushes).
    pub batches: u64,
    /// Of those, the ones committed durably (each costs an fsync).
    pub durable_commits: u64,
    /// The latest committed version.
    pub version: u64,
    /// Keys in the conflict history after the last batch (bounded by the writes
    /// concurrent with the oldest live transaction).
    pub history_keys: u64,
}

/// The counters behind [`EmbeddedStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) too_old: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) durable_commits: AtomicU64,
    pub(crate) history_keys: AtomicU64,
}

/// Holds the writer between batches while a [`CommitPause`] is alive.
#[derive(Default)]
pub(crate) struct Pause {
    state: Mutex<PauseState>,
    resumed: Condvar,
}

#[derive(Default)]
struct PauseState {
    holders: usize,
    /// Set when the store closes: pauses no longer hold the writer, so it can exit.
    closing: bool,
}

impl Pause {
    fn state(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self) {
        self.state().holders += 1;
    }

    fn release(&self) {
        let mut state = self.state();
        state.holders = state.holders.saturating_sub(1);
        if state.holders == 0 {
            self.resumed.notify_all();
        }
    }

    fn close(&self) {
        self.state().closing = true;
        self.resumed.notify_all();
    }

    /// Blocks the writer thread while someone holds a pause (unless the store is closing).
    pub(crate) fn wait_while_paused(&self) {
        let mut state = self.state();
        while state.holders > 0 && !state.closing {
            state = self.resumed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// State shared by the store handle, its transactions and the writer thread.
pub(crate) struct Shared {
    pub(crate) db: redb::Database,
    pub(crate) path: PathBuf,
    /// The latest committed version (stored after the batch's redb commit returned).
    pub(crate) committed: AtomicU64,
    /// Conflict history covers versions above this; older snapshots are too old.
    pub(crate) floor: AtomicU64,
    /// Read versions of the transactions alive now (version -> how many). The writer keeps
    /// conflict history only above the oldest of them, so memory follows the number of
    /// writes concurrent with a live transaction, not the write rate times a time window.
    pub(crate) live_reads: Mutex<std::collections::BTreeMap<u64, usize>>,
    pub(crate) requests: Sender<writer::Message>,
    pub(crate) watches: watches::WatchRegistry,
    pub(crate) stats: Counters,
    pub(crate) pause: Pause,
}

impl Shared {
    /// Registers a new transaction: reads the committed version and records it as live,
    /// atomically, so the writer never forgets history a registered reader still needs.
    pub(crate) fn register_read(&self) -> u64 {
        let mut live = self.live_reads.lock().unwrap_or_else(|p| p.into_inner());
        let version = self.committed.load(Ordering::Acquire);
        *live.entry(version).or_insert(0) += 1;
        version
    }

    /// Forgets a transaction registered by [`Shared::register_read`].
    pub(crate) fn unregister_read(&self, version: u64) {
        let mut live = self.live_reads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = live.get_mut(&version) {
            *n -= 1;
            if *n == 0 {
                live.remove(&version);
            }
        }
    }

    /// History at or below this version serves no live transaction: the oldest live read
    /// version, or the committed version when none is alive.
    pub(crate) fn oldest_live_read(&self) -> u64 {
        let live = self.live_reads.lock().unwrap_or_else(|p| p.into_inner());
        let committed = self.committed.load(Ordering::Acquire);
        live.keys()
            .next()
            .copied()
            .unwrap_or(committed)
            .min(committed)
    }

    /// Sends a message to the writer; `false` if it has stopped.
    pub(crate) fn send(&self, message: writer::Message) -> bool {
        self.requests.send(message).is_ok()
    }
}

/// The embedded store: one redb file, one writer thread. Wrap it in a [`Db`] (see
/// [`open_db`]) to use it.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// While alive, the writer thread applies no batch; commits queue up. Dropping it lets
/// the writer take everything queued in one batch. For tests and benchmarks of group
/// commit; holding it in production code stalls every writer.
#[must_use = "the writer resumes as soon as the pause is dropped"]
pub struct CommitPause {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CommitPause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitPause")
    }
}

impl Drop for CommitPause {
    fn drop(&mut self) {
        self.shared.pause.release();
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed, with its parent directories) the database file at `path`
    /// and starts its writer thread.
    ///
    /// Fails with [`StoreError::Io`] when another process (or another handle in this one)
    /// has the file open, and with [`StoreError::Corrupt`] when the file is damaged or was
    /// written by an incompatible version.
    pub fn open(path: &Path, opts: EmbeddedOptions) -> Result<Arc<Self>, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Io(format!(
                    "cannot create the data directory {}: {e}; check its permissions",
                    parent.display()
                ))
            })?;
        }
        let db = redb::Database::builder()
            .set_cache_size(opts.cache_bytes.max(1024 * 1024))
            .create(path)
            .map_err(|e| open_error(path, e))?;
        let version = initialize(&db, path)?;
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            db,
            path: path.to_path_buf(),
            committed: AtomicU64::new(version),
            floor: AtomicU64::new(version),
            live_reads: Mutex::new(std::collections::BTreeMap::new()),
            requests: sender,
            watches: watches::WatchRegistry::default(),
            stats: Counters::default(),
            pause: Pause::default(),
        });
        let writer = writer::Writer::new(
            shared.clone(),
            receiver,
            opts.durability,
            opts.max_batch,
            version,
        );
        let writer_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("supervisor-store-writer".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| writer.run());
                if std::panic::catch_unwind(run).is_err() {
                    // Commits now fail with `Closed`; active watches must not wait forever.
                    tracing::error!(
                        "the embedded store's writer thread panicked; the store is closed"
                    );
                    writer_shared.watches.close();
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the store's writer thread: {e}")))?;
        tracing::debug!(path = %path.display(), version, "embedded store opened");
        Ok(Arc::new(EmbeddedStore {
            shared,
            writer: Mutex::new(Some(handle)),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> EmbeddedStats {
        let c = &self.shared.stats;
        EmbeddedStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            committed: c.committed.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            too_old: c.too_old.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            durable_commits: c.durable_commits.load(Ordering::Relaxed),
            version: self.shared.committed.load(Ordering::Acquire),
            history_keys: c.history_keys.load(Ordering::Relaxed),
        }
    }

    /// Writes a consistent copy of the store (one read snapshot) to a new file at `to`
    /// while commits go on. Blocks for the copy's duration: call it off the async
    /// runtime's threads.
    pub fn backup_to(&self, to: &Path) -> Result<BackupInfo, StoreError> {
        maintenance::backup(&self.shared, to)
    }

    /// How the file is used: size, pages in use, free space. Taken by the writer thread
    /// between two batches (commits wait for the walk over every page): for operators'
    /// requests, not for every metrics scrape.
    pub fn space(&self) -> Result<StoreSpace, StoreError> {
        let (reply, answer) = mpsc::channel();
        if !self.shared.send(writer::Message::Space(reply)) {
            return Err(StoreError::Closed);
        }
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// The file's size in bytes (a metadata read: cheap).
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.shared.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Holds the writer thread before its next batch until the returned guard is dropped
    /// (see [`CommitPause`]).
    pub fn pause_commits(&self) -> CommitPause {
        self.shared.pause.hold();
        CommitPause {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.shared.pause.close();
        self.shared.send(writer::Message::Shutdown);
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the embedded store's writer thread panicked");
        }
    }
}

#[async_trait::async_trait]
impl Backend for EmbeddedStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn begin(&self) -> Result<Box<dyn RawTransaction>, StoreError> {
        Ok(Box::new(txn::EmbeddedTxn::begin(self.shared.clone())?))
    }

    /// One process owns the file (redb locks it): a relaxed commit not yet fsynced is lost
    /// only by a crash of that process or of its machine.
    fn relaxed_commits_die_with_process(&self) -> bool {
        true
    }

    fn as_embedded(&self) -> Option<&EmbeddedStore> {
        Some(self)
    }
}

/// Opens an embedded database and wraps it in a [`Db`].
pub fn open_db(path: &Path, opts: EmbeddedOptions) -> Result<Db, StoreError> {
    let store = EmbeddedStore::open(path, opts)?;
    Ok(Db::new(store))
}

/// Creates the tables if needed, checks the format, and returns the last commit version.
fn initialize(db: &redb::Database, path: &Path) -> Result<u64, StoreError> {
    let txn = db.begin_write().map_err(redb_error)?;
    let version = {
        txn.open_table(DATA_TABLE)
            .map_err(|e| table_error(path, e))?;
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| table_error(path, e))?;
        let format = meta
            .get(META_FORMAT_KEY)
            .map_err(redb_error)?
            .map(|g| g.value());
        match format {
            None => {
                meta.insert(META_FORMAT_KEY, FORMAT_VERSION)
                    .map_err(redb_error)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "{} uses store format {other}, but this Supervisor understands format \
                     {FORMAT_VERSION}; run the Supervisor version that wrote it, or restore \
                     a backup",
                    path.display()
                )));
            }
        }
        meta.get(META_VERSION_KEY)
            .map_err(redb_error)?
            .map(|g| g.value())
            .unwrap_or(0)
    };
    txn.commit().map_err(redb_error)?;
    Ok(version)
}

/// Maps a failure to open the file.
fn open_error(path: &Path, err: redb::DatabaseError) -> StoreError {
    match redb_error(err) {
        StoreError::Io(msg) => StoreError::Io(format!("cannot open {}: {msg}", path.display())),
        StoreError::Corrupt(msg) => {
            StoreError::Corrupt(format!("cannot open {}: {msg}", path.display()))
        }
        other => other,
    }
}

/// Maps a failure to open a table at startup.
fn table_error(path: &Path, err: redb::TableError) -> StoreError {
    match err {
        redb::TableError::Storage(e) => redb_error(e),
        other => StoreError::Corrupt(format!(
            "{} does not have the tables this Supervisor expects ({other}); it is not a \
             Supervisor data file, or it is from an incompatible version",
            path.display()
        )),
    }
}

/// Maps any redb error to a store error whose message says what to do.
pub(crate) fn redb_error(err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => StoreError::Io(
            "the data directory is in use by another Supervisor process (its database file \
             is locked); stop the other process or give this one a different data directory"
                .into(),
        ),
        redb::Error::Corrupted(msg) => StoreError::Corrupt(format!(
            "the database file is damaged ({msg}); restore it from a backup"
        )),
        redb::Error::UpgradeRequired(v) => StoreError::Corrupt(format!(
            "the database file uses redb file format {v}, which this Supervisor cannot open; \
             upgrade it with the Supervisor version that wrote it, or restore a backup"
        )),
        redb::Error::DatabaseClosed => StoreError::Closed,
        redb::Error::ValueTooLarge(len) => StoreError::ValueTooLarge { len },
        redb::Error::Io(e) => StoreError::Io(format!(
            "{e}; check free disk space, permissions and the health of the disk"
        )),
        redb::Error::PreviousIo => StoreError::Io(
            "an earlier disk write failed, so the database refuses further writes; restart \
             the node once the disk is healthy (free space, permissions, hardware)"
                .into(),
        ),
        other => StoreError::Io(format!(
            "{other}; this is unexpected: restart the node, and report it if it persists"
        )),
    }
}
