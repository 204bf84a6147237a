//! The embedded backend: the whole conformance suite (in both durability modes), plus what
//! only the embedded store can show — reopening, crash recovery with a real `kill -9`, file
//! locking, group commit — and an ignored throughput probe.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisor_store::conformance::{self, HANG_GUARD};
use supervisor_store::embedded::{Durability, EmbeddedOptions, EmbeddedStore, open_db};
use supervisor_store::keys::{Subspace, Versionstamp, versionstamped};
use supervisor_store::{Db, RangeOptions, StoreError};
use tempfile::TempDir;

#[track_caller]
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(err) => panic!("{what}: {err}"),
    }
}

fn temp_dir() -> TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => panic!("cannot create a temporary directory: {err}"),
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("store.redb")
}

async fn fresh_db_with(durability: Durability) -> (Db, TempDir) {
    let dir = temp_dir();
    let opts = EmbeddedOptions {
        durability,
        ..EmbeddedOptions::default()
    };
    let db = ok(open_db(&db_path(&dir), opts), "open a fresh database");
    (db, dir)
}

async fn fresh_db() -> (Db, TempDir) {
    fresh_db_with(Durability::Immediate).await
}

async fn fresh_relaxed_db() -> (Db, TempDir) {
    fresh_db_with(Durability::Relaxed).await
}

mod conformance_immediate {
    supervisor_store::conformance_tests!(super::fresh_db());
}

mod conformance_relaxed {
    supervisor_store::conformance_tests!(super::fresh_relaxed_db());
}

fn open_store(path: &Path, opts: EmbeddedOptions) -> (Arc<EmbeddedStore>, Db) {
    let store = ok(EmbeddedStore::open(path, opts), "open store");
    let db = Db::new(store.clone());
    (store, db)
}

async fn put(db: &Db, key: &[u8], value: &[u8]) -> Option<u64> {
    let mut txn = ok(db.begin().await, "begin");
    txn.set(key, value);
    ok(txn.commit().await, "commit").version
}

