//! Membership invariants: heartbeats, fencing of a silent node, refusal of every write of
//! a fenced incarnation, rejoin with a new epoch, drain requests, singleton takeover.

use std::sync::Arc;
use std::time::Duration;

use supervisor_model::{NewTask, TaskResult, TaskStatus, TaskType, Usage};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

use crate::*;

struct Cluster {
    engine: Engine,
    a: NodeIdentity,
    b: NodeIdentity,
    _dir: tempfile::TempDir,
}

fn announce(address: &str) -> NodeAnnouncement {
    NodeAnnouncement {
        address: address.into(),
        cluster_address: format!("{address}0"),
        providers: vec!["mock".into()],
        max_in_flight: 8,
    }
}

/// Two node identities sharing one store (the engine does not care which process runs
/// them; the process-level tests live in the chaos suite).
async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("open store");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let cfg = EngineConfig {
        lease_duration: Duration::from_secs(30),
        ..EngineConfig::default()
    };
    let engine = Engine::new(db, cfg, Arc::new(clock));
    let a = engine
        .register_node("node-a", &announce("10.0.0.1:1"))
        .await
        .expect("register a");
    let b = engine
        .register_node("node-b", &announce("10.0.0.2:1"))
        .await
        .expect("register b");
    Cluster {
        engine,
        a,
        b,
        _dir: dir,
    }
}

fn task(prompt: &str) -> NewTask {
    NewTask {
        task_type: Some(TaskType::BugFix),
        prompt: prompt.into(),
        ..NewTask::default()
    }
}

fn succeeded(task_ref: &TaskRef) -> Finish {
    Finish {
        task_ref: task_ref.clone(),
        provider: "mock".into(),
        model: "mock-1".into(),
        usage: Usage::default(),
        cost_micros: 0,
        trailing: vec![],
        outcome: Outcome::Succeeded(TaskResult {
            output: "done".into(),
            usage: Usage::default(),
            cost_micros: 0,
            provider: "mock".into(),
            model: "mock-1".into(),
            artifacts: vec![],
        }),
    }
}

fn node<'a>(nodes: &'a [NodeInfo], id: &str) -> &'a NodeInfo {
    nodes.iter().find(|n| n.id == id).expect("node listed")
}

