//! The conformance suite every backend must pass.
//!
//! Why this exists: the engine is written once against [`Db`] and [`crate::Transaction`],
//! and must behave identically on the embedded, PostgreSQL and FoundationDB backends —
//! conflicts included. These checks pin down that contract. They use only the public API,
//! so every backend runs them unchanged.
//!
//! Each check is a public async function taking a `&Db`. It works under its own random key
//! prefix, so a fresh empty database is not required (though each test gets one when run
//! through the macro). A failed check panics with a message saying what went wrong.
//!
//! Run them all, one `#[tokio::test]` each, with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! mod conformance {
//!     // An expression evaluating to a future of a fresh `Db`, or of `(Db, guard)` where
//!     // the guard (a temporary directory, a container) lives as long as the test.
//!     supervisor_store::conformance_tests!(crate::fresh_db());
//! }
//! ```
//!
//! The invoking crate needs `tokio` (features `macros` and `rt-multi-thread`).
//!
//! Timing: no check asserts on wall time. Where a check needs "this has not happened yet"
//! (a watch that must not fire), it waits [`NOT_YET`]; a correct backend passes that at any
//! machine speed. Where it waits for something that must happen, it gives up after
//! [`HANG_GUARD`] so that a broken backend fails instead of hanging.
//!
//! Crash recovery is backend-specific (something must really crash), so it is not in the
//! macro: [`committed_writes_survive_crash`] is the generic check, and [`commit_sequence`]
//! with [`verify_sequence`] are the pieces for a real process kill.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::keys::{Subspace, Versionstamp, key_after};
use crate::{
    Db, KeyValue, MAX_KEY_BYTES, MAX_TXN_BYTES, MAX_VALUE_BYTES, RangeOptions, StoreError,
    Transaction, Watch,
};

/// How long a "has not happened yet" check waits (a watch must still be pending).
pub const NOT_YET: Duration = Duration::from_millis(200);
/// How long a check waits for something that must happen before declaring a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// A database under test, with whatever must outlive it (dropped after the database).
pub struct TestDb {
    /// The database.
    pub db: Db,
    _guard: Box<dyn Any + Send>,
}

/// What a [`conformance_tests!`](crate::conformance_tests) factory may produce: a [`Db`],
/// or a `(Db, guard)` pair whose guard is kept alive until the test ends.
pub trait IntoTestDb {
    /// Wraps `self` for a test.
    fn into_test_db(self) -> TestDb;
}

impl IntoTestDb for Db {
    fn into_test_db(self) -> TestDb {
        TestDb {
            db: self,
            _guard: Box::new(()),
        }
    }
}

impl<G: Send + 'static> IntoTestDb for (Db, G) {
    fn into_test_db(self) -> TestDb {
        TestDb {
            db: self.0,
            _guard: Box::new(self.1),
        }
    }
}

/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per
/// conformance check, each on a database from `$factory`.
///
/// `$factory` is an expression evaluating to a future whose output is a [`Db`] or a
/// `(Db, guard)` pair; it is evaluated anew in every test, for example
/// `conformance_tests!(fresh_db())` or `conformance_tests!(async { make().await })`.
/// Invoke it inside a module to keep the test names apart from the crate's others.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            get_set_clear,
            read_your_writes,
            get_many_reads_as_get_does,
            clear_range_removes_only_the_range,
            tuple_keys_sort_in_tuple_order,
            get_range_limits_and_reverse,
            get_range_empty_ranges,
            get_range_merges_own_writes,
            snapshot_isolation,
            conflicting_writers_conflict,
            conflict_writes_nothing,
            run_retries_the_conflict_loser,
            blind_writes_do_not_conflict,
            snapshot_reads_do_not_conflict,
            add_read_conflict_range_conflicts,
            range_reads_conflict_with_phantoms,
            limited_range_reads_conflict_only_on_what_they_returned,
            atomic_add_semantics,
            atomic_adds_from_many_tasks_sum_exactly,
            versionstamped_keys_sort_in_commit_order,
            watch_fires_only_after_its_key_changes,
            watch_fires_when_its_key_is_cleared,
            watch_ignores_its_own_transactions_write,
            watch_on_stale_snapshot_fires_immediately,
            size_limits_fail_at_commit_and_write_nothing,
            commit_versions_increase,
            run_returns_non_retryable_errors_at_once,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let test_db = $crate::conformance::IntoTestDb::into_test_db($factory.await);
                $crate::conformance::$name(&test_db.db).await;
            }
        )*
    };
}

// ----------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------

/// A fresh random subspace for one check.
fn space(name: &str) -> Subspace {
    Subspace::all().subspace(&("conformance", name, rand::random::<u64>()))
}

/// Unwraps a store result, panicking with `what` and the error.
#[track_caller]
pub fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(err) => panic!("{what}: unexpected store error: {err}"),
    }
}

async fn begin(db: &Db) -> Transaction<'static> {
    ok(db.begin().await, "begin")
}

/// Commits `key = value` in its own transaction.
async fn put(db: &Db, key: &[u8], value: &[u8]) {
    let (key, value) = (key.to_vec(), value.to_vec());
    ok(
        db.run(move |txn| {
            let (key, value) = (key.clone(), value.clone());
            Box::pin(async move {
                txn.set(&key, &value);
                Ok::<_, StoreError>(())
            })
        })
        .await,
        "put",
    );
}

/// Reads `key` in its own transaction.
async fn fetch(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
    let key = key.to_vec();
    ok(
        db.run(move |txn| {
            let key = key.clone();
            Box::pin(async move { txn.get(&key).await })
        })
        .await,
        "fetch",
    )
}

/// Unpacks a key of `space`, panicking if it is not one.
#[track_caller]
fn unpack<'k, T: crate::keys::TupleUnpack<'k>>(space: &Subspace, key: &'k [u8]) -> T {
    match space.unpack::<T>(key) {
        Ok(t) => t,
        Err(err) => panic!("key {key:?} does not unpack: {err:?}"),
    }
}

/// Reads a whole range in its own transaction.
async fn fetch_range(db: &Db, begin: &[u8], end: &[u8]) -> Vec<KeyValue> {
    let (begin, end) = (begin.to_vec(), end.to_vec());
    ok(
        db.run(move |txn| {
            let (begin, end) = (begin.clone(), end.clone());
            Box::pin(async move { txn.get_range(&begin, &end, RangeOptions::new()).await })
        })
        .await,
        "fetch_range",
    )
}

