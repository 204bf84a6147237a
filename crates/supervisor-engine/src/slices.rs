//! Cluster-wide rate limits, leased to nodes in slices. A limit of `N` per minute holds
//! for the whole cluster: the store keeps every slice granted in the last minute, and a
//! node asks for a slice only while the slices of the last minute sum to less than `N`.
//! A node spends its slice locally (no store round trip per request) and settles it to
//! what it used when it expires, so what it did not use goes back to the others.
//!
//! Bound: the requests sent in any minute are at most `N` plus one slice per node (a slice
//! granted just before the minute began and spent inside it); docs/resources.md.

use serde::{Deserialize, Serialize};
use supervisor_store::RangeOptions;

use crate::codec::{counter, decode, encode};
use crate::nodes::{EpochCheck, NodeIdentity};
use crate::{Engine, EngineError, keyspace};

/// Concurrency permits one node incarnation holds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Held {
    epoch: u64,
    count: u64,
}

/// The window a per-minute limit counts over.
pub const WINDOW_MICROS: i64 = 60_000_000;

/// What a node got when it asked for a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// How much it may spend (0 when the limit is reached).
    pub granted: u64,
    /// When it was granted (unix microseconds): the slice's key, for settling it.
    pub granted_at: i64,
    /// When nothing was granted: when the oldest slice of the window leaves it.
    pub retry_at: Option<i64>,
}

/// The slices of `bucket` granted in the last minute, oldest first, read with `options`;
/// forgets older slices (a blind clear, which conflicts with nobody).
async fn window(
    txn: &mut supervisor_store::Transaction<'_>,
    bucket: &str,
    now: i64,
    options: RangeOptions,
) -> Result<Vec<supervisor_store::KeyValue>, EngineError> {
    let since = now.saturating_sub(WINDOW_MICROS);
    let begin = keyspace::slices_since(bucket, since.saturating_add(1));
    let (oldest, end) = keyspace::slices(bucket);
    txn.clear_range(&oldest, &begin);
    Ok(txn.get_range(&begin, &end, options).await?)
}

/// What slices add up to.
fn total(slices: &[supervisor_store::KeyValue]) -> u64 {
    slices
        .iter()
        .map(|kv| counter(Some(&kv.value)).max(0) as u64)
        .sum()
}

/// What the slices of the last minute of `bucket` add up to, read as a snapshot inside a
/// transaction (the caller serializes its writers).
pub(crate) async fn used_in_window(
    txn: &mut supervisor_store::Transaction<'_>,
    bucket: &str,
    now: i64,
) -> Result<u64, EngineError> {
    Ok(total(
        &window(txn, bucket, now, RangeOptions::new().snapshot()).await?,
    ))
}

impl Engine {
    /// Grants `node` up to `want` of the per-minute `limit` of `bucket`, or nothing when
    /// the slices of the last minute already reach it. Forgets slices older than the
    /// window.
    pub async fn take_slice(
        &self,
        bucket: &str,
        limit: u64,
        want: u64,
        node: &str,
    ) -> Result<Grant, EngineError> {
        let now = self.now_micros();
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    // Read with a conflict: concurrent grants go one after another.
                    let live = window(txn, bucket, now, RangeOptions::new()).await?;
                    let used = total(&live);
                    let granted = want.min(limit.saturating_sub(used));
                    if granted == 0 {
                        let oldest = live
                            .first()
                            .and_then(|kv| keyspace::parse_slice(&kv.key))
                            .map(|(at, _)| at);
                        return Ok(Grant {
                            granted: 0,
                            granted_at: now,
                            retry_at: Some(oldest.map_or(now, |at| at + WINDOW_MICROS)),
                        });
                    }
                    txn.atomic_add(&keyspace::slice(bucket, now, node), granted as i64);
                    Ok::<_, EngineError>(Grant {
                        granted,
                        granted_at: now,
                        retry_at: None,
                    })
                })
            })
            .await
    }

    /// Settles a slice to what `node` used of it: what it did not use goes back to the
    /// others, and use beyond the grant (tokens counted after the fact) is recorded.
    /// Nothing to do once the slice has left the window.
    pub async fn settle_slice(
        &self,
        bucket: &str,
        grant: &Grant,
        used: u64,
        node: &str,
    ) -> Result<(), EngineError> {
        if grant.granted_at <= self.now_micros().saturating_sub(WINDOW_MICROS) {
            return Ok(());
        }
        let delta = used as i64 - grant.granted as i64;
        if delta == 0 {
            return Ok(());
        }
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    txn.atomic_add(&keyspace::slice(bucket, grant.granted_at, node), delta);
                    Ok::<_, EngineError>(())
                })
            })
            .await
    }

    /// What the slices of the last minute of `bucket` add up to.
    pub async fn slice_use(&self, bucket: &str) -> Result<u64, EngineError> {
        let now = self.now_micros();
        let mut txn = self.db().begin().await?;
        used_in_window(&mut txn, bucket, now).await
    }
}

