//! The network between nodes: a ractor_cluster node server per node, links to the peers
//! the store lists, and providers reachable across nodes.
//!
//! The store is the truth, not the socket. The membership actor reads the live members
//! on every heartbeat and hands them to [`ClusterNet::set_peers`]; this module dials
//! every listed peer it has no authenticated session with, redials after a loss with a
//! backoff (from `cluster.redial_interval`, doubling, at most ten times it), and closes
//! sessions to nodes the store no longer lists or lists with a newer epoch (the old
//! incarnation was fenced). ractor_cluster itself never reconnects and only notices a
//! loss when TCP closes.
//!
//! Each ractor node is named `<store node id>#<epoch>@<advertised address>`, so a session
//! is matched to a store member and to one incarnation of it. Peers authenticate with the
//! shared cookie and, when `cluster.tls` is set, mutual TLS.
//!
//! Provider actors join the process group `provider:<name>`; the groups of connected
//! nodes are mirrored here, and the [`RemoteDirectory`] turns the other nodes' provider
//! actors into [`RemoteProvider`]s that the router can choose (it implements the
//! router's [`RemoteProviders`](crate::routing::RemoteProviders)).
//!
//! One ractor_cluster node per process: process groups are process-global.

mod driver;
mod links;
mod remote;
mod tls;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ractor::{Actor, ActorRef};
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use supervisor_engine::NodeIdentity;
use tokio::sync::{mpsc, watch};

pub use links::NodeName;
pub use remote::RemoteDirectory;
#[cfg(any(test, feature = "internals"))]
pub use remote::RemoteProviderInfo;

use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::error::NodeError;
use crate::membership::LivePeer;
use crate::rng::Rng;
use crate::routing::Router;
use driver::{Command, Driver, Forward, LinkState, Table};

/// A live member of the cluster other than this node, as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The store's node id.
    pub node_id: String,
    /// Its current epoch (incarnation).
    pub epoch: u64,
    /// Its cluster address (`cluster.advertise` of that node), e.g. `10.0.0.5:4697`.
    pub address: String,
}

/// The link to one listed peer, for the cluster status API.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// The peer's node id.
    pub node_id: String,
    /// The epoch the store lists.
    pub epoch: u64,
    /// The address dialled.
    pub address: String,
    /// Whether an authenticated session to that incarnation is up.
    pub connected: bool,
    /// Since when it is up (when connected).
    pub since: Option<SystemTime>,
    /// Why the last attempt failed or the last session ended, if one did.
    pub last_error: Option<String>,
    /// Failed dials since the last success.
    pub failures: u32,
}