fn le(n: i64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

#[track_caller]
fn as_i64(value: Option<Vec<u8>>) -> i64 {
    match value {
        None => 0,
        Some(bytes) => {
            let mut buf = [0u8; 8];
            assert_eq!(
                bytes.len(),
                8,
                "counter value must be 8 bytes, got {bytes:?}"
            );
            buf.copy_from_slice(&bytes);
            i64::from_le_bytes(buf)
        }
    }
}

fn pairs(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<KeyValue> {
    model
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Awaits a watch that must fire (within [`HANG_GUARD`]).
pub async fn must_fire(watch: Watch, what: &str) {
    match tokio::time::timeout(HANG_GUARD, watch).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("{what}: watch failed: {err}"),
        Err(_) => panic!("{what}: watch did not fire within {HANG_GUARD:?}"),
    }
}

/// Checks that a watch has not fired yet (within [`NOT_YET`]).
pub async fn still_pending(watch: &mut Watch, what: &str) {
    if let Ok(result) = tokio::time::timeout(NOT_YET, &mut *watch).await {
        panic!("{what}: watch resolved too early with {result:?}");
    }
}

/// Helpers for a backend's own tests: one attempt each, no retry loop, so a test sees
/// exactly what one transaction did.
pub mod once {
    use super::ok;
    use crate::{Db, Watch};

    /// Commits `key = value` in one transaction; returns its commit version.
    pub async fn put(db: &Db, key: &[u8], value: &[u8]) -> Option<u64> {
        let mut txn = ok(db.begin().await, "begin");
        txn.set(key, value);
        ok(txn.commit().await, "commit").version
    }

    /// Reads `key` in one transaction.
    pub async fn fetch(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
        let mut txn = ok(db.begin().await, "begin");
        ok(txn.get(key).await, "get")
    }

    /// A watch on `key`, activated by committing the transaction that created it.
    pub async fn watch(db: &Db, key: &[u8]) -> Watch {
        let mut txn = ok(db.begin().await, "begin");
        let watch = txn.watch(key);
        ok(txn.commit().await, "activate the watch");
        watch
    }

    /// A loopback port nothing listens on.
    pub fn closed_port() -> u16 {
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(err) => panic!("cannot find a free port: {err}"),
        }
    }
}

async fn watch_key(db: &Db, key: &[u8]) -> Watch {
    let key = key.to_vec();
    ok(
        db.run(move |txn| {
            let key = key.clone();
            Box::pin(async move { Ok::<_, StoreError>(txn.watch(&key)) })
        })
        .await,
        "create watch",
    )
}

// ----------------------------------------------------------------------------------------
// Basic reads and writes
// ----------------------------------------------------------------------------------------

/// `get`, `set` and `clear` round-trip through commits.
pub async fn get_set_clear(db: &Db) {
    let s = space("get_set_clear");
    let k = s.pack(&("k",));
    assert_eq!(fetch(db, &k).await, None, "a new key is absent");
    put(db, &k, b"one").await;
    assert_eq!(fetch(db, &k).await.as_deref(), Some(&b"one"[..]));
    put(db, &k, b"two").await;
    assert_eq!(fetch(db, &k).await.as_deref(), Some(&b"two"[..]));
    put(db, &k, b"").await;
    assert_eq!(
        fetch(db, &k).await.as_deref(),
        Some(&b""[..]),
        "an empty value is a value"
    );
    let mut txn = begin(db).await;
    txn.clear(&k);
    ok(txn.commit().await, "commit clear");
    assert_eq!(fetch(db, &k).await, None, "a cleared key is absent");
    let mut txn = begin(db).await;
    txn.clear(&s.pack(&("never-written",)));
    ok(txn.commit().await, "clearing an absent key is fine");
}

/// A transaction sees its own sets, clears, cleared ranges and atomic adds.
pub async fn read_your_writes(db: &Db) {
    let s = space("read_your_writes");
    let key = |name: &str| s.pack(&(name,));
    put(db, &key("committed"), b"c").await;
    put(db, &key("counter"), &le(5)).await;
    put(db, &key("r2"), b"old").await;

    let mut txn = begin(db).await;
    txn.set(&key("a"), b"1");
    assert_eq!(
        ok(txn.get(&key("a")).await, "get a").as_deref(),
        Some(&b"1"[..])
    );
    txn.set(&key("a"), b"2");
    assert_eq!(
        ok(txn.get(&key("a")).await, "get a").as_deref(),
        Some(&b"2"[..])
    );
    txn.clear(&key("a"));
    assert_eq!(ok(txn.get(&key("a")).await, "get a"), None);
    txn.clear(&key("committed"));
    assert_eq!(ok(txn.get(&key("committed")).await, "get committed"), None);
    txn.set(&key("r1"), b"x");
    txn.clear_range(&key("r0"), &key("r9"));
    assert_eq!(ok(txn.get(&key("r1")).await, "get r1"), None);
    assert_eq!(
        ok(txn.get(&key("r2")).await, "get r2"),
        None,
        "clear_range hides committed keys"
    );
    txn.set(&key("r3"), b"y");
    assert_eq!(
        ok(txn.get(&key("r3")).await, "get r3").as_deref(),
        Some(&b"y"[..]),
        "a set after a clear_range is visible"
    );
    txn.atomic_add(&key("counter"), 3);
    assert_eq!(as_i64(ok(txn.get(&key("counter")).await, "get counter")), 8);
    txn.atomic_add(&key("fresh"), -4);
    assert_eq!(as_i64(ok(txn.get(&key("fresh")).await, "get fresh")), -4);
    txn.atomic_add(&key("r5"), 7);
    assert_eq!(
        as_i64(ok(txn.get(&key("r5")).await, "get r5")),
        7,
        "an add inside a cleared range starts from zero"
    );
    ok(txn.commit().await, "commit");

    assert_eq!(fetch(db, &key("a")).await, None);
    assert_eq!(fetch(db, &key("committed")).await, None);
    assert_eq!(fetch(db, &key("r1")).await, None);
    assert_eq!(fetch(db, &key("r2")).await, None);
    assert_eq!(fetch(db, &key("r3")).await.as_deref(), Some(&b"y"[..]));
    assert_eq!(as_i64(fetch(db, &key("counter")).await), 8);
    assert_eq!(as_i64(fetch(db, &key("fresh")).await), -4);
    assert_eq!(as_i64(fetch(db, &key("r5")).await), 7);
}

/// `get_many` answers what `get` would for each key, in the order asked (committed
/// values, the transaction's own sets, clears and adds, absent keys, repeats), and adds a
/// read conflict on each key unless it is a snapshot read.
pub async fn get_many_reads_as_get_does(db: &Db) {
    let s = space("get_many");
    let key = |name: &str| s.pack(&(name,));
    put(db, &key("a"), b"1").await;
    put(db, &key("b"), b"2").await;
    put(db, &key("n"), &le(5)).await;
    put(db, &key("gone"), b"x").await;

    let mut txn = begin(db).await;
    txn.set(&key("mine"), b"m");
    txn.clear(&key("gone"));
    txn.atomic_add(&key("n"), 2);
    txn.atomic_add(&key("new"), 3);
    let (a, b, n, gone, mine, new, absent) = (
        key("a"),
        key("b"),
        key("n"),
        key("gone"),
        key("mine"),
        key("new"),
        key("absent"),
    );
    let asked: Vec<&[u8]> = vec![&b, &absent, &a, &mine, &gone, &n, &new, &a];
    let many = ok(txn.get_many(&asked).await, "get_many");
    let mut one_by_one = Vec::new();
    for k in &asked {
        one_by_one.push(ok(txn.get(k).await, "get"));
    }
    assert_eq!(
        many, one_by_one,
        "get_many must answer as get does, in order"
    );
    assert_eq!(many[0].as_deref(), Some(&b"2"[..]));
    assert_eq!(many[1], None);
    assert_eq!(as_i64(many[5].clone()), 7);
    assert_eq!(as_i64(many[6].clone()), 3);
    assert_eq!(
        ok(txn.get_many::<&[u8]>(&[]).await, "get_many of nothing"),
        Vec::<Option<Vec<u8>>>::new()
    );
    ok(txn.commit().await, "commit");

    // A read conflict on every key read, none for a snapshot read.
    let out = key("out");
    let mut reader = begin(db).await;
    ok(reader.get_many(&[&a, &b]).await, "get_many");
    let mut snapshot_reader = begin(db).await;
    ok(
        snapshot_reader.get_many_snapshot(&[&a, &b]).await,
        "get_many_snapshot",
    );
    put(db, &b, b"3").await;
    reader.set(&out, b"r");
    assert!(
        matches!(reader.commit().await, Err(StoreError::Conflict)),
        "a key read by get_many was written meanwhile: the commit must conflict"
    );
    snapshot_reader.set(&out, b"s");
    ok(
        snapshot_reader.commit().await,
        "snapshot reads by get_many_snapshot must not conflict",
    );
}

/// `clear_range` removes `[begin, end)`: the begin key but not the end key.
pub async fn clear_range_removes_only_the_range(db: &Db) {
    let s = space("clear_range");
    for i in 0..10i64 {
        put(db, &s.pack(&(i,)), &le(i)).await;
    }
    let mut txn = begin(db).await;
    txn.clear_range(&s.pack(&(3i64,)), &s.pack(&(7i64,)));
    ok(txn.commit().await, "commit clear_range");
    let (b, e) = s.range();
    let left: Vec<i64> = fetch_range(db, &b, &e)
        .await
        .into_iter()
        .map(|kv| as_i64(Some(kv.value)))
        .collect();
    assert_eq!(left, vec![0, 1, 2, 7, 8, 9]);
}

/// Tuple-packed keys come back in tuple order (integers numerically, strings
/// lexicographically, nested tuples element by element).
pub async fn tuple_keys_sort_in_tuple_order(db: &Db) {
    let s = space("tuple_order");
    let ints: Vec<i64> = vec![
        1000,
        -1,
        0,
        255,
        256,
        -256,
        -255,
        1,
        i64::MIN,
        i64::MAX,
        -1000,
        65536,
        10,
        2,
    ];
    let ints_space = s.subspace(&("int",));
    let mut txn = begin(db).await;
    for i in &ints {
        txn.set(&ints_space.pack(&(*i,)), b"");
    }
    let strings = ["b", "a", "ab", "", "a\u{0}b", "ä", "B", "ba"];
    let str_space = s.subspace(&("str",));
    for st in &strings {
        txn.set(&str_space.pack(&(*st,)), b"");
    }
    let nested_space = s.subspace(&("nested",));
    let nested: Vec<(String, i64, String)> = vec![
        ("task".into(), 10, "a".into()),
        ("task".into(), 2, "b".into()),
        ("task".into(), 2, "a".into()),
        ("run".into(), 99, "z".into()),
        ("task".into(), -3, "a".into()),
    ];
    for t in &nested {
        txn.set(&nested_space.pack(t), b"");
    }
    ok(txn.commit().await, "commit");

    let (b, e) = ints_space.range();
    let got: Vec<i64> = fetch_range(db, &b, &e)
        .await
        .iter()
        .map(|kv| unpack::<(i64,)>(&ints_space, &kv.key).0)
        .collect();
    let mut want = ints.clone();
    want.sort();
    assert_eq!(got, want, "integers sort numerically");

    let (b, e) = str_space.range();
    let got: Vec<String> = fetch_range(db, &b, &e)
        .await
        .iter()
        .map(|kv| unpack::<(String,)>(&str_space, &kv.key).0)
        .collect();
    let mut want: Vec<String> = strings.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "strings sort by their UTF-8 bytes");

    let (b, e) = nested_space.range();
    let got: Vec<(String, i64, String)> = fetch_range(db, &b, &e)
        .await
        .iter()
        .map(|kv| unpack::<(String, i64, String)>(&nested_space, &kv.key))
        .collect();
    let mut want = nested.clone();
    want.sort();
    assert_eq!(got, want, "tuples sort element by element");
}

