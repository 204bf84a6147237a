//! Provider limits that hold for the whole cluster when nodes share a store: requests
//! and tokens per minute through slices leased from the store (`Engine::take_slice`), a
//! configured `max_concurrency` through permits (`Engine::take_permits`). A node spends
//! its slice without a store round trip per request; a slice lives [`SLICE_TTL`] and is
//! then settled to what was used (by the node's resource manager, every second), so what
//! it did not use goes back to the other nodes.
//! The node's own token buckets and slots still apply on top.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use supervisor_engine::{Engine, Grant, NodeIdentity};
use tokio::sync::{Mutex, watch};

use super::handle::ProviderHandle;
use crate::clock::Clock;

/// How long a node spends one slice before settling it.
pub const SLICE_TTL: Duration = Duration::from_secs(5);
/// A slice is this share of a per-minute limit (at least one request or the tokens one
/// request needs): the most one node can spend beyond the limit in a minute.
pub const SLICE_DIVISOR: u64 = 20;
/// How long a task waits when a cluster-wide limit has no room and the store names no
/// sooner time.
const NO_ROOM_WAIT: Duration = Duration::from_secs(1);

/// The size of a slice of a per-minute `limit` for a request needing `need`.
pub fn slice_size(limit: u64, need: u64) -> u64 {
    limit.div_ceil(SLICE_DIVISOR).max(need).max(1)
}

#[derive(Debug)]
struct Slice {
    grant: Grant,
    used: u64,
    /// When it is settled (by [`SharedLimits::settle_expired`], or by the next request).
    expires_at: std::time::Instant,
}

#[derive(Debug, Default)]
struct Permits {
    epoch: u64,
    held: u64,
    in_use: u64,
    /// Permits kept when idle, so short attempts do not each cost a store write.
    spare: u64,
}

/// Why a provider cannot take one more request now, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    /// In words, naming the limit.
    pub why: String,
    /// When to try again.
    pub wait: Duration,
}

/// What one admitted request holds until it ends.
#[derive(Debug, Default)]
pub struct Admission {
    provider: String,
    /// Tokens taken from the tokens-per-minute slice (the estimate).
    tokens: u64,
    permit: bool,
}

/// The cluster-wide limits of this node's providers.
pub struct SharedLimits {
    engine: Engine,
    node: watch::Receiver<NodeIdentity>,
    clock: Clock,
    slices: Mutex<HashMap<String, Slice>>,
    permits: Mutex<HashMap<String, Permits>>,
}

fn bucket(provider: &str, what: &str) -> String {
    format!("provider:{provider}:{what}")
}

impl SharedLimits {
    /// Limits kept in `engine`'s store for the node whose identity `node` follows.
    pub fn new(engine: Engine, node: watch::Receiver<NodeIdentity>, clock: Clock) -> Arc<Self> {
        Arc::new(SharedLimits {
            engine,
            node,
            clock,
            slices: Mutex::new(HashMap::new()),
            permits: Mutex::new(HashMap::new()),
        })
    }

    /// Admits one request of about `tokens` tokens to `handle`'s provider, or says which
    /// cluster-wide limit has no room and for how long.
    pub async fn admit(
        self: &Arc<Self>,
        handle: &ProviderHandle,
        tokens: u64,
    ) -> Result<Admission, NoRoom> {
        let mut admission = Admission {
            provider: handle.name.clone(),
            ..Admission::default()
        };
        let limits = &handle.limits;
        if let Some(rpm) = limits.requests_per_minute {
            self.spend(&bucket(&handle.name, "rpm"), u64::from(rpm), 1, "requests")
                .await?;
        }
        if let Some(tpm) = limits.tokens_per_minute {
            if let Err(no) = self
                .spend(&bucket(&handle.name, "tpm"), tpm, tokens, "tokens")
                .await
            {
                if limits.requests_per_minute.is_some() {
                    self.unspend(&bucket(&handle.name, "rpm"), 1).await;
                }
                return Err(no);
            }
            admission.tokens = tokens;
        }
        if let Some(max) = limits.max_concurrency {
            if let Err(no) = self.take_permit(&handle.name, u64::from(max)).await {
                if limits.requests_per_minute.is_some() {
                    self.unspend(&bucket(&handle.name, "rpm"), 1).await;
                }
                if admission.tokens > 0 {
                    self.unspend(&bucket(&handle.name, "tpm"), admission.tokens)
                        .await;
                }
                return Err(no);
            }
            admission.permit = true;
        }
        Ok(admission)
    }

