//! The FoundationDB backend: the store on a FoundationDB cluster, for production
//! deployments of several nodes.
//!
//! Why it is thin: the store's contract *is* FoundationDB's client API, so every operation
//! maps onto its native counterpart and FoundationDB itself provides snapshots,
//! read-your-writes, conflict detection, the 5-second transaction lifetime and watches:
//!
//! | contract | FoundationDB |
//! |---|---|
//! | `get` / `get_snapshot` | `fdb_transaction_get` (`snapshot` flag) |
//! | `get_range` (limit, reverse, snapshot) | `fdb_transaction_get_range`, `WANT_ALL`, page after page until the limit or the end |
//! | `set` / `clear` / `clear_range` | the same |
//! | `atomic_add` | `ADD` with the delta as 8 little-endian bytes |
//! | `set_versionstamped_key` | `SET_VERSIONSTAMPED_KEY`; the key is passed unchanged (the contract's layout is FoundationDB's, API ≥ 520) |
//! | `add_read_conflict_range` | `fdb_transaction_add_conflict_range(READ)` |
//! | `watch` | `fdb_transaction_watch` |
//! | commit version | `fdb_transaction_get_committed_version` (-1, read-only, is `None`) |
//!
//! The client API version is 730 (cargo feature `fdb-7_3` of the `foundationdb` crate), so
//! the client library (`libfdb_c`) must be FoundationDB 7.3 or later.
//!
//! Retries: [`crate::Db::run`] owns the retry loop. Every error FoundationDB's `on_error`
//! would retry maps to a retryable [`StoreError`] (see `fdb_mapping::store_error`):
//! `not_committed` to [`StoreError::Conflict`], `transaction_too_old` to
//! [`StoreError::TooOld`], maybe-committed errors (`commit_unknown_result`) to
//! [`StoreError::CommitUnknown`] — retried, because closures are idempotent — and the rest
//! to [`StoreError::Unavailable`]. Each attempt runs in a new FoundationDB transaction, with
//! `Db::run`'s backoff instead of `on_error`'s.
//!
//! Keys at or above `\xff` are FoundationDB's system keyspace: range reads, range clears and
//! conflict ranges are clamped below it (no store key can live there), and writing such a
//! key fails at commit with [`StoreError::Io`]. The size limits are FoundationDB's own and
//! are enforced for every backend by the shared [`crate::Transaction`] layer; FoundationDB
//! still applies its own accounting (which also counts conflict ranges) at commit.
//!
//! The network thread: the FoundationDB client runs one network thread per process, and
//! the API version can be selected and the network started only once per process
//! (`foundationdb::boot`). The first [`open_db`] or [`FdbStore::open`] does both; the guard
//! that stops the network lives in a process-wide static and is dropped when the process
//! exits (an `atexit` handler stops the network and joins its thread, as the client
//! library requires). Every later open reuses that network; opening several stores, even on
//! different clusters, is fine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use foundationdb::api::{FdbApiBuilder, NetworkAutoStop};
use foundationdb::options::{DatabaseOption, TransactionOption};
use foundationdb::{Database, FdbError};

use crate::fdb_mapping::{NativeError, api_error, code, open_error, store_error, unreachable};
use crate::{Backend, Db, RawTransaction, StoreError};

pub use crate::fdb_mapping::parse_url;

mod txn;

/// Options of the FoundationDB store.
#[derive(Debug, Clone)]
pub struct FdbOptions {
    /// How long opening the store waits for the cluster to answer (it reads the cluster's
    /// version once) before failing with [`StoreError::Unavailable`]. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// Every transaction is cancelled if the cluster has not answered an operation within
    /// this time, failing with [`StoreError::Unavailable`] (which [`Db::run`] retries)
    /// instead of waiting forever for a cluster that is down. Watches are not affected once
    /// their transaction has committed. `None` waits forever. Default: 10 seconds.
    pub transaction_timeout: Option<Duration>,
    /// Most watches outstanding at once on this store (FoundationDB's `max_watches`
    /// database option; its default and ours: 10,000; at most 1,000,000). One more fails
    /// with [`StoreError::Io`].
    pub max_watches: u32,
}

