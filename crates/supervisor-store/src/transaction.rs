//! The caller-facing transaction: validates FoundationDB's size limits once, for every
//! backend, and defers a violation to commit so closures stay simple.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{
    CommitInfo, KeyValue, MAX_KEY_BYTES, MAX_TXN_BYTES, MAX_VALUE_BYTES, RangeOptions,
    RawTransaction, StoreError, Watch,
};

/// The future a [`crate::Db::run`] closure returns.
pub type TxnFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// A transaction in progress. Writes are buffered until [`Transaction::commit`].
///
/// The lifetime `'c` is the scope of the [`crate::Db::run`] call: because a closure receives
/// `&'a mut Transaction<'c>`, the compiler knows `'c: 'a`, so the closure's future may
/// borrow anything the caller's scope holds. Outside `run` it is simply `'static`.
pub struct Transaction<'c> {
    raw: Box<dyn RawTransaction>,
    latency: Arc<CommitLatency>,
    written: usize,
    deferred: Option<StoreError>,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    _scope: PhantomData<&'c ()>,
}

impl Transaction<'_> {
    pub(crate) fn new(raw: Box<dyn RawTransaction>, latency: Arc<CommitLatency>) -> Self {
        Transaction {
            raw,
            latency,
            written: 0,
            deferred: None,
            after_commit: Vec::new(),
            _scope: PhantomData,
        }
    }

    fn check_key(&mut self, key: &[u8]) -> bool {
        if key.len() > MAX_KEY_BYTES {
            self.deferred
                .get_or_insert(StoreError::KeyTooLarge { len: key.len() });
            return false;
        }
        true
    }

    fn account(&mut self, key: &[u8], value: &[u8]) -> bool {
        if !self.check_key(key) {
            return false;
        }
        if value.len() > MAX_VALUE_BYTES {
            self.deferred
                .get_or_insert(StoreError::ValueTooLarge { len: value.len() });
            return false;
        }
        self.written += key.len() + value.len();
        if self.written > MAX_TXN_BYTES {
            self.deferred
                .get_or_insert(StoreError::TransactionTooLarge { len: self.written });
            return false;
        }
        true
    }

    /// Reads `key`, adding a read conflict on it.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw.get(key, false).await
    }

    /// Reads `key` without adding a read conflict.
    pub async fn get_snapshot(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw.get(key, true).await
    }

    /// Reads `keys` (a read conflict on each), answering in their order: as [`get`] on
    /// each, in one round trip where the backend has them.
    ///
    /// [`get`]: Transaction::get
    pub async fn get_many<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        self.raw.get_many(&keys, false).await
    }

    /// Like [`Transaction::get_many`], without read conflicts.
    pub async fn get_many_snapshot<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        self.raw.get_many(&keys, true).await
    }

    /// Reads pairs with `begin <= key < end` as `opts` says.
    pub async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        if begin >= end {
            return Ok(Vec::new());
        }
        self.raw.get_range(begin, end, opts).await
    }

    /// Writes `key = value`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        if self.account(key, value) {
            self.raw.set(key, value);
        }
    }

    /// Removes `key`.
    pub fn clear(&mut self, key: &[u8]) {
        if self.account(key, &[]) {
            self.raw.clear(key);
        }
    }

    /// Removes every key in `[begin, end)`.
    pub fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin < end && self.account(begin, end) {
            self.raw.clear_range(begin, end);
        }
    }

    /// Adds `delta` to the little-endian i64 counter at `key`, without a read conflict.
    pub fn atomic_add(&mut self, key: &[u8], delta: i64) {
        if self.account(key, &[0; 8]) {
            self.raw.atomic_add(key, delta);
        }
    }

    /// Writes a key built by [`crate::keys::versionstamped`]: its placeholder becomes the
    /// commit's versionstamp, so such keys sort in commit order.
    pub fn set_versionstamped_key(&mut self, key_with_offset: &[u8], value: &[u8]) {
        if key_with_offset.len() < 4 {
            self.deferred.get_or_insert(StoreError::InvalidVersionstamp(
                "key is shorter than its 4-byte offset suffix".into(),
            ));
            return;
        }
        let body = key_with_offset.len() - 4;
        let mut offset_bytes = [0u8; 4];
        offset_bytes.copy_from_slice(&key_with_offset[body..]);
        let offset = u32::from_le_bytes(offset_bytes) as usize;
        if offset + crate::VERSIONSTAMP_BYTES > body {
            self.deferred
                .get_or_insert(StoreError::InvalidVersionstamp(format!(
                    "placeholder at offset {offset} does not fit in a {body}-byte key"
                )));
            return;
        }
        if self.account(&key_with_offset[..body], value) {
            self.raw.set_versionstamped_key(key_with_offset, value);
        }
    }

    /// Makes this transaction conflict with writes to `[begin, end)` as if it had read them
    /// (used after a snapshot read to claim only the keys actually taken).
    pub fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin < end {
            self.raw.add_read_conflict_range(begin, end);
        }
    }

    /// Makes this transaction conflict with writes to `key`.
    pub fn add_read_conflict_key(&mut self, key: &[u8]) {
        let mut end = key.to_vec();
        end.push(0);
        self.raw.add_read_conflict_range(key, &end);
    }

    /// Watches `key`: the returned future resolves after a commit later than this
    /// transaction's changes it. Active only once this transaction commits.
    pub fn watch(&mut self, key: &[u8]) -> Watch {
        self.raw.watch(key)
    }

    /// Sets how urgently this transaction must get through when the store is busy; call it
    /// before the first read. See [`crate::Priority`].
    pub fn set_priority(&mut self, priority: crate::Priority) {
        self.raw.set_priority(priority);
    }

    /// Lets the commit be acknowledged before it reaches the disk: a crash of the store in
    /// the next moments may lose it. It becomes durable with the next durable commit (WAL
    /// and commit order are one) or within a short interval (100 ms on the embedded
    /// store). Only for writes whose loss is harmless, such as a lease: a lost lease means
    /// the task runs again, which at-least-once execution allows. FoundationDB commits are
    /// always durable.
    pub fn relax_durability(&mut self) {
        self.raw.relax_durability();
    }

    /// Runs `f` once this transaction has committed, and never if it does not (a
    /// conflict retried by [`crate::Db::run`] drops it with the attempt). For effects
    /// outside the store that must happen once per committed change: metrics, say.
    pub fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(f));
    }

    /// Commits the buffered writes. A size violation recorded earlier fails here.
    pub async fn commit(self) -> Result<CommitInfo, StoreError> {
        if let Some(err) = self.deferred {
            return Err(err);
        }
        let backend = self.raw.backend();
        let started = Instant::now();
        let result = self.raw.commit().await;
        let elapsed = started.elapsed();
        if matches!(result, Ok(CommitInfo { version: Some(_) })) {
            self.latency.record(elapsed);
        }
        if supervisor_telemetry::metrics_on() {
            let backend = opentelemetry_backend(backend);
            let m = supervisor_telemetry::metrics();
            match &result {
                Ok(info) if info.version.is_some() => m
                    .store_commit_duration
                    .record(elapsed.as_secs_f64(), &backend),
                Ok(_) => {}
                Err(StoreError::Conflict) => m.store_conflicts.add(1, &backend),
                Err(_) => {}
            }
        }
        let info = result?;
        for f in self.after_commit {
            f();
        }
        Ok(info)
    }
}

