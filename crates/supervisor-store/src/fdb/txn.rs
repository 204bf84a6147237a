//! One FoundationDB transaction behind the store's [`RawTransaction`].
//!
//! Why this is short: FoundationDB's client already gives the contract's semantics (its
//! read-your-writes cache merges buffered writes into reads, including atomic adds and
//! cleared ranges; its resolvers detect conflicts on the exact ranges read). What is left
//! is translation: paging range reads up to their limit, clamping ranges to the user
//! keyspace, deferring errors of the synchronous calls to the commit, mapping errors, and
//! telling a watch how its transaction ended.

use std::future::Future;
use std::sync::{Arc, Mutex};

use foundationdb::options::{ConflictRangeType, MutationType, StreamingMode, TransactionOption};
use foundationdb::{Database, FdbError, KeySelector, RangeOption, Transaction};

use crate::fdb_mapping::{code, commit_version, user_range, versionstamp_offset};
use crate::{CommitInfo, KeyValue, Priority, RangeOptions, RawTransaction, StoreError, Watch};

use super::map_err;

/// How a transaction ended, as far as its watches need to know.
#[derive(Debug, Clone, Default)]
enum Outcome {
    /// Not committed (yet, or ever: dropped).
    #[default]
    Open,
    /// Committed: its watches are active.
    Committed,
    /// The commit failed with this error (before reaching FoundationDB, or there).
    Failed(StoreError),
}

/// A FoundationDB transaction.
pub(crate) struct FdbTxn {
    /// Declared before `_db`: the transaction is destroyed before the database handle.
    trx: Transaction,
    /// The first error of a call that cannot return one (`add_read_conflict_range`, an
    /// invalid versionstamped key), reported by `commit`.
    deferred: Option<StoreError>,
    /// Shared with this transaction's watches.
    outcome: Arc<Mutex<Outcome>>,
    _db: Arc<Database>,
}

impl FdbTxn {
    pub(crate) fn new(trx: Transaction, db: Arc<Database>) -> Self {
        FdbTxn {
            trx,
            deferred: None,
            outcome: Arc::new(Mutex::new(Outcome::Open)),
            _db: db,
        }
    }

    fn defer(&mut self, err: StoreError) {
        self.deferred.get_or_insert(err);
    }
}

/// Reads `[begin, end)` page after page (FoundationDB returns a range in batches) until the
/// end of the range or `limit` pairs. The read conflict range FoundationDB records covers
/// exactly what was read: up to the last key returned when the limit cut the read short.
async fn read_range(
    trx: &Transaction,
    begin: &[u8],
    end: &[u8],
    opts: RangeOptions,
) -> Result<Vec<KeyValue>, FdbError> {
    let mut out = Vec::new();
    let mut range = RangeOption {
        begin: KeySelector::first_greater_or_equal(begin),
        end: KeySelector::first_greater_or_equal(end),
        limit: opts.limit,
        reverse: opts.reverse,
        mode: StreamingMode::WantAll,
        ..RangeOption::default()
    };
    let mut iteration = 1;
    loop {
        let page = trx.get_range(&range, iteration, opts.snapshot).await?;
        out.extend(page.iter().map(|kv| KeyValue {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
        }));
        match range.next_range(&page) {
            Some(next) => range = next,
            None => return Ok(out),
        }
        iteration += 1;
    }
}

