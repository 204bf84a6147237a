//! The actor side of a Supervisor node: the supervision tree that leases tasks, runs them in
//! agent actors on provider actors, and keeps timers moving.
//!
//! ```text
//! node (OneForOne: restart budget + backoff)
//! ├── provider:<name>   ProviderActor per provider: concurrency, health probe, live stats
//! ├── dispatcher        leases ready tasks, one Agent actor per running attempt
//! │   └── agents        run the provider call, stream output, write the fenced outcome
//! └── housekeeper       vests retries, takes back lapsed leases
//! ```
//!
//! All durable state lives in the engine (and so in the store). Killing the process at any
//! point loses nothing: on the next start the node takes a new epoch and reclaims the
//! leases its previous incarnation held.

#![warn(missing_docs)]

pub mod agent;
pub mod cluster_config;
pub mod dispatcher;
pub mod housekeeper;
pub mod membership;
pub mod provider_actor;
pub mod routing;
pub mod scheduler;
pub mod supervision;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use serde::{Deserialize, Serialize};
use supervisor_engine::{Engine, EngineError, NodeAnnouncement, NodeIdentity};
use supervisor_providers::Provider;
use tokio::sync::watch;

pub use cluster_config::{ClusterConfig, ClusterTls};

use dispatcher::{Dispatcher, DispatcherArgs, DispatcherMsg, DispatcherSettings, DrainReport};
use housekeeper::{Housekeeper, HousekeeperArgs};
use provider_actor::{ProviderActor, ProviderArgs};
use routing::{ProviderHandle, ProviderSnapshot, Router};
use supervision::{ChildSpec, OneForOne, OneForOneArgs, RestartPolicy, SupervisorMsg, TreeHealth};
use supervisor_model::RoutingStrategy;
use supervisor_providers::config::Limits;

/// Tunables of the node's actors. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable id of this node; leases and epochs are recorded under it. Default: the host
    /// name, or `node-1` if it cannot be read.
    pub id: String,
    /// Most attempts running at once. Default 1024.
    pub max_in_flight: usize,
    /// Most tasks taken per lease transaction. Default 256.
    pub lease_batch: usize,
    /// How often running attempts write streamed output. Default 100ms.
    #[serde(with = "humantime_serde")]
    pub progress_flush: Duration,
    /// Longest sleep of the housekeeper between timer sweeps. Default 1s.
    #[serde(with = "humantime_serde")]
    pub housekeeping_max_idle: Duration,
    /// Safety-net re-check of an idle queue (normally a watch wakes the dispatcher).
    /// Default 30s.
    #[serde(with = "humantime_serde")]
    pub idle_recheck: Duration,
    /// How often providers are health-probed. Default 30s.
    #[serde(with = "humantime_serde")]
    pub provider_probe_interval: Duration,
    /// How long a graceful shutdown waits for running attempts before handing them back.
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Lease of the singleton duties (firing workflow schedules, sweeping timers), held
    /// by one node at a time and renewed every third of it. A holder that dies hands its
    /// duties on when peers fence it, or at worst when this lapses. Default 15s.
    #[serde(with = "humantime_serde")]
    pub duty_lease: Duration,
    /// Restarts of the node's actors.
    pub restart: RestartPolicy,
}

fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node-1".to_string())
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
            max_in_flight: 1024,
            lease_batch: 256,
            progress_flush: Duration::from_millis(100),
            housekeeping_max_idle: Duration::from_secs(1),
            idle_recheck: Duration::from_secs(30),
            provider_probe_interval: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            duty_lease: Duration::from_secs(15),
            restart: RestartPolicy::default(),
        }
    }
}

impl NodeConfig {
    /// Checks the values, naming the first wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() || self.id.len() > 128 {
            return Err("node.id must be 1 to 128 characters".into());
        }
        if self.max_in_flight == 0 || self.lease_batch == 0 {
            return Err("node.max_in_flight and node.lease_batch must be at least 1".into());
        }
        if self.progress_flush.is_zero()
            || self.provider_probe_interval.is_zero()
            || self.housekeeping_max_idle.is_zero()
        {
            return Err("node.progress_flush, node.housekeeping_max_idle and node.provider_probe_interval must be above zero".into());
        }
        Ok(())
    }
}

