//! Two nodes in two processes (ractor process groups are process-global, so one process
//! cannot hold two cluster nodes): this test binary is node A, and re-executes itself with
//! `CLUSTER_NET_PEER` set to become node B, which serves two mock providers that A has
//! not got.
//!
//! The scenarios run in order on one node A and print like libtest; any failure fails
//! the binary. They pin down: a wrong cookie does not authenticate; the right one does
//! and B's providers become reachable from A, through the router too; killing B with
//! SIGKILL mid-call fails A's call promptly with a retryable `unavailable` error naming
//! B; B restarted (new epoch) is redialled and serves again; a peer the store no longer
//! lists is disconnected.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use supervisor_engine::{Engine, EngineConfig, NodeIdentity, SystemClock};
use supervisor_model::{NewTask, RoutingPrefs, Task, TaskId, TaskStatus, TaskType};
use supervisor_node::internals::{
    ClusterNet, LivePeer, Peer, ProviderActor, ProviderArgs, ProviderHandle, RemoteProviderInfo,
    RouteError, RouteRequest, Router,
};
use supervisor_node::{Clock, ClusterConfig, ClusterTls, Rng};
use supervisor_node::{Node, NodeConfig, ProviderSpec, RoutingConfig};
use supervisor_providers::config::Limits;
use supervisor_providers::mock::{MockConfig, MockProvider};
use supervisor_providers::{EventSink, ProviderError, ProviderRequest};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

const PEER_ENV: &str = "CLUSTER_NET_PEER";
const COOKIE: &str = "the-right-cookie";
/// Guard against hangs only; no assertion depends on how long anything took.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os(PEER_ENV).is_some() {
        runtime.block_on(run_peer());
        return;
    }
    let outcome = std::panic::catch_unwind(|| runtime.block_on(scenarios()));
    match outcome {
        Ok(()) => println!("\ntest result: ok. cluster_net scenarios passed"),
        Err(_) => {
            eprintln!("\ntest result: FAILED. see the panic above");
            std::process::exit(1);
        }
    }
}

fn config(listen: &str, cookie: &str) -> ClusterConfig {
    ClusterConfig {
        listen: listen.into(),
        cookie: cookie.into(),
        redial_interval: Duration::from_millis(100),
        ..ClusterConfig::default()
    }
}

/// The certificate files of node `who` in `dir` (written by [`write_certs`]).
fn tls_files(dir: &Path, who: &str) -> ClusterTls {
    ClusterTls {
        cert: dir.join(format!("{who}.pem")),
        key: dir.join(format!("{who}.key")),
        ca: dir.join("ca.pem"),
    }
}

/// Writes an authority and, for each of `nodes`, a certificate for 127.0.0.1 it signed.
fn write_certs(dir: &Path, nodes: &[&str]) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cluster test authority");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("authority");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for who in nodes {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca).expect("certificate");
        std::fs::write(dir.join(format!("{who}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{who}.key")), key.serialize_pem()).expect("write");
    }
}

