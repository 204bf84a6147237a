//! Data lifecycle as an operator meets it, on real `supervisor up` processes: finished
//! work goes after its retention period while running work and spend stay, the data file
//! stops growing under steady load, and a backup taken under load restores into a node
//! that serves every task finished before it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use supervisor_client::Client;
use supervisor_proto::v1;

use common::{NodeProcess, supervisor};

/// Two mock providers: `fast` answers at once, `slow` holds its attempts for minutes.
const TWO_MOCKS: &[(&str, &str)] = &[
    ("SUPERVISOR_PROVIDERS__FAST__KIND", "mock"),
    ("SUPERVISOR_PROVIDERS__SLOW__KIND", "mock"),
    ("SUPERVISOR_PROVIDERS__SLOW__LATENCY", "600s"),
];

fn on(provider: &str, prompt: &str) -> v1::SubmitTaskRequest {
    let other = if provider == "fast" { "slow" } else { "fast" };
    v1::SubmitTaskRequest {
        r#type: v1::TaskType::Testing as i32,
        prompt: prompt.to_string(),
        excluded_providers: vec![other.to_string()],
        ..Default::default()
    }
}

async fn attempts_charged(client: &Client, provider: &str) -> u64 {
    client
        .spend(None, None)
        .await
        .expect("spend")
        .rows
        .iter()
        .filter(|r| r.provider == provider)
        .map(|r| r.attempts)
        .sum()
}

/// Polls `check` every 100 ms until it holds or `limit` passes (then fails with `what`).
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keep_3s_finished_tasks_go_within_seconds_and_running_tasks_and_spend_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = TWO_MOCKS.to_vec();
    env.push(("SUPERVISOR_RETENTION__KEEP", "3s"));
    let node = NodeProcess::start(dir.path(), &env);
    let client = Client::connect(&node.url()).await.unwrap();

    let running = client.submit(on("slow", "a long job")).await.unwrap().id;
    eventually(
        Duration::from_secs(30),
        "the slow task never started",
        || {
            let client = client.clone();
            let id = running.clone();
            async move { client.get(&id).await.unwrap().status == v1::TaskStatus::Running as i32 }
        },
    )
    .await;
    let mut finished = Vec::new();
    for i in 0..10 {
        let id = client
            .submit(on("fast", &format!("job {i}")))
            .await
            .unwrap()
            .id;
        finished.push(id);
    }
    for id in &finished {
        let task = client.wait(id).await.unwrap();
        assert_eq!(task.status, v1::TaskStatus::Succeeded as i32);
    }
    assert_eq!(attempts_charged(&client, "fast").await, 10);

    eventually(
        Duration::from_secs(60),
        "finished tasks were still there well after keep = 3s",
        || {
            let (client, ids) = (client.clone(), finished.clone());
            async move {
                for id in &ids {
                    match client.get(id).await {
                        Err(e) if e.is_not_found() => {}
                        _ => return false,
                    }
                }
                true
            }
        },
    )
    .await;
    // The running task is untouched, the spend is still in the ledger, the counters
    // count what the store holds.
    let task = client.get(&running).await.unwrap();
    assert_eq!(task.status, v1::TaskStatus::Running as i32);
    assert_eq!(attempts_charged(&client, "fast").await, 10);
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.succeeded, stats.running), (0, 1));
    let listed = client
        .list_all(v1::ListTasksRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![running]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_steady_load_with_a_short_retention_the_data_file_stops_growing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_RETENTION__KEEP", "2s")]);
    let client = Client::connect(&node.url()).await.unwrap();
    let file = dir.path().join("supervisor.redb");
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);

    // Rounds of the same work: each submits and finishes a batch, then lets retention
    // catch up. Without deletion the file would grow with every round.
    let round = |n: usize| {
        let client = client.clone();
        async move {
            let mut ids = Vec::with_capacity(200);
            for i in 0..200 {
                let prompt = format!("round {n} job {i}: review the change");
                ids.push(client.submit(on_default(&prompt)).await.unwrap().id);
            }
            for id in &ids {
                client.wait(id).await.unwrap();
            }
            // Every task of the round has passed keep and been swept.
            eventually(
                Duration::from_secs(60),
                "a round's tasks were not deleted",
                || {
                    let client = client.clone();
                    async move {
                        let s = client.stats().await.unwrap();
                        s.succeeded + s.failed + s.cancelled == 0
                    }
                },
            )
            .await;
        }
    };
    let mut sizes = Vec::new();
    for n in 0..12 {
        round(n).await;
        sizes.push(size());
    }
    let store = client.store_stats().await.unwrap();
    assert!(store.file_bytes > 0 && store.tasks == 0, "{store:?}");
    // The last six rounds' 1,200 tasks would take at least 3 MB more without deletion (a
    // no-op task's keys and values alone are about 2,600 bytes: benches/results,
    // footprint); with retention they fit in pages earlier rounds freed. The file's size
    // moves up and down between rounds (redb gives a free tail back), so the rounds are
    // compared by their largest size.
    eprintln!("data file after each round: {sizes:?}");
    let without_deletion = 6 * 200 * 2600;
    let first = sizes[..6].iter().max().copied().unwrap_or(0);
    let last = sizes[6..].iter().max().copied().unwrap_or(0);
    assert!(
        last.saturating_sub(first) <= without_deletion / 2,
        "the data file grew from at most {first} to {last} bytes over six rounds of work that retention deleted (sizes after each round: {sizes:?})"
    );
}

