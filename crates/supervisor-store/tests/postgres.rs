//! The PostgreSQL backend: the whole conformance suite, plus what only this backend can
//! show — connection and schema errors, several stores on one database (conflicts and
//! watches across processes), the watch listener's reconnection, the conflict window,
//! crash recovery with a real `kill -9` of a client — and an ignored throughput probe.
//!
//! The tests start one throwaway PostgreSQL server for the test binary, on a free loopback
//! port, from the server binaries of the machine (Debian: `apt-get install postgresql`;
//! set `SUPERVISOR_TEST_PG_BIN` to use others). Without them every test fails, saying how
//! to install them. PostgreSQL refuses to run as root, so as root the server runs as the
//! OS user `supervisor-test` (created if missing). It runs with `fsync=off`, for test speed
//! only: no test here crashes the server itself. Each test gets a database of its own. The
//! server stops, and its directory is removed, when the test process exits (however it
//! exits: a watchdog shell stops it when the process's end of a pipe closes).

#![cfg(feature = "postgres")]

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use supervisor_store::conformance::once::{closed_port, fetch, put, watch};
use supervisor_store::conformance::{self, HANG_GUARD, must_fire, ok, still_pending};
use supervisor_store::keys::Subspace;
use supervisor_store::postgres::{PostgresOptions, PostgresStore, open_db};
use supervisor_store::{Db, RangeOptions, StoreError};

// ----------------------------------------------------------------------------------------
// The throwaway server
// ----------------------------------------------------------------------------------------

/// The OS user the server runs as when the tests run as root.
const OS_USER: &str = "supervisor-test";
/// The database superuser's password (host connections use SCRAM, so URLs carry it).
const PASSWORD: &str = "supervisor-test-password";

/// Stops the server and removes its directory once its standard input closes, which
/// happens when the test process exits, however it exits.
const WATCHDOG: &str = r#"
bin="$1"; root="$2"; port="$3"
"$bin/postgres" -D "$root/data" -p "$port" -k "$root/sock" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 \
    >"$root/server.log" 2>&1 &
pid=$!
read -r _ignored || true
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$root"
"#;

struct TestServer {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    /// While this is open, the watchdog keeps the server running.
    _watchdog_stdin: Mutex<ChildStdin>,
    _watchdog: Mutex<Child>,
}

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::start)
}

/// The directory holding `initdb`, `postgres` and `pg_isready`.
fn find_server_binaries() -> PathBuf {
    let has_all = |dir: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("SUPERVISOR_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_all(&dir),
            "SUPERVISOR_TEST_PG_BIN={} does not hold initdb, postgres and pg_isready",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_all(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_all(dir))
    {
        return dir;
    }
    panic!(
        "the PostgreSQL tests need the PostgreSQL server binaries (initdb, postgres, \
         pg_isready), found neither under /usr/lib/postgresql/*/bin nor on PATH. Install \
         them (Debian/Ubuntu: `apt-get install postgresql`), or set SUPERVISOR_TEST_PG_BIN \
         to the directory holding them"
    );
}

/// As root: the uid and gid of [`OS_USER`], created if missing. Otherwise `None` (the
/// server runs as the current user).
fn server_owner() -> Option<(u32, u32)> {
    let running_as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !running_as_root {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, OS_USER]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let created = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                OS_USER,
            ])
            .output();
        if let Ok(out) = &created
            && !out.status.success()
            && id("-u").is_none()
        {
            panic!(
                "PostgreSQL refuses to run as root, and creating the OS user {OS_USER} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Err(err) = created {
            panic!("PostgreSQL refuses to run as root, and useradd cannot run: {err}");
        }
    }
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => panic!("cannot find the uid and gid of the OS user {OS_USER}"),
    }
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