// ----------------------------------------------------------------------------------------
// Range reads
// ----------------------------------------------------------------------------------------

/// Forward reads return the first N in order; reverse reads the last N in reverse order.
pub async fn get_range_limits_and_reverse(db: &Db) {
    let s = space("range_limits");
    let mut model = BTreeMap::new();
    let mut txn = begin(db).await;
    for i in 0..20i64 {
        let (k, v) = (s.pack(&(i,)), le(i * 10));
        txn.set(&k, &v);
        model.insert(k, v);
    }
    ok(txn.commit().await, "commit");
    let all = pairs(&model);
    let (b, e) = s.range();
    let mut txn = begin(db).await;
    for limit in [1usize, 5, 19, 20, 21, 100] {
        let fwd = ok(
            txn.get_range(&b, &e, RangeOptions::new().limit(limit))
                .await,
            "forward",
        );
        assert_eq!(fwd, all[..limit.min(20)].to_vec(), "forward limit {limit}");
        let rev = ok(
            txn.get_range(&b, &e, RangeOptions::new().limit(limit).reverse())
                .await,
            "reverse",
        );
        let want: Vec<KeyValue> = all.iter().rev().take(limit).cloned().collect();
        assert_eq!(rev, want, "reverse limit {limit}");
    }
    let fwd = ok(
        txn.get_range(&b, &e, RangeOptions::new()).await,
        "forward all",
    );
    assert_eq!(fwd, all);
    let rev = ok(
        txn.get_range(&b, &e, RangeOptions::new().reverse()).await,
        "reverse all",
    );
    assert_eq!(rev, all.iter().rev().cloned().collect::<Vec<_>>());
    // A sub-range: [5, 12), begin inclusive, end exclusive.
    let (sb, se) = (s.pack(&(5i64,)), s.pack(&(12i64,)));
    let sub = ok(txn.get_range(&sb, &se, RangeOptions::new()).await, "sub");
    assert_eq!(sub, all[5..12].to_vec());
    let sub_rev = ok(
        txn.get_range(&sb, &se, RangeOptions::new().reverse().limit(3))
            .await,
        "sub reverse",
    );
    assert_eq!(
        sub_rev,
        vec![all[11].clone(), all[10].clone(), all[9].clone()]
    );
    // Bounds between keys.
    let between = ok(
        txn.get_range(
            &key_after(&all[3].key),
            &key_after(&all[6].key),
            RangeOptions::new(),
        )
        .await,
        "between",
    );
    assert_eq!(between, all[4..7].to_vec());
    // Snapshot range reads see the same data.
    let snap = ok(
        txn.get_range(&b, &e, RangeOptions::new().snapshot().limit(4))
            .await,
        "snapshot",
    );
    assert_eq!(snap, all[..4].to_vec());
}

