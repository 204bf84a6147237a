//! The resource managers across real node processes. Three nodes on a throwaway
//! PostgreSQL race to spend one tenant budget; tasks on one repository and ref never
//! overlap, across nodes and through a `kill -9` of the holder's node; a provider's
//! requests per minute hold for the whole cluster; and a tenant's backlog does not delay
//! another tenant's tasks. Every check reads what the store recorded (events, ledger,
//! timestamps); no assertion depends on how fast the machine is.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{NodeProcess, PgCluster, as_token, fake_cli_config};
use supervisor_client::{Client, v1};
use supervisor_model::{EventKind, TaskId};

/// The scenarios each run three node processes: one at a time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Guard against hangs only.
const PATIENCE: Duration = Duration::from_secs(180);

/// Clients of every node of `cluster`.
async fn clients(cluster: &PgCluster) -> Vec<Client> {
    let mut out = Vec::new();
    for node in &cluster.nodes {
        out.push(Client::connect(&node.url()).await.expect("connect"));
    }
    out
}

fn task(prompt: &str) -> v1::SubmitTaskRequest {
    v1::SubmitTaskRequest {
        r#type: v1::TaskType::CodeAnalysis as i32,
        prompt: prompt.into(),
        ..Default::default()
    }
}

async fn wait_for<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_racing_for_one_budget_spend_no_more_than_it_allows() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Each attempt costs exactly $0.20: 2,000 tokens at $100 per million. Each task
    // names a ceiling of $0.25, which is what its attempt reserves.
    let env = [
        ("SUPERVISOR_PROVIDERS__MOCK__INPUT_TOKENS", "1000"),
        ("SUPERVISOR_PROVIDERS__MOCK__OUTPUT_TOKENS", "1000"),
        (
            "SUPERVISOR_PROVIDERS__MOCK__PRICE_MICROS_PER_MTOK",
            "100000000",
        ),
        ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "300ms"),
    ];
    let cluster = PgCluster::start(3, &env).await;
    let clients = clients(&cluster).await;
    let budget = 5_000_000;
    clients[0]
        .set_budget(v1::Budget {
            scope: "tenant".into(),
            limits: vec![v1::BudgetLimit {
                metric: "usd".into(),
                period: "day".into(),
                hard: budget,
            }],
            time_zone: "UTC".into(),
            ..Default::default()
        })
        .await
        .expect("set the budget");
    let total = 60;
    let mut submits = Vec::new();
    for i in 0..total {
        let client = clients[i % clients.len()].clone();
        submits.push(tokio::spawn(async move {
            let mut t = task(&format!("spend {i}"));
            t.max_cost_usd = 0.25;
            client.submit(t).await.expect("submit")
        }));
    }
    for s in submits {
        s.await.unwrap();
    }
    // Wait until nothing runs and every task either succeeded or waits for the budget.
    let observer = &clients[1];
    // Wait until the budget has no room for one more attempt ($0.25), nothing runs, and
    // every other task waits for the budget.
    wait_for("the budget to be spent and the rest to wait", || async {
        let stats = observer.stats().await.expect("stats");
        let waiting = observer.list_waiting().await.expect("waiting").len() as u64;
        let spent = observer.list_budgets().await.expect("budgets")[0].limits[0].spent;
        stats.running == 0 && spent + 250_000 > budget && stats.succeeded + waiting == total as u64
    })
    .await;
    let engine = supervisor_chaos::audit::open(&cluster.url)
        .await
        .expect("open the store");
    let today = supervisor_chaos::today();
    let ledger: u64 = engine
        .ledger("default", &today, &today)
        .await
        .expect("ledger")
        .iter()
        .map(|row| row.cost_micros)
        .sum();
    eprintln!(
        "settled spend ${:.2} of a ${:.2} budget",
        ledger as f64 / 1e6,
        budget as f64 / 1e6
    );
    // Reservations ($0.25) cover each attempt's real cost ($0.20), so the documented
    // bound on overspend (what attempts spend beyond their reservation) is zero here.
    assert!(
        ledger <= budget,
        "settled spend ${} is over the ${} budget",
        ledger as f64 / 1e6,
        budget as f64 / 1e6
    );
    let succeeded = observer.stats().await.expect("stats").succeeded;
    assert_eq!(
        ledger,
        succeeded * 200_000,
        "each attempt settled to its real cost"
    );
    let status = &observer.list_budgets().await.expect("budgets")[0];
    assert_eq!(
        status.limits[0].spent, ledger,
        "the budget counts what the ledger holds"
    );
    assert_eq!(
        status.limits[0].reserved, 0,
        "nothing runs, nothing stays reserved"
    );
    let waiting = observer.list_waiting().await.expect("waiting");
    assert!(!waiting.is_empty());
    for w in &waiting {
        assert_eq!(w.resource, "budget");
        assert!(w.reason.contains("$5.00 per day"), "{}", w.reason);
    }
}