/// Node B: a cluster node with providers `fast` and `slow` (a minute per call), that
/// lists node A as its peer on every "heartbeat", until its stdin closes.
async fn run_peer() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let me = NodeIdentity {
        id: var("PEER_ID"),
        epoch: var("PEER_EPOCH").parse().expect("epoch"),
    };
    let mut cfg = config(&var("PEER_LISTEN"), &var("PEER_COOKIE"));
    if let Ok(dir) = std::env::var("PEER_TLS_DIR") {
        cfg.tls = Some(tls_files(Path::new(&dir), &var("PEER_TLS_NAME")));
    }
    let net = ClusterNet::start(&cfg, &me, Clock::system(), Rng::from_entropy())
        .await
        .expect("peer cluster net");
    let (changes, _) = tokio::sync::watch::channel(0u64);
    let slow_ms: u64 = std::env::var("PEER_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    for (name, latency) in [
        ("fast", Duration::ZERO),
        ("slow", Duration::from_millis(slow_ms)),
    ] {
        let provider = Arc::new(MockProvider::new(
            name,
            MockConfig {
                latency,
                ..MockConfig::default()
            },
        ));
        let handle = Arc::new(ProviderHandle::new(
            provider,
            4,
            Limits::default(),
            changes.clone(),
            Clock::system(),
        ));
        ractor::Actor::spawn(
            None,
            ProviderActor,
            ProviderArgs {
                handle,
                probe_interval: Duration::from_secs(30),
            },
        )
        .await
        .expect("provider actor");
    }
    let a = Peer {
        node_id: var("PEER_OF_ID"),
        epoch: 1,
        address: var("PEER_OF_ADDRESS"),
    };
    println!("READY");
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = closed_tx.send(());
    });
    loop {
        net.set_peers(vec![a.clone()]);
        tokio::select! {
            _ = &mut closed => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    net.shutdown().await;
}

struct PeerProcess {
    child: Child,
}

impl PeerProcess {
    fn start(id: &str, epoch: u64, listen: &str, cookie: &str, a_address: &str) -> PeerProcess {
        Self::start_with(id, epoch, listen, cookie, a_address, None)
    }

    fn start_with(
        id: &str,
        epoch: u64,
        listen: &str,
        cookie: &str,
        a_address: &str,
        tls: Option<(&Path, &str)>,
    ) -> PeerProcess {
        Self::start_env(id, epoch, listen, cookie, a_address, tls, &[])
    }

    fn start_env(
        id: &str,
        epoch: u64,
        listen: &str,
        cookie: &str,
        a_address: &str,
        tls: Option<(&Path, &str)>,
        env: &[(&str, &str)],
    ) -> PeerProcess {
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command.envs(env.iter().copied());
        if let Some((dir, name)) = tls {
            command.env("PEER_TLS_DIR", dir).env("PEER_TLS_NAME", name);
        }
        let mut child = command
            .env(PEER_ENV, "1")
            .env("PEER_ID", id)
            .env("PEER_EPOCH", epoch.to_string())
            .env("PEER_LISTEN", listen)
            .env("PEER_COOKIE", cookie)
            .env("PEER_OF_ID", "a")
            .env("PEER_OF_ADDRESS", a_address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the peer process");
        let stdout = child.stdout.take().expect("peer stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "READY" => break,
                Some(Ok(_)) => {}
                _ => panic!("peer {id} exited before it was ready"),
            }
        }
        PeerProcess { child }
    }

    fn kill(&mut self) {
        // SIGKILL: no goodbye on the socket beyond what the kernel does.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn remote(net: &ClusterNet, name: &str, node: &str, epoch: u64) -> Option<RemoteProviderInfo> {
    net.directory()
        .list()
        .into_iter()
        .find(|p| p.name == name && p.node_id == node && p.epoch == epoch)
}

fn request(prompt: &str, timeout: Duration) -> ProviderRequest {
    ProviderRequest::simple("task-1", TaskType::BugFix, prompt, timeout)
}

async fn run_on(
    net: &ClusterNet,
    provider: &str,
    req: ProviderRequest,
) -> Result<String, ProviderError> {
    let handle = net
        .directory()
        .handles()
        .into_iter()
        .find(|h| h.name == provider)
        .unwrap_or_else(|| panic!("no remote provider {provider}"));
    let (sink, _events) = EventSink::channel();
    handle.provider.execute(req, sink).await.map(|o| o.output)
}

/// Reports (does not assert) the time of a remote call to a provider that answers at
/// once: one at a time, then 16 in flight.
async fn measure(net: &ClusterNet) {
    let handle = net
        .directory()
        .handles()
        .into_iter()
        .find(|h| h.name == "fast")
        .expect("fast is reachable");
    let calls = 300;
    let mut took = Vec::with_capacity(calls);
    for i in 0..calls {
        let (sink, _events) = EventSink::channel();
        let started = std::time::Instant::now();
        handle
            .provider
            .execute(request(&format!("call {i}"), Duration::from_secs(10)), sink)
            .await
            .expect("remote call");
        took.push(started.elapsed());
    }
    took.sort_unstable();
    let at = |p: f64| took[((took.len() - 1) as f64 * p) as usize];
    println!(
        "  {calls} sequential calls: p50 {:?}, p99 {:?}",
        at(0.5),
        at(0.99)
    );
    let started = std::time::Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let handle = handle.clone();
        running.spawn(async move {
            for i in 0..calls / 16 {
                let (sink, _events) = EventSink::channel();
                handle
                    .provider
                    .execute(
                        request(&format!("w{worker} call {i}"), Duration::from_secs(10)),
                        sink,
                    )
                    .await
                    .expect("remote call");
            }
        });
    }
    while let Some(done) = running.join_next().await {
        done.expect("worker");
    }
    let n = calls / 16 * 16;
    println!(
        "  {n} calls, 16 in flight: {:.0} calls/s",
        n as f64 / started.elapsed().as_secs_f64()
    );
}

async fn finished(engine: &Engine, id: TaskId) -> Task {
    let stream = engine.watch_events("default", id, 0).await.expect("watch");
    let done = tokio::time::timeout(Duration::from_secs(120), stream.collect::<Vec<_>>()).await;
    assert!(done.is_ok(), "task {id} did not finish");
    engine.get("default", id).await.expect("get")
}

fn step(name: &str) {
    println!("test cluster_net::{name} ...");
}

async fn scenarios() {
    let a_address = free_address();
    let a = Arc::new(
        ClusterNet::start(
            &config(&a_address, COOKIE),
            &NodeIdentity {
                id: "a".into(),
                epoch: 1,
            },
            Clock::system(),
            Rng::from_entropy(),
        )
        .await
        .expect("node A"),
    );

    step("a_wrong_cookie_does_not_authenticate");
    {
        let b_address = free_address();
        let _b = PeerProcess::start("b-wrong", 1, &b_address, "not-the-cookie", &a_address);
        a.set_peers(vec![Peer {
            node_id: "b-wrong".into(),
            epoch: 1,
            address: b_address.clone(),
        }]);
        let failed = eventually("a failed dial to the wrong-cookie peer", || {
            a.sessions()
                .into_iter()
                .find(|s| s.node_id == "b-wrong" && s.failures >= 2)
        })
        .await;
        assert!(!failed.connected);
        let why = failed.last_error.expect("a reason");
        assert!(
            why.contains("cookie"),
            "the error should point at the cookie: {why}"
        );
        println!("  A's link to the peer: {why}");
        assert!(
            a.directory().list().is_empty(),
            "nothing reachable without authentication"
        );
    }

    step("the_right_cookie_authenticates_and_providers_become_reachable");
    let b_address = free_address();
    let mut b = PeerProcess::start("b", 1, &b_address, COOKIE, &a_address);
    let b1 = Peer {
        node_id: "b".into(),
        epoch: 1,
        address: b_address.clone(),
    };
    a.set_peers(vec![b1.clone()]);
    eventually("A connected to B", || {
        a.sessions()
            .into_iter()
            .find(|s| s.node_id == "b" && s.connected)
    })
    .await;
    assert!(
        a.sessions().iter().all(|s| s.node_id != "b-wrong"),
        "an unlisted peer is forgotten"
    );
    let fast = eventually("B's providers reachable from A", || {
        remote(&a, "fast", "b", 1)
    })
    .await;
    assert_eq!(fast.kind, "mock");
    eventually("B's slow provider too", || remote(&a, "slow", "b", 1)).await;

    step("a_provider_only_b_has_runs_a_request_sent_from_a");
    let prompt = "find the off-by-one in the pager";
    let out = run_on(&a, "fast", request(prompt, Duration::from_secs(10)))
        .await
        .expect("remote execution");
    assert_eq!(out, MockProvider::output_for(TaskType::BugFix, prompt));

    step("remote_call_overhead_on_loopback");
    measure(&a).await;

    step("the_router_offers_remote_providers_when_no_local_one_can_serve");
    {
        let router = docs_only_router(&a);
        let req = request("fix it", Duration::from_secs(10));
        let prefs = RoutingPrefs {
            excluded_providers: vec!["slow".into()],
            ..RoutingPrefs::default()
        };
        let route = router
            .choose(&RouteRequest {
                task_type: TaskType::BugFix,
                request: &req,
                prefs: &prefs,
                failed_on: &[],
            })
            .map_err(|e| format!("{e:?}"))
            .expect("a remote route");
        assert_eq!(route.handle.name, "fast");
        assert_eq!(route.handle.node(), Some("b"));
        assert!(route.reason.contains("node b"), "{}", route.reason);
        // A task the local provider serves stays local unless it prefers a remote one.
        let docs = RoutingPrefs::default();
        let local = router
            .choose(&RouteRequest {
                task_type: TaskType::Documentation,
                request: &req,
                prefs: &docs,
                failed_on: &[],
            })
            .map_err(|e| format!("{e:?}"))
            .expect("a local route");
        assert_eq!(local.handle.node(), None);
        let prefer = RoutingPrefs {
            preferred_providers: vec!["fast".into()],
            ..RoutingPrefs::default()
        };
        let preferred = router
            .choose(&RouteRequest {
                task_type: TaskType::Documentation,
                request: &req,
                prefs: &prefer,
                failed_on: &[],
            })
            .map_err(|e| format!("{e:?}"))
            .expect("the preferred remote route");
        assert_eq!(preferred.handle.node(), Some("b"));
    }

    step("killing_b_mid_call_fails_the_call_retryably_naming_b");
    let call = {
        let directory = a.directory();
        tokio::spawn(async move {
            let handle = directory
                .handles()
                .into_iter()
                .find(|h| h.name == "slow")
                .expect("slow is reachable");
            let (sink, _events) = EventSink::channel();
            handle
                .provider
                .execute(request("take your time", Duration::from_secs(120)), sink)
                .await
        })
    };
    // Let the call reach B (it runs for a minute there), then kill B outright.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill();
    let result = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the call must not hang when B dies")
        .expect("call task");
    match result {
        Err(ProviderError::Retryable { kind, message, .. }) => {
            assert_eq!(kind, "unavailable", "{message}");
            assert!(message.contains("node b"), "{message}");
            println!("  the call failed with: {kind}: {message}");
        }
        other => panic!("expected a retryable unavailable error, got {other:?}"),
    }
    eventually("A saw B go", || {
        a.sessions()
            .into_iter()
            .find(|s| s.node_id == "b" && !s.connected && s.last_error.is_some())
    })
    .await;
    eventually("B's providers are no longer offered", || {
        a.directory().list().is_empty().then_some(())
    })
    .await;
    {
        // A task only B's providers could serve waits for B rather than failing for good.
        let router = docs_only_router(&a);
        let req = request("fix it", Duration::from_secs(10));
        let prefs = RoutingPrefs::default();
        let err = router
            .choose(&RouteRequest {
                task_type: TaskType::BugFix,
                request: &req,
                prefs: &prefs,
                failed_on: &[],
            })
            .err()
            .expect("nothing can serve it now");
        match err {
            RouteError::NoneAvailable { why, .. } => {
                assert!(why.contains("fast (on node b, not reachable now)"), "{why}")
            }
            other => panic!("expected a wait for node b, got {other:?}"),
        }
    }

    step("b_restarted_is_redialled_and_serves_again");
    let b2 = PeerProcess::start("b", 2, &b_address, COOKIE, &a_address);
    a.set_peers(vec![Peer {
        epoch: 2,
        ..b1.clone()
    }]);
    eventually("A connected to B's new incarnation", || {
        a.sessions()
            .into_iter()
            .find(|s| s.node_id == "b" && s.epoch == 2 && s.connected)
    })
    .await;
    eventually("B's providers reachable again", || {
        remote(&a, "fast", "b", 2)
    })
    .await;
    let out = run_on(&a, "fast", request("again", Duration::from_secs(10)))
        .await
        .expect("remote execution after the restart");
    assert_eq!(out, MockProvider::output_for(TaskType::BugFix, "again"));

    step("a_task_on_node_a_runs_on_the_provider_only_b_has");
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
    let node = Node::start(
        engine.clone(),
        NodeConfig {
            id: "a".into(),
            progress_flush: Duration::from_millis(20),
            ..NodeConfig::default()
        },
        RoutingConfig {
            max_wait: Duration::from_secs(2),
            ..RoutingConfig::default()
        },
        &a_address,
        vec![ProviderSpec {
            provider: Arc::new(OnlyDocs(MockProvider::new("local", MockConfig::default()))),
            max_concurrency: 4,
            limits: Limits::default(),
        }],
    )
    .await
    .expect("node A");
    node.router().attach_remote(a.directory());
    let submit = |prompt: &str, prefs: RoutingPrefs| NewTask {
        task_type: Some(TaskType::BugFix),
        prompt: prompt.into(),
        max_attempts: Some(20),
        timeout_ms: Some(120_000),
        routing: prefs,
        ..NewTask::default()
    };
    let id = engine
        .submit("default", submit("fix the pager", RoutingPrefs::default()))
        .await
        .expect("submit")
        .task
        .id;
    let t = finished(&engine, id).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{:?}", t.error);
    let result = t.result.expect("result");
    assert_eq!(result.provider, "fast");
    assert_eq!(
        result.output,
        MockProvider::output_for(TaskType::BugFix, "fix the pager")
    );
    let (events, _, _) = engine
        .read_events("default", id, 0, 100)
        .await
        .expect("events");
    assert!(
        events.iter().any(|e| e.message.contains("runs on node b")),
        "the routing decision names the node: {events:?}"
    );

    step("a_task_whose_node_is_killed_mid_call_is_retried_and_finishes_after_b_returns");
    let id = engine
        .submit(
            "default",
            submit(
                "take your time",
                RoutingPrefs {
                    preferred_providers: vec!["slow".into()],
                    ..RoutingPrefs::default()
                },
            ),
        )
        .await
        .expect("submit")
        .task
        .id;
    // The agent holds a slot of B's "slow" while its call is out.
    eventually("the attempt is calling B", || {
        node.router()
            .remote_providers()
            .into_iter()
            .find(|h| h.name == "slow" && h.in_flight() > 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(b2);
    // B comes back as a new incarnation whose "slow" provider answers at once.
    let _b3 = PeerProcess::start_env(
        "b",
        3,
        &b_address,
        COOKIE,
        &a_address,
        None,
        &[("PEER_SLOW_MS", "0")],
    );
    a.set_peers(vec![Peer {
        epoch: 3,
        ..b1.clone()
    }]);
    let t = finished(&engine, id).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{:?}", t.error);
    let first = t.attempts.first().expect("attempts");
    assert_eq!(
        (first.provider.as_str(), first.outcome.as_str()),
        ("slow", "unavailable"),
        "{:?}",
        t.attempts
    );
    assert_eq!(t.result.expect("result").provider, "slow");
    println!(
        "  attempts: {:?}",
        t.attempts
            .iter()
            .map(|a| (&a.provider, &a.outcome))
            .collect::<Vec<_>>()
    );
    node.shutdown().await;

    step("after_a_fence_a_rejoins_under_its_new_epoch_and_links_again");
    {
        let (peers_tx, peers_rx) = tokio::sync::watch::channel(vec![LivePeer {
            id: "b".into(),
            epoch: 3,
            cluster_address: b_address.clone(),
        }]);
        let (identity_tx, identity_rx) = tokio::sync::watch::channel(NodeIdentity {
            id: "a".into(),
            epoch: 1,
        });
        a.follow(peers_rx, identity_rx);
        identity_tx.send_replace(NodeIdentity {
            id: "a".into(),
            epoch: 2,
        });
        eventually("A runs under epoch 2", || {
            (a.name().epoch == 2).then_some(())
        })
        .await;
        eventually("A linked to B again", || {
            a.sessions()
                .into_iter()
                .find(|s| s.node_id == "b" && s.epoch == 3 && s.connected)
        })
        .await;
        eventually("B's providers reachable again", || {
            remote(&a, "fast", "b", 3)
        })
        .await;
        let out = run_on(
            &a,
            "fast",
            request("after the fence", Duration::from_secs(10)),
        )
        .await
        .expect("remote execution after the rejoin");
        assert_eq!(
            out,
            MockProvider::output_for(TaskType::BugFix, "after the fence")
        );
        // The store stops listing B: the follower passes that on.
        peers_tx.send_replace(Vec::new());
        eventually("no link to B", || a.sessions().is_empty().then_some(())).await;
        peers_tx.send_replace(vec![LivePeer {
            id: "b".into(),
            epoch: 3,
            cluster_address: b_address.clone(),
        }]);
        eventually("linked to B once more", || {
            a.sessions().into_iter().find(|s| s.connected)
        })
        .await;
    }

    step("a_peer_the_store_no_longer_lists_is_disconnected");
    assert!(
        a.connected_nodes().iter().any(|n| n.id == "b"),
        "B is connected before the store drops it"
    );
    a.set_peers(Vec::new());
    eventually("no link to B and B's providers gone", || {
        (a.sessions().is_empty() && a.directory().list().is_empty()).then_some(())
    })
    .await;
    // Heartbeats keep reading a store without B: its session is closed (B, which still
    // lists A, dials again and is closed again).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut closed = 0;
    let mut was_connected = true;
    while closed < 2 {
        a.set_peers(Vec::new());
        let connected = a.connected_nodes().iter().any(|n| n.id == "b");
        if was_connected && !connected {
            closed += 1;
        }
        was_connected = connected;
        assert!(
            tokio::time::Instant::now() < deadline,
            "A kept a session to a node the store no longer lists"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    a.shutdown().await;

    step("mutual_tls_admits_certificates_of_the_cluster_authority_only");
    let certs = tempfile::tempdir().expect("tempdir");
    write_certs(certs.path(), &["a", "b"]);
    let strangers = tempfile::tempdir().expect("tempdir");
    write_certs(strangers.path(), &["b"]);
    let a_address = free_address();
    let mut a_cfg = config(&a_address, COOKIE);
    a_cfg.tls = Some(tls_files(certs.path(), "a"));
    // The node of the first part is shut down: one cluster node in this process at a time.
    let a = ClusterNet::start(
        &a_cfg,
        &NodeIdentity {
            id: "a".into(),
            epoch: 2,
        },
        Clock::system(),
        Rng::from_entropy(),
    )
    .await
    .expect("node A with TLS");
    {
        let stranger_address = free_address();
        let _stranger = PeerProcess::start_with(
            "stranger",
            1,
            &stranger_address,
            COOKIE,
            &a_address,
            Some((strangers.path(), "b")),
        );
        a.set_peers(vec![Peer {
            node_id: "stranger".into(),
            epoch: 1,
            address: stranger_address,
        }]);
        let failed = eventually("A refused the stranger's certificate", || {
            a.sessions()
                .into_iter()
                .find(|s| s.node_id == "stranger" && s.failures >= 2)
        })
        .await;
        assert!(!failed.connected);
        println!(
            "  A's link to the stranger: {}",
            failed.last_error.unwrap_or_default()
        );
    }
    let b_address = free_address();
    let _b = PeerProcess::start_with(
        "b",
        3,
        &b_address,
        COOKIE,
        &a_address,
        Some((certs.path(), "b")),
    );
    a.set_peers(vec![Peer {
        node_id: "b".into(),
        epoch: 3,
        address: b_address,
    }]);
    eventually("A connected to B over TLS", || {
        a.sessions()
            .into_iter()
            .find(|s| s.node_id == "b" && s.connected)
    })
    .await;
    eventually("B's providers reachable over TLS", || {
        remote(&a, "fast", "b", 3)
    })
    .await;
    let out = run_on(&a, "fast", request("over tls", Duration::from_secs(10)))
        .await
        .expect("remote execution over TLS");
    assert_eq!(out, MockProvider::output_for(TaskType::BugFix, "over tls"));
    a.shutdown().await;
}

/// A router whose only local provider writes documentation, with `net`'s remote
/// providers attached.
fn docs_only_router(net: &ClusterNet) -> Router {
    let (changes, _) = tokio::sync::watch::channel(0u64);
    let local_only_docs = Arc::new(ProviderHandle::new(
        Arc::new(OnlyDocs(MockProvider::new("local", MockConfig::default()))),
        4,
        Limits::default(),
        changes.clone(),
        Clock::system(),
    ));
    let router = Router::new(
        vec![local_only_docs],
        supervisor_model::RoutingStrategy::LeastLoaded,
        Vec::new(),
        changes,
        Clock::system(),
    );
    router.attach_remote(net.directory());
    router
}

/// A local provider that only writes documentation, so a bug fix has to go elsewhere.
struct OnlyDocs(MockProvider);

#[async_trait::async_trait]
impl supervisor_providers::Provider for OnlyDocs {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn kind(&self) -> &'static str {
        "mock"
    }
    fn capabilities(&self) -> supervisor_providers::Capabilities {
        supervisor_providers::Capabilities {
            task_types: vec![TaskType::Documentation],
            ..self.0.capabilities()
        }
    }
    async fn execute(
        &self,
        request: ProviderRequest,
        sink: EventSink,
    ) -> Result<supervisor_providers::ProviderOutput, ProviderError> {
        self.0.execute(request, sink).await
    }
    async fn health(&self) -> supervisor_providers::Health {
        self.0.health().await
    }
    fn estimate_cost(&self, request: &ProviderRequest) -> u64 {
        self.0.estimate_cost(request)
    }
}
