//! `supervisor.v1.ClusterService`: the members recorded in the store, judged by what the
//! answering node itself observed, and drain requests.

use std::sync::Arc;

use supervisor_engine::{NodeInfo, NodeState};
use supervisor_node::{Liveness, Node, PeerView};
use supervisor_proto::convert::timestamp_from_micros;
use supervisor_proto::v1;
use supervisor_proto::v1::cluster_service_server::ClusterService;
use tonic::{Request, Response, Status};

use crate::convert::{invalid, status_from};

/// `supervisor.v1.ClusterService` over a running node.
#[derive(Clone)]
pub struct ClusterApi {
    node: Arc<Node>,
}

impl ClusterApi {
    /// A cluster service answering as `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterApi { node }
    }

    fn status_of(&self, info: NodeInfo, views: &[PeerView]) -> v1::NodeStatus {
        let me = self.node.identity();
        let link = self
            .node
            .links()
            .into_iter()
            .find(|s| s.node_id == info.id)
            .map(|s| {
                if s.connected {
                    "connected".to_string()
                } else {
                    format!(
                        "down: {}",
                        s.last_error.unwrap_or_else(|| "dialling".into())
                    )
                }
            })
            .unwrap_or_default();
        let view = views.iter().find(|v| v.id == info.id);
        let liveness = if info.id == me.id {
            v1::NodeLiveness::Self_
        } else if !matches!(info.state, NodeState::Active | NodeState::Draining) {
            v1::NodeLiveness::Unknown
        } else {
            match view.map(|v| v.liveness) {
                Some(Liveness::Alive) => v1::NodeLiveness::Alive,
                Some(Liveness::Suspect) => v1::NodeLiveness::Suspect,
                Some(Liveness::Unknown) | None => v1::NodeLiveness::Unknown,
            }
        };
        v1::NodeStatus {
            id: info.id,
            epoch: info.epoch,
            state: info.state.as_str().into(),
            liveness: liveness as i32,
            address: info.address,
            cluster_address: info.cluster_address,
            revision: info.revision,
            silent_for_ms: view.map_or(0, |v| v.silent_for.as_millis() as u64),
            leases_held: info.load.in_flight,
            max_in_flight: info.max_in_flight,
            providers: info.providers,
            drain_requested: info.drain_requested,
            note: info.note,
            started_at: Some(timestamp_from_micros(info.started_at)),
            heartbeat_at: Some(timestamp_from_micros(info.heartbeat_at)),
            link,
        }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn get_cluster_status(
        &self,
        _req: Request<v1::GetClusterStatusRequest>,
    ) -> Result<Response<v1::GetClusterStatusResponse>, Status> {
        let nodes = self.node.engine().list_nodes().await.map_err(status_from)?;
        let views = self.node.peer_views();
        Ok(Response::new(v1::GetClusterStatusResponse {
            answered_by: self.node.identity().id,
            nodes: nodes
                .into_iter()
                .map(|n| self.status_of(n, &views))
                .collect(),
        }))
    }

    async fn drain_node(
        &self,
        req: Request<v1::DrainNodeRequest>,
    ) -> Result<Response<v1::DrainNodeResponse>, Status> {
        let id = req.into_inner().node_id;
        if id.trim().is_empty() {
            return Err(invalid(
                "node_id",
                "is empty; `supervisor cluster status` lists the nodes",
            ));
        }
        let info = self
            .node
            .engine()
            .request_drain(&id)
            .await
            .map_err(status_from)?;
        if !matches!(info.state, NodeState::Active | NodeState::Draining) {
            return Err(Status::failed_precondition(format!(
                "node {id} has state {} and takes no work; nothing to drain",
                info.state.as_str()
            )));
        }
        tracing::info!(node = %id, "drain requested");
        let views = self.node.peer_views();
        Ok(Response::new(v1::DrainNodeResponse {
            node: Some(self.status_of(info, &views)),
        }))
    }
}