/// This node's ractor_cluster node and its links to the peers. Dropping it does not stop
/// the node server; call [`ClusterNet::shutdown`].
pub struct ClusterNet {
    settings: Settings,
    directory: Arc<RemoteDirectory>,
    running: Mutex<Running>,
    /// Serialises restarts ([`ClusterNet::rejoin`]) and shutdown.
    lifecycle: tokio::sync::Mutex<()>,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Attempts to bind the listener again after a restart, and the pause between them.
const REBIND_TRIES: u32 = 40;
const REBIND_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// What a (re)start of the node server needs, checked once.
#[derive(Clone)]
struct Settings {
    listen: SocketAddr,
    address: String,
    cookie: String,
    tls: Option<tls::TlsPair>,
    redial: std::time::Duration,
    clock: Clock,
    rng: Rng,
}

/// One incarnation's node server and the loop that drives its links.
struct Running {
    me: NodeName,
    server: ActorRef<NodeServerMessage>,
    commands: mpsc::UnboundedSender<Command>,
    table: Arc<Mutex<Table>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The last list handed to `set_peers`, applied again after a restart.
    peers: Vec<Peer>,
}

impl Settings {
    fn check(cfg: &ClusterConfig, clock: Clock, rng: Rng) -> Result<Settings, NodeError> {
        if cfg.listen.is_empty() {
            return Err(NodeError::Config(
                "cluster.listen is empty: set it (e.g. 0.0.0.0:4697) to reach other nodes".into(),
            ));
        }
        cfg.validate().map_err(NodeError::Config)?;
        let cookie = cfg.read_cookie().map_err(NodeError::Config)?;
        if cookie.trim().is_empty() {
            return Err(NodeError::Config(
                "cluster.listen is set but the cluster cookie is empty: set cluster.cookie_file (or cluster.cookie) to the same secret on every node".into(),
            ));
        }
        let listen: SocketAddr = cfg.listen.parse().map_err(|_| {
            NodeError::Config(format!(
                "cluster.listen {:?} is not an address like 0.0.0.0:4697",
                cfg.listen
            ))
        })?;
        if listen.port() == 0 {
            return Err(NodeError::Config(format!(
                "cluster.listen {listen} has port 0: peers dial the advertised address, so pick a fixed port"
            )));
        }
        let tls = match &cfg.tls {
            Some(t) => Some(tls::load(t).map_err(NodeError::Config)?),
            None => None,
        };
        Ok(Settings {
            listen,
            address: cfg.advertised().to_string(),
            cookie,
            tls,
            redial: cfg.redial_interval,
            clock,
            rng,
        })
    }
}

/// Starts a node server named `name` and the driver of its links.
async fn launch(
    settings: &Settings,
    name: NodeName,
    directory: Arc<RemoteDirectory>,
) -> Result<Running, NodeError> {
    let mode = match &settings.tls {
        Some(t) => IncomingEncryptionMode::Tls(t.acceptor.clone()),
        None => IncomingEncryptionMode::Raw,
    };
    let listen = settings.listen;
    let server = NodeServer::new(
        listen.port(),
        settings.cookie.clone(),
        name.wire_name(),
        settings.address.clone(),
        Some(mode),
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip());
    let (server, server_task) = Actor::spawn(None, server, ()).await.map_err(|e| {
        NodeError::Spawn(format!(
            "could not start the cluster listener on {listen}: {e} (is the port in use?)"
        ))
    })?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let Err(e) = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "supervisor-cluster-net".into(),
        subscription: Box::new(Forward(tx.clone())),
    }) {
        server.stop(None);
        return Err(NodeError::Spawn(format!(
            "cluster listener stopped at once: {e}"
        )));
    }
    let table = Arc::new(Mutex::new(Table::default()));
    let driver = Driver {
        me: name.clone(),
        server: server.clone(),
        tls: settings.tls.as_ref().map(|t| t.connector.clone()),
        redial: settings.redial,
        table: table.clone(),
        directory,
        commands: tx.clone(),
        describing: BTreeSet::new(),
        dial_seq: 0,
        clock: settings.clock.clone(),
        rng: settings.rng.clone(),
    };
    let driver_task = tokio::spawn(driver.run(rx));
    let server_task = tokio::spawn(async move {
        let _ = server_task.await;
    });
    tracing::info!(node = %name.id, epoch = name.epoch, %listen, advertise = %settings.address, tls = settings.tls.is_some(), "cluster listener started");
    Ok(Running {
        me: name,
        server,
        commands: tx,
        table,
        tasks: vec![driver_task, server_task],
        peers: Vec::new(),
    })
}

/// Stops one incarnation's node server and driver, and waits for them.
async fn halt(
    commands: &mpsc::UnboundedSender<Command>,
    server: &ActorRef<NodeServerMessage>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    let _ = commands.send(Command::Shutdown);
    server.stop(Some("node shutting down".into()));
    for t in tasks {
        let _ = t.await;
    }
}

/// The peers to link to from a membership read: those with a cluster address.
pub fn peers_from(live: &[LivePeer]) -> Vec<Peer> {
    live.iter()
        .filter(|p| !p.cluster_address.is_empty())
        .map(|p| Peer {
            node_id: p.id.clone(),
            epoch: p.epoch,
            address: p.cluster_address.clone(),
        })
        .collect()
}