/// Resolves a FoundationDB watch as the contract says: `Ok` when it fires, the commit's
/// error when its transaction failed to commit, [`StoreError::Closed`] when it is cancelled
/// after its transaction committed (the store's handle is gone), and never when its
/// transaction was dropped without committing.
async fn resolve_watch(
    native: impl Future<Output = Result<(), FdbError>>,
    outcome: Arc<Mutex<Outcome>>,
) -> Result<(), StoreError> {
    match native.await {
        Ok(()) => Ok(()),
        Err(err) if err.code() == code::TRANSACTION_CANCELLED => {
            let outcome = match outcome.lock() {
                Ok(slot) => slot.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            match outcome {
                Outcome::Committed => Err(StoreError::Closed),
                Outcome::Failed(err) => Err(err),
                Outcome::Open => std::future::pending().await,
            }
        }
        Err(err) => Err(map_err(err)),
    }
}

#[async_trait::async_trait]
impl RawTransaction for FdbTxn {
    fn backend(&self) -> &'static str {
        "fdb"
    }

    fn set_priority(&mut self, priority: Priority) {
        // High read priority rather than `priority_system_immediate`, which FoundationDB
        // reserves for its own tools (it blocks every other transaction behind it).
        if priority == Priority::System
            && let Err(err) = self.trx.set_option(TransactionOption::ReadPriorityHigh)
        {
            self.defer(map_err(err));
        }
    }

    async fn get(&mut self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.trx.get(key, snapshot).await.map_err(map_err)?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn get_range(
        &mut self,
        begin: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        // A limit of zero means "no limit" to FoundationDB, and "nothing" to the contract.
        if opts.limit == Some(0) {
            return Ok(Vec::new());
        }
        let Some((begin, end)) = user_range(begin, end) else {
            return Ok(Vec::new());
        };
        read_range(&self.trx, begin, end, opts)
            .await
            .map_err(map_err)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.trx.set(key, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.trx.clear(key);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if let Some((begin, end)) = user_range(begin, end) {
            self.trx.clear_range(begin, end);
        }
    }

    fn atomic_add(&mut self, key: &[u8], delta: i64) {
        // FoundationDB's ADD with an 8-byte operand is the contract's add: little-endian,
        // the stored value zero-extended or truncated to 8 bytes, the sum wrapping.
        self.trx
            .atomic_op(key, &delta.to_le_bytes(), MutationType::Add);
    }

    fn set_versionstamped_key(&mut self, key_with_offset: &[u8], value: &[u8]) {
        // The contract's layout is FoundationDB's (placeholder offset as a little-endian
        // u32 suffix, API >= 520): the key goes through unchanged.
        if versionstamp_offset(key_with_offset).is_none() {
            self.defer(StoreError::InvalidVersionstamp(
                "the key's 4-byte offset suffix does not point at a 10-byte placeholder \
                 inside it"
                    .into(),
            ));
            return;
        }
        self.trx
            .atomic_op(key_with_offset, value, MutationType::SetVersionstampedKey);
    }

    fn add_read_conflict_range(&mut self, begin: &[u8], end: &[u8]) {
        let Some((begin, end)) = user_range(begin, end) else {
            return;
        };
        if let Err(err) = self
            .trx
            .add_conflict_range(begin, end, ConflictRangeType::Read)
        {
            self.defer(map_err(err));
        }
    }

    fn watch(&mut self, key: &[u8]) -> Watch {
        Watch::new(resolve_watch(self.trx.watch(key), self.outcome.clone()))
    }

    async fn commit(self: Box<Self>) -> Result<CommitInfo, StoreError> {
        // `_db` is bound first so that it is dropped last, after the transaction.
        let FdbTxn {
            _db,
            trx,
            deferred,
            outcome,
        } = *self;
        let set = |o: Outcome| match outcome.lock() {
            Ok(mut slot) => *slot = o,
            Err(poisoned) => *poisoned.into_inner() = o,
        };
        if let Some(err) = deferred {
            set(Outcome::Failed(err.clone()));
            return Err(err);
        }
        match trx.commit().await {
            Ok(committed) => {
                set(Outcome::Committed);
                let version = committed.committed_version().map_err(map_err)?;
                Ok(CommitInfo {
                    version: commit_version(version),
                })
            }
            Err(failed) => {
                let err = map_err(*failed);
                set(Outcome::Failed(err.clone()));
                Err(err)
            }
        }
    }
}
