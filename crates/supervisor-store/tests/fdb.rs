//! The FoundationDB backend: the whole conformance suite, plus what only this backend can
//! show — opening errors (a missing cluster file, a cluster that does not answer), several
//! database handles on one cluster (conflicts and watches between them), watches outliving
//! the transaction timeout, the reserved system keyspace, and crash recovery with a real
//! `kill -9` of a client.
//!
//! The tests need a running FoundationDB cluster and the client library (`libfdb_c`), so
//! they are compiled only with `--features fdb` and run where FoundationDB is installed:
//!
//! ```text
//! FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster \
//!     cargo test -p supervisor-store --features fdb --test fdb
//! ```
//!
//! Without `FDB_CLUSTER_FILE` every test that needs the cluster fails, saying so. They write
//! only under the tuple prefixes `("conformance", …)` and `("fdb-tests", …)`: each
//! conformance check works under a random subspace of its own, and each test here clears
//! its own prefix (named after the test) before it starts. Use a scratch cluster anyway.

#![cfg(feature = "fdb")]

use std::path::PathBuf;
use std::time::Duration;

use supervisor_store::conformance::once::{closed_port, fetch, put, watch};
use supervisor_store::conformance::{self, HANG_GUARD, must_fire, ok, still_pending};
use supervisor_store::fdb::{FdbOptions, FdbStore, open_db, open_url};
use supervisor_store::keys::Subspace;
use supervisor_store::{Db, RangeOptions, StoreError};

/// The cluster file named by `FDB_CLUSTER_FILE`; fails the test when it is not set.
fn cluster_file() -> PathBuf {
    match std::env::var_os("FDB_CLUSTER_FILE") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "the FoundationDB tests need a running FoundationDB cluster: set FDB_CLUSTER_FILE \
             to its cluster file (for example FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster); \
             see docs/foundationdb.md"
        ),
    }
}

async fn open(opts: FdbOptions) -> Db {
    let file = cluster_file();
    ok(
        open_db(Some(&file), opts).await,
        &format!("open the cluster of {}", file.display()),
    )
}

async fn fresh_db() -> Db {
    open(FdbOptions::default()).await
}

/// This test's own key prefix, cleared before it is handed out.
async fn test_space(db: &Db, test: &str) -> Subspace {
    let space = Subspace::all().subspace(&("fdb-tests", test));
    clear_space(db, &space).await;
    space
}

async fn clear_space(db: &Db, space: &Subspace) {
    let (begin, end) = space.range();
    ok(
        db.run(move |txn| {
            let (begin, end) = (begin.clone(), end.clone());
            Box::pin(async move {
                txn.clear_range(&begin, &end);
                Ok::<_, StoreError>(())
            })
        })
        .await,
        "clear the test's prefix",
    );
}

mod conformance_suite {
    supervisor_store::conformance_tests!(crate::fresh_db());
}

