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

mod links;
mod remote;
mod tls;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorCell, ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use supervisor_engine::NodeIdentity;
use tokio::sync::mpsc;

pub use links::{Backoff, NodeName};
pub use remote::{CALL_MARGIN, RemoteDirectory, RemoteProvider, RemoteProviderInfo, SeenProvider};

use crate::{ClusterConfig, NodeError};
use links::Verdict;

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

/// Longest wait for a dial to connect (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait, after connecting, for the session to authenticate and exchange state.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often remote process groups are re-read for providers that came or went.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Fails with [`NodeError::Config`] when `cfg.listen` is empty or not an address,
    /// the cookie is empty or unreadable, or a TLS file is missing or wrong; with
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

/// What the driver hears about.
enum Command {
    SetPeers(Vec<Peer>),
    Opened(NodeServerSessionInformation),
    Authenticated(NodeServerSessionInformation),
    Ready(NodeServerSessionInformation),
    Closed(NodeServerSessionInformation),
    Dialled {
        node_id: String,
        seq: u64,
        result: Result<String, String>,
    },
    Described {
        cell: ActorCell,
        node: NodeName,
        result: Result<wire::WireDescription, String>,
    },
    Shutdown,
}

/// Forwards the node server's session events to the driver (the callbacks must not
/// block).
struct Forward(mpsc::UnboundedSender<Command>);

impl NodeEventSubscription for Forward {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Command::Opened(ses));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Command::Closed(ses));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Command::Authenticated(ses));
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(Command::Ready(ses));
    }
}

#[derive(Default)]
struct Table {
    peers: BTreeMap<String, Link>,
    sessions: HashMap<ActorId, SessionRec>,
}

struct Link {
    peer: Peer,
    state: LinkState,
    backoff: Backoff,
    since: Option<SystemTime>,
    last_error: Option<String>,
    failures: u32,
}

enum LinkState {
    /// Dial when the time comes.
    Waiting { at: Instant },
    /// A dial is under way; `addr` is the socket address once connected.
    Dialing {
        seq: u64,
        deadline: Instant,
        addr: Option<String>,
        session: Option<ActorId>,
    },
    /// An authenticated, ready session talks to this incarnation.
    Connected { session: ActorId },
}

struct SessionRec {
    info: NodeServerSessionInformation,
    name: Option<NodeName>,
    ready: bool,
    unlisted_reads: u32,
}

impl SessionRec {
    fn actor(&self) -> &ActorRef<ractor_cluster::NodeSessionMessage> {
        &self.info.actor
    }
}

struct Driver {
    me: NodeName,
    server: ActorRef<NodeServerMessage>,
    tls: Option<tokio_rustls::TlsConnector>,
    redial: Duration,
    table: Arc<Mutex<Table>>,
    directory: Arc<RemoteDirectory>,
    commands: mpsc::UnboundedSender<Command>,
    describing: BTreeSet<ActorId>,
    dial_seq: u64,
}

