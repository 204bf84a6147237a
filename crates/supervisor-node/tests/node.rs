//! The node's actors against a real embedded store: tasks run to completion, a panicking
//! agent fails only its attempt, cancellation reaches a running agent, and a drain hands
//! back what it cannot finish.

use std::sync::Arc;
use std::time::Duration;

use supervisor_engine::{Engine, EngineConfig, SystemClock};
use supervisor_model::{EventKind, NewTask, TaskId, TaskStatus, TaskType};
use supervisor_node::{Node, NodeConfig, ProviderSpec, RoutingConfig, TreeHealth};
use supervisor_providers::mock::{MockConfig, MockProvider};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

struct Running {
    node: Node,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn start(mock: MockConfig, engine_cfg: EngineConfig, node_cfg: NodeConfig) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("store");
    let engine = Engine::new(db, engine_cfg, Arc::new(SystemClock));
    let provider = ProviderSpec {
        max_concurrency: 1024,
        provider: Arc::new(MockProvider::new("mock", mock)),
        limits: Default::default(),
    };
    let node = Node::start(
        engine.clone(),
        node_cfg,
        RoutingConfig::default(),
        "127.0.0.1:0",
        vec![provider],
    )
    .await
    .expect("node starts");
    Running {
        node,
        engine,
        _dir: dir,
    }
}

fn node_cfg(id: &str) -> NodeConfig {
    NodeConfig {
        id: id.to_string(),
        progress_flush: Duration::from_millis(20),
        ..NodeConfig::default()
    }
}

fn task(prompt: &str) -> NewTask {
    NewTask {
        task_type: Some(TaskType::CodeAnalysis),
        prompt: prompt.into(),
        ..NewTask::default()
    }
}

/// Waits (bounded) until the task is terminal, following its event stream.
async fn wait_terminal(engine: &Engine, id: TaskId) -> supervisor_model::Task {
    use futures::StreamExt;
    let stream = engine.watch_events("default", id, 0).await.expect("watch");
    let drained = tokio::time::timeout(Duration::from_secs(60), stream.collect::<Vec<_>>()).await;
    assert!(drained.is_ok(), "task {id} did not finish in time");
    engine.get("default", id).await.expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_to_completion_with_streamed_output() {
    let r = start(
        MockConfig {
            latency: Duration::from_millis(60),
            stream_chunks: 3,
            ..Default::default()
        },
        EngineConfig::default(),
        node_cfg("n-complete"),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            r.engine
                .submit("default", task(&format!("analyse module {i}")))
                .await
                .unwrap()
                .task
                .id,
        );
    }
    for id in &ids {
        let t = wait_terminal(&r.engine, *id).await;
        assert_eq!(t.status, TaskStatus::Succeeded, "{:?}", t.error);
        let expected = MockProvider::output_for(TaskType::CodeAnalysis, &t.prompt);
        assert_eq!(t.result.unwrap().output, expected);
    }
    let (events, _, _) = r
        .engine
        .read_events("default", ids[0], 0, 100)
        .await
        .unwrap();
    let streamed: String = events
        .iter()
        .filter(|e| e.kind == EventKind::Output)
        .map(|e| e.output.as_str())
        .collect();
    assert_eq!(
        streamed,
        MockProvider::output_for(TaskType::CodeAnalysis, "analyse module 0")
    );
    assert_eq!(
        r.engine
            .provider_stats("mock")
            .await
            .unwrap()
            .completions_accepted,
        50
    );
    let snaps = r.node.provider_snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].executions_started, 50);
    assert!(snaps[0].latency_p50.is_some());
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_agent_fails_its_attempt_not_the_node() {
    let r = start(
        MockConfig {
            panic_rate: 1.0,
            ..Default::default()
        },
        EngineConfig {
            retry_initial_backoff: Duration::from_millis(10),
            ..EngineConfig::default()
        },
        node_cfg("n-panic"),
    )
    .await;
    let mut req = task("this will panic");
    req.max_attempts = Some(2);
    let id = r.engine.submit("default", req).await.unwrap().task.id;
    let t = wait_terminal(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.attempt, 2, "each panic cost one attempt");
    assert!(
        t.error.as_deref().unwrap_or("").contains("panicked"),
        "{:?}",
        t.error
    );
    // The node is still whole and still leasing.
    assert_eq!(*r.node.health().borrow(), TreeHealth::Serving);
    let again = r
        .engine
        .submit("default", task("and another"))
        .await
        .unwrap()
        .task
        .id;
    assert_eq!(
        wait_terminal(&r.engine, again).await.status,
        TaskStatus::Failed
    );
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_its_agent() {
    let r = start(
        MockConfig {
            latency: Duration::from_secs(30),
            ..Default::default()
        },
        EngineConfig::default(),
        node_cfg("n-cancel"),
    )
    .await;
    let id = r
        .engine
        .submit("default", task("slow"))
        .await
        .unwrap()
        .task
        .id;
    // Wait until it runs.
    let mut running = false;
    for _ in 0..200 {
        if r.engine.get("default", id).await.unwrap().status == TaskStatus::Running
            && r.node.in_flight().await == 1
        {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(running, "task never started");
    r.engine.cancel("default", id, "not needed").await.unwrap();
    let mut stopped = false;
    for _ in 0..200 {
        if r.node.in_flight().await == 0 {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(stopped, "the agent kept running after the cancel");
    assert_eq!(
        r.engine.get("default", id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    assert_eq!(
        r.engine
            .provider_stats("mock")
            .await
            .unwrap()
            .completions_accepted,
        0
    );
    r.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_hands_back_what_it_cannot_finish() {
    let r = start(
        MockConfig {
            latency: Duration::from_secs(60),
            ..Default::default()
        },
        EngineConfig::default(),
        NodeConfig {
            drain_timeout: Duration::from_millis(200),
            ..node_cfg("n-drain")
        },
    )
    .await;
    let id = r
        .engine
        .submit("default", task("long"))
        .await
        .unwrap()
        .task
        .id;
    for _ in 0..200 {
        if r.node.in_flight().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let report = r.node.shutdown().await;
    assert_eq!(report.handed_back, 1);
    let t = r.engine.get("default", id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(t.attempt, 0, "a hand-back does not spend an attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_over_its_time_limit_fails_and_is_retried() {
    let r = start(
        MockConfig {
            latency: Duration::from_secs(30),
            ..Default::default()
        },
        EngineConfig {
            retry_initial_backoff: Duration::from_millis(10),
            ..EngineConfig::default()
        },
        node_cfg("n-timeout"),
    )
    .await;
    let mut req = task("too slow for its budget");
    req.timeout_ms = Some(150);
    req.max_attempts = Some(2);
    let id = r.engine.submit("default", req).await.unwrap().task.id;
    let t = wait_terminal(&r.engine, id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.attempt, 2);
    assert!(
        t.error.as_deref().unwrap_or("").contains("time limit"),
        "{:?}",
        t.error
    );
    let (events, _, _) = r.engine.read_events("default", id, 0, 100).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == EventKind::RetryScheduled),
        "the first timeout was retried"
    );
    r.node.shutdown().await;
}