// ----------------------------------------------------------------------------------------
// Opening
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cluster_file_is_a_clear_error() {
    let dir = ok(
        tempfile::tempdir().map_err(|e| StoreError::Io(e.to_string())),
        "temp dir",
    );
    let missing = dir.path().join("no.cluster");
    match open_db(Some(&missing), FdbOptions::default()).await {
        Err(StoreError::Io(message)) => {
            let expected = format!(
                "no FoundationDB cluster reachable via {}: is fdbserver running? see \
                 docs/foundationdb.md",
                missing.display()
            );
            assert!(message.starts_with(&expected), "{message}");
        }
        other => panic!("a missing cluster file must fail clearly, got {other:?}"),
    }
    match open_url("postgres://localhost/x", FdbOptions::default()).await {
        Err(StoreError::Io(message)) => assert!(message.contains("fdb://"), "{message}"),
        other => panic!("a URL of another scheme must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_answer_is_unavailable_and_named() {
    let dir = ok(
        tempfile::tempdir().map_err(|e| StoreError::Io(e.to_string())),
        "temp dir",
    );
    let file = dir.path().join("fdb.cluster");
    let contents = format!("test:nobody@127.0.0.1:{}\n", closed_port());
    ok(
        std::fs::write(&file, contents).map_err(|e| StoreError::Io(e.to_string())),
        "write the cluster file",
    );
    let opts = FdbOptions {
        connect_timeout: Duration::from_secs(1),
        ..FdbOptions::default()
    };
    match open_db(Some(&file), opts).await {
        Err(StoreError::Unavailable(message)) => {
            let expected = format!(
                "no FoundationDB cluster reachable via {}: is fdbserver running? see \
                 docs/foundationdb.md",
                file.display()
            );
            assert!(message.starts_with(&expected), "{message}");
        }
        other => panic!("a cluster that does not answer must be unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_url_opens_the_named_cluster() {
    let file = ok(
        std::fs::canonicalize(cluster_file()).map_err(|e| StoreError::Io(e.to_string())),
        "resolve FDB_CLUSTER_FILE",
    );
    let url = format!("fdb://{}", file.display());
    let db = ok(open_url(&url, FdbOptions::default()).await, "open by URL");
    assert_eq!(db.backend_name(), "foundationdb");
    let store = ok(
        FdbStore::open(Some(&file), FdbOptions::default()).await,
        "open the store",
    );
    assert_eq!(store.cluster_file(), file.display().to_string());
    let space = test_space(&db, "url").await;
    let k = space.pack(&("k",));
    put(&db, &k, b"v").await;
    assert_eq!(fetch(&Db::new(store), &k).await.as_deref(), Some(&b"v"[..]));
}

// ----------------------------------------------------------------------------------------
// Several handles on one cluster
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_detected_between_handles() {
    let db1 = fresh_db().await;
    let db2 = fresh_db().await;
    let space = test_space(&db1, "conflicts_between_handles").await;
    let (k, out) = (space.pack(&("k",)), space.pack(&("out",)));
    put(&db1, &k, b"0").await;
    let mut a = ok(db1.begin().await, "begin");
    ok(a.get(&k).await, "read");
    put(&db2, &k, b"1").await;
    a.set(&out, b"a");
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
    assert_eq!(fetch(&db1, &out).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_fire_on_commits_from_another_handle() {
    let db1 = fresh_db().await;
    let db2 = fresh_db().await;
    let space = test_space(&db1, "watches_between_handles").await;
    let (k, other) = (space.pack(&("k",)), space.pack(&("other",)));
    put(&db1, &k, b"0").await;
    let mut w = watch(&db1, &k).await;
    put(&db2, &other, b"x").await;
    still_pending(&mut w, "after another key changed").await;
    put(&db2, &k, b"1").await;
    must_fire(w, "after the other handle changed the key").await;
}

// ----------------------------------------------------------------------------------------
// Watches and transactions
// ----------------------------------------------------------------------------------------

/// The transaction timeout cancels transactions that take too long, but not the watches of
/// one that committed: a watch waits as long as it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_the_transaction_timeout() {
    let db = open(FdbOptions {
        transaction_timeout: Some(Duration::from_millis(500)),
        ..FdbOptions::default()
    })
    .await;
    let space = test_space(&db, "watch_outlives_timeout").await;
    let k = space.pack(&("k",));
    put(&db, &k, b"0").await;
    let mut w = watch(&db, &k).await;
    // Well past the timeout of the transaction that created the watch.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    still_pending(&mut w, "after the transaction timeout elapsed").await;
    put(&db, &k, b"1").await;
    must_fire(w, "after the key changed").await;
}

/// A transaction that outlives the timeout fails with a retryable error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_retryable() {
    let db = open(FdbOptions {
        transaction_timeout: Some(Duration::from_millis(300)),
        ..FdbOptions::default()
    })
    .await;
    let space = test_space(&db, "transaction_timeout").await;
    let k = space.pack(&("k",));
    let mut txn = ok(db.begin().await, "begin");
    ok(txn.get(&k).await, "read within the timeout");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    txn.set(&k, b"late");
    match txn.commit().await {
        Err(err) => assert!(err.is_retryable(), "{err:?} must be retryable"),
        Ok(info) => panic!("a commit past the timeout must fail, got {info:?}"),
    }
    assert_eq!(fetch(&db, &k).await, None, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_a_conflicting_transaction_fails_with_the_conflict() {
    let db = fresh_db().await;
    let space = test_space(&db, "conflicting_watch").await;
    let (k, w_key) = (space.pack(&("k",)), space.pack(&("w",)));
    let mut a = ok(db.begin().await, "begin");
    ok(a.get(&k).await, "get");
    let w = a.watch(&w_key);
    put(&db, &k, b"theirs").await;
    a.set(&k, b"mine");
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
    match tokio::time::timeout(HANG_GUARD, w).await {
        Ok(result) => assert_eq!(result, Err(StoreError::Conflict)),
        Err(_) => panic!("the watch never resolved"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_a_dropped_transaction_never_fires() {
    let db = fresh_db().await;
    let space = test_space(&db, "dropped_watch").await;
    let k = space.pack(&("k",));
    let mut txn = ok(db.begin().await, "begin");
    let mut w = txn.watch(&k);
    drop(txn);
    put(&db, &k, b"changed").await;
    still_pending(
        &mut w,
        "after its transaction was dropped and the key changed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_a_commit_refused_for_its_size_never_fires() {
    // The shared layer refuses an oversized value before FoundationDB sees the commit: the
    // transaction is dropped uncommitted, so its watch never fires, as on every backend.
    let db = fresh_db().await;
    let space = test_space(&db, "refused_commit_watch").await;
    let k = space.pack(&("k",));
    let mut txn = ok(db.begin().await, "begin");
    let mut w = txn.watch(&k);
    txn.set(&k, &vec![0u8; supervisor_store::MAX_VALUE_BYTES + 1]);
    assert!(matches!(
        txn.commit().await,
        Err(StoreError::ValueTooLarge { .. })
    ));
    put(&db, &k, b"changed").await;
    still_pending(&mut w, "after a refused commit").await;
}

// ----------------------------------------------------------------------------------------
// The system keyspace
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_keys_fail_clearly_and_ranges_past_them_are_clamped() {
    let db = fresh_db().await;
    let space = test_space(&db, "system_keys").await;
    let marker = space.pack(&("marker",));

    let mut txn = ok(db.begin().await, "begin");
    txn.set(&marker, b"1");
    txn.set(b"\xff/supervisor-test", b"x");
    match txn.commit().await {
        Err(StoreError::Io(message)) => assert!(message.contains("0xff"), "{message}"),
        other => panic!("writing a system key must fail clearly, got {other:?}"),
    }
    assert_eq!(fetch(&db, &marker).await, None, "nothing was written");

    // A range whose end lies past the user keyspace reads like any other.
    put(&db, &marker, b"1").await;
    let mut txn = ok(db.begin().await, "begin");
    let read = ok(
        txn.get_range(space.bytes(), b"\xff\xff", RangeOptions::new().limit(1))
            .await,
        "read up to \\xff\\xff",
    );
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].key, marker);
    // Conflict ranges past it are clamped too.
    txn.add_read_conflict_range(&marker, b"\xff\xff");
    ok(txn.commit().await, "commit with a clamped conflict range");
}

// ----------------------------------------------------------------------------------------
// Crash recovery with a real kill -9 of a client
// ----------------------------------------------------------------------------------------

/// Names the cluster file the child writer process commits to.
const CRASH_CHILD_CLUSTER: &str = "SUPERVISOR_STORE_FDB_CRASH_CHILD_CLUSTER";

/// Runs this test binary again as a child that commits keys one per transaction and prints
/// each index once its commit returned; kills it with SIGKILL after 200 of them (likely
/// in the middle of a commit); then a fresh handle checks that every acknowledged commit is
/// there. The crash keys' prefix is cleared first, so no earlier run can satisfy the check.
#[test]
fn acknowledged_commits_survive_kill_9_of_a_client() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("cannot build a runtime: {err}"),
    };
    let file = cluster_file();
    runtime.block_on(async {
        let db = fresh_db().await;
        clear_space(&db, &conformance::crash_subspace()).await;
    });
    let committed =
        conformance::kill_9_child("crash_child_writer", CRASH_CHILD_CLUSTER, file.as_os_str());
    runtime.block_on(async {
        let db = fresh_db().await;
        conformance::verify_sequence(&db, committed.iter().copied()).await;
        clear_space(&db, &conformance::crash_subspace()).await;
    });
}

/// The child of [`acknowledged_commits_survive_kill_9_of_a_client`]; does nothing useful
/// when run directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_commits_survive_kill_9_of_a_client"]
async fn crash_child_writer() {
    let Some(file) = std::env::var_os(CRASH_CHILD_CLUSTER) else {
        panic!("{CRASH_CHILD_CLUSTER} is not set: this test is the child of another");
    };
    let db = ok(
        open_db(Some(std::path::Path::new(&file)), FdbOptions::default()).await,
        "child open",
    );
    // Runs until killed (or until the parent stops reading).
    let result = conformance::print_commits_until_killed(&db).await;
    ok(result, "child commit loop");
}