/// A moving average of write-commit latency (weight 1/8 per commit), forgotten after
/// [`CommitLatency::FORGET_AFTER`] without a commit.
#[derive(Debug)]
pub(crate) struct CommitLatency {
    micros: AtomicU64,
    /// When the last commit was recorded, in milliseconds since `epoch`.
    at_ms: AtomicU64,
    epoch: Instant,
}

impl Default for CommitLatency {
    fn default() -> Self {
        CommitLatency {
            micros: AtomicU64::new(0),
            at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl CommitLatency {
    /// How long a latency is remembered without a newer commit.
    const FORGET_AFTER: Duration = Duration::from_secs(5);

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Folds one commit's latency in. Concurrent updates may lose one another's sample,
    /// which an average can afford.
    pub(crate) fn record(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let stale = now.saturating_sub(self.at_ms.load(Ordering::Relaxed))
            > Self::FORGET_AFTER.as_millis() as u64;
        let old = self.micros.load(Ordering::Relaxed);
        let new = if old == 0 || stale {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.micros.store(new, Ordering::Relaxed);
        self.at_ms.store(now, Ordering::Relaxed);
    }

    /// The average, or zero when no commit was recorded lately.
    pub(crate) fn get(&self) -> Duration {
        let idle = self
            .now_ms()
            .saturating_sub(self.at_ms.load(Ordering::Relaxed));
        if idle > Self::FORGET_AFTER.as_millis() as u64 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// The `backend` attribute of the store's metrics.
pub(crate) fn opentelemetry_backend(name: &'static str) -> [opentelemetry::KeyValue; 1] {
    [opentelemetry::KeyValue::new("backend", name)]
}
