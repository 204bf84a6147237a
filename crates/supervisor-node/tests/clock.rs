//! A whole node on a manual clock: its timers move only when the test moves them, so what
//! depends on time (here, fencing a silent peer after the failure timeout) is checked
//! step by step without sleeping through it.

use std::sync::Arc;
use std::time::Duration;

use supervisor_engine::{Engine, EngineConfig, NodeAnnouncement, NodeState, SystemClock};
use supervisor_node::{
    Clock, ClusterConfig, Liveness, Node, NodeConfig, NodeSetup, ProviderSpec, RoutingConfig,
};
use supervisor_providers::mock::{MockConfig, MockProvider};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

/// Bounds a wait for the node's actors to act on a tick (real time, a guard only: no
/// assertion depends on how long anything took).
const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until `probe` holds.
async fn until(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !probe().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

async fn ghost_state(engine: &Engine) -> NodeState {
    let nodes = engine.list_nodes().await.expect("list nodes");
    nodes
        .into_iter()
        .find(|n| n.id == "ghost")
        .expect("the ghost is recorded")
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_fenced_exactly_when_the_failure_timeout_has_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("store");
    let engine = Engine::new(db, EngineConfig::default(), Arc::new(SystemClock));
    // A peer that registers and then never beats again.
    engine
        .register_node(
            "ghost",
            &NodeAnnouncement {
                address: "127.0.0.1:1".into(),
                cluster_address: String::new(),
                providers: vec!["mock".into()],
                max_in_flight: 1,
            },
        )
        .await
        .expect("ghost registers");

    let (clock, hand) = Clock::manual();
    let cluster = ClusterConfig {
        heartbeat_interval: Duration::from_secs(1),
        failure_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    };
    let node = Node::start_with(NodeSetup {
        cluster,
        clock,
        ..NodeSetup::new(
            engine.clone(),
            NodeConfig {
                id: "watcher".into(),
                ..NodeConfig::default()
            },
            RoutingConfig::default(),
            "127.0.0.1:2",
            vec![ProviderSpec {
                provider: Arc::new(MockProvider::new("mock", MockConfig::default())),
                max_concurrency: 4,
                limits: Default::default(),
            }],
        )
    })
    .await
    .expect("node starts");

    let silence = |node: &Node| {
        node.peer_views()
            .into_iter()
            .find(|v| v.id == "ghost")
            .map(|v| (v.silent_for, v.liveness))
    };
    // The first tick runs at start: the ghost is being watched from this instant.
    until("the first observation", async || {
        silence(&node) == Some((Duration::ZERO, Liveness::Alive))
    })
    .await;
    for second in 1..=4u64 {
        hand.advance(Duration::from_secs(1));
        let want = Duration::from_secs(second);
        until("the next heartbeat tick", async || {
            silence(&node).is_some_and(|(silent, _)| silent == want)
        })
        .await;
        assert_eq!(
            ghost_state(&engine).await,
            NodeState::Active,
            "fenced after only {second}s of silence"
        );
        let liveness = silence(&node).map(|(_, l)| l);
        let expected = if second > 2 {
            Liveness::Suspect
        } else {
            Liveness::Alive
        };
        assert_eq!(liveness, Some(expected), "after {second}s of silence");
    }
    // The fifth silent second reaches the failure timeout.
    hand.advance(Duration::from_secs(1));
    until("the ghost to be fenced", async || {
        ghost_state(&engine).await == NodeState::Fenced
    })
    .await;
    // The watcher itself was never judged: its own heartbeats went on.
    let me = engine
        .list_nodes()
        .await
        .expect("list nodes")
        .into_iter()
        .find(|n| n.id == "watcher")
        .expect("watcher recorded");
    assert_eq!(me.state, NodeState::Active);
    node.shutdown().await;
}