impl Default for FdbOptions {
    fn default() -> Self {
        FdbOptions {
            connect_timeout: Duration::from_secs(5),
            transaction_timeout: Some(Duration::from_secs(10)),
            max_watches: 10_000,
        }
    }
}

/// Converts a native error (the predicates and message come from the client library).
pub(crate) fn native(err: FdbError) -> NativeError {
    NativeError {
        code: err.code(),
        message: err.message().to_string(),
        retryable: err.is_retryable(),
        maybe_committed: err.is_maybe_committed(),
    }
}

/// Maps a native error to the store's error.
pub(crate) fn map_err(err: FdbError) -> StoreError {
    store_error(&native(err))
}

/// The network's stop guard, dropped by [`stop_network`] when the process exits.
static NETWORK_GUARD: Mutex<Option<NetworkAutoStop>> = Mutex::new(None);

/// Selects the API version and starts the network thread, once per process; every later
/// call returns the first call's outcome.
fn start_network() -> Result<(), StoreError> {
    static STARTED: OnceLock<Result<(), StoreError>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            let builder = FdbApiBuilder::default()
                .build()
                .map_err(|err| api_error(err.code(), err.message()))?;
            // SAFETY: `boot` requires the returned guard to be dropped before the process
            // exits. It is kept in `NETWORK_GUARD`, which `stop_network` empties at exit.
            let guard = unsafe { builder.boot() }.map_err(|err| {
                StoreError::Io(format!(
                    "cannot start the FoundationDB network thread (error {}: {})",
                    err.code(),
                    err.message()
                ))
            })?;
            match NETWORK_GUARD.lock() {
                Ok(mut slot) => *slot = Some(guard),
                Err(poisoned) => *poisoned.into_inner() = Some(guard),
            }
            // SAFETY: registers a plain `extern "C"` function without arguments.
            if unsafe { libc::atexit(stop_network) } != 0 {
                tracing::warn!("cannot register the FoundationDB network shutdown at exit");
            }
            Ok(())
        })
        .clone()
}

/// Stops the FoundationDB network and joins its thread; runs once, at process exit.
extern "C" fn stop_network() {
    let guard = match NETWORK_GUARD.lock() {
        Ok(mut slot) => slot.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    drop(guard);
}

/// How a cluster file is named in messages.
fn describe(cluster_file: Option<&Path>) -> String {
    match cluster_file {
        Some(path) => path.display().to_string(),
        None => "the default cluster file (FDB_CLUSTER_FILE, ./fdb.cluster or \
                 /etc/foundationdb/fdb.cluster)"
            .to_string(),
    }
}

/// The FoundationDB store: a database handle on one cluster. Wrap it in a [`Db`] (see
/// [`open_db`]) to use it.
pub struct FdbStore {
    db: Arc<Database>,
    target: String,
}

impl std::fmt::Debug for FdbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbStore")
            .field("cluster_file", &self.target)
            .finish()
    }
}

