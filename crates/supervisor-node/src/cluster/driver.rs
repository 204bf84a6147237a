//! The loop that keeps this node's links in line with the store's member list: it hears
//! the node server's session events, the membership reads and its own dial results, and
//! decides what to dial, what to close and which remote providers are reachable. The
//! rules themselves are in [`super::links`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ractor::{ActorCell, ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};
use tokio::sync::mpsc;

use super::links::{self, Backoff, NodeName, Verdict};
use super::remote::{self, RemoteDirectory};
use super::{Peer, tls};
use crate::clock::Clock;
use crate::rng::Rng;
use crate::wire;

/// Longest wait for a dial to connect (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait, after connecting, for the session to authenticate and exchange state.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often remote process groups are re-read for providers that came or went.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Redials wait their backoff give or take this share, so the nodes that lost one peer
/// do not all dial it at the same instant when it comes back.
const REDIAL_JITTER: f64 = 0.1;

/// What the driver hears about.
pub(super) enum Command {
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
pub(super) struct Forward(pub(super) mpsc::UnboundedSender<Command>);

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
pub(super) struct Table {
    pub(super) peers: BTreeMap<String, Link>,
    sessions: HashMap<ActorId, SessionRec>,
}

pub(super) struct Link {
    pub(super) peer: Peer,
    pub(super) state: LinkState,
    backoff: Backoff,
    pub(super) since: Option<SystemTime>,
    pub(super) last_error: Option<String>,
    pub(super) failures: u32,
}

pub(super) enum LinkState {
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

impl Table {
    #[cfg(any(test, feature = "internals"))]
    pub(super) fn ready_names(&self) -> Vec<NodeName> {
        self.sessions
            .values()
            .filter(|s| s.ready)
            .filter_map(|s| s.name.clone())
            .collect()
    }
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

pub(super) struct Driver {
    pub(super) me: NodeName,
    pub(super) server: ActorRef<NodeServerMessage>,
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
    pub(super) redial: Duration,
    pub(super) table: Arc<Mutex<Table>>,
    pub(super) directory: Arc<RemoteDirectory>,
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) describing: BTreeSet<ActorId>,
    pub(super) dial_seq: u64,
    pub(super) clock: Clock,
    /// Spreads redials of many nodes to one peer apart.
    pub(super) rng: Rng,
}

fn name_of(info: &NodeServerSessionInformation) -> Option<NodeName> {
    info.peer_name
        .as_ref()
        .and_then(|n| NodeName::parse(&n.name))
}

impl Driver {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut next_refresh = self.clock.now();
        loop {
            let wake = self.next_wake().min(next_refresh);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.handle(cmd),
                },
                _ = self.clock.sleep_until(wake) => {}
            }
            if self.clock.now() >= next_refresh {
                self.refresh_directory();
                next_refresh = self.clock.now() + REFRESH_INTERVAL;
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
        let far = self.clock.now() + Duration::from_secs(3600);
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
                let now = self.clock.now();
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
                        fail(l, why, now, &self.rng);
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
                    Err(why) => fail(l, why, self.clock.now(), &self.rng),
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
        let now = self.clock.now();
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
            // A dial that reached another node or incarnation than the one listed at
            // that address failed; the session itself is judged on its own above.
            let now = self.clock.now();
            for l in peers.values_mut() {
                if matches!(l.state, LinkState::Dialing { session: Some(d), .. } if d == *id)
                    && (l.peer.node_id != name.id || l.peer.epoch != name.epoch)
                {
                    let why = format!(
                        "{} answers as node {} epoch {}, but the store lists node {} epoch {} there",
                        l.peer.address, name.id, name.epoch, l.peer.node_id, l.peer.epoch
                    );
                    fail(l, why, now, &self.rng);
                }
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
        let now = self.clock.now();
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
                        // A session that got as far as ready is judged by who it talks
                        // to, not closed here.
                        if let Some(s) = session.and_then(|s| sessions.get(&s))
                            && !s.ready
                        {
                            to_close.push(s.actor().clone());
                        }
                        fail(
                            l,
                            format!(
                                "not authenticated within {:?}: check the address, the cluster cookie and TLS settings of both nodes",
                                CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT
                            ),
                            now,
                            &self.rng,
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
            let clock = self.clock.clone();
            tokio::spawn(async move {
                let result = dial(&clock, &server, &peer.address, tls).await;
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
fn fail(l: &mut Link, why: String, now: Instant, rng: &Rng) {
    let delay = rng.jitter(l.backoff.next_delay(), REDIAL_JITTER);
    tracing::info!(peer = %l.peer.node_id, address = %l.peer.address, %why, retry_in = ?delay, "cluster link down");
    l.state = LinkState::Waiting { at: now + delay };
    l.since = None;
    l.last_error = Some(why);
    l.failures = l.failures.saturating_add(1);
}

/// Opens a connection to `address` and hands it to the node server; returns the socket
/// address the session will report as its peer.
async fn dial(
    clock: &Clock,
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
    match clock.timeout(CONNECT_TIMEOUT, connect).await {
        Some(r) => r,
        None => Err(format!(
            "cannot connect to {address}: no answer within {CONNECT_TIMEOUT:?}"
        )),
    }
}