impl TestServer {
    fn start() -> TestServer {
        let bin = find_server_binaries();
        let owner = server_owner();
        let root = match tempfile::Builder::new().prefix("supervisor-pg-").tempdir() {
            Ok(dir) => dir.keep(),
            Err(err) => panic!("cannot create the server's directory: {err}"),
        };
        let sock = root.join("sock");
        let pwfile = root.join("pwfile");
        let prepared = std::fs::create_dir(&sock)
            .and_then(|()| std::fs::write(&pwfile, PASSWORD))
            .and_then(|()| match owner {
                Some((uid, gid)) => std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                    .and_then(|()| std::os::unix::fs::chown(&sock, Some(uid), Some(gid))),
                None => Ok(()),
            });
        if let Err(err) = prepared {
            panic!("cannot prepare {}: {err}", root.display());
        }
        let initdb = as_owner(&mut Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(root.join("data"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&root)
            .env("LC_ALL", "C")
            .output();
        match initdb {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(err) => panic!("cannot run initdb: {err}"),
        }
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(err) => panic!("cannot find a free port: {err}"),
        };
        let mut watchdog = match as_owner(&mut Command::new("sh"), owner)
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&bin)
            .arg(&root)
            .arg(port.to_string())
            .current_dir(&root)
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(err) => panic!("cannot start the PostgreSQL server: {err}"),
        };
        let Some(stdin) = watchdog.stdin.take() else {
            panic!("the watchdog has no stdin");
        };
        let server = TestServer {
            bin,
            root,
            port,
            _watchdog_stdin: Mutex::new(stdin),
            _watchdog: Mutex::new(watchdog),
        };
        server.wait_until_ready();
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn wait_until_ready(&self) {
        let started = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            let log = self.log();
            // pg_isready's own probe during start-up is logged as FATAL too; only other
            // fatal lines mean the server failed.
            let failed = log
                .lines()
                .any(|l| l.contains("FATAL") && !l.contains("the database system is starting up"));
            if failed || started.elapsed() > Duration::from_secs(60) {
                panic!("the PostgreSQL test server did not start; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }
}

/// A superuser connection to `database`, for test set-up and inspection.
async fn admin(database: &str) -> tokio_postgres::Client {
    let (client, connection) =
        match tokio_postgres::connect(&server().url(database), tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(err) => panic!("admin connection to {database}: {err}"),
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn admin_execute(database: &str, sql: &str) {
    if let Err(err) = admin(database).await.batch_execute(sql).await {
        panic!("{sql}: {err}");
    }
}

/// A new, empty database (no schema); returns its name.
async fn fresh_database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    admin_execute("postgres", &format!("CREATE DATABASE {name}")).await;
    name
}

/// The URL of a new database with the schema.
async fn fresh_url() -> String {
    let url = server().url(&fresh_database().await);
    ok(PostgresStore::init(&url).await, "init");
    url
}

async fn fresh_db() -> Db {
    let url = server().url(&fresh_database().await);
    let opts = PostgresOptions {
        create_schema: true,
        ..PostgresOptions::default()
    };
    ok(open_db(&url, opts).await, "open a fresh database")
}

mod conformance_suite {
    supervisor_store::conformance_tests!(super::fresh_db());
}

// ----------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------

async fn connect(url: &str) -> (Arc<PostgresStore>, Db) {
    let store = ok(
        PostgresStore::connect(url, PostgresOptions::default()).await,
        "connect",
    );
    let db = Db::new(store.clone());
    (store, db)
}

// ----------------------------------------------------------------------------------------
// Connecting, schema
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_and_named_without_the_password() {
    let port = closed_port();
    let url = format!("postgres://supervisor:s3cret-do-not-print@127.0.0.1:{port}/supervisor");
    for result in [
        PostgresStore::connect(&url, PostgresOptions::default())
            .await
            .map(|_| ()),
        PostgresStore::init(&url).await,
    ] {
        match result {
            Err(err @ StoreError::Unavailable(_)) => {
                let msg = err.to_string();
                assert!(err.is_retryable());
                assert!(
                    msg.contains(&format!("127.0.0.1:{port}")),
                    "the message names the server: {msg}"
                );
                assert!(
                    !msg.contains("s3cret-do-not-print"),
                    "the message shows the password: {msg}"
                );
                assert!(
                    msg.contains("check that the server is running"),
                    "the message says what to check: {msg}"
                );
            }
            other => panic!("an unreachable server must be Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_database_fails_clearly() {
    let database = fresh_database().await;
    let port = server().port;
    let wrong = format!("postgres://postgres:wrong-password@127.0.0.1:{port}/{database}");
    match PostgresStore::init(&wrong).await {
        Err(StoreError::Io(msg)) => {
            assert!(msg.contains("refused the login"), "{msg}");
            assert!(!msg.contains("wrong-password"), "shows the password: {msg}");
        }
        other => panic!("a wrong password must fail clearly, got {other:?}"),
    }
    let missing = server().url("no_such_database");
    match PostgresStore::connect(&missing, PostgresOptions::default()).await {
        Err(StoreError::Io(msg)) => {
            assert!(msg.contains("does not exist"), "{msg}");
            assert!(!msg.contains(PASSWORD), "shows the password: {msg}");
        }
        other => panic!("a missing database must fail clearly, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_schema_is_a_clear_error_unless_created() {
    let database = fresh_database().await;
    let url = server().url(&database);
    match PostgresStore::connect(&url, PostgresOptions::default()).await {
        Err(StoreError::Corrupt(msg)) => {
            assert!(msg.contains("no Supervisor schema"), "{msg}");
            assert!(
                msg.contains("PostgresStore::init"),
                "says what to do: {msg}"
            );
            assert!(msg.contains(&database), "names the database: {msg}");
            assert!(!msg.contains(PASSWORD), "shows the password: {msg}");
        }
        other => panic!("a missing schema must be refused clearly, got {other:?}"),
    }
    let opts = PostgresOptions {
        create_schema: true,
        ..PostgresOptions::default()
    };
    let db = ok(open_db(&url, opts).await, "connect creating the schema");
    put(&db, b"k", b"v").await;
    assert_eq!(fetch(&db, b"k").await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_even_when_run_concurrently() {
    let name = fresh_database().await;
    let url = server().url(&name);
    let runs = futures::future::join_all((0..4).map(|_| PostgresStore::init(&url))).await;
    for result in runs {
        ok(result, "concurrent init");
    }
    let db = ok(open_db(&url, PostgresOptions::default()).await, "connect");
    put(&db, b"k", b"v").await;
    ok(PostgresStore::init(&url).await, "init on a used database");
    assert_eq!(
        fetch(&db, b"k").await.as_deref(),
        Some(&b"v"[..]),
        "init keeps the data"
    );
    // The kv table leaves room on its pages for in-place (HOT) updates of hot rows.
    let options: Option<Vec<String>> = match admin(&name)
        .await
        .query_one(
            "SELECT reloptions FROM pg_class WHERE relname = 'supervisor_kv'",
            &[],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(err) => panic!("reading supervisor_kv's options: {err}"),
    };
    assert_eq!(options, Some(vec!["fillfactor=50".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_schema_version_is_refused() {
    let database = fresh_database().await;
    let url = server().url(&database);
    ok(PostgresStore::init(&url).await, "init");
    admin_execute(
        &database,
        "UPDATE supervisor_meta SET schema_version = 99 WHERE id = 1",
    )
    .await;
    for result in [
        PostgresStore::connect(&url, PostgresOptions::default())
            .await
            .map(|_| ()),
        PostgresStore::init(&url).await,
    ] {
        match result {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains("version 99"), "{msg}"),
            other => panic!("an incompatible schema must be refused, got {other:?}"),
        }
    }
}

// ----------------------------------------------------------------------------------------
// Behaviour specific to a shared server
// ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sort_bytewise_including_high_bytes() {
    let db = fresh_db().await;
    let mut keys: Vec<Vec<u8>> = vec![
        vec![0x00],
        vec![0x00, 0xff],
        vec![0x01],
        vec![0x7f],
        vec![0x80],
        vec![0xc3, 0xa4],
        vec![0xfe],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff, 0x01],
    ];
    let mut txn = ok(db.begin().await, "begin");
    for key in keys.iter().rev() {
        txn.set(key, b"");
    }
    ok(txn.commit().await, "commit");
    keys.sort();
    let mut txn = ok(db.begin().await, "begin");
    let all = ok(
        txn.get_range(&[], &[0xff, 0xff, 0xff], RangeOptions::new())
            .await,
        "range",
    );
    let got: Vec<Vec<u8>> = all.into_iter().map(|kv| kv.key).collect();
    assert_eq!(got, keys, "PostgreSQL orders bytea bytewise");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_too_long_for_the_index_fails_clearly() {
    let db = fresh_db().await;
    let key = incompressible_key(3_000);
    let mut txn = ok(db.begin().await, "begin");
    txn.set(b"marker", b"1");
    txn.set(&key, b"v");
    match txn.commit().await {
        Err(StoreError::Io(msg)) => assert!(msg.contains("2,704 bytes"), "{msg}"),
        other => panic!("a key too long for the index must fail clearly, got {other:?}"),
    }
    assert_eq!(fetch(&db, b"marker").await, None, "nothing was written");
}

/// Incompressible bytes: PostgreSQL's btree cannot hold `len` of them as a key.
fn incompressible_key(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_batches() {
    let db = fresh_db().await;
    const COMMITS: usize = 200;
    let mut tasks = Vec::new();
    for i in 0..COMMITS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut txn = ok(db.begin().await, "begin");
            txn.set(format!("batch/{i:03}").as_bytes(), b"v");
            txn.atomic_add(b"batch-count", 1);
            ok(txn.commit().await, "commit").version
        }));
    }
    let mut versions = std::collections::BTreeSet::new();
    for task in tasks {
        match task.await {
            Ok(Some(version)) => {
                versions.insert(version);
            }
            other => panic!("a concurrent commit did not report its version: {other:?}"),
        }
    }
    assert!(
        versions.len() < COMMITS,
        "{COMMITS} concurrent commits took {} commit versions: none was batched",
        versions.len()
    );
    assert_eq!(
        fetch(&db, b"batch-count").await,
        Some((COMMITS as i64).to_le_bytes().to_vec()),
        "every atomic add of every batch counted"
    );
    for i in 0..COMMITS {
        let key = format!("batch/{i:03}");
        assert_eq!(
            fetch(&db, key.as_bytes()).await,
            Some(b"v".to_vec()),
            "{key}"
        );
    }
}

/// Read-modify-write increments from two processes' committers at once: every lost
/// update the conflict checks let through would leave the read counter behind the
/// blind one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_read_modify_writes_lose_no_update_across_stores() {
    let url = fresh_url().await;
    let (_one, db1) = connect(&url).await;
    let (_two, db2) = connect(&url).await;
    const WORKERS: usize = 16;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let db = if w % 2 == 0 { db1.clone() } else { db2.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let result = db
                    .run(|txn| {
                        Box::pin(async move {
                            let now = txn.get(b"rmw").await?;
                            let n = now
                                .as_deref()
                                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                                .map_or(0, i64::from_le_bytes);
                            txn.set(b"rmw", &(n + 1).to_le_bytes());
                            txn.atomic_add(b"blind", 1);
                            Ok::<_, StoreError>(())
                        })
                    })
                    .await;
                ok(result, "increment");
            }
        }));
    }
    for task in tasks {
        if let Err(err) = task.await {
            panic!("an incrementing task panicked: {err}");
        }
    }
    let total = ((WORKERS * EACH) as i64).to_le_bytes().to_vec();
    assert_eq!(
        fetch(&db1, b"blind").await,
        Some(total.clone()),
        "blind adds"
    );
    assert_eq!(fetch(&db1, b"rmw").await, Some(total), "read-modify-writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_transaction_fails_alone_in_its_batch() {
    let db = fresh_db().await;
    let bad_key = incompressible_key(3_000);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let db = db.clone();
        let bad_key = bad_key.clone();
        tasks.push(tokio::spawn(async move {
            let mut txn = ok(db.begin().await, "begin");
            if i == 20 {
                txn.set(&bad_key, b"v");
            } else {
                txn.set(format!("good/{i:02}").as_bytes(), b"v");
            }
            (i, txn.commit().await)
        }));
    }
    for task in tasks {
        let (i, outcome) = match task.await {
            Ok(done) => done,
            Err(err) => panic!("a commit task panicked: {err}"),
        };
        match (i, outcome) {
            (20, Err(StoreError::Io(msg))) => assert!(msg.contains("2,704 bytes"), "{msg}"),
            (20, other) => panic!("the bad key must fail clearly, got {other:?}"),
            (_, Ok(_)) => {}
            (i, Err(err)) => panic!("good transaction {i} failed with the bad one: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_and_system_transactions_commit_like_others() {
    let db = fresh_db().await;
    let mut relaxed = ok(db.begin().await, "begin");
    relaxed.set_priority(supervisor_store::Priority::System);
    relaxed.relax_durability();
    ok(relaxed.get(b"r").await, "read on the system lane");
    relaxed.set(b"r", b"1");
    ok(relaxed.commit().await, "relaxed commit");
    assert_eq!(fetch(&db, b"r").await, Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_detected_between_stores() {
    let url = fresh_url().await;
    let (_one, db1) = connect(&url).await;
    let (_two, db2) = connect(&url).await;
    put(&db1, b"k", b"0").await;
    let mut a = ok(db1.begin().await, "begin");
    ok(a.get(b"k").await, "read");
    put(&db2, b"k", b"1").await;
    a.set(b"out", b"a");
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
    assert_eq!(fetch(&db1, b"out").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_fire_on_commits_from_another_store() {
    let url = fresh_url().await;
    let (_one, db1) = connect(&url).await;
    let (_two, db2) = connect(&url).await;
    put(&db1, b"k", b"0").await;
    let mut w = watch(&db1, b"k").await;
    put(&db2, b"other", b"x").await;
    still_pending(&mut w, "after another key changed").await;
    put(&db2, b"k", b"1").await;
    must_fire(w, "after the other store changed the key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_listener_reconnects_and_fires_every_watch() {
    let database = fresh_database().await;
    let url = server().url(&database);
    ok(PostgresStore::init(&url).await, "init");
    let (_store, db) = connect(&url).await;
    let mut w = watch(&db, b"k").await;
    still_pending(&mut w, "before the listener is cut").await;
    let terminated = admin(&database)
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'supervisor-watch-listener' AND datname = $1",
            &[&database],
        )
        .await;
    match terminated {
        Ok(rows) => assert_eq!(rows.len(), 1, "one listener connection"),
        Err(err) => panic!("terminate the listener: {err}"),
    }
    // Changes may have been missed while it was away: it fires everything on reconnect.
    must_fire(w, "after the listener reconnected").await;
    // It listens again.
    let mut w = watch(&db, b"k").await;
    still_pending(&mut w, "after the reconnection").await;
    put(&db, b"k", b"1").await;
    must_fire(w, "after a change, on the new connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_resolves_active_watches_with_closed() {
    let db = fresh_db().await;
    let w = watch(&db, b"k").await;
    drop(db);
    match tokio::time::timeout(HANG_GUARD, w).await {
        Ok(result) => assert_eq!(result, Err(StoreError::Closed)),
        Err(_) => panic!("the watch never resolved"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_a_conflicting_transaction_fails_with_the_conflict() {
    let db = fresh_db().await;
    let mut a = ok(db.begin().await, "begin");
    ok(a.get(b"k").await, "get");
    let w = a.watch(b"w");
    put(&db, b"k", b"theirs").await;
    a.set(b"k", b"mine");
    assert_eq!(a.commit().await, Err(StoreError::Conflict));
    match tokio::time::timeout(HANG_GUARD, w).await {
        Ok(result) => assert_eq!(result, Err(StoreError::Conflict)),
        Err(_) => panic!("the watch never resolved"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transactions_give_their_connection_back_clean() {
    let url = fresh_url().await;
    let opts = PostgresOptions {
        pool_size: 1,
        ..PostgresOptions::default()
    };
    let db = ok(open_db(&url, opts).await, "connect");
    put(&db, b"k", b"0").await;
    for round in 1..=5u8 {
        // Holds the only connection inside its snapshot, then is dropped mid-way.
        let mut reader = ok(db.begin().await, "begin");
        ok(reader.get(b"k").await, "read");
        drop(reader);
        put(&db, b"k", &[round]).await;
        assert_eq!(
            fetch(&db, b"k").await,
            Some(vec![round]),
            "round {round}: a later transaction sees the latest data, not a stale snapshot"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_older_than_the_conflict_window_is_too_old() {
    let db = fresh_db().await;
    put(&db, b"k", b"0").await;
    let mut old = ok(db.begin().await, "begin");
    ok(old.get(b"k").await, "read");
    put(&db, b"other", b"1").await;
    // The history of that commit is pruned by the first commit after the 5 s window.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    put(&db, b"another", b"2").await;
    old.set(b"out", b"x");
    let result = old.commit().await;
    assert_eq!(result, Err(StoreError::TooOld));
    assert!(StoreError::TooOld.is_retryable());
    // A fresh transaction goes through.
    put(&db, b"out", b"y").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_crash_helper_with_a_fresh_connection() {
    let url = fresh_url().await;
    let db = ok(open_db(&url, PostgresOptions::default()).await, "connect");
    let reopen = url.clone();
    conformance::committed_writes_survive_crash(db, 30, |db| async move {
        drop(db);
        ok(
            open_db(&reopen, PostgresOptions::default()).await,
            "reconnect",
        )
    })
    .await;
}

// ----------------------------------------------------------------------------------------
// Crash recovery with a real kill -9 of a client
// ----------------------------------------------------------------------------------------

/// Names the database the child writer process commits to.
const CRASH_CHILD_URL: &str = "SUPERVISOR_STORE_PG_CRASH_CHILD_URL";
/// Runs this test binary again as a child that commits keys one per transaction and prints
/// each index once its commit returned; kills it with SIGKILL after 200 of them (likely in
/// the middle of a commit, holding the commit lock); then a fresh connection checks that
/// every acknowledged commit is there and that the store still takes commits.
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
    let url = runtime.block_on(fresh_url());
    let committed = conformance::kill_9_child(
        "crash_child_writer",
        CRASH_CHILD_URL,
        std::ffi::OsStr::new(&url),
    );
    runtime.block_on(async {
        let db = ok(
            open_db(&url, PostgresOptions::default()).await,
            "reconnect after kill -9",
        );
        conformance::verify_sequence(&db, committed.iter().copied()).await;
        // The server released the killed client's locks: commits go through.
        put(&db, b"after-crash", b"ok").await;
        assert_eq!(
            fetch(&db, b"after-crash").await.as_deref(),
            Some(&b"ok"[..])
        );
    });
}

/// The child of [`acknowledged_commits_survive_kill_9_of_a_client`]. Run directly (for
/// example with `--include-ignored`), it commits 50 keys to a fresh database and checks
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_commits_survive_kill_9_of_a_client"]
async fn crash_child_writer() {
    let Ok(url) = std::env::var(CRASH_CHILD_URL) else {
        let db = fresh_db().await;
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
        open_db(&url, PostgresOptions::default()).await,
        "child connect",
    );
    // Runs until killed (or until the parent stops reading).
    let result = conformance::print_commits_until_killed(&db).await;
    ok(result, "child commit loop");
}

// ----------------------------------------------------------------------------------------
// Throughput probe
// ----------------------------------------------------------------------------------------

/// Prints commits per second for 64 concurrent tasks committing one key per transaction,
/// for the same with a read of a shared key in each (conflict checks on a hot key), and
/// for one task committing sequentially. Not a pass/fail test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "throughput probe: cargo test --release -p supervisor-store --features postgres \
            --test postgres -- --ignored throughput_probe --nocapture"]
async fn throughput_probe() {
    let url = fresh_url().await;
    let opts = PostgresOptions {
        pool_size: 32,
        ..PostgresOptions::default()
    };
    let db = ok(open_db(&url, opts).await, "connect");
    let space = Subspace::all().subspace(&("probe",));
    for reads in [false, true] {
        const TASKS: u64 = 64;
        const PER_TASK: u64 = 50;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (db, space) = (db.clone(), space.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let key = space.pack(&(reads, t as i64, i as i64));
                    let shared = space.pack(&("shared",));
                    let result = db
                        .run(move |txn| {
                            let (key, shared) = (key.clone(), shared.clone());
                            Box::pin(async move {
                                if reads {
                                    txn.get(&shared).await?;
                                }
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
        let n = TASKS * PER_TASK;
        println!(
            "64 concurrent tasks{}: {n} commits in {elapsed:?} = {:.0} commits/s",
            if reads { " reading a shared key" } else { "" },
            n as f64 / elapsed.as_secs_f64(),
        );
    }
    const SEQUENTIAL: u64 = 1000;
    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        put(&db, &space.pack(&("seq", i as i64)), b"value").await;
    }
    let elapsed = started.elapsed();
    println!(
        "sequential: {SEQUENTIAL} commits in {elapsed:?} = {:.0} commits/s",
        SEQUENTIAL as f64 / elapsed.as_secs_f64(),
    );
    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        let mut txn = ok(db.begin().await, "begin");
        ok(txn.get(&space.pack(&("seq", i as i64))).await, "get");
        ok(txn.commit().await, "read-only commit");
    }
    let elapsed = started.elapsed();
    println!(
        "sequential read-only transactions: {SEQUENTIAL} in {elapsed:?} = {:.0}/s",
        SEQUENTIAL as f64 / elapsed.as_secs_f64(),
    );
}
