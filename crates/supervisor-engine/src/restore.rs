//! Making a restored store safe from the nodes that ran on the original: a backup goes
//! back in time, and a node of the original that still runs (or its in-flight attempts)
//! must not complete, renew or sweep anything in the restored copy.

use supervisor_store::RangeOptions;

use crate::codec::{decode, encode};
use crate::nodes::{NodeRecord, NodeState};
use crate::{Engine, EngineError, keyspace};

impl Engine {
    /// Makes a store restored from a backup safe from the nodes that ran on the original:
    /// fences every node that has not left (its epoch moves past any it may have reached
    /// after the backup, so each of its writes is refused and its leases are taken back
    /// when a node next starts) and voids every singleton duty's lease. Returns how many
    /// nodes it fenced. Run by `supervisor store restore`, and after restoring a
    /// PostgreSQL dump (`supervisor store fence-all`).
    pub async fn fence_all_after_restore(&self, note: &str) -> Result<usize, EngineError> {
        let (begin, end) = keyspace::node_range();
        self.inner
            .db
            .run(|txn| {
                let (begin, end) = (begin.clone(), end.clone());
                Box::pin(async move {
                    let records = txn.get_range(&begin, &end, RangeOptions::new()).await?;
                    let mut fenced = 0;
                    for kv in &records {
                        let mut record: NodeRecord = decode("node record", &kv.value)?;
                        if record.state == NodeState::Left {
                            continue;
                        }
                        // Epochs grow by one per start: a wide jump passes any the node
                        // reached after the backup.
                        record.epoch += 1_000_000;
                        record.state = NodeState::Fenced;
                        record.note = note.to_string();
                        txn.set(&kv.key, &encode(&record)?);
                        fenced += 1;
                    }
                    crate::schedules::void_singletons(txn).await?;
                    Ok::<_, EngineError>(fenced)
                })
            })
            .await
    }
}