/// Empty and inverted ranges read nothing.
pub async fn get_range_empty_ranges(db: &Db) {
    let s = space("range_empty");
    let (b, e) = s.range();
    let mut txn = begin(db).await;
    assert!(ok(txn.get_range(&b, &e, RangeOptions::new()).await, "empty").is_empty());
    assert!(
        ok(
            txn.get_range(&b, &e, RangeOptions::new().reverse().limit(3))
                .await,
            "empty rev"
        )
        .is_empty()
    );
    drop(txn);
    put(db, &s.pack(&(1i64,)), b"1").await;
    put(db, &s.pack(&(9i64,)), b"9").await;
    let mut txn = begin(db).await;
    let (gb, ge) = (s.pack(&(2i64,)), s.pack(&(8i64,)));
    assert!(ok(txn.get_range(&gb, &ge, RangeOptions::new()).await, "gap").is_empty());
    assert!(
        ok(
            txn.get_range(&gb, &ge, RangeOptions::new().reverse()).await,
            "gap rev"
        )
        .is_empty()
    );
    let k1 = s.pack(&(1i64,));
    assert!(
        ok(
            txn.get_range(&k1, &k1, RangeOptions::new()).await,
            "begin == end"
        )
        .is_empty()
    );
    assert!(ok(txn.get_range(&e, &b, RangeOptions::new()).await, "inverted").is_empty());
    // Everything cleared by this transaction.
    txn.clear_range(&b, &e);
    assert!(ok(txn.get_range(&b, &e, RangeOptions::new()).await, "cleared").is_empty());
    assert!(
        ok(
            txn.get_range(&b, &e, RangeOptions::new().reverse()).await,
            "cleared rev"
        )
        .is_empty()
    );
}

/// Range reads merge committed data with the transaction's own sets, clears, cleared ranges
/// and atomic adds, forward and reverse, at every limit; the commit then stores exactly
/// what the transaction saw.
pub async fn get_range_merges_own_writes(db: &Db) {
    let s = space("range_merge");
    let k = |i: i64| s.pack(&(i,));
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut txn = begin(db).await;
    for i in (0..20i64).step_by(2) {
        let v = if i == 16 {
            le(100)
        } else {
            format!("c{i}").into_bytes()
        };
        txn.set(&k(i), &v);
        model.insert(k(i), v);
    }
    ok(txn.commit().await, "commit base");

    let mut txn = begin(db).await;
    let apply_set = |txn: &mut Transaction<'_>, m: &mut BTreeMap<_, _>, i: i64, v: &[u8]| {
        txn.set(&k(i), v);
        m.insert(k(i), v.to_vec());
    };
    apply_set(&mut txn, &mut model, 3, b"t3");
    apply_set(&mut txn, &mut model, 7, b"t7");
    apply_set(&mut txn, &mut model, 0, b"t0");
    txn.clear(&k(4));
    model.remove(&k(4));
    txn.clear_range(&k(10), &k(14));
    model.retain(|key, _| !(key >= &k(10) && key < &k(14)));
    apply_set(&mut txn, &mut model, 11, b"t11");
    txn.atomic_add(&k(16), 5);
    model.insert(k(16), le(105));
    txn.atomic_add(&k(5), 1);
    model.insert(k(5), le(1));
    txn.clear_range(&k(17), &k(25));
    model.retain(|key, _| !(key >= &k(17) && key < &k(25)));
    apply_set(&mut txn, &mut model, 21, b"t21");

    let (b, e) = s.range();
    let all = pairs(&model);
    let n = all.len();
    for limit in 1..=n + 1 {
        let fwd = ok(
            txn.get_range(&b, &e, RangeOptions::new().limit(limit))
                .await,
            "forward",
        );
        assert_eq!(fwd, all[..limit.min(n)].to_vec(), "forward limit {limit}");
        let rev = ok(
            txn.get_range(&b, &e, RangeOptions::new().limit(limit).reverse())
                .await,
            "reverse",
        );
        let want: Vec<KeyValue> = all.iter().rev().take(limit).cloned().collect();
        assert_eq!(rev, want, "reverse limit {limit}");
    }
    // Ranges starting and ending inside a cleared range.
    for (lo, hi) in [(11i64, 19i64), (12, 13), (3, 12), (9, 22), (18, 30)] {
        let want: Vec<KeyValue> = model
            .range(k(lo)..k(hi))
            .map(|(key, value)| KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        let fwd = ok(
            txn.get_range(&k(lo), &k(hi), RangeOptions::new()).await,
            "sub",
        );
        assert_eq!(fwd, want, "forward [{lo}, {hi})");
        let rev = ok(
            txn.get_range(&k(lo), &k(hi), RangeOptions::new().reverse())
                .await,
            "sub reverse",
        );
        assert_eq!(
            rev,
            want.iter().rev().cloned().collect::<Vec<_>>(),
            "reverse [{lo}, {hi})"
        );
    }
    ok(txn.commit().await, "commit merged");
    assert_eq!(
        fetch_range(db, &b, &e).await,
        all,
        "the commit stored what was read"
    );
}