impl Engine {
    /// Grants `node` up to `want` permits of a cluster-wide concurrency limit `max`:
    /// what every live node incarnation holds counts, permits of a fenced or departed
    /// incarnation do not (so a node that dies cannot leak them).
    pub async fn take_permits(
        &self,
        bucket: &str,
        max: u64,
        want: u64,
        node: &NodeIdentity,
    ) -> Result<u64, EngineError> {
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let (begin, end) = keyspace::all_permits(bucket);
                    let mut epochs = EpochCheck::default();
                    let mut held_elsewhere = 0u64;
                    let mut mine = 0u64;
                    for kv in txn.get_range(&begin, &end, RangeOptions::new()).await? {
                        let Some(holder) = keyspace::parse_permits(&kv.key) else {
                            continue;
                        };
                        let held: Held = decode("concurrency permits", &kv.value)?;
                        if holder == node.id {
                            if held.epoch == node.epoch {
                                mine = held.count;
                            }
                        } else if epochs.refusal(txn, &holder, held.epoch).await?.is_none() {
                            held_elsewhere += held.count;
                        } else {
                            txn.clear(&kv.key);
                        }
                    }
                    let granted = want.min(max.saturating_sub(held_elsewhere + mine));
                    let held = Held {
                        epoch: node.epoch,
                        count: mine + granted,
                    };
                    txn.set(&keyspace::permits(bucket, &node.id), &encode(&held)?);
                    Ok::<_, EngineError>(granted)
                })
            })
            .await
    }

    /// Gives back `n` permits `node` holds of `bucket`.
    pub async fn return_permits(
        &self,
        bucket: &str,
        n: u64,
        node: &NodeIdentity,
    ) -> Result<(), EngineError> {
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let key = keyspace::permits(bucket, &node.id);
                    let Some(bytes) = txn.get(&key).await? else {
                        return Ok(());
                    };
                    let mut held: Held = decode("concurrency permits", &bytes)?;
                    if held.epoch == node.epoch {
                        held.count = held.count.saturating_sub(n);
                        txn.set(&key, &encode(&held)?);
                    }
                    Ok::<_, EngineError>(())
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::tests::fixture;

    #[tokio::test]
    async fn slices_never_sum_past_the_limit_within_a_minute_and_unused_ones_come_back() {
        let f = fixture().await;
        let e = &f.engine;
        let a = e.take_slice("p:rpm", 10, 4, "a").await.unwrap();
        let b = e.take_slice("p:rpm", 10, 4, "b").await.unwrap();
        let c = e.take_slice("p:rpm", 10, 4, "c").await.unwrap();
        assert_eq!((a.granted, b.granted, c.granted), (4, 4, 2));
        let none = e.take_slice("p:rpm", 10, 4, "a").await.unwrap();
        assert_eq!(none.granted, 0);
        assert_eq!(none.retry_at, Some(a.granted_at + super::WINDOW_MICROS));
        // Node a used one request of its four: three go back.
        e.settle_slice("p:rpm", &a, 1, "a").await.unwrap();
        assert_eq!(e.slice_use("p:rpm").await.unwrap(), 7);
        assert_eq!(e.take_slice("p:rpm", 10, 4, "b").await.unwrap().granted, 3);
        // Tokens counted after the fact may exceed a grant: the excess is recorded.
        let t = e.take_slice("p:tpm", 1000, 100, "a").await.unwrap();
        e.settle_slice("p:tpm", &t, 250, "a").await.unwrap();
        assert_eq!(e.slice_use("p:tpm").await.unwrap(), 250);
        // A minute later the window is empty again.
        f.clock.advance(Duration::from_secs(61));
        assert_eq!(e.slice_use("p:rpm").await.unwrap(), 0);
        assert_eq!(e.take_slice("p:rpm", 10, 4, "c").await.unwrap().granted, 4);
    }

    #[tokio::test]
    async fn permits_are_shared_by_live_nodes_and_a_fenced_node_leaks_none() {
        let f = fixture().await;
        let e = &f.engine;
        let b = e
            .register_node("node-b", &crate::NodeAnnouncement::default())
            .await
            .unwrap();
        assert_eq!(e.take_permits("p:c", 3, 2, &f.node).await.unwrap(), 2);
        assert_eq!(e.take_permits("p:c", 3, 2, &b).await.unwrap(), 1);
        assert_eq!(e.take_permits("p:c", 3, 1, &b).await.unwrap(), 0);
        e.return_permits("p:c", 1, &f.node).await.unwrap();
        assert_eq!(e.take_permits("p:c", 3, 1, &b).await.unwrap(), 1);
        // Node a's incarnation is fenced: its permit is void.
        assert!(
            e.fence_node(&f.node.id, f.node.epoch, 0, "node-b")
                .await
                .unwrap()
        );
        assert_eq!(e.take_permits("p:c", 3, 5, &b).await.unwrap(), 1);
    }
}
