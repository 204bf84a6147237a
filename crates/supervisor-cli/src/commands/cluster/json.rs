//! Nodes as `--output json` prints them.

use serde::Serialize;
use supervisor_proto::v1::NodeStatus;

use super::text::liveness_name;
use crate::commands::output::rfc3339;

/// A node, as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    id: String,
    epoch: u64,
    state: String,
    liveness: String,
    address: String,
    cluster_address: String,
    revision: u64,
    silent_for_ms: u64,
    leases_held: u32,
    max_in_flight: u32,
    providers: Vec<String>,
    drain_requested: bool,
    note: String,
    link: String,
    started_at: Option<String>,
    heartbeat_at: Option<String>,
}

impl From<&NodeStatus> for NodeJson {
    fn from(n: &NodeStatus) -> Self {
        NodeJson {
            id: n.id.clone(),
            epoch: n.epoch,
            state: n.state.clone(),
            liveness: liveness_name(n.liveness).into(),
            address: n.address.clone(),
            cluster_address: n.cluster_address.clone(),
            revision: n.revision,
            silent_for_ms: n.silent_for_ms,
            leases_held: n.leases_held,
            max_in_flight: n.max_in_flight,
            providers: n.providers.clone(),
            drain_requested: n.drain_requested,
            note: n.note.clone(),
            link: n.link.clone(),
            started_at: n.started_at.as_ref().map(rfc3339),
            heartbeat_at: n.heartbeat_at.as_ref().map(rfc3339),
        }
    }
}