// ----------------------------------------------------------------------------------------
// Isolation and conflicts
// ----------------------------------------------------------------------------------------

/// A transaction keeps reading its snapshot after others commit.
pub async fn snapshot_isolation(db: &Db) {
    let s = space("snapshot_isolation");
    let (k, k2) = (s.pack(&("k",)), s.pack(&("k2",)));
    put(db, &k, b"old").await;
    let mut reader = begin(db).await;
    assert_eq!(
        ok(reader.get(&k).await, "first read").as_deref(),
        Some(&b"old"[..])
    );

    let mut writer = begin(db).await;
    writer.set(&k, b"new");
    writer.set(&k2, b"added");
    ok(writer.commit().await, "writer commit");

    assert_eq!(
        ok(reader.get(&k).await, "reread").as_deref(),
        Some(&b"old"[..]),
        "a later commit is invisible to an older transaction"
    );
    assert_eq!(ok(reader.get(&k2).await, "read k2"), None);
    let (b, e) = s.range();
    let seen = ok(reader.get_range(&b, &e, RangeOptions::new()).await, "range");
    assert_eq!(seen.len(), 1, "the range read sees the old snapshot");
    assert_eq!(
        ok(reader.get_snapshot(&k).await, "snapshot read").as_deref(),
        Some(&b"old"[..])
    );
    drop(reader);
    assert_eq!(fetch(db, &k).await.as_deref(), Some(&b"new"[..]));
    assert_eq!(fetch(db, &k2).await.as_deref(), Some(&b"added"[..]));
}

/// A reads k; B reads k, writes k and commits; A's write of k then fails to commit with
/// [`StoreError::Conflict`].
pub async fn conflicting_writers_conflict(db: &Db) {
    let s = space("conflict");
    let k = s.pack(&("k",));
    put(db, &k, &le(0)).await;
    let mut a = begin(db).await;
    let va = as_i64(ok(a.get(&k).await, "A reads"));
    let mut b = begin(db).await;
    let vb = as_i64(ok(b.get(&k).await, "B reads"));
    b.set(&k, &le(vb + 1));
    ok(b.commit().await, "B commits");
    a.set(&k, &le(va + 1));
    match a.commit().await {
        Err(StoreError::Conflict) => {}
        other => panic!("A must conflict, got {other:?}"),
    }
    assert_eq!(
        as_i64(fetch(db, &k).await),
        1,
        "only B's increment was applied"
    );
}

/// A transaction that fails with a conflict writes nothing at all.
pub async fn conflict_writes_nothing(db: &Db) {
    let s = space("conflict_nothing");
    let (k, other, counter) = (s.pack(&("k",)), s.pack(&("other",)), s.pack(&("n",)));
    let mut a = begin(db).await;
    ok(a.get(&k).await, "A reads");
    put(db, &k, b"b-was-here").await;
    a.set(&other, b"a-was-here");
    a.atomic_add(&counter, 1);
    a.clear_range(&s.pack(&("a",)), &s.pack(&("j",)));
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
    assert_eq!(fetch(db, &other).await, None);
    assert_eq!(fetch(db, &counter).await, None);
    assert_eq!(fetch(db, &k).await.as_deref(), Some(&b"b-was-here"[..]));
}

/// Two `Db::run` read-increment-write closures forced to race: one wins, the loser's
/// closure runs again, and both increments land.
pub async fn run_retries_the_conflict_loser(db: &Db) {
    let s = space("run_race");
    let k = s.pack(&("k",));
    put(db, &k, &le(0)).await;
    let runs = Arc::new(AtomicUsize::new(0));
    // Both first attempts read before either commits: neither can pass by luck.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (db, k, runs, barrier) = (db.clone(), k.clone(), runs.clone(), barrier.clone());
        let first = Arc::new(AtomicBool::new(true));
        tasks.push(tokio::spawn(async move {
            db.run(move |txn| {
                let (k, runs, barrier, first) =
                    (k.clone(), runs.clone(), barrier.clone(), first.clone());
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let v = as_i64(txn.get(&k).await?);
                    if first.swap(false, Ordering::SeqCst) {
                        barrier.wait().await;
                    }
                    txn.set(&k, &le(v + 1));
                    Ok::<_, StoreError>(())
                })
            })
            .await
        }));
    }
    for task in tasks {
        match task.await {
            Ok(result) => ok(result, "racing run"),
            Err(err) => panic!("racing task panicked: {err}"),
        }
    }
    assert_eq!(as_i64(fetch(db, &k).await), 2, "both increments landed");
    let runs = runs.load(Ordering::SeqCst);
    assert!(
        runs > 2,
        "the loser must have run again (closure runs: {runs})"
    );
}

/// Writes without reads (blind writes) never conflict; the last commit wins.
pub async fn blind_writes_do_not_conflict(db: &Db) {
    let s = space("blind");
    let (k, unrelated) = (s.pack(&("k",)), s.pack(&("unrelated",)));
    let mut a = begin(db).await;
    ok(a.get(&unrelated).await, "A takes its snapshot");
    let mut b = begin(db).await;
    ok(b.get(&unrelated).await, "B takes its snapshot");
    b.set(&k, b"b");
    ok(b.commit().await, "B commits");
    a.set(&k, b"a");
    ok(a.commit().await, "A's blind write commits");
    assert_eq!(fetch(db, &k).await.as_deref(), Some(&b"a"[..]));
}

/// Snapshot reads add no read conflict.
pub async fn snapshot_reads_do_not_conflict(db: &Db) {
    let s = space("snapshot_no_conflict");
    let (k, out) = (s.pack(&("k",)), s.pack(&("out",)));
    put(db, &k, b"0").await;
    let mut a = begin(db).await;
    ok(a.get_snapshot(&k).await, "snapshot get");
    let (b, e) = s.range();
    ok(
        a.get_range(&b, &e, RangeOptions::new().snapshot()).await,
        "snapshot range",
    );
    put(db, &k, b"1").await;
    a.set(&out, b"done");
    ok(a.commit().await, "snapshot reads must not conflict");
    assert_eq!(fetch(db, &out).await.as_deref(), Some(&b"done"[..]));
}

