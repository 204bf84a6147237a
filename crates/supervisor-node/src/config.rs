//! The node's settings, each with a documented default: its actors (`[node]`), routing
//! (`[routing]`), restarts of supervised actors (`[node.restart]`) and its place in a
//! cluster (`[cluster]`: store membership, heartbeats, fencing of silent peers, and the
//! ractor_cluster network between nodes). Pure data and validation; nothing here runs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use supervisor_model::RoutingStrategy;

/// Tunables of the node's actors. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable id of this node; leases and epochs are recorded under it. Default: the host
    /// name, or `node-1` if it cannot be read.
    pub id: String,
    /// Most attempts running at once. Default 1024.
    pub max_in_flight: usize,
    /// Most tasks taken per lease transaction. Default 256.
    pub lease_batch: usize,
    /// How often running attempts write streamed output. Default 100ms.
    #[serde(with = "humantime_serde")]
    pub progress_flush: Duration,
    /// Longest sleep of the housekeeper between timer sweeps. Default 1s.
    #[serde(with = "humantime_serde")]
    pub housekeeping_max_idle: Duration,
    /// Safety-net re-check of an idle queue (normally a watch wakes the dispatcher).
    /// Default 30s.
    #[serde(with = "humantime_serde")]
    pub idle_recheck: Duration,
    /// How often providers are health-probed. Default 30s.
    #[serde(with = "humantime_serde")]
    pub provider_probe_interval: Duration,
    /// How long a graceful shutdown waits for running attempts before handing them back.
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Lease of the singleton duties (firing workflow schedules, sweeping timers), held
    /// by one node at a time and renewed every third of it. A holder that dies hands its
    /// duties on when peers fence it, or at worst when this lapses. Default 15s.
    #[serde(with = "humantime_serde")]
    pub duty_lease: Duration,
    /// Restarts of the node's actors.
    pub restart: RestartPolicy,
    /// Free space, in MiB, below which a providers' work disk (where repository
    /// worktrees go) makes the node stop taking repository tasks. Default 1024.
    pub min_free_disk_mb: u64,
}

fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node-1".to_string())
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
            max_in_flight: 1024,
            lease_batch: 256,
            progress_flush: Duration::from_millis(100),
            housekeeping_max_idle: Duration::from_secs(1),
            idle_recheck: Duration::from_secs(30),
            provider_probe_interval: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            duty_lease: Duration::from_secs(15),
            restart: RestartPolicy::default(),
            min_free_disk_mb: 1024,
        }
    }
}

impl NodeConfig {
    /// Checks the values, naming the first wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() || self.id.len() > 128 {
            return Err("node.id must be 1 to 128 characters".into());
        }
        if self.max_in_flight == 0 || self.lease_batch == 0 {
            return Err("node.max_in_flight and node.lease_batch must be at least 1".into());
        }
        if self.progress_flush.is_zero()
            || self.provider_probe_interval.is_zero()
            || self.housekeeping_max_idle.is_zero()
        {
            return Err("node.progress_flush, node.housekeeping_max_idle and node.provider_probe_interval must be above zero".into());
        }
        Ok(())
    }
}

/// How attempts are routed to providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `round_robin`, `least_loaded` (default), `fastest`, `cost_optimized`, `capability`
    /// or `failover_chain`; a task may ask for another.
    pub strategy: RoutingStrategy,
    /// Provider order for `failover_chain` (providers not listed follow in config order).
    pub chain: Vec<String>,
    /// Longest an attempt waits for a provider to become available (rate limits, open
    /// circuits) before it fails retryably and is rescheduled. Default 10s.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            strategy: RoutingStrategy::LeastLoaded,
            chain: Vec::new(),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// How a supervisor restarts its children.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// Most restarts of one child within `window` before the supervisor gives up.
    /// Default 5.
    pub max_restarts: u32,
    /// The window the budget counts over. Default 60s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Delay before the first restart of a child; doubles with each restart inside the
    /// window. Default 100ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Largest delay between restarts. Default 10s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// How a node takes part in a cluster. Every field has a default; a single node on the
/// embedded store needs none of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Address of this node's cluster listener (the ractor_cluster node server), e.g.
    /// `0.0.0.0:4697`. Empty (the default): no cluster networking; the node still records
    /// itself in the store and fences silent peers, but cannot reach providers that only
    /// another node has.
    pub listen: String,
    /// Address other nodes dial to reach this one. Default: `listen` (which must then not
    /// be a wildcard address such as `0.0.0.0`).
    pub advertise: String,
    /// Shared secret every node of the cluster must present. Prefer `cookie_file`.
    pub cookie: String,
    /// File holding the shared secret (trailing whitespace ignored); wins over `cookie`.
    pub cookie_file: Option<PathBuf>,
    /// TLS between nodes; plain TCP when absent.
    pub tls: Option<ClusterTls>,
    /// How often this node proves it is alive by bumping its revision in the store.
    /// Default 1s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long a peer's revision may stay unchanged, timed on this node's own monotonic
    /// clock, before this node fences it (bumps its epoch; its leases go back to the
    /// queue at once). Default 5s.
    #[serde(with = "humantime_serde")]
    pub failure_timeout: Duration,
    /// Delay before redialling a peer whose connection dropped; doubles per failure up to
    /// ten times this. Default 500ms.
    #[serde(with = "humantime_serde")]
    pub redial_interval: Duration,
}

/// Certificates for TLS between nodes (PEM files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The authority that signed every node's certificate.
    pub ca: PathBuf,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: String::new(),
            advertise: String::new(),
            cookie: String::new(),
            cookie_file: None,
            tls: None,
            heartbeat_interval: Duration::from_secs(1),
            failure_timeout: Duration::from_secs(5),
            redial_interval: Duration::from_millis(500),
        }
    }
}

impl ClusterConfig {
    /// Checks the values, naming the first wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() {
            return Err("cluster.heartbeat_interval must be above zero".into());
        }
        if self.failure_timeout < self.heartbeat_interval * 2 {
            return Err(format!(
                "cluster.failure_timeout ({:?}) must be at least twice cluster.heartbeat_interval ({:?}), or live nodes get fenced",
                self.failure_timeout, self.heartbeat_interval
            ));
        }
        if self.redial_interval.is_zero() {
            return Err("cluster.redial_interval must be above zero".into());
        }
        if !self.listen.is_empty() {
            if self.listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "cluster.listen {:?} is not an address like 0.0.0.0:4697",
                    self.listen
                ));
            }
            let advertise = self.advertised();
            match advertise.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_unspecified() => {
                    return Err(format!(
                        "cluster.advertise must be set when cluster.listen is the wildcard {}: peers need an address they can dial",
                        self.listen
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "cluster.advertise {advertise:?} is not an address like 10.0.0.5:4697"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The address peers dial (`advertise`, else `listen`).
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }

    /// The shared secret, read from `cookie_file` when set.
    pub fn read_cookie(&self) -> Result<String, String> {
        match &self.cookie_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end().to_string())
                .map_err(|e| format!("could not read cluster.cookie_file {}: {e}", path.display())),
            None => Ok(self.cookie.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_wildcards_need_an_advertised_address() {
        assert_eq!(ClusterConfig::default().validate(), Ok(()));
        let mut c = ClusterConfig {
            listen: "0.0.0.0:4697".into(),
            ..ClusterConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.contains("cluster.advertise"), "{err}");
        c.advertise = "10.0.0.5:4697".into();
        assert_eq!(c.validate(), Ok(()));
        c.failure_timeout = Duration::from_millis(1500);
        assert!(c.validate().unwrap_err().contains("failure_timeout"));
    }
}
