//! A running node: the assembly of its supervision tree, and the queries the API asks of
//! it. Everything below this module is private to the crate; [`Node`] is the one way in.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use supervisor_engine::{Engine, NodeAnnouncement, NodeIdentity};
use supervisor_providers::Provider;
use supervisor_providers::config::Limits;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::cluster::{ClusterNet, SessionInfo};
use crate::config::{ClusterConfig, NodeConfig, RoutingConfig};
use crate::dispatcher::{
    Dispatcher, DispatcherArgs, DispatcherMsg, DispatcherSettings, DrainReport,
};
use crate::duty::{Duty, DutyContext};
use crate::error::NodeError;
use crate::housekeeper::Housekeeper;
use crate::machine::Sampler;
use crate::membership::{LivePeer, Membership, MembershipArgs, MembershipView, PeerView};
use crate::provider_actor::{self, ProviderActor, ProviderArgs};
use crate::resource_manager::{ResourceManager, ResourceManagerArgs, ResourceShare};
use crate::rng::Rng;
use crate::roller::Roller;
use crate::routing::SharedLimits;
use crate::routing::{ProviderHandle, ProviderSnapshot, Router};
use crate::scheduler::Scheduler;
use crate::supervision::{ChildSpec, OneForOne, OneForOneArgs, SupervisorMsg, TreeHealth};
use crate::sweeper::Sweeper;

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

/// Everything a node starts from. [`NodeSetup::new`] fills in the defaults: no cluster
/// networking, the system clock, randomness from the operating system.
pub struct NodeSetup {
    /// The durable layer the node runs on.
    pub engine: Engine,
    /// Tunables of its actors.
    pub config: NodeConfig,
    /// Its place in a cluster.
    pub cluster: ClusterConfig,
    /// How attempts are routed.
    pub routing: RoutingConfig,
    /// The API address it announces to its peers.
    pub advertise: String,
    /// Its providers, in configuration order.
    pub providers: Vec<ProviderSpec>,
    /// Times every timer of its actors; a test passes a manual clock.
    pub clock: Clock,
    /// Source of its jitter; a test passes a seeded one.
    pub rng: Rng,
    /// Where it keeps its data (the embedded store), so its heartbeat reports that disk.
    pub data_dir: Option<std::path::PathBuf>,
    /// Whether other nodes share its store: then its providers' per-minute limits and
    /// configured `max_concurrency` hold for the whole cluster (through the store).
    pub shared_store: bool,
    /// What finished work the retention sweeper deletes, and when (`[retention]`).
    pub retention: supervisor_engine::RetentionConfig,
}

impl NodeSetup {
    /// A setup with default cluster settings, the system clock and OS randomness.
    pub fn new(
        engine: Engine,
        config: NodeConfig,
        routing: RoutingConfig,
        advertise: &str,
        providers: Vec<ProviderSpec>,
    ) -> NodeSetup {
        NodeSetup {
            engine,
            config,
            cluster: ClusterConfig::default(),
            routing,
            advertise: advertise.to_string(),
            providers,
            clock: Clock::system(),
            rng: Rng::from_entropy(),
            data_dir: None,
            shared_store: false,
            retention: supervisor_engine::RetentionConfig::default(),
        }
    }
}

/// A running node.
pub struct Node {
    engine: Engine,
    identity: watch::Receiver<NodeIdentity>,
    /// The epoch the node started with (actor names are scoped by it).
    start_epoch: u64,
    membership: Arc<std::sync::RwLock<MembershipView>>,
    drain: watch::Receiver<bool>,
    /// Links to peers over ractor_cluster, when `cluster.listen` is set.
    net: Option<Arc<ClusterNet>>,
    cfg: NodeConfig,
    supervisor: ActorRef<SupervisorMsg>,
    health: watch::Receiver<TreeHealth>,
    /// Set when [`Node::shutdown`] begins: the node stops serving from then on.
    leaving: watch::Sender<bool>,
    router: Arc<Router>,
    tree: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    retention: supervisor_engine::RetentionConfig,
}

/// What membership shares with the node it runs in.
struct MembershipChannels {
    identity: watch::Sender<NodeIdentity>,
    view: Arc<std::sync::RwLock<MembershipView>>,
    drain: watch::Sender<bool>,
    peers: watch::Sender<Vec<LivePeer>>,
    /// Measures the machine (the resource manager does, every few seconds).
    machine: Arc<std::sync::Mutex<Sampler>>,
    /// What the resource manager publishes: the last measurement, the low-disk flag.
    share: ResourceShare,
}