/// `add_read_conflict_range` (and `add_read_conflict_key`) make a commit conflict as if
/// the range had been read.
pub async fn add_read_conflict_range_conflicts(db: &Db) {
    let s = space("explicit_conflict");
    let (k, out) = (s.pack(&("k",)), s.pack(&("out",)));
    put(db, &k, b"0").await;

    let mut a = begin(db).await;
    ok(a.get_snapshot(&k).await, "snapshot get");
    a.add_read_conflict_key(&k);
    put(db, &k, b"1").await;
    a.set(&out, b"a");
    assert_eq!(a.commit().await, Err(StoreError::Conflict), "conflict key");

    let mut a = begin(db).await;
    ok(a.get_snapshot(&out).await, "take a snapshot");
    a.add_read_conflict_range(&s.pack(&("m",)), &s.pack(&("q",)));
    put(db, &s.pack(&("n",)), b"phantom").await;
    a.set(&out, b"a");
    assert_eq!(
        a.commit().await,
        Err(StoreError::Conflict),
        "conflict range"
    );

    let mut a = begin(db).await;
    ok(a.get_snapshot(&out).await, "take a snapshot");
    a.add_read_conflict_range(&s.pack(&("m",)), &s.pack(&("q",)));
    put(db, &s.pack(&("z",)), b"outside").await;
    a.set(&out, b"a");
    ok(
        a.commit().await,
        "a write outside the range does not conflict",
    );
}

/// A range read conflicts with a key inserted into the range later (a phantom), even where
/// no key existed when it was read.
pub async fn range_reads_conflict_with_phantoms(db: &Db) {
    let s = space("phantom");
    let out = s.pack(&("out",));
    let items = s.subspace(&("items",));
    for i in [0i64, 10, 20] {
        put(db, &items.pack(&(i,)), b"x").await;
    }
    let (b, e) = items.range();
    let mut a = begin(db).await;
    let seen = ok(
        a.get_range(&b, &e, RangeOptions::new().limit(100)).await,
        "read",
    );
    assert_eq!(seen.len(), 3);
    put(db, &items.pack(&(15i64,)), b"phantom").await;
    a.set(&out, b"a");
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
}

/// A range read cut short by its limit conflicts only with writes up to the last key it
/// returned (forward) or from it (reverse).
pub async fn limited_range_reads_conflict_only_on_what_they_returned(db: &Db) {
    let s = space("limited_conflict");
    let out = s.pack(&("out",));
    let items = s.subspace(&("items",));
    for i in 0..10i64 {
        put(db, &items.pack(&(i,)), b"x").await;
    }
    let (b, e) = items.range();
    for (reverse, touched, conflicts) in [
        (false, 5i64, false),
        (false, 1, true),
        (false, 2, true),
        (true, 2, false),
        (true, 8, true),
        (true, 7, true),
    ] {
        let mut a = begin(db).await;
        let mut opts = RangeOptions::new().limit(3);
        if reverse {
            opts = opts.reverse();
        }
        let seen = ok(a.get_range(&b, &e, opts).await, "limited read");
        assert_eq!(seen.len(), 3);
        put(db, &items.pack(&(touched,)), b"y").await;
        a.set(&out, b"a");
        let result = a.commit().await;
        if conflicts {
            assert_eq!(
                result,
                Err(StoreError::Conflict),
                "reverse={reverse}: a write to {touched} must conflict"
            );
        } else {
            assert_eq!(
                result.map(|_| ()),
                Ok(()),
                "reverse={reverse}: a write to {touched} is beyond what was read"
            );
        }
    }
}

// ----------------------------------------------------------------------------------------
// Atomic operations and versionstamps
// ----------------------------------------------------------------------------------------

/// Atomic adds: absent counts as zero, shorter values are zero-extended, longer ones
/// truncated to 8 bytes, negative deltas subtract, and the sum wraps.
pub async fn atomic_add_semantics(db: &Db) {
    let s = space("atomic_semantics");
    let k = |name: &str| s.pack(&(name,));
    put(db, &k("short"), &[5]).await;
    put(db, &k("long"), &[1, 0, 0, 0, 0, 0, 0, 0, 9, 9]).await;
    put(db, &k("max"), &le(i64::MAX)).await;
    let mut txn = begin(db).await;
    txn.atomic_add(&k("absent"), 7);
    txn.atomic_add(&k("negative"), -3);
    txn.atomic_add(&k("negative"), -4);
    txn.atomic_add(&k("short"), 1);
    txn.atomic_add(&k("long"), 1);
    txn.atomic_add(&k("max"), 1);
    ok(txn.commit().await, "commit adds");
    assert_eq!(fetch(db, &k("absent")).await, Some(le(7)));
    assert_eq!(fetch(db, &k("negative")).await, Some(le(-7)));
    assert_eq!(fetch(db, &k("short")).await, Some(le(6)));
    assert_eq!(fetch(db, &k("long")).await, Some(le(2)));
    assert_eq!(fetch(db, &k("max")).await, Some(le(i64::MIN)));
}

/// 32 tasks × 50 adds, each in its own `Db::run`, sum exactly; adds do not conflict with
/// each other.
pub async fn atomic_adds_from_many_tasks_sum_exactly(db: &Db) {
    let s = space("atomic_many");
    let (up, down) = (s.pack(&("up",)), s.pack(&("down",)));
    const TASKS: i64 = 32;
    const ADDS: i64 = 50;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (db, up, down) = (db.clone(), up.clone(), down.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ADDS {
                let (up, down) = (up.clone(), down.clone());
                db.run(move |txn| {
                    let (up, down) = (up.clone(), down.clone());
                    Box::pin(async move {
                        txn.atomic_add(&up, 1);
                        txn.atomic_add(&down, -2);
                        Ok::<_, StoreError>(())
                    })
                })
                .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        match task.await {
            Ok(result) => ok(result, "adding task"),
            Err(err) => panic!("adding task panicked: {err}"),
        }
    }
    assert_eq!(as_i64(fetch(db, &up).await), TASKS * ADDS);
    assert_eq!(as_i64(fetch(db, &down).await), -2 * TASKS * ADDS);
}

/// Versionstamped keys written by successive commits sort in commit order; the placeholder
/// is replaced by a complete versionstamp whose first 8 bytes are the commit version.
pub async fn versionstamped_keys_sort_in_commit_order(db: &Db) {
    let s = space("versionstamps");
    let log = s.subspace(&("log",));
    let mut versions = Vec::new();
    for i in 0..5i64 {
        let mut txn = begin(db).await;
        txn.set_versionstamped_key(
            &crate::keys::versionstamped(&log, &(Versionstamp::incomplete(0), "entry")),
            &le(i),
        );
        if i == 2 {
            // A second key in the same commit: same transaction version, user version 1.
            txn.set_versionstamped_key(
                &crate::keys::versionstamped(&log, &(Versionstamp::incomplete(1), "entry")),
                &le(100),
            );
        }
        let info = ok(txn.commit().await, "commit");
        match info.version {
            Some(v) => versions.push(v),
            None => panic!("a commit with writes must report its version"),
        }
    }
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "commit versions grow: {versions:?}"
    );
    let (b, e) = log.range();
    let entries = fetch_range(db, &b, &e).await;
    let values: Vec<i64> = entries
        .iter()
        .map(|kv| as_i64(Some(kv.value.clone())))
        .collect();
    assert_eq!(
        values,
        vec![0, 1, 2, 100, 3, 4],
        "keys sort in commit order"
    );
    let mut stamps = Vec::new();
    for kv in &entries {
        let (stamp, tag) = unpack::<(Versionstamp, String)>(&log, &kv.key);
        assert_eq!(tag, "entry");
        assert!(
            stamp.is_complete(),
            "the placeholder was replaced: {stamp:?}"
        );
        stamps.push(stamp);
    }
    for (i, version) in [
        (0usize, versions[0]),
        (1, versions[1]),
        (2, versions[2]),
        (3, versions[2]),
        (4, versions[3]),
        (5, versions[4]),
    ] {
        assert_eq!(
            stamps[i].transaction_version()[..8],
            version.to_be_bytes(),
            "entry {i}: the versionstamp starts with its commit version"
        );
    }
    assert_eq!(
        stamps[2].transaction_version(),
        stamps[3].transaction_version()
    );
    assert_eq!((stamps[2].user_version(), stamps[3].user_version()), (0, 1));
}