fn output_of(task: &v1::Task) -> String {
    task.result
        .as_ref()
        .map(|r| r.output.clone())
        .unwrap_or_default()
}

fn on_default(prompt: &str) -> v1::SubmitTaskRequest {
    v1::SubmitTaskRequest {
        r#type: v1::TaskType::PrReview as i32,
        prompt: prompt.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_node_that_serves_every_task_finished_before_it()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    let node = NodeProcess::start(
        &data,
        &[
            ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "20ms"),
            ("SUPERVISOR_PROVIDERS__MOCK__LATENCY_JITTER", "200ms"),
        ],
    );
    let client = Client::connect(&node.url()).await.unwrap();
    // Load that goes on through the backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .submit(on_default(&format!("load {n}")))
                    .await
                    .expect("submit under load");
                n += 1;
            }
            n
        })
    };
    eventually(Duration::from_secs(60), "no task finished", || {
        let client = client.clone();
        async move { client.stats().await.unwrap().succeeded >= 100 }
    })
    .await;
    // Everything finished before the backup starts, with its output.
    let ids: Vec<String> = client
        .list_all(v1::ListTasksRequest {
            status: v1::TaskStatus::Succeeded as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut before = BTreeMap::new();
    for id in ids {
        let output = output_of(&client.get(&id).await.unwrap());
        before.insert(id, output);
    }
    let backup = dir.path().join("backup.redb");
    let (code, out, err) = supervisor(
        &[
            "store",
            "backup",
            "--server",
            &node.addr,
            "--to",
            backup.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "backup failed: {out}{err}");
    assert!(out.contains("backup written"), "{out}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let submitted = load.await.unwrap();
    assert!(
        submitted > before.len(),
        "the load went on during the backup"
    );
    drop(client);
    drop(node);

    let restored = dir.path().join("restored");
    let (code, out, err) = supervisor(
        &[
            "store",
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "restore failed: {out}{err}");
    assert!(out.contains("fenced 1 node"), "{out}");
    let node = NodeProcess::start(&restored, &[]);
    let client = Client::connect(&node.url()).await.unwrap();
    for (id, output) in &before {
        let task = client.get(id).await.unwrap();
        assert_eq!(task.status, v1::TaskStatus::Succeeded as i32, "{id}");
        assert_eq!(&output_of(&task), output, "{id}");
    }
    // What was queued or running at the backup runs to its end on the restored node.
    eventually(
        Duration::from_secs(120),
        "tasks of the backup never finished",
        || {
            let client = client.clone();
            async move {
                let s = client.stats().await.unwrap();
                s.queued + s.running + s.retry_wait == 0
            }
        },
    )
    .await;
    let s = client.stats().await.unwrap();
    assert_eq!(s.failed + s.cancelled, 0, "{s:?}");
    assert!(s.succeeded as usize >= before.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_dump_restores_with_every_task_and_fences_the_original_nodes() {
    let (pg, url) = common::pg_store().await;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_args(
        &dir.path().join("n1"),
        &["--store", &url, "--join", "--node-id", "n1"],
        &[("SUPERVISOR_CLUSTER__COOKIE", "lifecycle")],
    );
    let client = Client::connect(&node.url()).await.unwrap();
    let mut tasks = BTreeMap::new();
    for i in 0..40 {
        let id = client
            .submit(on_default(&format!("dumped job {i}")))
            .await
            .unwrap()
            .id;
        let done = client.wait(&id).await.unwrap();
        tasks.insert(id, output_of(&done));
    }
    // docs/data.md: a custom-format dump of the database, restored into a new one.
    let dump = dir.path().join("supervisor.dump");
    let out = std::process::Command::new(pg.bin_dir().join("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&url)
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(client);
    drop(node);
    pg.create_database("restored").await.unwrap();
    let restored = pg.url("127.0.0.1", "restored");
    let out = std::process::Command::new(pg.bin_dir().join("pg_restore"))
        .args(["--no-owner", "--dbname", &restored])
        .arg(&dump)
        .output()
        .expect("pg_restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out, err) = supervisor(&["store", "fence-all", "--store", &restored], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fenced 1 node"), "{out}");

    let node = NodeProcess::start_with_args(
        &dir.path().join("n2"),
        &["--store", &restored, "--join", "--node-id", "n2"],
        &[("SUPERVISOR_CLUSTER__COOKIE", "lifecycle")],
    );
    let client = Client::connect(&node.url()).await.unwrap();
    for (id, output) in &tasks {
        let task = client.get(id).await.unwrap();
        assert_eq!(task.status, v1::TaskStatus::Succeeded as i32, "{id}");
        assert_eq!(&output_of(&task), output, "{id}");
    }
    let cluster = client.cluster_status().await.unwrap();
    let n1 = cluster
        .nodes
        .iter()
        .find(|n| n.id == "n1")
        .expect("n1 is recorded");
    assert_eq!(n1.state, "fenced", "{n1:?}");
    // And the restored store takes new work.
    let id = client
        .submit(on_default("after the restore"))
        .await
        .unwrap()
        .id;
    assert_eq!(
        client.wait(&id).await.unwrap().status,
        v1::TaskStatus::Succeeded as i32
    );
}
