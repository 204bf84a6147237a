//! Membership: node records in the store.
//!
//! Each start of a node bumps its epoch. A node proves it is alive by bumping the revision
//! of its heartbeat key; peers time a revision that stops moving on their own monotonic
//! clocks (no wall-clock comparison between machines decides anything) and fence a silent
//! node by bumping its epoch in a transaction that first checks the revision is still the
//! one they saw. From that commit on, every write of the fenced incarnation is refused
//! (leases, renewals, completions all check the holder's epoch in their own transaction),
//! and its leases go back to the queue at once.
//!
//! The record (`("node", id)`) changes only on start, fence, drain request and leave, so
//! the epoch checks of the runner's transactions do not conflict with heartbeats, which
//! write a separate key (`("nodebeat", id)`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use supervisor_store::{Priority, RangeOptions, Transaction};

use crate::codec::{decode, encode};
use crate::{Engine, EngineError, keyspace};

/// Who is leasing: a node id and the epoch of this incarnation of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Stable node id (from config).
    pub id: String,
    /// Incremented on every start of the node, and when a peer fences it.
    pub epoch: u64,
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Taking work.
    Active,
    /// Finishing or handing back its work, taking none.
    Draining,
    /// Gone after a clean shutdown or drain.
    Left,
    /// Declared dead by a peer; its writes are refused until it rejoins.
    Fenced,
}

impl NodeState {
    /// Lower-case name, as shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Left => "left",
            NodeState::Fenced => "fenced",
        }
    }
}

/// What a node announces when it joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAnnouncement {
    /// Its gRPC address.
    pub address: String,
    /// Its cluster (ractor_cluster) address; empty when it has no cluster networking.
    pub cluster_address: String,
    /// Names of the providers it runs.
    pub providers: Vec<String>,
    /// Most attempts it runs at once.
    pub max_in_flight: u32,
}

/// The load a node reports with each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Attempts running now (each holds a lease).
    pub in_flight: u32,
    /// What the node measured of its machine and its attempts' processes.
    #[serde(default)]
    pub resources: NodeResources,
}

/// A node's machine and processes as it measured them (from `/proc` and `statvfs`), not
/// as configured. Zero where the platform does not tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeResources {
    /// When measured (unix microseconds); 0 when never.
    pub measured_at: i64,
    /// CPUs the machine has.
    pub cpu_cores: u32,
    /// Share of all CPUs busy since the previous measurement, in thousandths.
    pub cpu_busy_permille: u32,
    /// Memory of the machine, in bytes.
    pub memory_total_bytes: u64,
    /// Memory available to new work, in bytes.
    pub memory_available_bytes: u64,
    /// Resident memory of the node's own process, in bytes.
    pub process_rss_bytes: u64,
    /// CPU time of the node's own process so far, in milliseconds.
    pub process_cpu_ms: u64,
    /// Disks the node writes to: its data directory and its providers' work directories.
    pub disks: Vec<DiskUsage>,
    /// Processes running attempts, grouped by attempt.
    pub attempts: Vec<AttemptUsage>,
    /// Whether a work disk is below the configured free space: the node takes no
    /// repository tasks meanwhile.
    pub low_on_disk: bool,
}

/// Space on one file system a node writes to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// What the node keeps there (`data`, `worktrees of claude`...).
    pub purpose: String,
    /// The directory measured.
    pub path: String,
    /// Size of its file system, in bytes.
    pub total_bytes: u64,
    /// Space available to the node, in bytes.
    pub free_bytes: u64,
}

/// The processes of one running attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptUsage {
    /// The attempt's work directory name (`<task id>-a<attempt>`), or the command of a
    /// process outside any.
    pub attempt: String,
    /// Processes in it.
    pub processes: u32,
    /// Their resident memory, in bytes.
    pub rss_bytes: u64,
    /// Their CPU time so far, in milliseconds.
    pub cpu_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub epoch: u64,
    pub address: String,
    pub started_at: i64,
    #[serde(default)]
    pub cluster_address: String,
    #[serde(default = "active")]
    pub state: NodeState,
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default)]
    pub max_in_flight: u32,
    #[serde(default)]
    pub drain_requested: bool,
    /// Who fenced it, and why.
    #[serde(default)]
    pub note: String,
}