// ----------------------------------------------------------------------------------------
// Watches
// ----------------------------------------------------------------------------------------

/// A watch does not fire on commits to other keys, and fires after a commit changes its key.
pub async fn watch_fires_only_after_its_key_changes(db: &Db) {
    let s = space("watch_change");
    let (k, other) = (s.pack(&("k",)), s.pack(&("other",)));
    put(db, &k, b"v0").await;
    let mut watch = watch_key(db, &k).await;
    put(db, &other, b"x").await;
    still_pending(&mut watch, "after a commit to another key").await;
    put(db, &k, b"v1").await;
    must_fire(watch, "after its key changed").await;
}

/// A watch fires when its key is cleared, by `clear` or by `clear_range`; a watch on an
/// absent key fires when the key is created.
pub async fn watch_fires_when_its_key_is_cleared(db: &Db) {
    let s = space("watch_clear");
    let (a, b, absent) = (s.pack(&("a",)), s.pack(&("b",)), s.pack(&("absent",)));
    put(db, &a, b"1").await;
    put(db, &b, b"1").await;
    let wa = watch_key(db, &a).await;
    let wb = watch_key(db, &b).await;
    let mut wabsent = watch_key(db, &absent).await;
    let mut txn = begin(db).await;
    txn.clear(&a);
    ok(txn.commit().await, "clear");
    must_fire(wa, "after clear").await;
    let mut txn = begin(db).await;
    txn.clear_range(&s.pack(&("b",)), &s.pack(&("c",)));
    ok(txn.commit().await, "clear_range");
    must_fire(wb, "after clear_range").await;
    still_pending(&mut wabsent, "absent key untouched").await;
    put(db, &absent, b"now").await;
    must_fire(wabsent, "after the absent key was created").await;
}

/// A watch created by a transaction that writes its key does not fire for that write, only
/// for a later change.
pub async fn watch_ignores_its_own_transactions_write(db: &Db) {
    let s = space("watch_own");
    let k = s.pack(&("k",));
    put(db, &k, b"v0").await;
    let mut txn = begin(db).await;
    txn.set(&k, b"mine");
    let mut watch = txn.watch(&k);
    ok(txn.commit().await, "commit with watch");
    still_pending(&mut watch, "after its own transaction's write").await;
    put(db, &k, b"theirs").await;
    must_fire(watch, "after a later change").await;
}

/// A watch created on a snapshot older than the key's latest change fires right away.
pub async fn watch_on_stale_snapshot_fires_immediately(db: &Db) {
    let s = space("watch_stale");
    let k = s.pack(&("k",));
    put(db, &k, b"v0").await;
    let mut stale = begin(db).await;
    assert_eq!(ok(stale.get(&k).await, "read").as_deref(), Some(&b"v0"[..]));
    put(db, &k, b"v1").await;
    let watch = stale.watch(&k);
    ok(stale.commit().await, "commit the stale reader");
    must_fire(watch, "on a stale snapshot").await;
}

// ----------------------------------------------------------------------------------------
// Limits, versions, retry loop
// ----------------------------------------------------------------------------------------

/// Oversized keys, values and transactions fail at commit with the right error and write
/// nothing; keys and values exactly at the limits are accepted.
pub async fn size_limits_fail_at_commit_and_write_nothing(db: &Db) {
    let s = space("limits");
    let marker = s.pack(&("marker",));

    let mut txn = begin(db).await;
    txn.set(&marker, b"1");
    txn.set(&vec![b'k'; MAX_KEY_BYTES + 1], b"v");
    assert_eq!(
        txn.commit().await,
        Err(StoreError::KeyTooLarge {
            len: MAX_KEY_BYTES + 1
        })
    );
    assert_eq!(
        fetch(db, &marker).await,
        None,
        "a refused commit writes nothing"
    );

    let mut txn = begin(db).await;
    txn.set(&marker, b"1");
    txn.set(&s.pack(&("big",)), &vec![0u8; MAX_VALUE_BYTES + 1]);
    assert_eq!(
        txn.commit().await,
        Err(StoreError::ValueTooLarge {
            len: MAX_VALUE_BYTES + 1
        })
    );
    assert_eq!(
        fetch(db, &marker).await,
        None,
        "a refused commit writes nothing"
    );

    let mut txn = begin(db).await;
    txn.set(&marker, b"1");
    let chunk = vec![0u8; MAX_VALUE_BYTES];
    for i in 0..(MAX_TXN_BYTES / MAX_VALUE_BYTES + 1) as i64 {
        txn.set(&s.pack(&("chunk", i)), &chunk);
    }
    match txn.commit().await {
        Err(StoreError::TransactionTooLarge { len }) => assert!(len > MAX_TXN_BYTES),
        other => panic!("expected TransactionTooLarge, got {other:?}"),
    }
    assert_eq!(
        fetch(db, &marker).await,
        None,
        "a refused commit writes nothing"
    );
    let (b, e) = s.range();
    assert!(fetch_range(db, &b, &e).await.is_empty());

    // Exactly at the limits is fine. The key must still fall in this check's subspace.
    let mut long_key = s.pack(&("max",));
    long_key.resize(MAX_KEY_BYTES, b'k');
    let mut txn = begin(db).await;
    txn.set(&long_key, &vec![7u8; MAX_VALUE_BYTES]);
    ok(txn.commit().await, "key and value at the limits");
    assert_eq!(
        fetch(db, &long_key).await.map(|v| v.len()),
        Some(MAX_VALUE_BYTES)
    );
}

