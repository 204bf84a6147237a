//! The durable truth of Supervisor: an ordered key-value store with serializable
//! transactions, shaped exactly like FoundationDB's client API.
//!
//! Why this shape: FoundationDB is the production backend, and everything above the store
//! (the engine) is written once against this contract. The embedded backend (redb) and the
//! PostgreSQL backend (feature `postgres`) behave the same way, conflicts included, so code
//! tested on the embedded store behaves identically on a cluster; the FoundationDB backend
//! (feature `fdb`) maps the contract onto FoundationDB's own API.
//!
//! The contract:
//! - [`Db::run`] is a retry loop. The closure may run more than once (on a conflict, or when
//!   a commit's outcome is unknown) and must therefore be idempotent.
//! - Reads: [`Transaction::get`], [`Transaction::get_range`] (forward or reverse, with a
//!   limit), and snapshot variants that add no read conflict.
//! - Writes: [`Transaction::set`], [`Transaction::clear`], [`Transaction::clear_range`],
//!   [`Transaction::atomic_add`] (a conflict-free little-endian add), and
//!   [`Transaction::set_versionstamped_key`] for logs in commit order.
//! - [`Transaction::watch`] returns a future that resolves once a later commit changes a key.
//! - Keys are built with the FoundationDB tuple layer (see [`keys`]), so the keyspace is
//!   byte-identical on every backend. FoundationDB's limits apply everywhere: keys under
//!   [`MAX_KEY_BYTES`], values under [`MAX_VALUE_BYTES`], transactions under
//!   [`MAX_TXN_BYTES`].

#![warn(missing_docs)]

mod buffer;
pub mod conformance;
pub mod embedded;
#[cfg(feature = "fdb")]
pub mod fdb;
#[cfg(any(feature = "fdb", test))]
mod fdb_mapping;
pub mod keys;
#[cfg(feature = "postgres")]
pub mod postgres;
mod transaction;
mod watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

pub use transaction::{Transaction, TxnFuture};

/// Largest key FoundationDB accepts (10,000 bytes); every backend enforces it.
pub const MAX_KEY_BYTES: usize = 10_000;
/// Largest value FoundationDB accepts (100,000 bytes); larger payloads must be chunked.
pub const MAX_VALUE_BYTES: usize = 100_000;
/// Largest total of keys and values one transaction may write (FoundationDB: 10 MB).
pub const MAX_TXN_BYTES: usize = 10_000_000;
/// Length of a versionstamp: an 8-byte commit version and a 2-byte order within it.
pub const VERSIONSTAMP_BYTES: usize = 10;

/// Everything that can go wrong talking to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another transaction committed a write to something this one read. Retryable.
    #[error("transaction conflict: a concurrent transaction changed data this one read")]
    Conflict,
    /// The transaction's read snapshot is older than the store keeps conflict history for.
    /// Retryable.
    #[error("transaction too old: its snapshot predates the conflict window; retry it")]
    TooOld,
    /// The commit may or may not have been applied (a connection dropped mid-commit).
    /// Retryable, because transaction closures are idempotent.
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(String),
    /// The store cannot be reached right now. Retryable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A key is longer than [`MAX_KEY_BYTES`].
    #[error("key of {len} bytes exceeds the store's limit of {MAX_KEY_BYTES} bytes")]
    KeyTooLarge {
        /// Length of the rejected key.
        len: usize,
    },
    /// A value is longer than [`MAX_VALUE_BYTES`]; chunk it across several keys.
    #[error("value of {len} bytes exceeds the store's limit of {MAX_VALUE_BYTES} bytes; chunk it")]
    ValueTooLarge {
        /// Length of the rejected value.
        len: usize,
    },
    /// The transaction writes more than [`MAX_TXN_BYTES`]; split the work.
    #[error("transaction writes {len} bytes, over the limit of {MAX_TXN_BYTES}; split it")]
    TransactionTooLarge {
        /// Total bytes the transaction tried to write.
        len: usize,
    },
    /// A versionstamped key did not carry a valid placeholder offset.
    #[error("invalid versionstamped key: {0}")]
    InvalidVersionstamp(String),
    /// The store's files or connection failed in a way a retry will not fix.
    #[error("store I/O error: {0}")]
    Io(String),
    /// The data on disk or in the database is not what this version of Supervisor expects.
    #[error("store data is corrupt or from an incompatible version: {0}")]
    Corrupt(String),
    /// The store was shut down.
    #[error("the store is closed")]
    Closed,
    /// [`Db::run`] gave up after retrying a retryable error too many times.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// How many times the closure ran.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<StoreError>,
    },
}