/// The node's children, in start order: a provider actor per provider, the resource
/// manager, the dispatcher, the housekeeper, the scheduler, the roller and membership.
fn children(
    setup: &NodeSetup,
    scope: &str,
    handles: &[Arc<ProviderHandle>],
    router: &Arc<Router>,
    identity: &watch::Receiver<NodeIdentity>,
    announcement: NodeAnnouncement,
    channels: MembershipChannels,
) -> Vec<ChildSpec> {
    let cfg = &setup.config;
    let (engine, clock) = (setup.engine.clone(), setup.clock.clone());
    let mut children: Vec<ChildSpec> = handles
        .iter()
        .map(|handle| {
            let (handle, probe_interval) = (handle.clone(), cfg.provider_probe_interval);
            ChildSpec::actor(
                format!("{scope}/{}", provider_actor::actor_name(&handle.name)),
                ProviderActor,
                move || ProviderArgs {
                    handle: handle.clone(),
                    probe_interval,
                },
            )
            .registered()
        })
        .collect();
    let dispatcher = format!("{scope}/dispatcher");
    let settings = DispatcherSettings {
        max_in_flight: cfg.max_in_flight,
        lease_batch: cfg.lease_batch,
        flush_interval: cfg.progress_flush,
        route_wait: setup.routing.max_wait,
        idle_recheck: cfg.idle_recheck,
    };
    let shared = setup
        .shared_store
        .then(|| SharedLimits::new(engine.clone(), identity.clone(), clock.clone()));
    children.push({
        let (engine, clock, shared) = (engine.clone(), clock.clone(), shared.clone());
        let (sampler, share) = (channels.machine.clone(), channels.share.clone());
        ChildSpec::actor(
            format!("{scope}/resource-manager"),
            ResourceManager,
            move || ResourceManagerArgs {
                engine: engine.clone(),
                sampler: sampler.clone(),
                share: share.clone(),
                shared: shared.clone(),
                clock: clock.clone(),
            },
        )
    });
    children.push({
        let (engine, router, node) = (engine.clone(), router.clone(), identity.clone());
        let (clock, rng) = (clock.clone(), setup.rng.clone());
        let low_on_disk = channels.share.low_on_disk.clone();
        ChildSpec::actor(dispatcher.clone(), Dispatcher, move || DispatcherArgs {
            engine: engine.clone(),
            router: router.clone(),
            node: node.clone(),
            settings: settings.clone(),
            clock: clock.clone(),
            rng: rng.clone(),
            low_on_disk: low_on_disk.clone(),
            shared: shared.clone(),
        })
        .registered()
    });
    // The singleton duties: every node runs each, one node at a time works.
    let duties = DutyContext {
        engine: engine.clone(),
        node: identity.clone(),
        lease: cfg.duty_lease,
        clock: clock.clone(),
    };
    children.push({
        let (duties, max_idle) = (duties.clone(), cfg.housekeeping_max_idle);
        ChildSpec::actor(format!("{scope}/housekeeper"), Duty::new(), move || {
            duties.args(Housekeeper {
                max_idle,
                batch: 512,
            })
        })
    });
    children.push({
        let duties = duties.clone();
        ChildSpec::actor(format!("{scope}/scheduler"), Duty::new(), move || {
            duties.args(Scheduler)
        })
    });
    children.push({
        let (duties, retention) = (duties.clone(), setup.retention.clone());
        ChildSpec::actor(format!("{scope}/sweeper"), Duty::new(), move || {
            duties.args(Sweeper::new(retention.clone()))
        })
    });
    children.push({
        let (duties, clock) = (duties.clone(), clock.clone());
        ChildSpec::actor(format!("{scope}/roller"), Duty::new(), move || {
            duties.args(Roller {
                clock: clock.clone(),
                expired_at: None,
            })
        })
    });
    children.push({
        let (heartbeat_interval, failure_timeout) = (
            setup.cluster.heartbeat_interval,
            setup.cluster.failure_timeout,
        );
        ChildSpec::actor(format!("{scope}/membership"), Membership, move || {
            MembershipArgs {
                engine: engine.clone(),
                announcement: announcement.clone(),
                identity: channels.identity.clone(),
                heartbeat_interval,
                failure_timeout,
                dispatcher: dispatcher.clone(),
                view: channels.view.clone(),
                drain: channels.drain.clone(),
                peers: channels.peers.clone(),
                clock: clock.clone(),
                resources: channels.share.measured.clone(),
            }
        })
    });
    children
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
        Node::start_with(NodeSetup::new(engine, cfg, routing, advertise, providers)).await
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
        Node::start_with(NodeSetup {
            cluster,
            ..NodeSetup::new(engine, cfg, routing, advertise, providers)
        })
        .await
    }

    /// Starts a node from `setup`: registers it under a new epoch, reclaims the leases
    /// its previous incarnation held, starts its supervision tree and, when
    /// `cluster.listen` is set, its links to its peers.
    ///
    /// Fails with [`NodeError::NoProvider`] without providers, [`NodeError::Config`]
    /// when `routing.chain` names an unknown provider or the cluster settings are
    /// wrong, [`NodeError::Engine`] when the store cannot be reached.
    pub async fn start_with(setup: NodeSetup) -> Result<Node, NodeError> {
        if setup.providers.is_empty() {
            return Err(NodeError::NoProvider);
        }
        for name in &setup.routing.chain {
            if !setup.providers.iter().any(|p| p.provider.name() == name) {
                return Err(NodeError::Config(format!(
                    "routing.chain names {name:?}, which is not a configured provider"
                )));
            }
        }
        let engine = setup.engine.clone();
        let cfg = setup.config.clone();
        let retention = setup.retention.clone();
        let announcement = NodeAnnouncement {
            address: setup.advertise.clone(),
            cluster_address: setup.cluster.advertised().to_string(),
            providers: setup
                .providers
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
        let handles: Vec<Arc<ProviderHandle>> = setup
            .providers
            .iter()
            .map(|spec| {
                Arc::new(ProviderHandle::new(
                    spec.provider.clone(),
                    spec.max_concurrency,
                    spec.limits.clone(),
                    changes.clone(),
                    setup.clock.clone(),
                ))
            })
            .collect();
        let router = Arc::new(Router::new(
            handles.clone(),
            setup.routing.strategy,
            setup.routing.chain.clone(),
            changes,
            setup.clock.clone(),
        ));
        let view = Arc::new(std::sync::RwLock::new(MembershipView::default()));
        let (drain_tx, drain_rx) = watch::channel(false);
        let (peers_tx, peers_rx) = watch::channel(Vec::new());
        let scope = format!("{}#{}", cfg.id, identity.epoch);
        let children = children(
            &setup,
            &scope,
            &handles,
            &router,
            &identity_rx,
            announcement,
            MembershipChannels {
                identity: identity_tx,
                view: view.clone(),
                drain: drain_tx,
                peers: peers_tx,
                machine: Arc::new(std::sync::Mutex::new(Sampler::new(
                    setup.data_dir.clone(),
                    handles
                        .iter()
                        .filter_map(|h| {
                            let dir = h.provider.work_dir()?;
                            Some((format!("worktrees of {}", h.name), dir))
                        })
                        .collect(),
                    cfg.min_free_disk_mb.saturating_mul(1024 * 1024),
                ))),
                share: ResourceShare {
                    measured: Arc::new(std::sync::RwLock::new(Default::default())),
                    low_on_disk: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                },
            },
        );
        let (health_tx, health) = watch::channel(TreeHealth::Restarting("starting".into()));
        let (supervisor, tree) = Actor::spawn(
            Some(format!("{scope}/node")),
            OneForOne,
            OneForOneArgs {
                children,
                policy: cfg.restart,
                health: health_tx,
                clock: setup.clock.clone(),
            },
        )
        .await
        .map_err(|e| NodeError::Spawn(e.to_string()))?;
        let tree = tokio::spawn(async move {
            let _ = tree.await;
        });
        let net = if setup.cluster.listen.is_empty() {
            None
        } else {
            match ClusterNet::join(
                &setup.cluster,
                identity_rx.clone(),
                peers_rx,
                &router,
                setup.clock.clone(),
                setup.rng.clone(),
            )
            .await
            {
                Ok(net) => Some(net),
                Err(err) => {
                    supervisor.stop(Some("cluster networking failed".into()));
                    return Err(err);
                }
            }
        };
        tracing::info!(node = %identity.id, epoch = identity.epoch, "node started");
        Ok(Node {
            engine,
            identity: identity_rx,
            start_epoch: identity.epoch,
            membership: view,
            drain: drain_rx,
            net,
            cfg,
            supervisor,
            health,
            leaving: watch::Sender::new(false),
            router,
            tree: std::sync::Mutex::new(Some(tree)),
            retention,
        })
    }

    /// This node's id and current epoch (a new one after it rejoins from a fence).
    pub fn identity(&self) -> NodeIdentity {
        self.identity.borrow().clone()
    }

    /// This node's observation of its peers.
    pub fn peer_views(&self) -> Vec<PeerView> {
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

    /// This node's link to every peer the store lists (empty without cluster
    /// networking).
    pub fn links(&self) -> Vec<SessionInfo> {
        self.net.as_ref().map(|n| n.sessions()).unwrap_or_default()
    }

    /// What its retention sweeper keeps (`[retention]`).
    pub fn retention(&self) -> &supervisor_engine::RetentionConfig {
        &self.retention
    }

    /// The engine it runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Live health of the supervision tree.
    pub fn health(&self) -> watch::Receiver<TreeHealth> {
        self.health.clone()
    }

    /// Whether the node serves (what health checks report): its supervision tree is whole
    /// and it is not draining. Otherwise, why not.
    pub fn serving(&self) -> Result<(), String> {
        if *self.leaving.borrow() {
            return Err("draining: finishing or handing back its attempts, then leaving".into());
        }
        match &*self.health.borrow() {
            TreeHealth::Serving => Ok(()),
            TreeHealth::Restarting(why) => Err(format!("restarting {why}")),
            TreeHealth::Stopped(why) => Err(format!("stopped: {why}")),
        }
    }

    /// Turns true when the node begins to drain ([`Node::shutdown`]); with
    /// [`Node::health`], what changes [`Node::serving`].
    pub fn leaving(&self) -> watch::Receiver<bool> {
        self.leaving.subscribe()
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

    /// Live numbers of every provider on this node, in configuration order.
    pub fn provider_snapshots(&self) -> Vec<ProviderSnapshot> {
        self.router
            .providers()
            .iter()
            .map(|h| h.snapshot())
            .collect()
    }

    /// Names a task may prefer or exclude: this node's providers, then those reachable
    /// on other nodes, then those seen on nodes that are away now.
    pub fn known_provider_names(&self) -> Vec<String> {
        self.router.known_names()
    }

    /// Providers in the cluster (as this node knows it) that can work in a task's
    /// repository; a task naming one can run only on them.
    pub fn repository_providers(&self) -> Vec<String> {
        self.router.repository_names()
    }

    /// The context window (tokens) a task of `task_type` preferring `preferred` can count
    /// on (see `Router::context_window`); `None` when no provider serves the type.
    pub fn context_window(
        &self,
        task_type: supervisor_model::TaskType,
        preferred: &[String],
    ) -> Option<u64> {
        self.router.context_window(task_type, preferred)
    }

    /// Fires whenever any provider's live state changes (health, breaker, throttle, an
    /// execution's report).
    pub fn provider_changes(&self) -> watch::Receiver<u64> {
        self.router.subscribe()
    }

    /// Percentiles (p50, p99) of the time from a lease returning to its request leaving
    /// for the provider, over recent attempts; `None` before any.
    pub fn dispatch_percentiles(&self) -> Option<(Duration, Duration)> {
        self.router.dispatch_percentiles()
    }

    /// The node's router (for the crate's own tests of routing across nodes).
    #[cfg(feature = "internals")]
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Stops leasing, lets running attempts finish within the drain timeout, hands back the
    /// rest, then stops the tree. Nothing is lost either way.
    pub async fn shutdown(&self) -> DrainReport {
        // Health checks say NOT_SERVING from now on: load balancers stop sending new work.
        self.leaving.send_replace(true);
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
        if let Some(net) = &self.net {
            net.shutdown().await;
        }
        // Gone: peers need not wait for silence to take over its duties.
        if let Err(err) = self.engine.set_node_leaving(&self.identity(), false).await {
            tracing::warn!(error = %err, "could not record that this node left");
        }
        report
    }
}