    /// Ends an admitted request that used `tokens` tokens: corrects the tokens slice by
    /// the difference from the estimate and gives back the permit.
    pub async fn settle(self: &Arc<Self>, admission: Admission, tokens: u64) {
        if admission.tokens > 0 || tokens > 0 {
            let key = bucket(&admission.provider, "tpm");
            let mut slices = self.slices.lock().await;
            if let Some(slice) = slices.get_mut(&key) {
                slice.used = (slice.used + tokens).saturating_sub(admission.tokens);
            }
        }
        if admission.permit {
            self.give_permit(&admission.provider).await;
        }
    }

    /// Takes `need` from the current slice of `key`, leasing a new one when it is
    /// spent.
    async fn spend(
        self: &Arc<Self>,
        key: &str,
        limit: u64,
        need: u64,
        unit: &str,
    ) -> Result<(), NoRoom> {
        let mut slices = self.slices.lock().await;
        let now = self.clock.now();
        if let Some(slice) = slices.get_mut(key)
            && slice.expires_at > now
            && slice.grant.granted >= slice.used + need
        {
            slice.used += need;
            return Ok(());
        }
        let node = self.node.borrow().clone();
        if let Some(old) = slices.remove(key)
            && let Err(err) = self
                .engine
                .settle_slice(key, &old.grant, old.used, &node.id)
                .await
        {
            tracing::warn!(bucket = key, error = %err, "could not settle a spent slice; it counts whole until the window passes");
        }
        let want = slice_size(limit, need);
        let grant = match self.engine.take_slice(key, limit, want, &node.id).await {
            Ok(grant) => grant,
            Err(err) => {
                return Err(NoRoom {
                    why: format!(
                        "the store could not grant a slice of the cluster-wide limit ({err})"
                    ),
                    wait: NO_ROOM_WAIT,
                });
            }
        };
        if grant.granted < need {
            if grant.granted > 0 {
                let _ = self.engine.settle_slice(key, &grant, 0, &node.id).await;
            }
            let wait = grant
                .retry_at
                .map(|at| at - self.engine.now_micros())
                .filter(|micros| *micros > 0)
                .map_or(NO_ROOM_WAIT, |micros| {
                    Duration::from_micros(micros as u64).max(Duration::from_millis(100))
                });
            return Err(NoRoom {
                why: format!("the cluster-wide limit of {limit} {unit} per minute is reached"),
                wait,
            });
        }
        slices.insert(
            key.to_string(),
            Slice {
                grant,
                used: need,
                expires_at: now + SLICE_TTL,
            },
        );
        Ok(())
    }

    /// Settles the slices whose time is up to what was used of them, so what this node
    /// did not use goes back to the others. The node's resource manager calls it every
    /// second.
    pub async fn settle_expired(&self) {
        let now = self.clock.now();
        let expired: Vec<(String, Slice)> = {
            let mut slices = self.slices.lock().await;
            let keys: Vec<String> = slices
                .iter()
                .filter(|(_, s)| s.expires_at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| slices.remove(&k).map(|s| (k, s)))
                .collect()
        };
        let node = self.node.borrow().id.clone();
        for (key, slice) in expired {
            if let Err(err) = self
                .engine
                .settle_slice(&key, &slice.grant, slice.used, &node)
                .await
            {
                tracing::warn!(bucket = key, error = %err, "could not settle an expired slice; it counts whole until the window passes");
            }
        }
    }

    /// Puts back what [`SharedLimits::spend`] took for a request that did not go out.
    async fn unspend(&self, key: &str, n: u64) {
        if let Some(slice) = self.slices.lock().await.get_mut(key) {
            slice.used = slice.used.saturating_sub(n);
        }
    }