impl ClusterNet {
    /// Starts the node server on `cfg.listen` with the cookie (and TLS when `cfg.tls` is
    /// set), named after `me` so peers can match it to the store's record. Its timers
    /// run on `clock`; `rng` spreads its redials.
    ///
    /// Fails with [`NodeError::Config`] when `cfg.listen` is empty, not an address or on
    /// port 0, the cookie is empty or unreadable, or a TLS file is missing or wrong; with
    /// [`NodeError::Spawn`] when the port cannot be bound.
    pub async fn start(
        cfg: &ClusterConfig,
        me: &NodeIdentity,
        clock: Clock,
        rng: Rng,
    ) -> Result<ClusterNet, NodeError> {
        let settings = Settings::check(cfg, clock.clone(), rng)?;
        let directory = Arc::new(RemoteDirectory::new(clock));
        let name = NodeName {
            id: me.id.clone(),
            epoch: me.epoch,
        };
        let running = launch(&settings, name, directory.clone()).await?;
        Ok(ClusterNet {
            settings,
            directory,
            running: Mutex::new(running),
            lifecycle: tokio::sync::Mutex::new(()),
            follower: Mutex::new(None),
        })
    }

    /// Starts the cluster network of a running node: its cluster settings, its
    /// `router` offered the providers of other nodes, and its membership reads (`peers`)
    /// and rejoins after a fence followed until [`ClusterNet::shutdown`].
    ///
    /// `identity` must follow the node's identity (it changes epoch when the node
    /// rejoins after being fenced).
    pub async fn join(
        cfg: &ClusterConfig,
        identity: watch::Receiver<NodeIdentity>,
        peers: watch::Receiver<Vec<LivePeer>>,
        router: &Router,
        clock: Clock,
        rng: Rng,
    ) -> Result<Arc<ClusterNet>, NodeError> {
        let me = identity.borrow().clone();
        let net = Arc::new(ClusterNet::start(cfg, &me, clock, rng).await?);
        router.attach_remote(net.directory());
        net.follow(peers, identity);
        Ok(net)
    }