/// Commits with writes report growing versions; read-only commits report none.
pub async fn commit_versions_increase(db: &Db) {
    let s = space("versions");
    let mut last = 0u64;
    for i in 0..5i64 {
        let mut txn = begin(db).await;
        txn.set(&s.pack(&(i,)), b"");
        let info = ok(txn.commit().await, "commit");
        match info.version {
            Some(v) => {
                assert!(v > last, "version {v} after {last}");
                last = v;
            }
            None => panic!("a commit with writes must report its version"),
        }
    }
    let mut txn = begin(db).await;
    ok(txn.get(&s.pack(&(0i64,))).await, "read");
    assert_eq!(ok(txn.commit().await, "read-only commit").version, None);
}

/// `Db::run` returns a non-retryable error from the closure at once, without retrying.
pub async fn run_returns_non_retryable_errors_at_once(db: &Db) {
    let s = space("run_error");
    let k = s.pack(&("k",));
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let result = db
        .run(move |txn| {
            let (k, counter) = (k.clone(), counter.clone());
            Box::pin(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                txn.set(&k, b"never");
                Err::<(), _>(StoreError::Io("refused by the closure".into()))
            })
        })
        .await;
    assert_eq!(result, Err(StoreError::Io("refused by the closure".into())));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(fetch(db, &s.pack(&("k",))).await, None);
}

// ----------------------------------------------------------------------------------------
// Crash recovery helpers
// ----------------------------------------------------------------------------------------

/// The subspace [`commit_sequence`] writes to.
pub fn crash_subspace() -> Subspace {
    Subspace::all().subspace(&("conformance", "crash"))
}

/// The value [`commit_sequence`] stores for index `i`.
pub fn crash_value(i: u64) -> Vec<u8> {
    format!("committed-{i}").into_bytes()
}

/// Commits keys `0, 1, 2, …` of [`crash_subspace`], one per transaction, calling
/// `on_committed(i)` after each commit returns; stops when it returns `false`. Returns the
/// number of commits. Meant to run in a process that is then killed.
pub async fn commit_sequence(
    db: &Db,
    mut on_committed: impl FnMut(u64) -> bool,
) -> Result<u64, StoreError> {
    let space = crash_subspace();
    let mut i = 0u64;
    loop {
        let key = space.pack(&(i,));
        db.run(move |txn| {
            let key = key.clone();
            Box::pin(async move {
                txn.set(&key, &crash_value(i));
                Ok::<_, StoreError>(())
            })
        })
        .await?;
        i += 1;
        if !on_committed(i - 1) {
            return Ok(i);
        }
    }
}

/// Prefix of the line a crash child prints after each acknowledged commit.
pub const COMMITTED_PREFIX: &str = "COMMITTED ";
/// Acknowledged commits [`kill_9_child`] waits for before killing the child.
pub const COMMITS_BEFORE_KILL: usize = 200;

/// The child side of a kill -9 test: commits [`commit_sequence`] and prints
/// [`COMMITTED_PREFIX`] and the index after each commit returns, until killed (or until
/// its parent stops reading).
pub async fn print_commits_until_killed(db: &Db) -> Result<u64, StoreError> {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    commit_sequence(db, |i| {
        writeln!(stdout, "{COMMITTED_PREFIX}{i}")
            .and_then(|()| stdout.flush())
            .is_ok()
            && i < 10_000_000
    })
    .await
}

/// The parent side of a kill -9 test: runs the current test binary again as its ignored
/// test `child_test` with `env` set to `value` (telling the child which database to
/// write), reads the indices it acknowledges, kills it with SIGKILL after
/// [`COMMITS_BEFORE_KILL`] of them (no destructor, no flush, no clean shutdown) and
/// returns them for [`verify_sequence`]. Panics, with the child's stderr, if the child
/// stops early.
pub fn kill_9_child(child_test: &str, env: &str, value: &std::ffi::OsStr) -> Vec<u64> {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => panic!("cannot find the test binary: {err}"),
    };
    let mut child = match Command::new(exe)
        .args(["--exact", child_test, "--ignored", "--nocapture"])
        .env(env, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => panic!("cannot start the child writer: {err}"),
    };
    let mut committed: Vec<u64> = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(index) = line.strip_prefix(COMMITTED_PREFIX) {
                match index.trim().parse() {
                    Ok(i) => committed.push(i),
                    Err(err) => panic!("bad line from the child {line:?}: {err}"),
                }
                if committed.len() >= COMMITS_BEFORE_KILL {
                    break;
                }
            }
        }
    }
    if let Err(err) = child.kill() {
        panic!("cannot kill the child: {err}");
    }
    let status = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        committed.len() >= COMMITS_BEFORE_KILL,
        "the child stopped after {} commits ({status:?}); its stderr:\n{stderr}",
        committed.len()
    );
    committed
}

/// Asserts that every index in `committed` was stored by [`commit_sequence`] with its value.
pub async fn verify_sequence(db: &Db, committed: impl IntoIterator<Item = u64>) {
    let space = crash_subspace();
    let (b, e) = space.range();
    let stored: BTreeMap<u64, Vec<u8>> = fetch_range(db, &b, &e)
        .await
        .into_iter()
        .filter_map(|kv| {
            space
                .unpack::<(u64,)>(&kv.key)
                .ok()
                .map(|(i,)| (i, kv.value))
        })
        .collect();
    let mut checked = 0usize;
    for i in committed {
        assert_eq!(
            stored.get(&i),
            Some(&crash_value(i)),
            "index {i} was acknowledged as committed but is missing or wrong after reopening"
        );
        checked += 1;
    }
    assert!(checked > 0, "nothing was committed, so nothing was checked");
}

/// Generic crash-recovery check: commits `writes` keys one per transaction, hands the
/// database to `crash_and_reopen` (which must simulate a crash — or really cause one — and
/// return a handle on the reopened database), and asserts every committed write survived.
pub async fn committed_writes_survive_crash<F, Fut>(db: Db, writes: u64, crash_and_reopen: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Db>,
{
    let mut committed = Vec::new();
    ok(
        commit_sequence(&db, |i| {
            committed.push(i);
            i + 1 < writes
        })
        .await,
        "commit sequence",
    );
    let db = crash_and_reopen(db).await;
    verify_sequence(&db, committed).await;
}
