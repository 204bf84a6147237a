//! Routing against scripted providers on a real node and store: failover when a provider
//! starts failing mid-run, `retry-after` honoured, the circuit breaker visible, the
//! per-task constraints (preferred, excluded, max cost), and retries that tell the truth
//! (a breaker's refusal spends no attempt, the final error is the last real failure, a
//! provider's own permanent error moves the task to another provider).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use supervisor_engine::{Engine, EngineConfig, SystemClock};
use supervisor_model::{
    EventKind, NewTask, RoutingPrefs, RoutingStrategy, TaskId, TaskStatus, TaskType, Usage,
};
use supervisor_node::{Node, NodeConfig, ProviderSpec, RoutingConfig};
use supervisor_providers::config::Limits;
use supervisor_providers::{
    Capabilities, EventSink, Health, Provider, ProviderError, ProviderEvent, ProviderOutput,
    ProviderRequest,
};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

/// What a scripted provider does on each call.
#[derive(Clone, Copy)]
enum Script {
    /// Always succeeds.
    Ok,
    /// Succeeds on the first `n` calls, then fails retryably forever.
    FailAfter(u64),
    /// Answers 429 with this retry-after on the first `n` calls, then succeeds.
    RateLimited(u64, Duration),
    /// Fails the first `n` calls with a server error, then succeeds.
    FailFirst(u64),
    /// Never answers.
    Hang,
    /// Refuses every call: its key is wrong.
    BadKey,
    /// Reports 100 input and 7 output tokens costing $0.0025, then fails.
    SpendThenFail,
}

struct Scripted {
    name: String,
    script: Script,
    cost: u64,
    calls: AtomicU64,
    /// What its health probe reports: down while set.
    down: AtomicBool,
    /// Whether it claims to work in a task's repository.
    repository: bool,
}

#[async_trait::async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            task_types: TaskType::ALL.to_vec(),
            models: vec![format!("{}-model", self.name)],
            max_context_tokens: 100_000,
            streaming: true,
            tools: false,
            repository: self.repository,
        }
    }
    async fn execute(
        &self,
        req: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        match self.script {
            Script::FailAfter(k) if n >= k => {
                return Err(ProviderError::Retryable {
                    kind: "overloaded",
                    message: format!("{} is overloaded", self.name),
                    retry_after: None,
                });
            }
            Script::RateLimited(k, after) if n < k => {
                return Err(ProviderError::Retryable {
                    kind: "rate_limited",
                    message: format!("{} says slow down", self.name),
                    retry_after: Some(after),
                });
            }
            Script::FailFirst(k) if n < k => {
                return Err(ProviderError::Retryable {
                    kind: "unavailable",
                    message: format!("{} answered 500", self.name),
                    retry_after: None,
                });
            }
            Script::Hang => std::future::pending::<()>().await,
            Script::SpendThenFail => {
                sink.send(ProviderEvent::Usage {
                    usage: Usage {
                        input_tokens: 100,
                        output_tokens: 7,
                        ..Usage::default()
                    },
                    cost_micros: 2500,
                });
                return Err(ProviderError::Retryable {
                    kind: "bad_stream",
                    message: format!("{} dropped the stream midway", self.name),
                    retry_after: None,
                });
            }
            Script::BadKey => {
                return Err(ProviderError::Permanent {
                    kind: "auth",
                    message: format!("{} rejected the API key", self.name),
                });
            }
            _ => {}
        }
        sink.send(ProviderEvent::Output(format!(
            "{} did {}",
            self.name, req.prompt
        )));
        Ok(ProviderOutput {
            output: format!("{} did {}", self.name, req.prompt),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
            cost_micros: self.cost,
            model: format!("{}-model", self.name),
            artifacts: vec![],
        })
    }
    async fn health(&self) -> Health {
        let healthy = !self.down.load(Ordering::SeqCst);
        Health {
            healthy,
            detail: if healthy {
                "scripted"
            } else {
                "scripted outage"
            }
            .into(),
        }
    }
    fn estimate_cost(&self, _req: &ProviderRequest) -> u64 {
        self.cost
    }
}

fn scripted(name: &str, script: Script, cost: u64) -> Arc<Scripted> {
    Arc::new(Scripted {
        name: name.into(),
        script,
        cost,
        calls: AtomicU64::new(0),
        down: AtomicBool::new(false),
        repository: false,
    })
}