async fn fetch(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
    let mut txn = ok(db.begin().await, "begin");
    ok(txn.get(key).await, "get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopen_preserves_data() {
    let dir = temp_dir();
    let path = db_path(&dir);
    let s = Subspace::all().subspace(&("reopen",));
    {
        let db = ok(open_db(&path, EmbeddedOptions::default()), "open");
        let mut txn = ok(db.begin().await, "begin");
        for i in 0..100i64 {
            txn.set(&s.pack(&(i,)), &i.to_le_bytes());
        }
        ok(txn.commit().await, "commit");
        let mut txn = ok(db.begin().await, "begin");
        txn.clear_range(&s.pack(&(10i64,)), &s.pack(&(20i64,)));
        txn.atomic_add(&s.pack(&("counter",)), 42);
        ok(txn.commit().await, "commit");
    }
    let db = ok(open_db(&path, EmbeddedOptions::default()), "reopen");
    let (b, e) = s.range();
    let mut txn = ok(db.begin().await, "begin");
    let all = ok(txn.get_range(&b, &e, RangeOptions::new()).await, "range");
    assert_eq!(all.len(), 91, "90 integers and the counter");
    assert_eq!(
        ok(txn.get(&s.pack(&("counter",))).await, "counter"),
        Some(42i64.to_le_bytes().to_vec())
    );
    assert_eq!(ok(txn.get(&s.pack(&(15i64,))).await, "cleared"), None);
    assert_eq!(
        ok(txn.get(&s.pack(&(99i64,))).await, "last"),
        Some(99i64.to_le_bytes().to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versionstamps_stay_monotonic_across_reopen() {
    let dir = temp_dir();
    let path = db_path(&dir);
    let log = Subspace::all().subspace(&("log",));
    let write_entry = |db: Db, n: i64| {
        let key = versionstamped(&log, &(Versionstamp::incomplete(0),));
        async move {
            let mut txn = ok(db.begin().await, "begin");
            txn.set_versionstamped_key(&key, &n.to_le_bytes());
            ok(txn.commit().await, "commit").version
        }
    };
    let mut versions = Vec::new();
    for round in 0..3i64 {
        let db = ok(open_db(&path, EmbeddedOptions::default()), "open");
        for n in 0..3 {
            versions.push(write_entry(db.clone(), round * 3 + n).await);
        }
    }
    let versions: Vec<u64> = versions.into_iter().flatten().collect();
    assert_eq!(versions.len(), 9);
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions grow across reopens: {versions:?}"
    );
    let db = ok(open_db(&path, EmbeddedOptions::default()), "open");
    let (b, e) = log.range();
    let mut txn = ok(db.begin().await, "begin");
    let entries = ok(txn.get_range(&b, &e, RangeOptions::new()).await, "range");
    let order: Vec<i64> = entries
        .iter()
        .map(|kv| {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(&kv.value);
            i64::from_le_bytes(buf)
        })
        .collect();
    assert_eq!(
        order,
        (0..9).collect::<Vec<_>>(),
        "log order is commit order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_open_reports_the_directory_in_use() {
    let dir = temp_dir();
    let path = db_path(&dir);
    let first = ok(open_db(&path, EmbeddedOptions::default()), "first open");
    match open_db(&path, EmbeddedOptions::default()) {
        Err(StoreError::Io(msg)) => assert!(
            msg.contains("in use by another Supervisor process"),
            "unclear message: {msg}"
        ),
        other => panic!("a second open must fail clearly, got {other:?}"),
    }
    drop(first);
    // Once the first handle is gone the file can be opened again.
    let again = ok(
        open_db(&path, EmbeddedOptions::default()),
        "reopen after close",
    );
    put(&again, b"k", b"v").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incompatible_or_foreign_file_is_refused_clearly() {
    let dir = temp_dir();
    let path = db_path(&dir);
    drop(ok(open_db(&path, EmbeddedOptions::default()), "create"));
    {
        let raw = match redb::Database::create(&path) {
            Ok(db) => db,
            Err(err) => panic!("raw open: {err}"),
        };
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("supervisor_meta");
        let write = || -> Result<(), redb::Error> {
            let txn = raw.begin_write()?;
            txn.open_table(meta)?.insert("format_version", 99)?;
            txn.commit()?;
            Ok(())
        };
        if let Err(err) = write() {
            panic!("raw write: {err}");
        }
    }
    match open_db(&path, EmbeddedOptions::default()) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("format 99"), "{msg}"),
        other => panic!("an incompatible format must be refused, got {other:?}"),
    }

    let foreign = dir.path().join("foreign.redb");
    if let Err(err) = std::fs::write(&foreign, vec![0x42u8; 64 * 1024]) {
        panic!("write foreign file: {err}");
    }
    match open_db(&foreign, EmbeddedOptions::default()) {
        Err(StoreError::Io(msg) | StoreError::Corrupt(msg)) => {
            assert!(
                msg.contains("foreign.redb"),
                "the message names the file: {msg}"
            )
        }
        other => panic!("a foreign file must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_applies_queued_commits_in_one_batch() {
    let dir = temp_dir();
    let (store, db) = open_store(&db_path(&dir), EmbeddedOptions::default());
    const TXNS: u64 = 200;
    let before = store.stats();
    let pause = store.pause_commits();
    let mut tasks = Vec::new();
    for i in 0..TXNS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            put(&db, format!("group-{i}").as_bytes(), b"x").await
        }));
    }
    // Wait (without asserting on time) until every commit is queued behind the pause.
    let started = Instant::now();
    while store.stats().submitted < before.submitted + TXNS {
        assert!(started.elapsed() < HANG_GUARD, "commits never got queued");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(pause);
    let mut versions = Vec::new();
    for task in tasks {
        match task.await {
            Ok(v) => versions.push(v),
            Err(err) => panic!("commit task panicked: {err}"),
        }
    }
    let after = store.stats();
    assert_eq!(after.committed - before.committed, TXNS);
    let batches = after.batches - before.batches;
    let fsyncs = after.durable_commits - before.durable_commits;
    assert!(batches <= 2, "{TXNS} queued commits took {batches} batches");
    assert!(fsyncs <= 2, "{TXNS} queued commits took {fsyncs} fsyncs");
    assert!(versions.iter().all(Option::is_some));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_the_store_while_commits_are_paused_finishes_them() {
    let dir = temp_dir();
    let (store, db) = open_store(&db_path(&dir), EmbeddedOptions::default());
    let pause = store.pause_commits();
    let before = store.stats();
    // The transaction, unlike a `Db`, does not keep the store open.
    let mut txn = ok(db.begin().await, "begin");
    txn.set(b"queued", b"v");
    let queued = tokio::spawn(async move { ok(txn.commit().await, "queued commit").version });
    let started = Instant::now();
    while store.stats().submitted == before.submitted {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the commit never got queued"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The last handle goes while the pause is still held: closing must not wait for it.
    drop(store);
    drop(db);
    match queued.await {
        Ok(version) => assert!(version.is_some(), "the queued commit was applied"),
        Err(err) => panic!("commit task panicked: {err}"),
    }
    drop(pause);
    let db = ok(
        open_db(&db_path(&dir), EmbeddedOptions::default()),
        "reopen",
    );
    assert_eq!(fetch(&db, b"queued").await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_count_conflicts_and_skip_read_only_commits() {
    let dir = temp_dir();
    let (store, db) = open_store(&db_path(&dir), EmbeddedOptions::default());
    put(&db, b"k", b"0").await;
    let before = store.stats();
    let mut reader = ok(db.begin().await, "begin");
    ok(reader.get(b"k").await, "get");
    assert_eq!(ok(reader.commit().await, "read-only").version, None);
    assert_eq!(
        store.stats().submitted,
        before.submitted,
        "a read-only commit never reaches the writer"
    );
    let mut a = ok(db.begin().await, "begin");
    ok(a.get(b"k").await, "get");
    put(&db, b"k", b"1").await;
    a.set(b"k", b"2");
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
    let after = store.stats();
    assert_eq!(after.conflicts - before.conflicts, 1);
    assert_eq!(after.committed - before.committed, 1);
    assert!(after.version > before.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_of_a_conflicting_transaction_fails_with_the_conflict() {
    let (db, _dir) = fresh_db().await;
    let mut a = ok(db.begin().await, "begin");
    ok(a.get(b"k").await, "get");
    let watch = a.watch(b"w");
    put(&db, b"k", b"theirs").await;
    a.set(b"k", b"mine");
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
    match tokio::time::timeout(HANG_GUARD, watch).await {
        Ok(result) => assert_eq!(result, Err(StoreError::Conflict)),
        Err(_) => panic!("the watch never resolved"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_the_store_resolves_active_watches_with_closed() {
    let (db, _dir) = fresh_db().await;
    let mut txn = ok(db.begin().await, "begin");
    let watch = txn.watch(b"k");
    ok(txn.commit().await, "activate");
    drop(db);
    match tokio::time::timeout(HANG_GUARD, watch).await {
        Ok(result) => assert_eq!(result, Err(StoreError::Closed)),
        Err(_) => panic!("the watch never resolved"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relaxed_commits_survive_a_clean_shutdown() {
    let dir = temp_dir();
    let path = db_path(&dir);
    let relaxed = EmbeddedOptions {
        durability: Durability::Relaxed,
        ..EmbeddedOptions::default()
    };
    {
        let (store, db) = open_store(&path, relaxed);
        for i in 0..20u32 {
            put(&db, &i.to_be_bytes(), b"v").await;
        }
        assert!(store.stats().batches >= 1);
    }
    let db = ok(open_db(&path, EmbeddedOptions::default()), "reopen");
    for i in 0..20u32 {
        assert_eq!(
            fetch(&db, &i.to_be_bytes()).await.as_deref(),
            Some(&b"v"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generic_crash_helper_with_a_clean_reopen() {
    let dir = temp_dir();
    let path = db_path(&dir);
    let db = ok(open_db(&path, EmbeddedOptions::default()), "open");
    let reopen_path = path.clone();
    conformance::committed_writes_survive_crash(db, 30, |db| async move {
        drop(db);
        ok(open_db(&reopen_path, EmbeddedOptions::default()), "reopen")
    })
    .await;
}

// ----------------------------------------------------------------------------------------
// Crash recovery with a real kill -9
// ----------------------------------------------------------------------------------------

/// Names the database the child writer process commits to.
const CRASH_CHILD_DB: &str = "SUPERVISOR_STORE_CRASH_CHILD_DB";
/// Runs this test binary again as a child that commits keys one per transaction and prints
/// each index once its commit returned; kills it with SIGKILL after 200 of them; reopens
/// the database and checks that every acknowledged commit is there.
#[test]
fn acknowledged_commits_survive_kill_9() {
    let dir = temp_dir();
    let path = db_path(&dir);
    let committed =
        conformance::kill_9_child("crash_child_writer", CRASH_CHILD_DB, path.as_os_str());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("cannot build a runtime: {err}"),
    };
    runtime.block_on(async {
        let db = ok(
            open_db(&path, EmbeddedOptions::default()),
            "reopen after kill -9",
        );
        conformance::verify_sequence(&db, committed.iter().copied()).await;
        // The reopened store keeps working.
        put(&db, b"after-crash", b"ok").await;
        assert_eq!(
            fetch(&db, b"after-crash").await.as_deref(),
            Some(&b"ok"[..])
        );
    });
}

/// The child of [`acknowledged_commits_survive_kill_9`]. Run directly (for example with
/// `--include-ignored`), it commits 50 keys to a temporary database and checks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_commits_survive_kill_9"]
async fn crash_child_writer() {
    let Some(path) = std::env::var_os(CRASH_CHILD_DB) else {
        let (db, _dir) = fresh_db().await;
        let mut committed = Vec::new();
        ok(
            conformance::commit_sequence(&db, |i| {
                committed.push(i);
                i + 1 < 50
            })
            .await,
            "commit sequence",
        );
        conformance::verify_sequence(&db, committed).await;
        return;
    };
    let db = ok(
        open_db(Path::new(&path), EmbeddedOptions::default()),
        "child open",
    );
    // Runs until killed (or until the parent stops reading).
    let result = conformance::print_commits_until_killed(&db).await;
    ok(result, "child commit loop");
}

// ----------------------------------------------------------------------------------------
// Throughput probe
// ----------------------------------------------------------------------------------------

/// Prints commits per second for 64 concurrent tasks committing one key per transaction,
/// and for one task committing sequentially. Not a pass/fail test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "throughput probe: cargo test --release -p supervisor-store --test embedded -- --ignored throughput_probe --nocapture"]
async fn throughput_probe() {
    for durability in [Durability::Immediate, Durability::Relaxed] {
        let dir = temp_dir();
        let opts = EmbeddedOptions {
            durability,
            ..EmbeddedOptions::default()
        };
        let (store, db) = open_store(&db_path(&dir), opts);

        const TASKS: u64 = 64;
        const PER_TASK: u64 = 200;
        let before = store.stats();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let key = format!("c-{t}-{i}").into_bytes();
                    let result = db
                        .run(move |txn| {
                            let key = key.clone();
                            Box::pin(async move {
                                txn.set(&key, b"value");
                                Ok::<_, StoreError>(())
                            })
                        })
                        .await;
                    ok(result, "concurrent commit");
                }
            }));
        }
        for task in tasks {
            if let Err(err) = task.await {
                panic!("probe task panicked: {err}");
            }
        }
        let elapsed = started.elapsed();
        let after = store.stats();
        let n = TASKS * PER_TASK;
        println!(
            "{durability:?}: 64 concurrent tasks: {n} commits in {elapsed:?} = {:.0} commits/s, \
             {} batches ({:.1} txns/batch), {} fsyncs",
            n as f64 / elapsed.as_secs_f64(),
            after.batches - before.batches,
            n as f64 / (after.batches - before.batches).max(1) as f64,
            after.durable_commits - before.durable_commits,
        );

        const SEQUENTIAL: u64 = 2000;
        let before = store.stats();
        let started = Instant::now();
        for i in 0..SEQUENTIAL {
            put(&db, format!("s-{i}").as_bytes(), b"value").await;
        }
        let elapsed = started.elapsed();
        let after = store.stats();
        println!(
            "{durability:?}: sequential: {SEQUENTIAL} commits in {elapsed:?} = {:.0} commits/s, \
             {} fsyncs",
            SEQUENTIAL as f64 / elapsed.as_secs_f64(),
            after.durable_commits - before.durable_commits,
        );
    }
}

#[tokio::test]
async fn relaxed_transactions_wait_for_no_fsync_and_durable_ones_do() {
    let dir = temp_dir();
    let (store, db) = open_store(&db_path(&dir), EmbeddedOptions::default());
    put(&db, b"first", b"v").await;
    let before = store.stats();
    const RELAXED: u64 = 50;
    for i in 0..RELAXED {
        let mut txn = ok(db.begin().await, "begin");
        txn.relax_durability();
        txn.set(format!("relaxed-{i}").as_bytes(), b"v");
        ok(txn.commit().await, "relaxed commit");
    }
    let relaxed = store.stats();
    put(&db, b"last", b"v").await;
    let after = store.stats();
    // Relaxed batches are flushed at most every 100 ms, so 50 quick ones share a few.
    assert!(
        relaxed.durable_commits - before.durable_commits < RELAXED,
        "every relaxed commit was fsynced: {before:?} -> {relaxed:?}"
    );
    assert!(
        after.durable_commits > relaxed.durable_commits,
        "a durable commit must fsync: {relaxed:?} -> {after:?}"
    );
    for i in 0..RELAXED {
        let key = format!("relaxed-{i}");
        assert_eq!(
            fetch(&db, key.as_bytes()).await.as_deref(),
            Some(&b"v"[..]),
            "{key}"
        );
    }
}

#[tokio::test]
async fn conflict_history_follows_live_readers_not_the_write_rate() {
    let dir = temp_dir();
    let (store, db) = open_store(&db_path(&dir), EmbeddedOptions::default());
    // A long-lived reader pins the history above its snapshot.
    let mut pinned = ok(db.begin().await, "begin");
    ok(pinned.get(b"k0").await, "read");
    for i in 0..200u32 {
        put(&db, format!("k{i}").as_bytes(), b"v").await;
    }
    assert!(store.stats().history_keys >= 199, "{:?}", store.stats());
    // Its conflict is still detected: history it needs was kept.
    pinned.set(b"k0", b"mine");
    assert_eq!(pinned.commit().await, Err(StoreError::Conflict));
    // With no reader left, the next batch forgets everything older.
    put(&db, b"after", b"v").await;
    assert!(store.stats().history_keys <= 1, "{:?}", store.stats());
}

/// Writes `n` keys `prefix/i` with 1 KB values, `per_txn` per transaction.
async fn fill(db: &Db, prefix: &str, n: usize, per_txn: usize) {
    for start in (0..n).step_by(per_txn) {
        let mut txn = ok(db.begin().await, "begin");
        for i in start..(start + per_txn).min(n) {
            txn.set(format!("{prefix}/{i:08}").as_bytes(), &[7u8; 1024]);
        }
        ok(txn.commit().await, "commit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_is_one_snapshot_and_restores_as_a_store() {
    let dir = temp_dir();
    let path = dir.path().join("live.redb");
    let store = ok(
        EmbeddedStore::open(&path, EmbeddedOptions::default()),
        "open",
    );
    let db = Db::new(store.clone());
    fill(&db, "before", 2000, 200).await;
    // Commits go on while the backup copies.
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            for round in 0..50 {
                fill(&db, &format!("during{round:02}"), 100, 100).await;
            }
        })
    };
    let to = dir.path().join("backup.redb");
    let backup = {
        let (store, to) = (store.clone(), to.clone());
        ok(
            tokio::task::spawn_blocking(move || store.backup_to(&to))
                .await
                .expect("join"),
            "backup",
        )
    };
    writer.await.expect("writer");
    // Never over an existing file.
    let again = store.backup_to(&to);
    assert!(matches!(again, Err(StoreError::Io(ref m)) if m.contains("never overwrites")));
    let live_version = store.stats().version;
    assert!(backup.version <= live_version);
    assert!(backup.keys >= 2000);
    drop(db);
    drop(store);

    // The copy opens only once accepted, and holds exactly the snapshot: every key
    // before, and of the commits during, whole transactions only.
    let restored = dir.path().join("restored.redb");
    std::fs::copy(&to, &restored).expect("copy");
    assert_eq!(
        ok(
            supervisor_store::embedded::accept_backup(&restored),
            "accept"
        ),
        backup.version
    );
    let db = ok(
        open_db(&restored, EmbeddedOptions::default()),
        "open restored",
    );
    let mut txn = ok(db.begin().await, "begin");
    let all = ok(
        txn.get_range(b"", &[0xff], RangeOptions::new()).await,
        "range",
    );
    assert_eq!(all.len() as u64, backup.keys);
    let before = all
        .iter()
        .filter(|kv| kv.key.starts_with(b"before/"))
        .count();
    assert_eq!(before, 2000);
    let during = all.len() - before;
    assert_eq!(
        during % 100,
        0,
        "a transaction is in the copy whole or not at all"
    );
    // A second accept refuses: the file is a store now, not a finished backup.
    drop(txn);
    drop(db);
    let refused = supervisor_store::embedded::accept_backup(&restored);
    assert!(
        matches!(refused, Err(StoreError::Corrupt(ref m)) if m.contains("not a finished backup"))
    );
}

#[tokio::test]
async fn space_is_reported_and_compaction_gives_freed_pages_back() {
    let dir = temp_dir();
    let path = dir.path().join("space.redb");
    let store = ok(
        EmbeddedStore::open(&path, EmbeddedOptions::default()),
        "open",
    );
    let db = Db::new(store.clone());
    fill(&db, "bulk", 20_000, 1000).await;
    let full = ok(store.space(), "space");
    assert!(full.stored_bytes >= 20_000 * 1024, "{full:?}");
    assert!(full.file_bytes >= full.allocated_bytes, "{full:?}");
    let mut txn = ok(db.begin().await, "begin");
    txn.clear_range(b"bulk/", b"bulk0");
    ok(txn.commit().await, "clear");
    fill(&db, "small", 10, 10).await;
    let emptied = ok(store.space(), "space");
    assert!(
        emptied.stored_bytes < full.stored_bytes / 100,
        "{emptied:?}"
    );
    assert!(
        emptied.free_bytes() > full.free_bytes(),
        "{full:?} then {emptied:?}"
    );
    // Compaction refuses an open file, and shrinks a closed one.
    assert!(supervisor_store::embedded::compact(&path).is_err());
    drop(db);
    drop(store);
    let done = ok(supervisor_store::embedded::compact(&path), "compact");
    assert!(
        done.after_bytes < done.before_bytes / 4,
        "{done:?}: the freed 20 MB went back to the file system"
    );
    let db = ok(open_db(&path, EmbeddedOptions::default()), "reopen");
    let mut txn = ok(db.begin().await, "begin");
    let left = ok(
        txn.get_range(b"small/", b"small0", RangeOptions::new())
            .await,
        "read",
    );
    assert_eq!(left.len(), 10);
}
