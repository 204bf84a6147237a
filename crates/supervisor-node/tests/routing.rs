//! Routing against scripted providers on a real node and store: failover when a provider
//! starts failing mid-run, `retry-after` honoured, the circuit breaker visible, and the
//! per-task constraints (preferred, excluded, max cost).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

struct Scripted {
    name: String,
    script: Script,
    cost: u64,
    calls: AtomicU64,
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
        Health {
            healthy: true,
            detail: "scripted".into(),
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
    })
}

struct Running {
    node: Node,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn start(providers: Vec<Arc<Scripted>>, routing: RoutingConfig, limits: Limits) -> Running {
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