    /// Follows membership: every change of `peers` is handed to [`ClusterNet::set_peers`],
    /// and a new epoch in `identity` restarts the node server under it
    /// ([`ClusterNet::rejoin`]). Replaces an earlier follower; stops at shutdown.
    pub fn follow(
        self: &Arc<Self>,
        mut peers: watch::Receiver<Vec<LivePeer>>,
        mut identity: watch::Receiver<NodeIdentity>,
    ) {
        let net = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            loop {
                let Some(n) = net.upgrade() else { return };
                let me = identity.borrow_and_update().clone();
                if me.epoch != n.name().epoch
                    && let Err(err) = n.rejoin(&me).await
                {
                    let pause = n.settings.redial;
                    tracing::error!(error = %err, retry_in = ?pause, "could not restart the cluster listener under the new epoch");
                    let sleep = n.settings.clock.sleep(pause);
                    drop(n);
                    sleep.await;
                    identity.mark_changed();
                    continue;
                }
                n.set_peers(peers_from(&peers.borrow_and_update()));
                drop(n);
                tokio::select! {
                    changed = peers.changed() => if changed.is_err() { return },
                    changed = identity.changed() => if changed.is_err() { return },
                }
            }
        });
        let old = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's name on the cluster network.
    pub fn name(&self) -> NodeName {
        self.running().me.clone()
    }

    /// The live peers as the store lists them now (never this node; an entry for this
    /// node's id is ignored). Dials new ones at once, and closes sessions to nodes no
    /// longer listed or listed with a newer epoch. Cheap: it only queues the list.
    pub fn set_peers(&self, peers: Vec<Peer>) {
        let mut running = self.running();
        running.peers = peers.clone();
        let _ = running.commands.send(Command::SetPeers(peers));
    }

    /// After this node rejoined under a new epoch (it was fenced): restarts the node
    /// server under the new name, so peers that read the new epoch accept it again.
    /// Sessions drop and calls in flight fail as `unavailable`; the peers last given to
    /// [`ClusterNet::set_peers`] are dialled again. Does nothing for the current epoch.
    pub async fn rejoin(&self, me: &NodeIdentity) -> Result<(), NodeError> {
        let _guard = self.lifecycle.lock().await;
        let (commands, server, tasks, peers) = {
            let mut running = self.running();
            if running.me.epoch == me.epoch && running.me.id == me.id {
                return Ok(());
            }
            (
                running.commands.clone(),
                running.server.clone(),
                std::mem::take(&mut running.tasks),
                running.peers.clone(),
            )
        };
        halt(&commands, &server, tasks).await;
        let name = NodeName {
            id: me.id.clone(),
            epoch: me.epoch,
        };
        // The old listener lets go of the port as its actor winds down: give it a moment.
        let mut tries = 0;
        let mut fresh = loop {
            match launch(&self.settings, name.clone(), self.directory.clone()).await {
                Ok(fresh) => break fresh,
                Err(NodeError::Spawn(_)) if tries < REBIND_TRIES => {
                    tries += 1;
                    self.settings.clock.sleep(REBIND_PAUSE).await;
                }
                Err(err) => return Err(err),
            }
        };
        let _ = fresh.commands.send(Command::SetPeers(peers.clone()));
        fresh.peers = peers;
        *self.running() = fresh;
        tracing::info!(
            epoch = me.epoch,
            "cluster listener restarted under the new epoch"
        );
        Ok(())
    }

    /// The link to every listed peer, by node id.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let table = self.running().table.clone();
        let table = table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .peers
            .values()
            .map(|l| SessionInfo {
                node_id: l.peer.node_id.clone(),
                epoch: l.peer.epoch,
                address: l.peer.address.clone(),
                connected: matches!(l.state, LinkState::Connected { .. }),
                since: l.since,
                last_error: l.last_error.clone(),
                failures: l.failures,
            })
            .collect()
    }

    /// Every node with an authenticated, ready session to this one, listed by the store
    /// or not (a node the store no longer lists keeps its session for one more read).
    #[cfg(any(test, feature = "internals"))]
    pub fn connected_nodes(&self) -> Vec<NodeName> {
        let table = self.running().table.clone();
        let table = table.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = table.ready_names();
        names.sort();
        names.dedup();
        names
    }

    /// Providers reachable on other nodes; hand it to [`Router::attach_remote`].
    pub fn directory(&self) -> Arc<RemoteDirectory> {
        self.directory.clone()
    }

    /// Stops following membership, closes every session and stops the listener. Calls to
    /// remote providers still running fail as `unavailable`.
    pub async fn shutdown(&self) {
        if let Some(f) = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            f.abort();
        }
        let _guard = self.lifecycle.lock().await;
        let (commands, server, tasks) = {
            let mut running = self.running();
            (
                running.commands.clone(),
                running.server.clone(),
                std::mem::take(&mut running.tasks),
            )
        };
        halt(&commands, &server, tasks).await;
        self.directory.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refusal(cfg: ClusterConfig) -> String {
        let me = NodeIdentity {
            id: "n".into(),
            epoch: 1,
        };
        match ClusterNet::start(&cfg, &me, Clock::system(), Rng::seeded(1)).await {
            Err(NodeError::Config(why)) => why,
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("expected a configuration error, it started"),
        }
    }

    #[test]
    fn members_without_a_cluster_address_are_not_dialled() {
        let live = vec![
            LivePeer {
                id: "b".into(),
                epoch: 2,
                cluster_address: "10.0.0.2:4697".into(),
            },
            LivePeer {
                id: "c".into(),
                epoch: 1,
                cluster_address: String::new(),
            },
        ];
        assert_eq!(
            peers_from(&live),
            vec![Peer {
                node_id: "b".into(),
                epoch: 2,
                address: "10.0.0.2:4697".into(),
            }]
        );
    }

    #[tokio::test]
    async fn it_refuses_to_start_without_a_cookie_or_a_usable_address() {
        let listen = ClusterConfig {
            listen: "127.0.0.1:4697".into(),
            ..ClusterConfig::default()
        };
        assert!(
            refusal(ClusterConfig::default())
                .await
                .contains("cluster.listen is empty")
        );
        let why = refusal(listen.clone()).await;
        assert!(why.contains("cookie is empty"), "{why}");
        let why = refusal(ClusterConfig {
            cookie: "  ".into(),
            ..listen.clone()
        })
        .await;
        assert!(why.contains("cookie is empty"), "{why}");
        let why = refusal(ClusterConfig {
            cookie_file: Some("/nonexistent/cookie".into()),
            ..listen.clone()
        })
        .await;
        assert!(why.contains("/nonexistent/cookie"), "{why}");
        let why = refusal(ClusterConfig {
            listen: "127.0.0.1:0".into(),
            cookie: "secret".into(),
            ..ClusterConfig::default()
        })
        .await;
        assert!(why.contains("port 0"), "{why}");
    }
}
