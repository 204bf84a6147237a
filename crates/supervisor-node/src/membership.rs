//! The membership actor: this node's heartbeat, its view of its peers, and fencing.
//!
//! Every `heartbeat_interval` it bumps this node's heartbeat revision in the store, then
//! reads every node record. For each peer it remembers the last revision it saw and when
//! (on this process's monotonic clock); a peer whose revision has not moved for
//! `failure_timeout` is fenced: its epoch is bumped in a transaction that checks the
//! revision is still the one seen, and its leases go back to the queue at once. No
//! wall-clock time written by another machine decides anything.
//!
//! When this node's own heartbeat is refused because a peer fenced it, it abandons its
//! running attempts (their tasks are already queued again and its writes are refused),
//! registers again under a new epoch, and resumes leasing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, EngineError, NodeAnnouncement, NodeIdentity, NodeLoad, NodeState};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::dispatcher::DispatcherMsg;

/// Messages of the membership actor.
pub enum MembershipMsg {
    /// Heartbeat, observe peers, fence the silent ones.
    Tick,
}

impl ractor::Message for MembershipMsg {}

/// How this node judges a peer, from what it observed itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its revision moved within the failure timeout.
    Alive,
    /// Its revision has not moved for more than two heartbeat intervals.
    Suspect,
    /// Not judged: it left, was fenced, or this node has not watched it long enough.
    Unknown,
}

impl Liveness {
    /// Lower-case name, as shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Unknown => "unknown",
        }
    }
}

/// This node's observation of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Peer id.
    pub id: String,
    /// Its epoch when last read.
    pub epoch: u64,
    /// Its heartbeat revision when last read.
    pub revision: u64,
    /// How long its revision has not moved, on this node's clock.
    pub silent_for: Duration,
    /// The judgement.
    pub liveness: Liveness,
}

/// What the membership actor shares with the rest of the node.
#[derive(Debug, Default)]
pub struct MembershipView {
    /// What this node measured of its machine at its last heartbeat.
    pub resources: supervisor_engine::NodeResources,
    /// Peers by id.
    pub peers: HashMap<String, PeerView>,
    /// Heartbeats that failed in a row (the store is unreachable).
    pub failed_heartbeats: u32,
    /// Times this node found itself fenced and rejoined.
    pub rejoins: u32,
}

/// Arguments of the membership actor.
pub struct MembershipArgs {
    /// The engine.
    pub engine: Engine,
    /// What this node announces when it (re)joins.
    pub announcement: NodeAnnouncement,
    /// The node's identity; the actor publishes the new one when it rejoins.
    pub identity: watch::Sender<NodeIdentity>,
    /// How often to beat.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is fenced.
    pub failure_timeout: Duration,
    /// Name of the dispatcher actor (told when this node is fenced and rejoins).
    pub dispatcher: String,
    /// Shared view for status queries.
    pub view: Arc<RwLock<MembershipView>>,
    /// Set when an operator asks this node to drain.
    pub drain: watch::Sender<bool>,
    /// The resource manager's last measurement of the machine, sent with each beat.
    pub resources: Arc<RwLock<supervisor_engine::NodeResources>>,
    /// Live peers (id, epoch, cluster address) after every read, for cluster networking.
    pub peers: watch::Sender<Vec<LivePeer>>,
    /// Times heartbeats and peers' silences.
    pub clock: Clock,
}

/// A live peer as published for the cluster network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePeer {
    /// Node id.
    pub id: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its cluster address (empty when it has no cluster networking).
    pub cluster_address: String,
}

/// The membership actor.
#[derive(Clone)]
pub struct Membership;

struct Observed {
    epoch: u64,
    revision: u64,
    since: Instant,
}

/// Its state.
pub struct MembershipState {
    args: MembershipArgs,
    observed: HashMap<String, Observed>,
    last_tick: Instant,
}

impl MembershipState {
    fn dispatcher(&self) -> Option<ActorRef<DispatcherMsg>> {
        ractor::registry::where_is(self.args.dispatcher.clone()).map(Into::into)
    }

    async fn in_flight(&self) -> u32 {
        let Some(d) = self.dispatcher() else {
            return 0;
        };
        ractor::call_t!(d, DispatcherMsg::InFlight, 500)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }

    /// This node was fenced: drop its work, take a new epoch, lease again.
    async fn rejoin(&mut self, why: &EngineError) {
        tracing::warn!(error = %why, "this node was fenced by a peer; abandoning its attempts and rejoining");
        if let Some(d) = self.dispatcher() {
            let _ = d.cast(DispatcherMsg::Fenced);
        }
        let id = self.args.identity.borrow().id.clone();
        let engine = &self.args.engine;
        let identity = match engine.register_node(&id, &self.args.announcement).await {
            Ok(identity) => identity,
            Err(err) => {
                tracing::warn!(error = %err, "could not rejoin yet; trying again next heartbeat");
                return;
            }
        };
        if let Err(err) = engine.reclaim_orphaned_leases(&identity).await {
            tracing::warn!(error = %err, "could not requeue leases of the fenced epoch; their timers will");
        }
        tracing::info!(epoch = identity.epoch, "rejoined the cluster");
        self.args.identity.send_replace(identity);
        self.observed.clear();
        if let Ok(mut view) = self.args.view.write() {
            view.rejoins += 1;
        }
        if let Some(d) = self.dispatcher() {
            let _ = d.cast(DispatcherMsg::Rejoined);
        }
    }