impl StoreError {
    /// Whether running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict
                | StoreError::TooOld
                | StoreError::CommitUnknown(_)
                | StoreError::Unavailable(_)
        )
    }
}

/// Errors that a [`Db::run`] closure may return: any type that can carry a [`StoreError`]
/// and say whether it is one, so the retry loop knows when to run the closure again.
pub trait TxnError: From<StoreError> {
    /// The store error inside, if this error is one.
    fn store_error(&self) -> Option<&StoreError>;
}

impl TxnError for StoreError {
    fn store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

/// One key and its value, as returned by range reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
}

/// How to read a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many pairs (`None`: all of them).
    pub limit: Option<usize>,
    /// Read from the end of the range backwards.
    pub reverse: bool,
    /// A snapshot read: sees the transaction's snapshot but adds no read conflict.
    pub snapshot: bool,
}

impl RangeOptions {
    /// Forward, unlimited, conflict-tracked.
    pub fn new() -> Self {
        Self::default()
    }
    /// At most `limit` pairs.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Read backwards from the end of the range.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }
    /// Add no read conflict for this read.
    pub fn snapshot(mut self) -> Self {
        self.snapshot = true;
        self
    }
}

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit version, or `None` for a read-only transaction (nothing was committed).
    pub version: Option<u64>,
}

/// A future that resolves when a watched key is changed by a later commit.
///
/// A watch is created inside a transaction and becomes active only when that transaction
/// commits; dropping it cancels it. Like FoundationDB's, it may fire spuriously (the key
/// was rewritten with the same value), so the waiter re-reads after it fires.
pub struct Watch(Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>);

impl Watch {
    /// Wraps a backend's watch future.
    pub fn new(fut: impl Future<Output = Result<(), StoreError>> + Send + 'static) -> Self {
        Watch(Box::pin(fut))
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Future for Watch {
    type Output = Result<(), StoreError>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// How urgently a transaction must get through when the store is busy (FoundationDB's
/// transaction priorities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Ordinary work: submits, queries, administration.
    #[default]
    Default,
    /// Work that keeps running tasks and the cluster alive (lease renewals, completions,
    /// heartbeats, fencing): backends serve it ahead of, or apart from, default work, so an
    /// overload of submits cannot make a live node's leases lapse.
    System,
}

/// A storage engine: hands out transactions.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short name for logs and status output (`embedded`, `postgres`, `foundationdb`).
    fn name(&self) -> &'static str;
    /// Starts a transaction at the latest committed snapshot.
    async fn begin(&self) -> Result<Box<dyn RawTransaction>, StoreError>;
    /// Whether a relaxed commit ([`Transaction::relax_durability`]) can only be lost
    /// together with this process (a store in the process's own file): then nothing the
    /// process did on the strength of a lost commit outlives the loss.
    fn relaxed_commits_die_with_process(&self) -> bool {
        false
    }
    /// The embedded store behind this backend, for its file maintenance (backups, space
    /// figures); `None` for shared stores, whose database has its own tools.
    fn as_embedded(&self) -> Option<&embedded::EmbeddedStore> {
        None
    }
}

/// One backend transaction. Callers use [`Transaction`], which validates sizes and wraps this.
///
/// Semantics every backend must honour (the conformance suite checks them):
/// - reads see a consistent snapshot plus this transaction's own writes;
/// - a non-snapshot read of a key or range conflicts with any write to it committed after
///   the snapshot and before this transaction's commit; the commit then fails with
///   [`StoreError::Conflict`];
/// - `atomic_add` adds no read conflict and commutes with concurrent adds;
/// - `set_versionstamped_key` replaces the 10 placeholder bytes at the offset given by the
///   key's last 4 bytes (little-endian u32) with the commit's versionstamp, and strips
///   those 4 bytes; versionstamps grow with commit order;
/// - a watch becomes active at commit and fires after a later commit writes the key.
#[async_trait::async_trait]
pub trait RawTransaction: Send {
    /// Reads one key.
    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads several keys, answering in the order asked. Backends where a read is a round
    /// trip answer them together; the default reads them one by one.
    async fn get_many(
        &mut self,
        keys: &[&[u8]],
        snapshot: bool,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key, snapshot).await?);
        }
        Ok(out)
    }
    /// Reads the pairs with `begin <= key < end`, in order (or reverse order).
    async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Writes a key.
    fn set(&mut self, key: &[u8], value: &[u8]);
    /// Removes a key.
    fn clear(&mut self, key: &[u8]);
    /// Removes every key with `begin <= key < end`.
    fn clear_range(&mut self, begin: &[u8], end: &[u8]);
    /// Adds `delta` to the little-endian 64-bit integer at `key` (absent counts as 0).
    fn atomic_add(&mut self, key: &[u8], delta: i64);
    /// Writes a key whose placeholder is filled with the commit's versionstamp.
    fn set_versionstamped_key(&mut self, key_with_offset: &[u8], value: &[u8]);
    /// Makes the commit conflict with writes to `[begin, end)` as if it had read them.
    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]);
    /// Watches a key; the watch starts when this transaction commits.
    fn watch(&mut self, key: &[u8]) -> Watch;
    /// Commits. On [`StoreError::Conflict`] nothing was written.
    async fn commit(self: Box<Self>) -> Result<CommitInfo, StoreError>;
    /// The backend's name for metrics: `embedded`, `postgres` or `fdb`.
    fn backend(&self) -> &'static str;
    /// Sets the transaction's priority (before its first read). Backends without lanes
    /// ignore it.
    fn set_priority(&mut self, _priority: Priority) {}
    /// Lets the commit be acknowledged before it is durable; it becomes durable with the
    /// next durable commit of the same store, or after a short interval. Backends whose
    /// commits are always durable ignore it.
    fn relax_durability(&mut self) {}
}

