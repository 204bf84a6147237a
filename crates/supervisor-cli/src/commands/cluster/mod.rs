//! `supervisor cluster status` and `supervisor node drain`: the cluster's members as the
//! store records them, and asking one to leave gracefully.

mod json;
mod text;

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;

use crate::commands::{
    GlobalArgs, connect,
    output::{OutputFormat, elapsed, escape_line, print_json, print_line, print_stdout},
    parse::parse_timeout,
};

use json::NodeJson;
use text::nodes_table;

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
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_timeout)]
        timeout: Duration,
    },
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
                    escape_line(&status.answered_by),
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
                            "node {id} has not left after {}: its state is {}, with {} leases held",
                            elapsed(timeout),
                            node.state,
                            node.leases_held
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let status = match client.cluster_status().await {
                        Err(err) if err.is_unavailable() => bail!(
                            "lost the node this command talks to ({}) while node {id} drained: \
                             if that is {id}, it has left (or stopped); ask another node: \
                             supervisor --server OTHER cluster status ({err})",
                            client.addr()
                        ),
                        other => other?,
                    };
                    match status.nodes.into_iter().find(|n| n.id == id) {
                        Some(n) => node = n,
                        None => bail!("node {id} vanished from the cluster's records"),
                    }
                }
            }
            match global.output {
                OutputFormat::Json => print_json(&NodeJson::from(&node)),
                OutputFormat::Text if wait => Ok(print_line(&drained_line(&id, &node.state))?),
                OutputFormat::Text => Ok(print_line(&format!(
                    "asked node {id} to drain; it stops leasing on its next heartbeat (`supervisor cluster status` follows it)"
                ))?),
            }
        }
    }
}

/// How a drain waited for ended: the node left, or was fenced first.
fn drained_line(id: &str, state: &str) -> String {
    match state {
        "left" => format!("node {id} drained and left the cluster"),
        "fenced" => format!(
            "node {id} was fenced before it finished draining (its peers stopped hearing \
             from it); its unfinished tasks went back to the queue"
        ),
        other => format!("node {id} stopped waiting in state {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_lines_say_how_the_node_went() {
        assert_eq!(
            drained_line("w1", "left"),
            "node w1 drained and left the cluster"
        );
        assert!(drained_line("w1", "fenced").starts_with("node w1 was fenced before"));
    }
}