    /// One permit of a cluster-wide concurrency limit, taking more from the store when
    /// this node has none spare (it keeps a twentieth of the limit spare).
    async fn take_permit(&self, provider: &str, max: u64) -> Result<(), NoRoom> {
        let node = self.node.borrow().clone();
        let mut permits = self.permits.lock().await;
        let p = permits.entry(provider.to_string()).or_default();
        if p.epoch != node.epoch {
            // A new incarnation: what the old one held is void in the store.
            *p = Permits {
                epoch: node.epoch,
                ..Permits::default()
            };
        }
        p.spare = max / SLICE_DIVISOR;
        if p.in_use < p.held {
            p.in_use += 1;
            return Ok(());
        }
        let want = 1 + p.spare;
        let granted = self
            .engine
            .take_permits(&bucket(provider, "concurrency"), max, want, &node)
            .await
            .map_err(|err| NoRoom {
                why: format!("the store could not grant a permit ({err})"),
                wait: NO_ROOM_WAIT,
            })?;
        p.held += granted;
        if p.in_use < p.held {
            p.in_use += 1;
            return Ok(());
        }
        Err(NoRoom {
            why: format!("the cluster-wide limit of {max} attempts at once is reached"),
            wait: NO_ROOM_WAIT,
        })
    }

    /// Gives a permit back; permits beyond the spare go back to the store.
    async fn give_permit(&self, provider: &str) {
        let node = self.node.borrow().clone();
        let mut permits = self.permits.lock().await;
        let Some(p) = permits.get_mut(provider) else {
            return;
        };
        if p.epoch != node.epoch {
            return;
        }
        p.in_use = p.in_use.saturating_sub(1);
        let idle = p.held.saturating_sub(p.in_use);
        if idle > p.spare {
            let back = idle - p.spare;
            match self
                .engine
                .return_permits(&bucket(provider, "concurrency"), back, &node)
                .await
            {
                Ok(()) => p.held -= back,
                Err(err) => {
                    tracing::warn!(provider, error = %err, "could not give concurrency permits back; they stay with this node");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use supervisor_engine::{Engine, EngineConfig, NodeAnnouncement, SystemClock};
    use supervisor_providers::config::Limits;
    use supervisor_providers::mock::{MockConfig, MockProvider};
    use supervisor_store::embedded::{EmbeddedOptions, open_db};
    use tokio::sync::watch;

    use super::*;

    async fn node(engine: &Engine, id: &str) -> Arc<SharedLimits> {
        let identity = engine
            .register_node(id, &NodeAnnouncement::default())
            .await
            .expect("register");
        let (_tx, rx) = watch::channel(identity);
        // The sender may go: the receiver keeps the last identity.
        SharedLimits::new(engine.clone(), rx, Clock::system())
    }

    fn handle(limits: Limits) -> ProviderHandle {
        let (changes, _) = watch::channel(0);
        ProviderHandle::new(
            Arc::new(MockProvider::new("fake", MockConfig::default())),
            16,
            limits,
            changes,
            Clock::system(),
        )
    }

    #[tokio::test]
    async fn two_nodes_share_one_per_minute_limit_and_one_concurrency_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("db");
        let engine = Engine::new(db, EngineConfig::default(), Arc::new(SystemClock));
        let (a, b) = (node(&engine, "a").await, node(&engine, "b").await);
        let rpm = handle(Limits {
            requests_per_minute: Some(20),
            ..Limits::default()
        });
        let mut admitted = 0;
        let mut refused = None;
        for i in 0..30 {
            let n = if i % 2 == 0 { &a } else { &b };
            match n.admit(&rpm, 10).await {
                Ok(admission) => {
                    admitted += 1;
                    n.settle(admission, 10).await;
                }
                Err(no) => refused = Some(no),
            }
        }
        assert_eq!(
            admitted, 20,
            "the two nodes together get the limit, no more"
        );
        let no = refused.expect("the rest is refused");
        assert!(no.why.contains("20 requests per minute"), "{}", no.why);
        assert!(no.wait > Duration::ZERO && no.wait <= Duration::from_secs(60));

        let conc = handle(Limits {
            max_concurrency: Some(2),
            ..Limits::default()
        });
        let first = a.admit(&conc, 0).await.expect("one");
        let _second = a.admit(&conc, 0).await.expect("two");
        let no = b
            .admit(&conc, 0)
            .await
            .expect_err("the cluster runs two at once");
        assert!(no.why.contains("2 attempts at once"), "{}", no.why);
        a.settle(first, 0).await;
        b.admit(&conc, 0).await.expect("a permit came back");
    }
}