fn active() -> NodeState {
    NodeState::Active
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Beat {
    epoch: u64,
    revision: u64,
    /// Wall time of the beat, for display only: liveness is never judged by it.
    at: i64,
    load: NodeLoad,
}

/// A node as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Current epoch.
    pub epoch: u64,
    /// Where it is in its life.
    pub state: NodeState,
    /// gRPC address.
    pub address: String,
    /// Cluster address (empty without cluster networking).
    pub cluster_address: String,
    /// When this epoch started (unix microseconds).
    pub started_at: i64,
    /// Heartbeat revision of the current epoch; it moves while the node is alive.
    pub revision: u64,
    /// Wall time of the last heartbeat as the node wrote it (display only).
    pub heartbeat_at: i64,
    /// Load at the last heartbeat.
    pub load: NodeLoad,
    /// Most attempts it runs at once.
    pub max_in_flight: u32,
    /// Providers it runs.
    pub providers: Vec<String>,
    /// An operator asked it to drain.
    pub drain_requested: bool,
    /// Who fenced it and why, when fenced.
    pub note: String,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The revision written.
    pub revision: u64,
    /// An operator asked this node to drain.
    pub drain_requested: bool,
}

/// Reads `id`'s record inside a transaction.
async fn load_record(
    txn: &mut Transaction<'_>,
    id: &str,
) -> Result<Option<NodeRecord>, EngineError> {
    match txn.get(&keyspace::node(id)).await? {
        Some(bytes) => Ok(Some(decode::<NodeRecord>("node record", &bytes)?)),
        None => Ok(None),
    }
}

/// Refuses writes of fenced incarnations: caches each node's current epoch for one
/// transaction. Reading the record puts it in the transaction's read set, so a fence
/// committed concurrently makes this transaction retry and see it.
#[derive(Default)]
pub(crate) struct EpochCheck {
    epochs: HashMap<String, Option<(u64, NodeState)>>,
}

impl EpochCheck {
    /// Why writes of `node` at `epoch` must be refused, if they must. A node with no
    /// record (never registered) is not fenced.
    pub(crate) async fn refusal(
        &mut self,
        txn: &mut Transaction<'_>,
        node: &str,
        epoch: u64,
    ) -> Result<Option<String>, EngineError> {
        if !self.epochs.contains_key(node) {
            let current = load_record(txn, node).await?.map(|r| (r.epoch, r.state));
            self.epochs.insert(node.to_string(), current);
        }
        Ok(match self.epochs.get(node).copied().flatten() {
            Some((current, state))
                if current != epoch || matches!(state, NodeState::Fenced | NodeState::Left) =>
            {
                Some(format!(
                    "node {node} epoch {epoch} is no longer current (the node is at epoch {current}, {}); its leases went back to the queue",
                    state.as_str()
                ))
            }
            _ => None,
        })
    }
}

