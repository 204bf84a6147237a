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
//! actors into [`RemoteProvider`]s that the router can choose
//! ([`Router::attach_remote`](crate::routing::Router::attach_remote)).
//!
//! One ractor_cluster node per process: process groups are process-global.

mod driver;
mod links;
mod remote;
mod tls;
pub mod wire;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ractor::{Actor, ActorRef};
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use supervisor_engine::NodeIdentity;
use tokio::sync::mpsc;

pub use links::{Backoff, NodeName};
pub use remote::{CALL_MARGIN, RemoteDirectory, RemoteProvider, RemoteProviderInfo, SeenProvider};

use crate::{ClusterConfig, NodeError};
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
    me: NodeName,
    address: String,
    server: ActorRef<NodeServerMessage>,
    commands: mpsc::UnboundedSender<Command>,
    table: Arc<Mutex<Table>>,
    directory: Arc<RemoteDirectory>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl ClusterNet {
    /// Starts the node server on `cfg.listen` with the cookie (and TLS when `cfg.tls` is
    /// set), named after `me` so peers can match it to the store's record.
    ///
    /// Fails with [`NodeError::Config`] when `cfg.listen` is empty, not an address or on
    /// port 0, the cookie is empty or unreadable, or a TLS file is missing or wrong; with
    /// [`NodeError::Spawn`] when the port cannot be bound.
    pub async fn start(cfg: &ClusterConfig, me: &NodeIdentity) -> Result<ClusterNet, NodeError> {
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
        let name = NodeName {
            id: me.id.clone(),
            epoch: me.epoch,
        };
        let address = cfg.advertised().to_string();
        let mode = match &tls {
            Some(t) => IncomingEncryptionMode::Tls(t.acceptor.clone()),
            None => IncomingEncryptionMode::Raw,
        };
        let server = NodeServer::new(
            listen.port(),
            cookie,
            name.wire_name(),
            address.clone(),
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
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "supervisor-cluster-net".into(),
                subscription: Box::new(Forward(tx.clone())),
            })
            .map_err(|e| NodeError::Spawn(format!("cluster listener stopped at once: {e}")))?;
        let table = Arc::new(Mutex::new(Table::default()));
        let directory = Arc::new(RemoteDirectory::default());
        let driver = Driver {
            me: name.clone(),
            server: server.clone(),
            tls: tls.map(|t| t.connector),
            redial: cfg.redial_interval,
            table: table.clone(),
            directory: directory.clone(),
            commands: tx.clone(),
            describing: BTreeSet::new(),
            dial_seq: 0,
        };
        let driver_task = tokio::spawn(driver.run(rx));
        let server_task = tokio::spawn(async move {
            let _ = server_task.await;
        });
        tracing::info!(node = %name.id, epoch = name.epoch, %listen, advertise = %address, tls = cfg.tls.is_some(), "cluster listener started");
        Ok(ClusterNet {
            me: name,
            address,
            server,
            commands: tx,
            table,
            directory,
            tasks: Mutex::new(vec![driver_task, server_task]),
        })
    }

    /// This node's name on the cluster network.
    pub fn name(&self) -> &NodeName {
        &self.me
    }

    /// The address peers dial.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The live peers as the store lists them now (never this node; an entry for this
    /// node's id is ignored). Dials new ones at once, and closes sessions to nodes no
    /// longer listed or listed with a newer epoch. Cheap: it only queues the list.
    pub fn set_peers(&self, peers: Vec<Peer>) {
        let _ = self.commands.send(Command::SetPeers(peers));
    }

    /// The link to every listed peer, by node id.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
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
    pub fn connected_nodes(&self) -> Vec<NodeName> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = table.ready_names();
        names.sort();
        names.dedup();
        names
    }

    /// Providers reachable on other nodes; hand it to
    /// [`Router::attach_remote`](crate::routing::Router::attach_remote).
    pub fn directory(&self) -> Arc<RemoteDirectory> {
        self.directory.clone()
    }

    /// Closes every session and stops the listener. Calls to remote providers still
    /// running fail as `unavailable`.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        self.server.stop(Some("node shutting down".into()));
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
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
        match ClusterNet::start(&cfg, &me).await {
            Err(NodeError::Config(why)) => why,
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("expected a configuration error, it started"),
        }
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