/// A scripted provider that works in a task's repository.
fn scripted_repository(name: &str, script: Script) -> Arc<Scripted> {
    Arc::new(Scripted {
        name: name.into(),
        script,
        cost: 0,
        calls: AtomicU64::new(0),
        down: AtomicBool::new(false),
        repository: true,
    })
}

struct Running {
    node: Node,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn start(providers: Vec<Arc<Scripted>>, routing: RoutingConfig, limits: Limits) -> Running {
    start_probing(
        providers,
        routing,
        limits,
        NodeConfig::default().provider_probe_interval,
    )
    .await
}

/// Like [`start`], with providers probed every `probe`.
async fn start_probing(
    providers: Vec<Arc<Scripted>>,
    routing: RoutingConfig,
    limits: Limits,
    probe: Duration,
) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("store");
    let engine = Engine::new(
        db,
        EngineConfig {
            retry_initial_backoff: Duration::from_millis(20),
            ..EngineConfig::default()
        },
        Arc::new(SystemClock),
    );
    let specs = providers
        .into_iter()
        .map(|p| ProviderSpec {
            provider: p,
            max_concurrency: 64,
            limits: limits.clone(),
        })
        .collect();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let cfg = NodeConfig {
        id: format!("routing-{}", NEXT.fetch_add(1, Ordering::SeqCst)),
        progress_flush: Duration::from_millis(20),
        provider_probe_interval: probe,
        ..NodeConfig::default()
    };
    let node = Node::start(engine.clone(), cfg, routing, "127.0.0.1:0", specs)
        .await
        .expect("node");
    Running {
        node,
        engine,
        _dir: dir,
    }
}

fn task(prompt: &str, routing: RoutingPrefs) -> NewTask {
    NewTask {
        task_type: Some(TaskType::BugFix),
        prompt: prompt.into(),
        max_attempts: Some(6),
        routing,
        ..NewTask::default()
    }
}

