//! Settings of a node's place in a cluster: store membership (heartbeats, fencing of
//! silent peers) and the ractor_cluster network between nodes.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