/// A git repository with one commit on `main`.
fn git_repo(dir: &Path) {
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .expect("git")
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README"), "x\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "first"]);
}

/// A config whose only provider is a fake `claude` that works for `seconds` and
/// succeeds.
fn slow_cli_config(dir: &Path, seconds: &str) -> String {
    let script = format!(
        "#!/bin/sh
sleep {seconds}
echo '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"done\",\"num_turns\":1,\"usage\":{{\"input_tokens\":1,\"output_tokens\":1}}}}'
"
    );
    fake_cli_config(dir, &script).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_one_repository_and_ref_never_overlap_even_when_the_holder_is_killed() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git_repo(&repo);
    let config = slow_cli_config(work.path(), "1.5");
    let mut cluster = PgCluster::start(3, &[("SUPERVISOR_CONFIG", config.as_str())]).await;
    let clients = clients(&cluster).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut t = task(&format!("fix bug {i}"));
        t.r#type = v1::TaskType::BugFix as i32;
        t.context.insert("repo".into(), repo.display().to_string());
        t.context.insert("ref".into(), "main".into());
        ids.push(clients[i % 3].submit(t).await.expect("submit").id);
    }
    // Kill the node holding the lock while its attempt runs.
    let observer = clients[0].clone();
    let holder = Arc::new(Mutex::new(String::new()));
    wait_for("a task to hold the repository", || {
        let observer = observer.clone();
        let holder = holder.clone();
        async move {
            let held = observer.list_allocations().await.expect("allocations");
            match held.first() {
                Some(a) => {
                    assert_eq!(held.len(), 1, "one exclusive holder at a time: {held:?}");
                    *holder.lock().unwrap() = a.node.clone();
                    true
                }
                None => false,
            }
        }
    })
    .await;
    let holder = holder.lock().unwrap().clone();
    let victim: usize = holder.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    cluster.nodes[victim].kill9();
    let survivor = clients[(victim + 1) % 3].clone();
    wait_for("every task to succeed", || {
        let survivor = survivor.clone();
        async move {
            let stats = survivor.stats().await.expect("stats");
            stats.succeeded == 6
        }
    })
    .await;

    // From the store: each attempt runs from its Started event to the event that ends
    // it (terminal, requeued, retry). No two attempts' intervals overlap.
    let engine = supervisor_chaos::audit::open(&cluster.url)
        .await
        .expect("open the store");
    let mut intervals = Vec::new();
    let mut abandoned = 0;
    for id in &ids {
        let id: TaskId = id.parse().unwrap();
        let (events, _, _) = engine.read_events("default", id, 0, 1000).await.unwrap();
        let mut start: Option<i64> = None;
        for e in events {
            match e.kind {
                EventKind::Started => start = Some(e.at),
                EventKind::Succeeded
                | EventKind::Failed
                | EventKind::Cancelled
                | EventKind::Requeued
                | EventKind::RetryScheduled => {
                    if let Some(s) = start.take() {
                        if e.kind == EventKind::Requeued {
                            abandoned += 1;
                        }
                        intervals.push((s, e.at, id));
                    }
                }
                _ => {}
            }
        }
        assert!(start.is_none(), "task {id} has an attempt that never ended");
    }
    eprintln!(
        "{} attempts, {abandoned} taken back from the killed node",
        intervals.len()
    );
    assert!(abandoned >= 1, "the killed node's attempt was taken back");
    intervals.sort();
    for pair in intervals.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        assert!(
            end <= start,
            "attempts of tasks {a} and {b} overlapped on the same repository and ref ({end} > {start})"
        );
    }
    assert!(engine.allocations(None).await.unwrap().is_empty());
}