/// How [`Db::run`] retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up after this many runs of the closure. Default 200.
    pub max_attempts: u32,
    /// First backoff after a retryable error; doubles after each. Default 500µs.
    pub initial_backoff: Duration,
    /// Largest backoff between runs. Default 200ms.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 200,
            initial_backoff: Duration::from_micros(500),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The backoffs between runs, one per retry (`max_attempts - 1` of them): the initial
    /// backoff, then doubling up to the largest. [`Db::run`] sleeps a random part of each
    /// ("full jitter").
    fn backoffs(&self) -> impl Iterator<Item = Duration> + use<> {
        let retries = usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff)
            .with_factor(2.0)
            .with_max_delay(self.max_backoff)
            .with_max_times(retries)
            .build()
            .map(whole_micros)
    }
}

/// `backon` doubles delays in `f32`, a few nanoseconds off; rounding to whole microseconds
/// gives back the exact doubles of configured values (500µs, 1ms, 2ms, ...).
pub(crate) fn whole_micros(delay: Duration) -> Duration {
    let micros = (delay.as_secs_f64() * 1e6).round();
    if micros >= u64::MAX as f64 {
        return Duration::MAX;
    }
    Duration::from_micros(micros as u64)
}

/// A handle to the database: cheap to clone, shared by every part of a node.
#[derive(Clone)]
pub struct Db {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    latency: Arc<transaction::CommitLatency>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl Db {
    /// Wraps a backend with the default retry policy.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Db {
            backend,
            retry: RetryPolicy::default(),
            latency: Arc::default(),
        }
    }

    /// How long this handle's write commits have taken lately: a moving average over the
    /// last few dozen, forgotten after a few seconds without any (then zero). A store
    /// that falls behind shows here first; admission control reads it.
    pub fn commit_latency(&self) -> Duration {
        self.latency.get()
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The backend's short name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Whether a relaxed commit can only be lost together with this process (see
    /// [`Backend::relaxed_commits_die_with_process`]).
    pub fn relaxed_commits_die_with_process(&self) -> bool {
        self.backend.relaxed_commits_die_with_process()
    }

    /// The embedded store, when this handle is on one (see [`Backend::as_embedded`]).
    pub fn embedded(&self) -> Option<&embedded::EmbeddedStore> {
        self.backend.as_embedded()
    }

    /// Starts a single transaction with no retry loop (tests, and callers that retry
    /// themselves). Most code wants [`Db::run`].
    pub async fn begin(&self) -> Result<Transaction<'static>, StoreError> {
        Ok(Transaction::new(
            self.backend.begin().await?,
            self.latency.clone(),
        ))
    }

    /// Runs `f` in a transaction and commits it, retrying on retryable errors with
    /// exponential backoff and jitter. `f` may run several times: it must be idempotent
    /// (compute from what it reads, never from what a previous run did).
    ///
    /// ```ignore
    /// let n = db.run(|txn| Box::pin(async move {
    ///     let v = txn.get(b"k").await?;
    ///     txn.set(b"k", b"v");
    ///     Ok::<_, StoreError>(v.is_some())
    /// })).await?;
    /// ```
    pub async fn run<'c, T, E, F>(&self, mut f: F) -> Result<T, E>
    where
        F: for<'a> FnMut(&'a mut Transaction<'c>) -> TxnFuture<'a, T, E>,
        E: TxnError,
    {
        let mut attempt: u32 = 0;
        let mut backoffs = self.retry.backoffs();
        loop {
            attempt += 1;
            let outcome = async {
                let mut txn: Transaction<'c> = self.begin().await.map_err(E::from)?;
                let value = f(&mut txn).await?;
                txn.commit().await.map_err(E::from)?;
                Ok::<T, E>(value)
            }
            .await;
            match outcome {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let retryable = err.store_error().is_some_and(StoreError::is_retryable);
                    if !retryable {
                        return Err(err);
                    }
                    let Some(backoff) = backoffs.next() else {
                        let last = err.store_error().cloned().unwrap_or(StoreError::Conflict);
                        return Err(E::from(StoreError::RetriesExhausted {
                            attempts: attempt,
                            last: Box::new(last),
                        }));
                    };
                    tracing::trace!(attempt, error = %err.store_error().map(|e| e.to_string()).unwrap_or_default(), "retrying transaction");
                    tokio::time::sleep(backoff.mul_f64(rand::random::<f64>())).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(delays: impl Iterator<Item = Duration>) -> Vec<u128> {
        delays
            .map(|d| {
                assert_eq!(d.subsec_nanos() % 1000, 0, "{d:?} is in whole microseconds");
                d.as_micros()
            })
            .collect()
    }

    #[test]
    fn backoffs_double_from_the_initial_up_to_the_largest_once_per_retry() {
        let policy = RetryPolicy::default();
        let all: Vec<u128> = micros(policy.backoffs());
        assert_eq!(all.len(), 199, "one backoff per retry after the first run");
        assert_eq!(
            all[..11],
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 200_000, 200_000
            ]
        );
        assert!(all[9..].iter().all(|&d| d == 200_000));

        // The first backoff is the initial one even above the largest; later ones are
        // capped.
        let odd = RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_millis(200),
        };
        assert_eq!(micros(odd.backoffs()), [300_000, 200_000, 200_000]);
        // One attempt, or none asked for: no retry at all.
        for max_attempts in [0, 1] {
            let once = RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            };
            assert_eq!(once.backoffs().count(), 0);
        }
    }

    /// A backend whose transactions never start: every run fails with a retryable error.
    struct Down;

    #[async_trait::async_trait]
    impl Backend for Down {
        fn name(&self) -> &'static str {
            "down"
        }
        async fn begin(&self) -> Result<Box<dyn RawTransaction>, StoreError> {
            Err(StoreError::Unavailable("down for the test".into()))
        }
    }

    #[tokio::test]
    async fn run_gives_up_after_max_attempts_naming_the_last_error() {
        let db = Db::new(Arc::new(Down)).with_retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_micros(10),
            max_backoff: Duration::from_micros(20),
        });
        let mut runs = 0;
        let err = db
            .run(|_txn| {
                runs += 1;
                Box::pin(async { Ok::<(), StoreError>(()) })
            })
            .await
            .expect_err("the store is down");
        assert_eq!(runs, 0, "no transaction started, so the closure never ran");
        assert_eq!(
            err,
            StoreError::RetriesExhausted {
                attempts: 3,
                last: Box::new(StoreError::Unavailable("down for the test".into())),
            }
        );
    }
}