#[tokio::test]
async fn heartbeats_move_the_revision_and_record_the_load() {
    let c = cluster().await;
    let first = c
        .engine
        .heartbeat(
            &c.a,
            NodeLoad {
                in_flight: 3,
                ..NodeLoad::default()
            },
        )
        .await
        .unwrap();
    let second = c
        .engine
        .heartbeat(
            &c.a,
            NodeLoad {
                in_flight: 5,
                ..NodeLoad::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((first.revision, second.revision), (1, 2));
    let nodes = c.engine.list_nodes().await.unwrap();
    let a = node(&nodes, "node-a");
    assert_eq!(a.revision, 2);
    assert_eq!(a.load.in_flight, 5);
    assert_eq!(a.state, NodeState::Active);
    assert_eq!(a.cluster_address, "10.0.0.1:10");
    assert_eq!(a.providers, vec!["mock".to_string()]);
    assert_eq!(node(&nodes, "node-b").revision, 0);
}

#[tokio::test]
async fn a_fenced_node_loses_its_leases_at_once_and_every_write_is_refused() {
    let c = cluster().await;
    for i in 0..3 {
        c.engine.submit("t", task(&format!("p{i}"))).await.unwrap();
    }
    let held = c.engine.lease(&c.a, 10).await.unwrap().tasks;
    assert_eq!(held.len(), 3);
    c.engine.heartbeat(&c.a, NodeLoad::default()).await.unwrap();

    // B saw A's revision stop at 1: it fences A, and A's tasks are leasable by B now,
    // long before their 30s leases lapse.
    assert!(
        c.engine
            .fence_node("node-a", c.a.epoch, 1, "node-b")
            .await
            .unwrap()
    );
    let taken = c.engine.lease(&c.b, 10).await.unwrap().tasks;
    assert_eq!(taken.len(), 3);
    // The attempts the fenced node abandoned do not count.
    assert!(
        taken
            .iter()
            .all(|t| (t.task.attempt, t.task.abandoned_attempts) == (1, 1))
    );

    // A wakes up: its completion, renewal, hand-back, lease and heartbeat are refused.
    let late = c.engine.finish(succeeded(&held[0].task_ref)).await.unwrap();
    assert!(matches!(late, RunnerWriteResult::Refused(_)), "{late:?}");
    let renewed = c.engine.renew(&[held[1].task_ref.clone()]).await.unwrap();
    assert_eq!(renewed, vec![false]);
    let Err(err) = c.engine.lease(&c.a, 10).await else {
        panic!("a fenced node leased");
    };
    assert!(matches!(err, EngineError::Fenced { .. }), "{err}");
    let err = c
        .engine
        .heartbeat(&c.a, NodeLoad::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fenced by node node-b"), "{err}");
    assert!(!c.engine.node_is_current(&c.a).await.unwrap());

    // B completes every task exactly once.
    for t in &taken {
        let ok = c.engine.finish(succeeded(&t.task_ref)).await.unwrap();
        assert_eq!(ok, RunnerWriteResult::Accepted(TaskStatus::Succeeded));
    }
    for t in &held {
        let (events, _, _) = c
            .engine
            .read_events("t", t.task_ref.id, 0, 100)
            .await
            .unwrap();
        let done: Vec<_> = events
            .iter()
            .filter(|e| e.kind == supervisor_model::EventKind::Succeeded)
            .collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].node, "node-b");
        assert_eq!(done[0].fence, 2);
    }

    // A rejoins with a newer epoch than the fence gave it and takes work again.
    let rejoined = c
        .engine
        .register_node("node-a", &announce("10.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(rejoined.epoch, c.a.epoch + 2);
    c.engine.submit("t", task("after")).await.unwrap();
    assert_eq!(c.engine.lease(&rejoined, 10).await.unwrap().tasks.len(), 1);
    let nodes = c.engine.list_nodes().await.unwrap();
    assert_eq!(node(&nodes, "node-a").state, NodeState::Active);
}

#[tokio::test]
async fn a_heartbeat_after_the_observation_prevents_the_fence() {
    let c = cluster().await;
    c.engine.heartbeat(&c.a, NodeLoad::default()).await.unwrap();
    // A beats again between B's observation and B's fence: no fence.
    c.engine.heartbeat(&c.a, NodeLoad::default()).await.unwrap();
    assert!(
        !c.engine
            .fence_node("node-a", c.a.epoch, 1, "node-b")
            .await
            .unwrap()
    );
    assert!(c.engine.node_is_current(&c.a).await.unwrap());
    // A node that left is not fenced either.
    c.engine.set_node_leaving(&c.b, false).await.unwrap();
    assert!(
        !c.engine
            .fence_node("node-b", c.b.epoch, 0, "node-a")
            .await
            .unwrap()
    );
    let nodes = c.engine.list_nodes().await.unwrap();
    assert_eq!(node(&nodes, "node-b").state, NodeState::Left);
}

#[tokio::test]
async fn a_drain_request_reaches_the_node_in_its_heartbeat() {
    let c = cluster().await;
    let reply = c.engine.heartbeat(&c.b, NodeLoad::default()).await.unwrap();
    assert!(!reply.drain_requested);
    let info = c.engine.request_drain("node-b").await.unwrap();
    assert!(info.drain_requested);
    let reply = c.engine.heartbeat(&c.b, NodeLoad::default()).await.unwrap();
    assert!(reply.drain_requested);
    let err = c.engine.request_drain("node-z").await.unwrap_err();
    assert!(matches!(err, EngineError::NodeNotFound { .. }), "{err}");
    assert!(err.to_string().contains("supervisor cluster status"));
}

#[tokio::test]
async fn a_singleton_duty_passes_at_once_when_its_holder_is_fenced() {
    let c = cluster().await;
    let ttl = Duration::from_secs(60);
    let fence_a = c
        .engine
        .acquire_singleton("reaper", &c.a, ttl)
        .await
        .unwrap()
        .expect("a takes the duty");
    assert_eq!(
        c.engine
            .acquire_singleton("reaper", &c.b, ttl)
            .await
            .unwrap(),
        None
    );
    assert!(
        c.engine
            .fence_node("node-a", c.a.epoch, 0, "node-b")
            .await
            .unwrap()
    );
    let fence_b = c
        .engine
        .acquire_singleton("reaper", &c.b, ttl)
        .await
        .unwrap()
        .expect("b takes over without waiting for the ttl");
    assert!(fence_b > fence_a);
}