/// A fake OpenAI-compatible server that answers every completion at once and records
/// when each came.
async fn counting_openai() -> (String, Arc<Mutex<Vec<Instant>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then the body its content-length announces.
                let (head_end, length) = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]);
                let body = if head.contains("chat/completions") {
                    log.lock().unwrap().push(Instant::now());
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n\
                     data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n\
                     data: [DONE]\n\n"
                        .to_string()
                } else {
                    "{\"data\":[{\"id\":\"fake\"}]}".to_string()
                };
                let content_type = if head.contains("chat/completions") {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/v1"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_requests_per_minute_hold_for_the_whole_cluster() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (base_url, seen) = counting_openai().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("supervisor.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.mock]\nkind = \"mock\"\nenabled = false\n\n[providers.fake]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"fake\"\n\n[providers.fake.limits]\nrequests_per_minute = 60\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let cluster = PgCluster::start(3, &[("SUPERVISOR_CONFIG", config.as_str())]).await;
    let clients = clients(&cluster).await;
    for i in 0..150 {
        clients[i % 3]
            .submit(task(&format!("count {i}")))
            .await
            .expect("submit");
    }
    // Watch a little over a minute from the first request.
    wait_for("the first request", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let first = seen.lock().unwrap()[0];
    tokio::time::sleep(Duration::from_secs(62).saturating_sub(first.elapsed())).await;
    let times = seen.lock().unwrap().clone();
    // Every minute-long window that starts at a request.
    let minute = Duration::from_secs(60);
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < minute)
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "busiest minute: {busiest} requests of {} in all",
        times.len()
    );
    // The bound: the limit plus one slice (a twentieth of it: 3) per node.
    let bound = 60 + 3 * 3;
    assert!(
        busiest <= bound,
        "{busiest} requests in one minute; the cluster-wide bound is {bound}"
    );
    assert!(
        busiest >= 50,
        "only {busiest} requests in the busiest minute: the limit was not what held them back"
    );
    let stats = clients[0].stats().await.expect("stats");
    assert!(
        stats.succeeded < 150,
        "all 150 tasks finished within the minute: nothing was limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_backlog_does_not_delay_another_tenants_tasks() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            ("SUPERVISOR_AUTH__ENABLED", "true"),
            ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "20ms"),
            ("SUPERVISOR_PROVIDERS__MOCK__LIMITS__MAX_CONCURRENCY", "4"),
        ],
    );
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin.key");
    let admin = as_token(&node, admin_key.trim()).await;
    let mut keys = HashMap::new();
    for tenant in ["big", "small"] {
        admin.create_tenant(tenant).await.unwrap();
        let made = admin
            .create_key(v1::CreateKeyRequest {
                tenant: tenant.into(),
                role: "developer".into(),
                name: "load".into(),
                expires_in_seconds: 0,
            })
            .await
            .unwrap();
        keys.insert(tenant, as_token(&node, &made.key).await);
    }
    let big = keys["big"].clone();
    let backlog = 5000;
    let mut submits = Vec::new();
    for part in 0..10 {
        let big = big.clone();
        submits.push(tokio::spawn(async move {
            for i in 0..backlog / 10 {
                big.submit(task(&format!("big {part}-{i}")))
                    .await
                    .expect("submit");
            }
        }));
    }
    for s in submits {
        s.await.unwrap();
    }
    let small = keys["small"].clone();
    let mut small_ids = Vec::new();
    for i in 0..10 {
        small_ids.push(
            small
                .submit(task(&format!("small {i}")))
                .await
                .expect("submit")
                .id,
        );
    }
    wait_for("the small tenant's tasks to succeed", || async {
        small.stats().await.expect("stats").succeeded == 10
    })
    .await;
    let mut arrived = i64::MAX;
    let mut last_start = 0;
    for id in &small_ids {
        let t = small.get(id).await.unwrap();
        arrived = arrived.min(micros(&t.created_at));
        last_start = last_start.max(micros(&t.started_at));
    }
    let big_tasks = big.list_all(v1::ListTasksRequest::default()).await.unwrap();
    let started_meanwhile = big_tasks
        .iter()
        .filter(|t| {
            let s = micros(&t.started_at);
            s >= arrived && s <= last_start
        })
        .count();
    let never_started = big_tasks.iter().filter(|t| t.started_at.is_none()).count();
    eprintln!(
        "big tenant: {started_meanwhile} attempts started while the small tenant's 10 waited; {never_started} never started"
    );
    // Equal weights: the tenants alternate, so the small tenant's 10th task starts after
    // at most 10 of the big tenant's, plus one lease batch (4 here, the node's capacity).
    assert!(
        started_meanwhile <= 10 + 4,
        "{started_meanwhile} of the big tenant's attempts started before the small tenant's 10 tasks did"
    );
    assert!(
        never_started > backlog / 2,
        "the big tenant's backlog ({never_started} not started) was still there"
    );
}
