//! A cluster under test: a fresh PostgreSQL server with the schema, N node processes
//! (in network namespaces when asked) and the addresses the load generator sends to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::load::Targets;
use crate::netns::Network;
use crate::nodes::{Node, NodeCommon, NodeSpec};
use crate::pg::PgServer;

/// The database every run uses (on a server of its own).
pub const DATABASE: &str = "chaos";

/// The lease and failure timeout the nodes run with, as `supervisor config show` reports
/// them under the run's environment.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `engine.lease_duration`.
    pub lease: Duration,
    /// `cluster.failure_timeout`.
    pub failure_timeout: Duration,
    /// `cluster.heartbeat_interval`.
    pub heartbeat: Duration,
}

impl Timing {
    /// Asks the binary what is in force with `env` (`supervisor config show`), so the
    /// scenarios hold faults long enough whatever the defaults are.
    pub fn in_force(supervisor: &Path, env: &[(String, String)]) -> Result<Timing> {
        let mut cmd = Command::new(supervisor);
        cmd.args(["config", "show"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {} config show", supervisor.display()))?;
        if !out.status.success() {
            bail!(
                "`{} config show` failed: {}",
                supervisor.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let doc: toml::Table = text
            .parse()
            .with_context(|| format!("`supervisor config show` printed no TOML:\n{text}"))?;
        let duration = |section: &str, key: &str, default: Duration| -> Result<Duration> {
            match doc
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_str())
            {
                Some(s) => humantime::parse_duration(s)
                    .with_context(|| format!("{section}.{key} = {s:?} is not a duration")),
                None => Ok(default),
            }
        };
        Ok(Timing {
            lease: duration("engine", "lease_duration", Duration::from_secs(5))?,
            failure_timeout: duration("cluster", "failure_timeout", Duration::from_secs(5))?,
            heartbeat: duration("cluster", "heartbeat_interval", Duration::from_secs(1))?,
        })
    }
}

/// What a cluster is made of.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `supervisor` binary.
    pub supervisor: PathBuf,
    /// Node count.
    pub nodes: usize,
    /// Run each node in a network namespace of its own (for `partition`).
    pub namespaces: bool,
    /// `SUPERVISOR_*` settings for every node.
    pub env: Vec<(String, String)>,
    /// Where node directories and logs go.
    pub work_dir: PathBuf,
    /// Extra PostgreSQL server settings (`name=value`).
    pub pg_settings: Vec<String>,
}

/// A running cluster. Dropping it kills the nodes, then stops PostgreSQL, then removes
/// the namespaces.
pub struct Cluster {
    /// The nodes, `n1`... in order.
    pub nodes: Vec<Node>,
    /// Where the load goes.
    pub targets: Arc<Targets>,
    /// The store URL as seen from the host (for the audit).
    pub url: String,
    /// The PostgreSQL server.
    pub pg: PgServer,
    /// The namespaces, when the nodes run in them.
    pub net: Option<Network>,
}

impl Cluster {
    /// Builds the network (if asked), starts PostgreSQL, creates the schema with
    /// `supervisor store init`, and starts every node.
    pub async fn start(spec: &ClusterSpec) -> Result<Cluster> {
        let net = if spec.namespaces {
            Some(Network::create(spec.nodes)?)
        } else {
            None
        };
        let listen: Vec<String> = net.iter().map(|n| n.host_addr()).collect();
        let pg = tokio::task::block_in_place(|| PgServer::start(&listen, &spec.pg_settings))?;
        pg.create_database(DATABASE).await?;
        let url = pg.url("127.0.0.1", DATABASE);
        store_init(&spec.supervisor, &url)?;
        let common = NodeCommon {
            supervisor: spec.supervisor.clone(),
            env: spec.env.clone(),
            work_dir: spec.work_dir.clone(),
        };
        let mut nodes = Vec::with_capacity(spec.nodes);
        for i in 0..spec.nodes {
            let (ip, netns, store_url) = match &net {
                Some(n) => (
                    n.node_addr(i),
                    Some(n.namespace(i)),
                    pg.url(&n.host_addr(), DATABASE),
                ),
                None => ("127.0.0.1".to_string(), None, url.clone()),
            };
            let node_spec = NodeSpec {
                id: format!("n{}", i + 1),
                ip,
                netns,
                store_url,
                cluster_port: crate::free_port()?,
            };
            let node = tokio::task::block_in_place(|| Node::start(node_spec, common.clone()))?;
            nodes.push(node);
        }
        let targets = Targets::new(nodes.iter().map(|n| n.addr().to_string()).collect());
        Ok(Cluster {
            nodes,
            targets,
            url,
            pg,
            net,
        })
    }

    /// Restarts node `i` (after it exited or was killed) and points the load at it.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        tokio::task::block_in_place(|| node.restart())?;
        self.targets.set(i, node.addr().to_string());
        Ok(())
    }

    /// Nodes whose process has exited, with how.
    pub fn exited(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(|n| {
                n.exited()
                    .map(|s| format!("{} ({s}, log {})", n.id(), n.log().display()))
            })
            .collect()
    }
}

fn store_init(supervisor: &Path, url: &str) -> Result<()> {
    let out = Command::new(supervisor)
        .args(["store", "init", "--store", url])
        .output()
        .with_context(|| format!("cannot run {} store init", supervisor.display()))?;
    if !out.status.success() {
        bail!(
            "`supervisor store init --store {url}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