impl FdbStore {
    /// Opens the cluster named by `cluster_file` (`None`: FoundationDB's default cluster
    /// file: the `FDB_CLUSTER_FILE` environment variable, then `./fdb.cluster`, then
    /// `/etc/foundationdb/fdb.cluster`) and checks that it answers within
    /// `opts.connect_timeout`. Starts the client's network thread on first use (once per
    /// process, see the module docs). Must run inside a Tokio runtime only to be awaited;
    /// the client library drives its own I/O.
    ///
    /// Fails with [`StoreError::Io`] when the cluster file is missing or malformed or the
    /// client library is too old, and with [`StoreError::Unavailable`] when the cluster does
    /// not answer in time (no `fdbserver` running, or a database that was never configured:
    /// `fdbcli --exec "configure new single ssd"`). Messages name the cluster file.
    pub async fn open(
        cluster_file: Option<&Path>,
        opts: FdbOptions,
    ) -> Result<Arc<Self>, StoreError> {
        let target = describe(cluster_file);
        if let Some(path) = cluster_file
            && !path.is_file()
        {
            return Err(StoreError::Io(unreachable(
                &target,
                "the cluster file does not exist",
            )));
        }
        start_network()?;
        let path = cluster_file.map(cluster_file_str).transpose()?;
        let db =
            Database::new(path).map_err(|err| open_error(err.code(), err.message(), &target))?;
        let option_error = |what: &str, err: FdbError| {
            StoreError::Io(format!(
                "cannot set the FoundationDB option {what} (error {}: {})",
                err.code(),
                err.message()
            ))
        };
        db.set_option(DatabaseOption::MaxWatches(clamp_i32(u64::from(
            opts.max_watches,
        ))))
        .map_err(|err| option_error("max_watches", err))?;
        if let Some(timeout) = opts.transaction_timeout {
            db.set_option(DatabaseOption::TransactionTimeout(millis(timeout)))
                .map_err(|err| option_error("transaction_timeout", err))?;
        }
        probe(&db, &target, opts.connect_timeout).await?;
        tracing::debug!(cluster_file = %target, "foundationdb store opened");
        Ok(Arc::new(FdbStore {
            db: Arc::new(db),
            target,
        }))
    }

    /// The cluster file this store was opened with, as named in messages.
    pub fn cluster_file(&self) -> &str {
        &self.target
    }
}

/// Reads the cluster's current version, which needs a working cluster (coordinators, a
/// configured database, proxies), within `timeout`.
async fn probe(db: &Database, target: &str, timeout: Duration) -> Result<(), StoreError> {
    let trx = db
        .create_trx()
        .map_err(|err| StoreError::Io(unreachable(target, &err.to_string())))?;
    trx.set_option(TransactionOption::Timeout(millis(timeout)))
        .map_err(|err| StoreError::Io(unreachable(target, &err.to_string())))?;
    match trx.get_read_version().await {
        Ok(_) => Ok(()),
        Err(err) if err.code() == code::TRANSACTION_TIMED_OUT => {
            Err(StoreError::Unavailable(unreachable(
                target,
                &format!(
                    "no answer within {timeout:?}; if it is running, check \
                     `fdbcli --exec status` and that the database was configured \
                     (`fdbcli --exec \"configure new single ssd\"`)"
                ),
            )))
        }
        Err(err) => Err(StoreError::Unavailable(unreachable(
            target,
            &format!("error {}: {}", err.code(), err.message()),
        ))),
    }
}

/// The cluster file's path as the client library takes it.
fn cluster_file_str(path: &Path) -> Result<&str, StoreError> {
    path.to_str().ok_or_else(|| {
        StoreError::Io(format!(
            "the FoundationDB cluster file path {} is not valid UTF-8; move or link the file \
             to a UTF-8 path",
            path.display()
        ))
    })
}

/// A duration in whole milliseconds for an `i32` option, at least 1 and at most `i32::MAX`.
fn millis(duration: Duration) -> i32 {
    clamp_i32(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)).max(1)
}

fn clamp_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[async_trait::async_trait]
impl Backend for FdbStore {
    fn name(&self) -> &'static str {
        "foundationdb"
    }

    async fn begin(&self) -> Result<Box<dyn RawTransaction>, StoreError> {
        let trx = self.db.create_trx().map_err(map_err)?;
        Ok(Box::new(txn::FdbTxn::new(trx, self.db.clone())))
    }
}

/// Opens the FoundationDB cluster named by `cluster_file` and wraps the store in a [`Db`]
/// (see [`FdbStore::open`]).
pub async fn open_db(cluster_file: Option<&Path>, opts: FdbOptions) -> Result<Db, StoreError> {
    Ok(Db::new(FdbStore::open(cluster_file, opts).await?))
}

/// Opens the store named by a URL of the form `fdb://<cluster file>` (see [`parse_url`]):
/// `fdb:///etc/foundationdb/fdb.cluster`, or `fdb://` for the default cluster file.
pub async fn open_url(url: &str, opts: FdbOptions) -> Result<Db, StoreError> {
    let cluster_file: Option<PathBuf> = parse_url(url)?;
    open_db(cluster_file.as_deref(), opts).await
}
