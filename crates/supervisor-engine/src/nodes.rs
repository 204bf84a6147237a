//! Node records: each start of a node bumps its epoch, so leases taken by an earlier
//! incarnation can be recognised as orphaned and handed back at once.

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::{Engine, EngineError, keyspace};

/// Who is leasing: a node id and the epoch of this incarnation of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Stable node id (from config).
    pub id: String,
    /// Incremented on every start of the node.
    pub epoch: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub epoch: u64,
    pub address: String,
    pub started_at: i64,
}

impl Engine {
    /// Registers a start of node `id`: bumps its epoch and records its address. Leases held
    /// under earlier epochs become orphans that [`Engine::reclaim_orphaned_leases`] requeues.
    pub async fn register_node(
        &self,
        id: &str,
        address: &str,
    ) -> Result<NodeIdentity, EngineError> {
        let now = self.now_micros();
        let key = keyspace::node(id);
        let epoch = self
            .inner
            .db
            .run(|txn| {
                let key = key.clone();
                let address = address.to_string();
                Box::pin(async move {
                    let previous = match txn.get(&key).await? {
                        Some(bytes) => Some(decode::<NodeRecord>("node record", &bytes)?),
                        None => None,
                    };
                    let epoch = previous.map(|p| p.epoch).unwrap_or(0) + 1;
                    let record = NodeRecord {
                        epoch,
                        address,
                        started_at: now,
                    };
                    txn.set(&key, &encode(&record)?);
                    Ok::<_, EngineError>(epoch)
                })
            })
            .await?;
        Ok(NodeIdentity {
            id: id.to_string(),
            epoch,
        })
    }
}