/// A provider to run, with its node-local limits.
#[derive(Clone)]
pub struct ProviderSpec {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Most concurrent executions on this node.
    pub max_concurrency: u32,
    /// Rate limits and circuit breaker settings.
    pub limits: Limits,
}

/// How attempts are routed to providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `round_robin`, `least_loaded` (default), `fastest`, `cost_optimized`, `capability`
    /// or `failover_chain`; a task may ask for another.
    pub strategy: RoutingStrategy,
    /// Provider order for `failover_chain` (providers not listed follow in config order).
    pub chain: Vec<String>,
    /// Longest an attempt waits for a provider to become available (rate limits, open
    /// circuits) before it fails retryably and is rescheduled. Default 10s.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            strategy: RoutingStrategy::LeastLoaded,
            chain: Vec::new(),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// Errors starting or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The engine failed (registering the node, reclaiming leases).
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// An actor could not start.
    #[error("could not start the node's actors: {0}")]
    Spawn(String),
    /// No provider was configured.
    #[error("no provider is configured; configure at least one under [providers]")]
    NoProvider,
    /// The configuration does not hold together.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A running node.
pub struct Node {
    engine: Engine,
    identity: watch::Receiver<NodeIdentity>,
    /// The epoch the node started with (actor names are scoped by it).
    start_epoch: u64,
    membership: Arc<std::sync::RwLock<membership::MembershipView>>,
    drain: watch::Receiver<bool>,
    peers: watch::Receiver<Vec<membership::LivePeer>>,
    cluster: ClusterConfig,
    cfg: NodeConfig,
    supervisor: ActorRef<SupervisorMsg>,
    health: watch::Receiver<TreeHealth>,
    router: Arc<Router>,
    tree: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Node {
    /// Registers the node (a new epoch), reclaims leases its previous incarnation held,
    /// and starts the supervision tree, with default cluster settings (no cluster
    /// networking).
    pub async fn start(
        engine: Engine,
        cfg: NodeConfig,
        routing: RoutingConfig,
        advertise: &str,
        providers: Vec<ProviderSpec>,
    ) -> Result<Node, NodeError> {
        Node::start_in_cluster(
            engine,
            cfg,
            ClusterConfig::default(),
            routing,
            advertise,
            providers,
        )
        .await
    }

    /// Like [`Node::start`], with this node's cluster settings: heartbeats and fencing
    /// of silent peers, and the address it announces to them.
    pub async fn start_in_cluster(
        engine: Engine,
        cfg: NodeConfig,
        cluster: ClusterConfig,
        routing: RoutingConfig,
        advertise: &str,
        providers: Vec<ProviderSpec>,
    ) -> Result<Node, NodeError> {
        if providers.is_empty() {
            return Err(NodeError::NoProvider);
        }
        for name in &routing.chain {
            if !providers.iter().any(|p| p.provider.name() == name) {
                return Err(NodeError::Config(format!(
                    "routing.chain names {name:?}, which is not a configured provider"
                )));
            }
        }
        let announcement = NodeAnnouncement {
            address: advertise.to_string(),
            cluster_address: cluster.advertised().to_string(),
            providers: providers
                .iter()
                .map(|p| p.provider.name().to_string())
                .collect(),
            max_in_flight: u32::try_from(cfg.max_in_flight).unwrap_or(u32::MAX),
        };
        let identity = engine.register_node(&cfg.id, &announcement).await?;
        let reclaimed = engine.reclaim_orphaned_leases(&identity).await?;
        if reclaimed > 0 {
            tracing::info!(
                reclaimed,
                epoch = identity.epoch,
                "requeued tasks held by this node's previous run"
            );
        }
        let (identity_tx, identity_rx) = watch::channel(identity.clone());
        let (changes, _) = watch::channel(0u64);
        let handles: Vec<Arc<ProviderHandle>> = providers
            .into_iter()
            .map(|spec| {
                Arc::new(ProviderHandle::new(
                    spec.provider,
                    spec.max_concurrency,
                    spec.limits,
                    changes.clone(),
                ))
            })
            .collect();
        let router = Arc::new(Router::new(
            handles.clone(),
            routing.strategy,
            routing.chain.clone(),
            changes,
        ));
        let scope = format!("{}#{}", cfg.id, identity.epoch);
        let mut children = Vec::new();
        for handle in handles {
            let actor = format!("{scope}/{}", provider_actor::actor_name(&handle.name));
            let probe = cfg.provider_probe_interval;
            let actor_name = actor.clone();
            children.push(ChildSpec {
                name: actor,
                start: Arc::new(move |sup| {
                    let handle = handle.clone();
                    let actor_name = actor_name.clone();
                    Box::pin(async move {
                        let args = ProviderArgs {
                            handle,
                            probe_interval: probe,
                        };
                        let (a, _) =
                            Actor::spawn_linked(Some(actor_name), ProviderActor, args, sup).await?;
                        Ok(a.get_cell())
                    })
                }),
            });
        }
        let settings = DispatcherSettings {
            max_in_flight: cfg.max_in_flight,
            lease_batch: cfg.lease_batch,
            flush_interval: cfg.progress_flush,
            route_wait: routing.max_wait,
            idle_recheck: cfg.idle_recheck,
        };
        let dispatcher_name = format!("{scope}/dispatcher");
        {
            let engine = engine.clone();
            let identity = identity_rx.clone();
            let router = router.clone();
            let name = dispatcher_name.clone();
            children.push(ChildSpec {
                name: dispatcher_name.clone(),
                start: Arc::new(move |sup| {
                    let args = DispatcherArgs {
                        engine: engine.clone(),
                        router: router.clone(),
                        node: identity.clone(),
                        settings: settings.clone(),
                    };
                    let name = name.clone();
                    Box::pin(async move {
                        let (a, _) = Actor::spawn_linked(Some(name), Dispatcher, args, sup).await?;
                        Ok(a.get_cell())
                    })
                }),
            });
        }
        {
            let engine = engine.clone();
            let max_idle = cfg.housekeeping_max_idle;
            let identity = identity_rx.clone();
            let duty_lease = cfg.duty_lease;
            children.push(ChildSpec {
                name: format!("{scope}/housekeeper"),
                start: Arc::new(move |sup| {
                    let args = HousekeeperArgs {
                        engine: engine.clone(),
                        max_idle,
                        batch: 512,
                        node: identity.clone(),
                        duty_lease,
                    };
                    Box::pin(async move {
                        let (a, _) = Actor::spawn_linked(None, Housekeeper, args, sup).await?;
                        Ok(a.get_cell())
                    })
                }),
            });
        }
        {
            let engine = engine.clone();
            let identity = identity_rx.clone();
            let lease = cfg.duty_lease;
            children.push(ChildSpec {
                name: format!("{scope}/scheduler"),
                start: Arc::new(move |sup| {
                    let args = scheduler::SchedulerArgs {
                        engine: engine.clone(),
                        node: identity.clone(),
                        lease,
                    };
                    Box::pin(async move {
                        let (a, _) =
                            Actor::spawn_linked(None, scheduler::Scheduler, args, sup).await?;
                        Ok(a.get_cell())
                    })
                }),
            });
        }
        let view = Arc::new(std::sync::RwLock::new(membership::MembershipView::default()));
        let (drain_tx, drain_rx) = watch::channel(false);
        let (peers_tx, peers_rx) = watch::channel(Vec::new());
        {
            let engine = engine.clone();
            let view = view.clone();
            let dispatcher = dispatcher_name.clone();
            let (heartbeat_interval, failure_timeout) =
                (cluster.heartbeat_interval, cluster.failure_timeout);
            children.push(ChildSpec {
                name: format!("{scope}/membership"),
                start: Arc::new(move |sup| {
                    let args = membership::MembershipArgs {
                        engine: engine.clone(),
                        announcement: announcement.clone(),
                        identity: identity_tx.clone(),
                        heartbeat_interval,
                        failure_timeout,
                        dispatcher: dispatcher.clone(),
                        view: view.clone(),
                        drain: drain_tx.clone(),
                        peers: peers_tx.clone(),
                    };
                    Box::pin(async move {
                        let (a, _) =
                            Actor::spawn_linked(None, membership::Membership, args, sup).await?;
                        Ok(a.get_cell())
                    })
                }),
            });
        }
        let (health_tx, health) = watch::channel(TreeHealth::Restarting("starting".into()));
        let (supervisor, tree) = Actor::spawn(
            Some(format!("{scope}/node")),
            OneForOne,
            OneForOneArgs {
                children,
                policy: cfg.restart,
                health: health_tx,
            },
        )
        .await
        .map_err(|e| NodeError::Spawn(e.to_string()))?;
        let tree = tokio::spawn(async move {
            let _ = tree.await;
        });
        tracing::info!(node = %identity.id, epoch = identity.epoch, "node started");
        Ok(Node {
            engine,
            identity: identity_rx,
            start_epoch: identity.epoch,
            membership: view,
            drain: drain_rx,
            peers: peers_rx,
            cluster,
            cfg,
            supervisor,
            health,
            router,
            tree: std::sync::Mutex::new(Some(tree)),
        })
    }

    /// This node's id and current epoch (a new one after it rejoins from a fence).
    pub fn identity(&self) -> NodeIdentity {
        self.identity.borrow().clone()
    }

    /// This node's observation of its peers.
    pub fn peer_views(&self) -> Vec<membership::PeerView> {
        self.membership
            .read()
            .map(|v| v.peers.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Heartbeats that failed in a row, and how often this node rejoined after a fence.
    pub fn membership_health(&self) -> (u32, u32) {
        self.membership
            .read()
            .map(|v| (v.failed_heartbeats, v.rejoins))
            .unwrap_or_default()
    }

    /// Resolves when an operator asks this node to drain (`DrainNode`).
    pub async fn drain_requested(&self) {
        let mut rx = self.drain.clone();
        let _ = rx.wait_for(|asked| *asked).await;
    }

    /// Live peers (for cluster networking), updated after every membership read.
    pub fn live_peers(&self) -> watch::Receiver<Vec<membership::LivePeer>> {
        self.peers.clone()
    }

    /// This node's cluster settings.
    pub fn cluster_config(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// The engine it runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Live health of the supervision tree.
    pub fn health(&self) -> watch::Receiver<TreeHealth> {
        self.health.clone()
    }

    fn scope(&self) -> String {
        format!("{}#{}", self.cfg.id, self.start_epoch)
    }

    fn dispatcher(&self) -> Option<ActorRef<DispatcherMsg>> {
        ractor::registry::where_is(format!("{}/dispatcher", self.scope())).map(Into::into)
    }

    /// Attempts running on this node now.
    pub async fn in_flight(&self) -> usize {
        match self.dispatcher() {
            Some(d) => ractor::call!(d, DispatcherMsg::InFlight).unwrap_or(0),
            None => 0,
        }
    }

    /// The node's providers and router.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Live numbers of every provider on this node, in configuration order.
    pub fn provider_snapshots(&self) -> Vec<ProviderSnapshot> {
        self.router
            .providers()
            .iter()
            .map(|h| h.snapshot())
            .collect()
    }

    /// Stops leasing, lets running attempts finish within the drain timeout, hands back the
    /// rest, then stops the tree. Nothing is lost either way.
    pub async fn shutdown(&self) -> DrainReport {
        let timeout = self.cfg.drain_timeout;
        let identity = self.identity();
        if let Err(err) = self.engine.set_node_leaving(&identity, true).await {
            tracing::warn!(error = %err, "could not record that this node is draining");
        }
        let report = match self.dispatcher() {
            Some(d) => ractor::call_t!(
                d,
                |reply| DispatcherMsg::Drain(timeout, reply),
                (timeout + Duration::from_secs(30)).as_millis() as u64
            )
            .unwrap_or_default(),
            None => DrainReport::default(),
        };
        self.supervisor.stop(Some("node shutting down".into()));
        let tree = self.tree.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tree) = tree {
            let _ = tree.await;
        }
        // Gone: peers need not wait for silence to take over its duties.
        if let Err(err) = self.engine.set_node_leaving(&self.identity(), false).await {
            tracing::warn!(error = %err, "could not record that this node left");
        }
        report
    }
}