fn name_of(info: &NodeServerSessionInformation) -> Option<NodeName> {
    info.peer_name
        .as_ref()
        .and_then(|n| NodeName::parse(&n.name))
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.handle(cmd),
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = refresh.tick() => self.refresh_directory(),
            }
            self.step();
        }
        self.directory.clear();
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When a waiting dial is due or a dial's handshake times out.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.table()
            .peers
            .values()
            .map(|l| match l.state {
                LinkState::Waiting { at } => at,
                LinkState::Dialing { deadline, .. } => deadline,
                LinkState::Connected { .. } => far,
            })
            .min()
            .unwrap_or(far)
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::SetPeers(peers) => self.set_peers(peers),
            Command::Opened(info) => {
                let mut t = self.table();
                let addr = info.peer_addr.clone();
                let id = info.actor.get_id();
                if !info.is_server {
                    // Our dial: tie it to the peer being dialled at that address.
                    for l in t.peers.values_mut() {
                        if let LinkState::Dialing {
                            addr: Some(a),
                            session,
                            ..
                        } = &mut l.state
                            && *a == addr
                            && session.is_none()
                        {
                            *session = Some(id);
                        }
                    }
                }
                t.sessions.insert(
                    id,
                    SessionRec {
                        info,
                        name: None,
                        ready: false,
                        unlisted_reads: 0,
                    },
                );
            }
            Command::Authenticated(info) => {
                let mut t = self.table();
                if let Some(s) = t.sessions.get_mut(&info.actor.get_id()) {
                    s.name = name_of(&info);
                    s.info = info;
                }
            }
            Command::Ready(info) => {
                let id = info.actor.get_id();
                {
                    let mut t = self.table();
                    let name = name_of(&info);
                    match t.sessions.get_mut(&id) {
                        Some(s) => {
                            s.name = name;
                            s.ready = true;
                            s.info = info;
                        }
                        None => {
                            t.sessions.insert(
                                id,
                                SessionRec {
                                    info,
                                    name,
                                    ready: true,
                                    unlisted_reads: 0,
                                },
                            );
                        }
                    }
                }
                self.judge_sessions(false);
                self.refresh_directory();
            }
            Command::Closed(info) => {
                let id = info.actor.get_id();
                let mut t = self.table();
                let rec = t.sessions.remove(&id);
                let now = Instant::now();
                for l in t.peers.values_mut() {
                    let lost = match &l.state {
                        LinkState::Connected { session } if *session == id => Some(
                            "connection lost (the peer closed it or the network dropped)"
                                .to_string(),
                        ),
                        LinkState::Dialing {
                            session: Some(s), ..
                        } if *s == id => Some(
                            "the peer closed the connection during the handshake: check that both nodes use the same cluster cookie and the same TLS settings".to_string(),
                        ),
                        _ => None,
                    };
                    if let Some(why) = lost {
                        fail(l, why, now);
                    }
                }
                drop(t);
                if let Some(rec) = rec {
                    tracing::info!(peer = ?rec.name, addr = %rec.info.peer_addr, "cluster session closed");
                }
                self.refresh_directory();
            }
            Command::Dialled {
                node_id,
                seq,
                result,
            } => {
                let mut t = self.table();
                let Table { peers, sessions } = &mut *t;
                let Some(l) = peers.get_mut(&node_id) else {
                    return;
                };
                let LinkState::Dialing {
                    seq: s,
                    addr,
                    session,
                    ..
                } = &mut l.state
                else {
                    return;
                };
                if *s != seq {
                    return;
                }
                match result {
                    Ok(peer_addr) => {
                        if session.is_none() {
                            *session = sessions
                                .iter()
                                .find(|(_, r)| {
                                    !r.info.is_server && r.info.peer_addr == peer_addr && !r.ready
                                })
                                .map(|(id, _)| *id);
                        }
                        *addr = Some(peer_addr);
                    }
                    Err(why) => fail(l, why, Instant::now()),
                }
            }
            Command::Described { cell, node, result } => {
                let id = cell.get_id();
                self.describing.remove(&id);
                match result {
                    Ok(d) => {
                        if self.node_of(&id).as_ref() == Some(&node) {
                            self.directory.insert(cell, node, d);
                        }
                    }
                    Err(why) => {
                        tracing::warn!(node = %node.id, %why, "could not ask a provider on another node what it can do; will ask again")
                    }
                }
            }
            Command::Shutdown => {}
        }
    }

    fn set_peers(&mut self, peers: Vec<Peer>) {
        let now = Instant::now();
        {
            let mut t = self.table();
            let listed: BTreeMap<String, Peer> = peers
                .into_iter()
                .filter(|p| p.node_id != self.me.id)
                .map(|p| (p.node_id.clone(), p))
                .collect();
            t.peers
                .retain(|id, l| listed.get(id).is_some_and(|p| !links::replaces(&l.peer, p)));
            for (id, p) in listed {
                t.peers.entry(id).or_insert_with(|| Link {
                    peer: p,
                    state: LinkState::Waiting { at: now },
                    backoff: Backoff::new(self.redial),
                    since: None,
                    last_error: None,
                    failures: 0,
                });
            }
        }
        self.judge_sessions(true);
        self.refresh_directory();
    }

    /// Matches ready sessions to listed peers; closes the ones the store says are gone.
    /// `new_read`: this follows a read of the store (counts unlisted reads).
    fn judge_sessions(&mut self, new_read: bool) {
        let mut t = self.table();
        let Table { peers, sessions } = &mut *t;
        let listed: BTreeMap<String, Peer> = peers
            .iter()
            .map(|(id, l)| (id.clone(), l.peer.clone()))
            .collect();
        let mut to_close = Vec::new();
        for (id, s) in sessions.iter_mut() {
            if !s.ready {
                continue;
            }
            let Some(name) = &s.name else {
                to_close.push((s.actor().clone(), "a node outside this cluster".to_string()));
                continue;
            };
            if new_read {
                s.unlisted_reads = if listed.contains_key(&name.id) {
                    0
                } else {
                    s.unlisted_reads + 1
                };
            }
            match links::judge(name, &listed, s.unlisted_reads) {
                Verdict::Serves(node_id) => {
                    if let Some(l) = peers.get_mut(&node_id)
                        && !matches!(l.state, LinkState::Connected { session } if session == *id)
                    {
                        l.state = LinkState::Connected { session: *id };
                        l.since = Some(SystemTime::now());
                        l.last_error = None;
                        l.failures = 0;
                        l.backoff.reset();
                        tracing::info!(peer = %node_id, epoch = name.epoch, addr = %s.info.peer_addr, "cluster session ready");
                    }
                }
                Verdict::Keep => {}
                Verdict::Drop(why) => to_close.push((s.actor().clone(), why)),
            }
        }
        drop(t);
        for (actor, why) in to_close {
            tracing::info!(%why, "closing cluster session");
            actor.stop(Some(why));
        }
    }

    /// Starts due dials and fails handshakes that took too long.
    fn step(&mut self) {
        let now = Instant::now();
        let mut dials = Vec::new();
        let mut to_close = Vec::new();
        let mut seq = self.dial_seq;
        {
            let mut t = self.table();
            let Table { peers, sessions } = &mut *t;
            for l in peers.values_mut() {
                match &l.state {
                    LinkState::Waiting { at } if *at <= now => {
                        seq += 1;
                        l.state = LinkState::Dialing {
                            seq,
                            deadline: now + CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT,
                            addr: None,
                            session: None,
                        };
                        dials.push((l.peer.clone(), seq));
                    }
                    LinkState::Dialing {
                        deadline, session, ..
                    } if *deadline <= now => {
                        if let Some(s) = session.and_then(|s| sessions.get(&s)) {
                            to_close.push(s.actor().clone());
                        }
                        fail(
                            l,
                            format!(
                                "not authenticated within {:?}: check the address, the cluster cookie and TLS settings of both nodes",
                                CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT
                            ),
                            now,
                        );
                    }
                    _ => {}
                }
            }
        }
        self.dial_seq = seq;
        for actor in to_close {
            actor.stop(Some("handshake timed out".into()));
        }
        for (peer, seq) in dials {
            let server = self.server.clone();
            let tls = self.tls.clone();
            let tx = self.commands.clone();
            tokio::spawn(async move {
                let result = dial(&server, &peer.address, tls).await;
                let _ = tx.send(Command::Dialled {
                    node_id: peer.node_id,
                    seq,
                    result,
                });
            });
        }
    }

    /// The listed peer a remote actor lives on, if its session is the link to it.
    fn node_of(&self, actor: &ActorId) -> Option<NodeName> {
        let ActorId::Remote { node_id, .. } = actor else {
            return None;
        };
        let t = self.table();
        t.peers.values().find_map(|l| match &l.state {
            LinkState::Connected { session } => t
                .sessions
                .get(session)
                .filter(|s| s.info.node_id == *node_id)
                .and_then(|s| s.name.clone()),
            _ => None,
        })
    }

    /// Re-reads the provider process groups: describes new remote members, forgets the
    /// ones gone or on nodes that are no longer linked.
    fn refresh_directory(&mut self) {
        let mut present: BTreeMap<ActorId, (ActorCell, NodeName)> = BTreeMap::new();
        for group in ractor::pg::which_groups() {
            if !group.starts_with("provider:") {
                continue;
            }
            for cell in ractor::pg::get_members(&group) {
                let id = cell.get_id();
                if id.is_local() {
                    continue;
                }
                if let Some(node) = self.node_of(&id) {
                    present.insert(id, (cell, node));
                }
            }
        }
        self.directory
            .retain(|id, node| present.get(id).is_some_and(|(_, n)| n == node));
        for (id, (cell, node)) in present {
            if self.directory.knows(&id) || self.describing.contains(&id) {
                continue;
            }
            self.describing.insert(id);
            let tx = self.commands.clone();
            tokio::spawn(async move {
                let result = remote::describe(&cell).await;
                let _ = tx.send(Command::Described { cell, node, result });
            });
        }
    }
}

