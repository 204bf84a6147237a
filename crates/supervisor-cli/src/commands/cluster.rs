//! `supervisor cluster status` and `supervisor node drain`: the cluster's members as the
//! store records them, and asking one to leave gracefully.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use serde::Serialize;
use supervisor_proto::v1::{NodeLiveness, NodeStatus};

use super::format::{Table, elapsed, rfc3339};
use super::{GlobalArgs, OutputFormat, connect, print_json, print_stdout};

/// Inspect the cluster.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node: state, epoch, liveness as the answering node sees it, leases held,
    /// providers.
    Status,
}

/// Operate on one node.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Ask a node to drain: it stops leasing, finishes or hands back its running
    /// attempts, and leaves (its process exits).
    Drain {
        /// The node's id (see `supervisor cluster status`).
        id: String,
        /// Wait until the node has left, polling the cluster status.
        #[arg(long)]
        wait: bool,
        /// Longest wait with --wait, such as 60s.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = super::parse::parse_timeout)]
        timeout: Duration,
    },
}

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
    started_at: Option<String>,
    heartbeat_at: Option<String>,
}

fn liveness_name(value: i32) -> &'static str {
    match NodeLiveness::try_from(value) {
        Ok(NodeLiveness::Alive) => "alive",
        Ok(NodeLiveness::Suspect) => "suspect",
        Ok(NodeLiveness::Self_) => "self",
        _ => "-",
    }
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
            started_at: n.started_at.as_ref().map(rfc3339),
            heartbeat_at: n.heartbeat_at.as_ref().map(rfc3339),
        }
    }
}

/// The node table of `cluster status`.
pub fn nodes_table(nodes: &[NodeStatus]) -> String {
    let mut table = Table::new(&[
        "NODE",
        "STATE",
        "EPOCH",
        "LIVENESS",
        "SILENT",
        "LEASES",
        "ADDRESS",
        "PROVIDERS",
        "NOTE",
    ]);
    for n in nodes {
        let mut state = n.state.clone();
        if n.drain_requested && n.state == "active" {
            state.push_str(" (drain requested)");
        }
        table.row(vec![
            n.id.clone(),
            state,
            n.epoch.to_string(),
            liveness_name(n.liveness).into(),
            if n.silent_for_ms == 0 {
                "-".into()
            } else {
                elapsed(Duration::from_millis(n.silent_for_ms))
            },
            format!("{}/{}", n.leases_held, n.max_in_flight),
            n.address.clone(),
            n.providers.join(","),
            n.note.clone(),
        ]);
    }
    table.render()
}

/// Runs a `cluster` subcommand.
pub async fn run_cluster(cmd: ClusterCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status => {
            let status = connect(global).await?.cluster_status().await?;
            match global.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "answered_by": status.answered_by,
                    "nodes": status.nodes.iter().map(NodeJson::from).collect::<Vec<_>>(),
                })),
                OutputFormat::Text => Ok(print_stdout(&format!(
                    "answered by {}\n{}",
                    status.answered_by,
                    nodes_table(&status.nodes)
                ))?),
            }
        }
    }
}

/// Runs a `node` subcommand.
pub async fn run_node(cmd: NodeCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Drain { id, wait, timeout } => {
            let client = connect(global).await?;
            let mut node = client.drain_node(&id).await?;
            if wait {
                let started = Instant::now();
                while node.state != "left" && node.state != "fenced" {
                    if started.elapsed() > timeout {
                        bail!(
                            "node {id} has not left after {}; it is {} with {} leases held",
                            elapsed(timeout),
                            node.state,
                            node.leases_held
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let status = client.cluster_status().await?;
                    match status.nodes.into_iter().find(|n| n.id == id) {
                        Some(n) => node = n,
                        None => bail!("node {id} vanished from the cluster's records"),
                    }
                }
            }
            match global.output {
                OutputFormat::Json => print_json(&NodeJson::from(&node)),
                OutputFormat::Text if wait => Ok(print_stdout(&format!(
                    "node {id} drained and is {}\n",
                    node.state
                ))?),
                OutputFormat::Text => Ok(print_stdout(&format!(
                    "asked node {id} to drain; it stops leasing on its next heartbeat (`supervisor cluster status` follows it)\n"
                ))?),
            }
        }
    }
}