    /// Heartbeats; returns whether it went through.
    async fn beat(&mut self) -> bool {
        let identity = self.args.identity.borrow().clone();
        let resources = self
            .args
            .resources
            .read()
            .map(|r| r.clone())
            .unwrap_or_default();
        if let Ok(mut view) = self.args.view.write() {
            view.resources = resources.clone();
        }
        let load = NodeLoad {
            in_flight: self.in_flight().await,
            resources,
        };
        match self.args.engine.heartbeat(&identity, load).await {
            Ok(reply) => {
                if let Ok(mut view) = self.args.view.write() {
                    view.failed_heartbeats = 0;
                }
                if reply.drain_requested && !*self.args.drain.borrow() {
                    tracing::info!("an operator asked this node to drain");
                    self.args.drain.send_replace(true);
                }
                true
            }
            Err(err @ EngineError::Fenced { .. }) => {
                self.rejoin(&err).await;
                false
            }
            Err(err) => {
                let failed = match self.args.view.write() {
                    Ok(mut view) => {
                        view.failed_heartbeats += 1;
                        view.failed_heartbeats
                    }
                    Err(_) => 0,
                };
                tracing::warn!(error = %err, failed, "heartbeat failed; peers fence this node if it stays silent");
                false
            }
        }
    }

    async fn observe(&mut self) {
        let me = self.args.identity.borrow().clone();
        let nodes = match self.args.engine.list_nodes().await {
            Ok(nodes) => nodes,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the cluster's members");
                return;
            }
        };
        let now = self.args.clock.now();
        let timeout = self.args.failure_timeout;
        let suspect_after = self.args.heartbeat_interval * 2;
        let mut views = HashMap::new();
        let mut live = Vec::new();
        for node in nodes.iter().filter(|n| n.id != me.id) {
            let watched = matches!(node.state, NodeState::Active | NodeState::Draining);
            let view = |silent_for, liveness| PeerView {
                id: node.id.clone(),
                epoch: node.epoch,
                revision: node.revision,
                silent_for,
                liveness,
            };
            if !watched {
                self.observed.remove(&node.id);
                views.insert(node.id.clone(), view(Duration::ZERO, Liveness::Unknown));
                continue;
            }
            let seen = self
                .observed
                .entry(node.id.clone())
                .or_insert_with(|| Observed {
                    epoch: node.epoch,
                    revision: node.revision,
                    since: now,
                });
            if seen.epoch != node.epoch || seen.revision != node.revision {
                *seen = Observed {
                    epoch: node.epoch,
                    revision: node.revision,
                    since: now,
                };
            }
            let silent_for = now.duration_since(seen.since);
            let liveness = if silent_for > suspect_after {
                Liveness::Suspect
            } else {
                Liveness::Alive
            };
            if silent_for >= timeout {
                match self
                    .args
                    .engine
                    .fence_node(&node.id, node.epoch, node.revision, &me.id)
                    .await
                {
                    Ok(true) => {
                        tracing::warn!(peer = %node.id, epoch = node.epoch, ?silent_for, "fenced a silent peer; its tasks are back in the queue");
                        self.observed.remove(&node.id);
                        continue;
                    }
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(peer = %node.id, error = %err, "could not fence a silent peer");
                    }
                }
            }
            if liveness == Liveness::Alive {
                live.push(LivePeer {
                    id: node.id.clone(),
                    epoch: node.epoch,
                    cluster_address: node.cluster_address.clone(),
                });
            }
            views.insert(node.id.clone(), view(silent_for, liveness));
        }
        self.observed.retain(|id, _| views.contains_key(id));
        if let Ok(mut view) = self.args.view.write() {
            view.peers = views;
        }
        self.args.peers.send_if_modified(|current| {
            if *current == live {
                false
            } else {
                *current = live;
                true
            }
        });
    }
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MembershipArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(MembershipMsg::Tick)?;
        let last_tick = args.clock.now();
        Ok(MembershipState {
            args,
            observed: HashMap::new(),
            last_tick,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        _msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A tick far later than scheduled means this process itself stalled (stopped,
        // starved); a heartbeat that failed or crawled means the store was out of reach
        // or stalled for this node too. Either way, peers' silence over that time says
        // nothing about them: start watching afresh instead of fencing healthy nodes
        // after a store outage.
        let clock = state.args.clock.clone();
        let slow = state.args.failure_timeout / 2;
        if clock.since(state.last_tick) > slow {
            state.observed.clear();
        }
        let beat_started = clock.now();
        let beat_ok = state.beat().await;
        if !beat_ok || clock.since(beat_started) > slow {
            state.observed.clear();
        }
        state.last_tick = clock.now();
        state.observe().await;
        // Scheduled after the work, so a slow store never piles ticks up.
        clock.send_after(&myself, state.args.heartbeat_interval, || {
            MembershipMsg::Tick
        });
        Ok(())
    }
}