/// Records a failed dial or a lost session and schedules the next dial.
fn fail(l: &mut Link, why: String, now: Instant) {
    let delay = l.backoff.next_delay();
    tracing::info!(peer = %l.peer.node_id, address = %l.peer.address, %why, retry_in = ?delay, "cluster link down");
    l.state = LinkState::Waiting { at: now + delay };
    l.since = None;
    l.last_error = Some(why);
    l.failures = l.failures.saturating_add(1);
}

/// Opens a connection to `address` and hands it to the node server; returns the socket
/// address the session will report as its peer.
async fn dial(
    server: &ActorRef<NodeServerMessage>,
    address: &str,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<String, String> {
    let connect = async {
        let addr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("cannot resolve {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to no address"))?;
        match tls {
            None => ractor_cluster::client_connect(server, addr).await,
            Some(connector) => {
                let name = tls::server_name(address)?;
                ractor_cluster::client_connect_enc(server, addr, connector, name).await
            }
        }
        .map_err(|e| match e {
            ractor_cluster::ClientConnectErr::Socket(e) => {
                format!("cannot connect to {address}: {e}")
            }
            ractor_cluster::ClientConnectErr::Encryption(e) => {
                format!("TLS handshake with {address} failed: {e}")
            }
            ractor_cluster::ClientConnectErr::Messaging(e) => {
                format!("the cluster listener is not running: {e}")
            }
        })?;
        Ok(addr.to_string())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "cannot connect to {address}: no answer within {CONNECT_TIMEOUT:?}"
        )),
    }
}