impl Engine {
    /// Registers a start of node `id`: bumps its epoch and records what it announces.
    /// Leases held under earlier epochs become orphans that
    /// [`Engine::reclaim_orphaned_leases`] requeues.
    pub async fn register_node(
        &self,
        id: &str,
        announcement: &NodeAnnouncement,
    ) -> Result<NodeIdentity, EngineError> {
        let now = self.now_micros();
        let epoch = self
            .inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let previous = load_record(txn, id).await?;
                    let epoch = previous.map(|p| p.epoch).unwrap_or(0) + 1;
                    let record = NodeRecord {
                        epoch,
                        address: announcement.address.clone(),
                        started_at: now,
                        cluster_address: announcement.cluster_address.clone(),
                        state: NodeState::Active,
                        providers: announcement.providers.clone(),
                        max_in_flight: announcement.max_in_flight,
                        drain_requested: false,
                        note: String::new(),
                    };
                    txn.set(&keyspace::node(id), &encode(&record)?);
                    let beat = Beat {
                        epoch,
                        revision: 0,
                        at: now,
                        load: NodeLoad::default(),
                    };
                    txn.set(&keyspace::node_beat(id), &encode(&beat)?);
                    Ok::<_, EngineError>(epoch)
                })
            })
            .await?;
        // Tasks queued by an earlier version wait in its single queue.
        let moved = self.move_legacy_ready().await?;
        if moved > 0 {
            tracing::info!(moved, "moved ready tasks into the per-tenant queues");
        }
        Ok(NodeIdentity {
            id: id.to_string(),
            epoch,
        })
    }

    /// Proves `node` is alive: bumps its heartbeat revision and records its load.
    /// Fails with [`EngineError::Fenced`] when a peer fenced this incarnation (it must
    /// stop taking work and rejoin with a new epoch).
    pub async fn heartbeat(
        &self,
        node: &NodeIdentity,
        load: NodeLoad,
    ) -> Result<HeartbeatReply, EngineError> {
        let now = self.now_micros();
        let load = &load;
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    txn.set_priority(Priority::System);
                    let record = load_record(txn, &node.id).await?;
                    let record = match record {
                        Some(r) if r.epoch == node.epoch && r.state != NodeState::Fenced => r,
                        Some(r) => {
                            return Err(EngineError::Fenced {
                                node: node.id.clone(),
                                epoch: node.epoch,
                                detail: if r.note.is_empty() {
                                    format!("the node is now at epoch {}", r.epoch)
                                } else {
                                    r.note
                                },
                            });
                        }
                        None => {
                            return Err(EngineError::Fenced {
                                node: node.id.clone(),
                                epoch: node.epoch,
                                detail: "its record was removed".into(),
                            });
                        }
                    };
                    let key = keyspace::node_beat(&node.id);
                    let previous = match txn.get(&key).await? {
                        Some(b) => decode::<Beat>("node heartbeat", &b)?,
                        None => Beat::default(),
                    };
                    let revision = if previous.epoch == node.epoch {
                        previous.revision + 1
                    } else {
                        1
                    };
                    let beat = Beat {
                        epoch: node.epoch,
                        revision,
                        at: now,
                        load: load.clone(),
                    };
                    txn.set(&key, &encode(&beat)?);
                    Ok::<_, EngineError>(HeartbeatReply {
                        revision,
                        drain_requested: record.drain_requested,
                    })
                })
            })
            .await
    }

    /// Every node recorded in the store, by id.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, EngineError> {
        let (begin, end) = keyspace::node_range();
        let (beat_begin, beat_end) = keyspace::node_beat_range();
        self.inner
            .db
            .run(|txn| {
                let (begin, end) = (begin.clone(), end.clone());
                let (beat_begin, beat_end) = (beat_begin.clone(), beat_end.clone());
                Box::pin(async move {
                    let records = txn
                        .get_range(&begin, &end, RangeOptions::new().snapshot())
                        .await?;
                    let beats = txn
                        .get_range(&beat_begin, &beat_end, RangeOptions::new().snapshot())
                        .await?;
                    let mut by_id = HashMap::new();
                    for kv in &beats {
                        if let Some(id) = keyspace::parse_node_beat(&kv.key) {
                            by_id.insert(id, decode::<Beat>("node heartbeat", &kv.value)?);
                        }
                    }
                    let mut out = Vec::with_capacity(records.len());
                    for kv in &records {
                        let Some(id) = keyspace::parse_node(&kv.key) else {
                            continue;
                        };
                        let r: NodeRecord = decode("node record", &kv.value)?;
                        let beat = by_id
                            .remove(&id)
                            .filter(|b| b.epoch == r.epoch)
                            .unwrap_or_default();
                        out.push(NodeInfo {
                            id,
                            epoch: r.epoch,
                            state: r.state,
                            address: r.address,
                            cluster_address: r.cluster_address,
                            started_at: r.started_at,
                            revision: beat.revision,
                            heartbeat_at: beat.at,
                            load: beat.load.clone(),
                            max_in_flight: r.max_in_flight,
                            providers: r.providers,
                            drain_requested: r.drain_requested,
                            note: r.note,
                        });
                    }
                    Ok::<_, EngineError>(out)
                })
            })
            .await
    }

    /// Fences node `id` if it is still at `epoch` with heartbeat `revision` (what the
    /// caller saw stop moving): bumps its epoch so every write of that incarnation is
    /// refused, then requeues its leases at once. Returns whether this call fenced it
    /// (false when it beat meanwhile, was fenced by someone else, or left).
    pub async fn fence_node(
        &self,
        id: &str,
        epoch: u64,
        revision: u64,
        by: &str,
    ) -> Result<bool, EngineError> {
        let note = format!("fenced by node {by}: no heartbeat past revision {revision}");
        let fenced = self
            .inner
            .db
            .run(|txn| {
                let note = note.clone();
                Box::pin(async move {
                    txn.set_priority(Priority::System);
                    let Some(mut record) = load_record(txn, id).await? else {
                        return Ok(false);
                    };
                    if record.epoch != epoch
                        || matches!(record.state, NodeState::Left | NodeState::Fenced)
                    {
                        return Ok(false);
                    }
                    let beat = match txn.get(&keyspace::node_beat(id)).await? {
                        Some(b) => decode::<Beat>("node heartbeat", &b)?,
                        None => Beat::default(),
                    };
                    let seen = if beat.epoch == epoch {
                        beat.revision
                    } else {
                        0
                    };
                    if seen != revision {
                        return Ok(false);
                    }
                    record.epoch += 1;
                    record.state = NodeState::Fenced;
                    record.note = note;
                    txn.set(&keyspace::node(id), &encode(&record)?);
                    Ok::<_, EngineError>(true)
                })
            })
            .await?;
        if fenced {
            let orphaned = NodeIdentity {
                id: id.to_string(),
                epoch: epoch + 1,
            };
            let reclaimed = self
                .reclaim_leases_of(
                    &orphaned,
                    ("fenced", &format!("node {id} was fenced ({note})")),
                )
                .await?;
            tracing::warn!(node = id, epoch, reclaimed, by, "fenced a silent node");
        }
        Ok(fenced)
    }

    /// Asks node `id` to drain: it stops leasing, finishes or hands back its work and
    /// leaves. Fails with [`EngineError::NodeNotFound`] for an unknown id.
    pub async fn request_drain(&self, id: &str) -> Result<NodeInfo, EngineError> {
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let Some(mut record) = load_record(txn, id).await? else {
                        return Err(EngineError::NodeNotFound { id: id.to_string() });
                    };
                    if record.state == NodeState::Active {
                        record.drain_requested = true;
                        txn.set(&keyspace::node(id), &encode(&record)?);
                    }
                    Ok::<_, EngineError>(())
                })
            })
            .await?;
        self.list_nodes()
            .await?
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| EngineError::NodeNotFound { id: id.to_string() })
    }

    /// Records that `node` is draining (true) or has left (false); a no-op for a fenced
    /// incarnation.
    pub async fn set_node_leaving(
        &self,
        node: &NodeIdentity,
        draining: bool,
    ) -> Result<(), EngineError> {
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let Some(mut record) = load_record(txn, &node.id).await? else {
                        return Ok(());
                    };
                    if record.epoch != node.epoch || record.state == NodeState::Fenced {
                        return Ok(());
                    }
                    record.state = if draining {
                        NodeState::Draining
                    } else {
                        NodeState::Left
                    };
                    txn.set(&keyspace::node(&node.id), &encode(&record)?);
                    Ok::<_, EngineError>(())
                })
            })
            .await
    }

    /// Whether `node` at `epoch` is still the current incarnation (not fenced, not
    /// replaced by a newer start).
    pub async fn node_is_current(&self, node: &NodeIdentity) -> Result<bool, EngineError> {
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let mut check = EpochCheck::default();
                    Ok::<_, EngineError>(check.refusal(txn, &node.id, node.epoch).await?.is_none())
                })
            })
            .await
    }
}
