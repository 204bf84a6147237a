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

    async fn get_store_stats(
        &self,
        _req: Request<v1::GetStoreStatsRequest>,
    ) -> Result<Response<v1::StoreStats>, Status> {
        // Administrators of the whole cluster only: the auth layer's table
        // (`permissions::CLUSTER_ADMIN_ONLY`) refuses anyone else.
        Ok(Response::new(self.store_stats().await?))
    }

    type BackupStoreStream = BackupStream;

    async fn backup_store(
        &self,
        _req: Request<v1::BackupStoreRequest>,
    ) -> Result<Response<BackupStream>, Status> {
        // Administrators of the whole cluster only (`permissions::CLUSTER_ADMIN_ONLY`).
        Ok(Response::new(self.backup().await?))
    }
}

/// The stream of a backup's chunks.
pub type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::BackupChunk, Status>> + Send>>;

/// Bytes per backup chunk (under the default 4 MiB gRPC message limit).
const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;

/// Streams the backup file at `path` as chunks then a trailer, and removes it after.
fn stream_backup(
    path: std::path::PathBuf,
    info: supervisor_store::embedded::BackupInfo,
) -> BackupStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<v1::BackupChunk, Status>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let send = |chunk| tx.blocking_send(chunk).is_ok();
        let result = (|| -> std::io::Result<bool> {
            let mut file = std::fs::File::open(&path)?;
            let mut hasher = blake3::Hasher::new();
            let mut total = 0u64;
            let mut buf = vec![0u8; BACKUP_CHUNK_BYTES];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                total += n as u64;
                let data = v1::backup_chunk::Part::Data(buf[..n].to_vec());
                if !send(Ok(v1::BackupChunk { part: Some(data) })) {
                    return Ok(false);
                }
            }
            let trailer = v1::BackupTrailer {
                total_bytes: total,
                blake3: hasher.finalize().to_hex().to_string(),
                keys: info.keys,
                version: info.version,
            };
            Ok(send(Ok(v1::BackupChunk {
                part: Some(v1::backup_chunk::Part::Trailer(trailer)),
            })))
        })();
        if let Err(e) = result {
            send(Err(Status::internal(format!(
                "reading the backup file {} failed: {e}",
                path.display()
            ))));
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a streamed backup file");
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Runs `work` on the embedded store behind `db` on a blocking thread (the file's
/// maintenance blocks for its duration); `None` on a shared store.
async fn on_embedded<T: Send + 'static>(
    db: &supervisor_store::Db,
    what: &str,
    work: impl FnOnce(&supervisor_store::embedded::EmbeddedStore) -> T + Send + 'static,
) -> Result<Option<T>, Status> {
    if db.embedded().is_none() {
        return Ok(None);
    }
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.embedded().map(work))
        .await
        .map_err(|e| Status::internal(format!("{what} stopped: {e}")))
}

impl ClusterApi {
    /// The store's figures: the file's (embedded) and the counters'.
    async fn store_stats(&self) -> Result<v1::StoreStats, Status> {
        let engine = self.node.engine();
        let db = engine.db().clone();
        let space = on_embedded(&db, "the space walk", |store| {
            store
                .space()
                .map(|space| (store.path().display().to_string(), space))
        })
        .await?
        .transpose()
        .map_err(|e| status_from(e.into()))?;
        let tasks = engine.status_counts().await.map_err(status_from)?.total();
        Ok(crate::maintenance::stats_of(
            self.node.identity().id,
            db.backend_name(),
            space,
            tasks,
            self.node.retention().keep.as_secs(),
        ))
    }

    /// Takes a backup of the embedded store beside its file and streams it.
    async fn backup(&self) -> Result<BackupStream, Status> {
        let db = self.node.engine().db().clone();
        let Some(store) = db.embedded() else {
            return Err(Status::failed_precondition(format!(
                "this node runs on the shared {} store, which its own tools back up (pg_dump for PostgreSQL: see docs/data.md); BackupStore copies an embedded store",
                db.backend_name()
            )));
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut name = store.path().as_os_str().to_owned();
        name.push(format!(".backup-{nanos}.partial"));
        let path = std::path::PathBuf::from(name);
        let taken = {
            let path = path.clone();
            on_embedded(&db, "the backup", move |store| store.backup_to(&path))
                .await?
                .unwrap_or(Err(supervisor_store::StoreError::Closed))
        };
        match taken {
            Ok(info) => {
                tracing::info!(
                    keys = info.keys,
                    bytes = info.bytes,
                    version = info.version,
                    "store backup taken"
                );
                Ok(stream_backup(path, info))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(Status::unavailable(format!(
                    "the backup could not be written beside the store ({e}); check free disk space in its directory"
                )))
            }
        }
    }
}