async fn wait(engine: &Engine, id: TaskId) -> supervisor_model::Task {
    let stream = engine.watch_events("default", id, 0).await.expect("watch");
    let done = tokio::time::timeout(Duration::from_secs(60), stream.collect::<Vec<_>>()).await;
    assert!(done.is_ok(), "task {id} did not finish");
    engine.get("default", id).await.expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_mid_run_leaves_every_task_succeeding_on_the_others() {
    let flaky = scripted("flaky", Script::FailAfter(4), 0);
    let r = start(
        vec![
            scripted("a", Script::Ok, 0),
            flaky.clone(),
            scripted("c", Script::Ok, 0),
        ],
        RoutingConfig {
            strategy: RoutingStrategy::RoundRobin,
            ..RoutingConfig::default()
        },
        Limits {
            breaker_failures: Some(3),
            breaker_cooldown: Some(Duration::from_secs(600)),
            ..Limits::default()
        },
    )
    .await;
    // One task at a time, so the count of calls below is exact (concurrent calls already
    // admitted when the breaker opens would still run).
    let mut moved = 0;
    let mut flaky_successes = 0;
    for i in 0..30 {
        let id = &r
            .engine
            .submit("default", task(&format!("t{i}"), RoutingPrefs::default()))
            .await
            .unwrap()
            .task
            .id;
        let t = wait(&r.engine, *id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "{id}: {:?}", t.error);
        if t.attempts.last().is_some_and(|a| a.provider == "flaky") {
            flaky_successes += 1;
        }
        if t.attempts
            .iter()
            .any(|a| a.provider == "flaky" && a.outcome == "overloaded")
        {
            moved += 1;
            let (events, _, _) = r.engine.read_events("default", *id, 0, 100).await.unwrap();
            assert!(
                events.iter().any(
                    |e| e.kind == EventKind::Activity && e.message.contains("moved from flaky")
                ),
                "the event log says why the attempt moved: {events:?}"
            );
        }
    }
    assert!(moved > 0, "some task must have hit the failing provider");
    assert_eq!(
        flaky_successes, 4,
        "flaky succeeded exactly on its first four calls"
    );
    let snap = r
        .node
        .provider_snapshots()
        .into_iter()
        .find(|s| s.name == "flaky")
        .unwrap();
    assert_eq!(snap.circuit, "open", "three failures open the breaker");
    // Once open, the flaky provider gets no more calls: 4 successes + 3 failures.
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 7);
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_keeps_traffic_off_a_rate_limited_provider() {
    let limited = scripted(
        "limited",
        Script::RateLimited(1, Duration::from_secs(3600)),
        0,
    );
    let r = start(
        vec![limited.clone(), scripted("spare", Script::Ok, 0)],
        RoutingConfig {
            strategy: RoutingStrategy::FailoverChain,
            chain: vec!["limited".into(), "spare".into()],
            ..RoutingConfig::default()
        },
        Limits::default(),
    )
    .await;
    let first = r
        .engine
        .submit("default", task("one", RoutingPrefs::default()))
        .await
        .unwrap()
        .task
        .id;
    let t = wait(&r.engine, first).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    let providers: Vec<(&str, &str)> = t
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        providers,
        vec![("limited", "rate_limited"), ("spare", "succeeded")]
    );
    for i in 0..5 {
        let id = r
            .engine
            .submit(
                "default",
                task(&format!("more {i}"), RoutingPrefs::default()),
            )
            .await
            .unwrap()
            .task
            .id;
        let t = wait(&r.engine, id).await;
        assert_eq!(t.attempts.len(), 1);
        assert_eq!(
            t.attempts[0].provider, "spare",
            "the chain's first provider is throttled for an hour"
        );
    }
    assert_eq!(
        limited.calls.load(Ordering::SeqCst),
        1,
        "retry-after was honoured"
    );
    let snap = r
        .node
        .provider_snapshots()
        .into_iter()
        .find(|s| s.name == "limited")
        .unwrap();
    assert!(
        snap.throttled_for
            .is_some_and(|d| d > Duration::from_secs(3000))
    );
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_rate_limited_provider_delays_the_retry_by_its_retry_after() {
    let r = start(
        vec![scripted(
            "only",
            Script::RateLimited(1, Duration::from_millis(1500)),
            0,
        )],
        RoutingConfig::default(),
        Limits::default(),
    )
    .await;
    let id = r
        .engine
        .submit("default", task("x", RoutingPrefs::default()))
        .await
        .unwrap()
        .task
        .id;
    let t = wait(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    let (events, _, _) = r.engine.read_events("default", id, 0, 100).await.unwrap();
    let retry = events
        .iter()
        .find(|e| e.kind == EventKind::RetryScheduled)
        .expect("a retry");
    assert!(
        retry.message.contains("the provider asked for 1.5s"),
        "{}",
        retry.message
    );
    let second_start = events
        .iter()
        .filter(|e| e.kind == EventKind::Started)
        .nth(1)
        .expect("second attempt");
    // Recorded times: the second attempt was not leased before the provider allowed it.
    assert!(
        second_start.at - retry.at >= 1_500_000,
        "{} us",
        second_start.at - retry.at
    );
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_exclusions_and_cost_ceilings_are_respected() {
    let r = start(
        vec![
            scripted("cheap", Script::Ok, 100),
            scripted("pricey", Script::Ok, 50_000),
            scripted("other", Script::Ok, 200),
        ],
        RoutingConfig {
            strategy: RoutingStrategy::RoundRobin,
            ..RoutingConfig::default()
        },
        Limits::default(),
    )
    .await;
    let prefer = RoutingPrefs {
        preferred_providers: vec!["pricey".into()],
        ..RoutingPrefs::default()
    };
    let id = r
        .engine
        .submit("default", task("p", prefer))
        .await
        .unwrap()
        .task
        .id;
    assert_eq!(wait(&r.engine, id).await.attempts[0].provider, "pricey");

    let exclude = RoutingPrefs {
        excluded_providers: vec!["cheap".into(), "other".into()],
        ..RoutingPrefs::default()
    };
    for i in 0..3 {
        let id = r
            .engine
            .submit("default", task(&format!("e{i}"), exclude.clone()))
            .await
            .unwrap()
            .task
            .id;
        assert_eq!(wait(&r.engine, id).await.attempts[0].provider, "pricey");
    }

    let capped = RoutingPrefs {
        max_cost_micros: Some(150),
        strategy: Some(RoutingStrategy::CostOptimized),
        ..RoutingPrefs::default()
    };
    let id = r
        .engine
        .submit("default", task("c", capped))
        .await
        .unwrap()
        .task
        .id;
    assert_eq!(wait(&r.engine, id).await.attempts[0].provider, "cheap");

    let impossible = RoutingPrefs {
        max_cost_micros: Some(10),
        ..RoutingPrefs::default()
    };
    let id = r
        .engine
        .submit("default", task("never", impossible))
        .await
        .unwrap()
        .task
        .id;
    let t = wait(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    let err = t.error.unwrap_or_default();
    assert!(
        err.contains("no configured provider can serve") && err.contains("over the task's max"),
        "{err}"
    );
    assert_eq!(t.attempt, 1, "a task no provider can serve fails at once");
    r.node.shutdown().await;
}

/// A task with its own attempt budget and time limit.
fn limited(prompt: &str, max_attempts: u32, timeout: Duration) -> NewTask {
    NewTask {
        max_attempts: Some(max_attempts),
        timeout_ms: Some(timeout.as_millis() as u64),
        ..task(prompt, RoutingPrefs::default())
    }
}

async fn submit(r: &Running, t: NewTask) -> TaskId {
    r.engine.submit("default", t).await.unwrap().task.id
}

async fn messages(r: &Running, id: TaskId) -> Vec<String> {
    let (events, _, _) = r.engine.read_events("default", id, 0, 1000).await.unwrap();
    events.into_iter().map(|e| e.message).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_makes_tasks_wait_without_spending_their_attempts() {
    let solo = scripted("solo", Script::FailFirst(1), 0);
    let r = start(
        vec![solo.clone()],
        RoutingConfig {
            max_wait: Duration::from_millis(50),
            ..RoutingConfig::default()
        },
        Limits {
            breaker_failures: Some(1),
            breaker_cooldown: Some(Duration::from_millis(400)),
            ..Limits::default()
        },
    )
    .await;
    // A single 500 opens the breaker.
    let first = submit(&r, limited("first", 1, Duration::from_secs(30))).await;
    assert_eq!(wait(&r.engine, first).await.status, TaskStatus::Failed);
    // Four tasks with one attempt each arrive while it is open, then meet its half-open
    // trial together: none may lose its only attempt to the breaker.
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit(&r, limited(&format!("t{i}"), 1, Duration::from_secs(30))).await);
    }
    let mut deferred = 0;
    for id in ids {
        let t = wait(&r.engine, id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "{id}: {:?}", t.error);
        assert_eq!(t.attempts.len(), 1, "only real requests are attempts");
        let log = messages(&r, id).await;
        if log.iter().any(|m| m.contains("the attempt does not count")) {
            deferred += 1;
            assert!(
                log.iter()
                    .any(|m| m.contains("waiting") && m.contains("circuit")),
                "the wait names the breaker: {log:?}"
            );
        }
        assert!(
            !log.iter().any(|m| m.contains("the provider asked for")),
            "a breaker's cooldown is not the provider asking: {log:?}"
        );
    }
    assert!(deferred > 0, "the breaker was open when they arrived");
    // One failed call and four successful ones: nothing else reached the provider.
    assert_eq!(solo.calls.load(Ordering::SeqCst), 5);
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_ends_as_a_timeout_not_as_an_open_circuit() {
    let r = start(
        vec![scripted("stuck", Script::Hang, 0)],
        RoutingConfig {
            max_wait: Duration::from_millis(50),
            ..RoutingConfig::default()
        },
        Limits {
            breaker_failures: Some(1),
            breaker_cooldown: Some(Duration::from_millis(300)),
            ..Limits::default()
        },
    )
    .await;
    let id = submit(&r, limited("wait forever", 2, Duration::from_millis(300))).await;
    let t = wait(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    let outcomes: Vec<&str> = t.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["timeout", "timeout"]);
    let error = t.error.unwrap_or_default();
    assert!(error.contains("timeout"), "{error}");
    assert!(!error.contains("circuit"), "{error}");
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_own_permanent_error_moves_the_task_to_another_provider() {
    let r = start(
        vec![
            scripted("badkey", Script::BadKey, 0),
            scripted("good", Script::Ok, 0),
        ],
        RoutingConfig {
            strategy: RoutingStrategy::FailoverChain,
            chain: vec!["badkey".into(), "good".into()],
            ..RoutingConfig::default()
        },
        Limits::default(),
    )
    .await;
    let id = submit(&r, limited("fix it", 3, Duration::from_secs(30))).await;
    let t = wait(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{:?}", t.error);
    let tried: Vec<(&str, &str)> = t
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(tried, [("badkey", "auth"), ("good", "succeeded")]);
    r.node.shutdown().await;

    // Alone, the same error fails the task at once: no other provider could serve it.
    let r = start(
        vec![scripted("badkey", Script::BadKey, 0)],
        RoutingConfig::default(),
        Limits::default(),
    )
    .await;
    let id = submit(&r, limited("fix it", 3, Duration::from_secs(30))).await;
    let t = wait(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.attempts.len(), 1);
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_reached_no_provider_is_worded_as_such() {
    let flip = scripted("flip", Script::Ok, 0);
    flip.down.store(true, Ordering::SeqCst);
    let r = start_probing(
        vec![flip.clone()],
        RoutingConfig {
            max_wait: Duration::from_millis(50),
            ..RoutingConfig::default()
        },
        Limits::default(),
        Duration::from_millis(100),
    )
    .await;
    // Let the first probe see the outage before the task arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = submit(&r, limited("later", 20, Duration::from_secs(30))).await;
    // Wait for a failed attempt, then bring the provider back.
    for _ in 0..500 {
        if !r
            .engine
            .get("default", id)
            .await
            .unwrap()
            .attempts
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    flip.down.store(false, Ordering::SeqCst);
    let t = wait(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{:?}", t.error);
    assert!(t.attempts.len() >= 2, "{:?}", t.attempts);
    assert_eq!(t.attempts[0].provider, "");
    let log = messages(&r, id).await;
    let retry = log
        .iter()
        .find(|m| m.starts_with("attempt 1 of 20 failed"))
        .expect("the first attempt's failure is recorded");
    assert!(
        retry.starts_with("attempt 1 of 20 failed: no_provider_available: "),
        "{retry}"
    );
    assert!(
        retry.contains("flip (unhealthy (scripted outage))"),
        "{retry}"
    );
    assert!(
        !log.iter()
            .any(|m| m.contains("moved from  ") || m.contains("failed on :")),
        "no blank provider in the log: {log:?}"
    );
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_failed_attempt_spent_is_charged() {
    let r = start(
        vec![scripted("spender", Script::SpendThenFail, 0)],
        RoutingConfig::default(),
        Limits::default(),
    )
    .await;
    let id = submit(&r, limited("costly", 1, Duration::from_secs(30))).await;
    let t = wait(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    let attempt = &t.attempts[0];
    assert_eq!(
        (attempt.usage.input_tokens, attempt.usage.output_tokens),
        (100, 7)
    );
    assert_eq!((attempt.cost_micros, t.cost_micros), (2500, 2500));
    let today = supervisor_engine::utc_day(r.engine.now_micros());
    let rows = r.engine.ledger("default", &today, &today).await.unwrap();
    let row = rows
        .iter()
        .find(|row| row.provider == "spender")
        .expect("the failure is in the ledger");
    assert_eq!((row.input_tokens, row.cost_micros), (100, 2500));
    let snap = r
        .node
        .provider_snapshots()
        .into_iter()
        .find(|s| s.name == "spender")
        .unwrap();
    assert_eq!((snap.input_tokens, snap.cost_micros), (100, 2500));
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_task_goes_only_to_a_provider_that_works_in_repositories() {
    let chat = scripted("chat", Script::Ok, 0);
    let r = start(
        vec![chat.clone(), scripted_repository("agent", Script::Ok)],
        RoutingConfig {
            strategy: RoutingStrategy::FailoverChain,
            chain: vec!["chat".into(), "agent".into()],
            ..RoutingConfig::default()
        },
        Limits::default(),
    )
    .await;
    let mut t = limited("fix the checkout", 3, Duration::from_secs(30));
    t.context.insert("repo".into(), "/src/app".into());
    let id = submit(&r, t.clone()).await;
    let done = wait(&r.engine, id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.result.expect("result").provider, "agent");
    // Without the repository the chain's first provider takes it.
    let id = submit(&r, limited("just answer", 3, Duration::from_secs(30))).await;
    assert_eq!(
        wait(&r.engine, id).await.result.expect("result").provider,
        "chat"
    );
    r.node.shutdown().await;

    // No provider able to work in a repository: the task fails, naming why.
    let r = start(
        vec![scripted("chat", Script::Ok, 0)],
        RoutingConfig::default(),
        Limits::default(),
    )
    .await;
    let id = submit(&r, t).await;
    let done = wait(&r.engine, id).await;
    assert_eq!(done.status, TaskStatus::Failed);
    let error = done.error.unwrap_or_default();
    assert!(error.contains("cannot work in a repository"), "{error}");
    assert!(
        done.attempts.iter().all(|a| a.provider.is_empty()),
        "the chat provider never ran it"
    );
    r.node.shutdown().await;
}
