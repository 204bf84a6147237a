//! `supervisor budget`, `supervisor quota`, `supervisor resources` and `supervisor nodes
//! top`: what the resource managers enforce and hold, and what the nodes measured.

mod json;
mod text;

use std::time::Duration;

use clap::Subcommand;
use supervisor_proto::v1::{Budget, BudgetLimit, TenantQuota};

use crate::commands::{
    GlobalArgs, connect,
    output::{OutputFormat, print_json, print_stdout},
    parse::parse_timeout,
};

/// Budgets of the caller's tenant.
#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Set (create or replace) a budget: hard limits per day and per month. Admins.
    Set {
        /// Whose tasks it counts: `tenant` (all of them), `key:<key id>` or
        /// `label:<label>`.
        #[arg(long, default_value = "tenant")]
        scope: String,
        /// Most US dollars per day.
        #[arg(long, value_name = "USD", value_parser = parse_usd)]
        usd_per_day: Option<u64>,
        /// Most US dollars per month.
        #[arg(long, value_name = "USD", value_parser = parse_usd)]
        usd_per_month: Option<u64>,
        /// Most tokens (input plus output) per day.
        #[arg(long, value_name = "N")]
        tokens_per_day: Option<u64>,
        /// Most tokens per month.
        #[arg(long, value_name = "N")]
        tokens_per_month: Option<u64>,
        /// Share of each limit, in percent, past which starting an attempt records a
        /// warning (100: none).
        #[arg(long, value_name = "PERCENT", default_value_t = 80,
              value_parser = clap::value_parser!(u32).range(1..=100))]
        soft: u32,
        /// What a task does at a hard limit: wait (stay queued) or fail.
        #[arg(long, value_name = "POLICY", default_value = "wait",
              value_parser = ["wait", "fail"])]
        on_exceed: String,
        /// The IANA time zone its days and months follow.
        #[arg(long, value_name = "ZONE", default_value = "UTC")]
        time_zone: String,
        /// What an attempt reserves when its task has no cost ceiling and no provider
        /// gives an estimate, in US dollars.
        #[arg(long, value_name = "USD", value_parser = parse_usd)]
        reserve: Option<u64>,
    },
    /// One budget with what is spent and reserved against each limit now.
    Get {
        /// `tenant`, `key:<key id>` or `label:<label>`.
        #[arg(default_value = "tenant")]
        scope: String,
    },
    /// Every budget of the tenant with what is spent and reserved now.
    List,
    /// Delete a budget. Admins.
    Delete {
        /// `tenant`, `key:<key id>` or `label:<label>`.
        scope: String,
    },
}

/// A tenant's share of the cluster.
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a tenant's quota. Admins of the default tenant.
    Set {
        /// The tenant (default: the caller's).
        #[arg(long)]
        tenant: Option<String>,
        /// Fair-queueing weight, 1 to 1000: with backlogs, tenants start attempts in
        /// the ratio of their weights.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        weight: u32,
        /// Most of its attempts running at once in the cluster (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_running: u32,
        /// Most of its attempts started per minute in the cluster (0: no limit).
        #[arg(long, value_name = "N", default_value_t = 0)]
        starts_per_minute: u32,
        /// What its tasks do when their repository and ref are held: queue, reject (at
        /// submit) or preempt (holders of lower priority).
        #[arg(long, value_name = "POLICY", default_value = "queue",
              value_parser = ["queue", "reject", "preempt"])]
        lock_policy: String,
    },
    /// The caller's tenant's quota and running attempts.
    Get,
}

/// Repository locks and waiting tasks.
#[derive(Debug, Subcommand)]
pub enum ResourcesCommand {
    /// Repository locks held now: repository, ref, mode, holder and node.
    List,
    /// Queued tasks a resource manager holds back, and what they wait for.
    Waiting,
}

/// The nodes' machines.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// CPU, memory, disks and attempts' processes of every node, as measured at its
    /// last heartbeat, redrawn until Ctrl-C.
    Top {
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Time between redraws.
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
        interval: Duration,
    },
}

/// Dollars as millionths: a non-negative, finite amount.
fn parse_usd(text: &str) -> Result<u64, String> {
    let value: f64 = text
        .trim_start_matches('$')
        .parse()
        .map_err(|_| format!("{text:?} is not an amount of dollars, like 12.50"))?;
    if !value.is_finite() || value < 0.0 || value > supervisor_model::MAX_COST_MICROS as f64 {
        return Err(format!(
            "{text} is not an amount between 0 and {}",
            supervisor_model::MAX_COST_MICROS / 1_000_000
        ));
    }
    Ok((value * 1e6).round() as u64)
}

fn limit(metric: &str, period: &str, hard: Option<u64>) -> Option<BudgetLimit> {
    hard.map(|hard| BudgetLimit {
        metric: metric.into(),
        period: period.into(),
        hard,
    })
}

/// Runs a `budget` subcommand.
pub async fn run_budget(cmd: BudgetCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = connect(global).await?;
    let shown = match cmd {
        BudgetCommand::Set {
            scope,
            usd_per_day,
            usd_per_month,
            tokens_per_day,
            tokens_per_month,
            soft,
            on_exceed,
            time_zone,
            reserve,
        } => {
            let limits: Vec<BudgetLimit> = [
                limit("usd", "day", usd_per_day),
                limit("usd", "month", usd_per_month),
                limit("tokens", "day", tokens_per_day),
                limit("tokens", "month", tokens_per_month),
            ]
            .into_iter()
            .flatten()
            .collect();
            if limits.is_empty() {
                anyhow::bail!(
                    "a budget needs at least one limit: --usd-per-day, --usd-per-month, --tokens-per-day or --tokens-per-month"
                );
            }
            let status = client
                .set_budget(Budget {
                    scope,
                    limits,
                    soft_percent: soft,
                    on_exceed,
                    time_zone,
                    default_reserve_micros: reserve.unwrap_or(0),
                })
                .await?;
            vec![status]
        }
        BudgetCommand::Get { scope } => {
            let all = client.list_budgets().await?;
            let found: Vec<_> = all
                .into_iter()
                .filter(|b| b.budget.as_ref().is_some_and(|b| b.scope == scope))
                .collect();
            if found.is_empty() {
                anyhow::bail!(
                    "this tenant has no budget for {scope}; `supervisor budget list` shows its budgets"
                );
            }
            found
        }
        BudgetCommand::List => client.list_budgets().await?,
        BudgetCommand::Delete { scope } => {
            client.delete_budget(&scope).await?;
            return match global.output {
                OutputFormat::Json => print_json(&serde_json::json!({ "deleted": scope })),
                OutputFormat::Text => Ok(print_stdout(&format!(
                    "deleted the budget for {}\n",
                    crate::commands::output::escape_line(&scope)
                ))?),
            };
        }
    };
    match global.output {
        OutputFormat::Json => print_json(&shown.iter().map(json::budget).collect::<Vec<_>>()),
        OutputFormat::Text => Ok(print_stdout(&text::budgets(&shown))?),
    }
}

/// Runs a `quota` subcommand.
pub async fn run_quota(cmd: QuotaCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = connect(global).await?;
    let quota = match cmd {
        QuotaCommand::Set {
            tenant,
            weight,
            max_running,
            starts_per_minute,
            lock_policy,
        } => {
            client
                .set_quota(TenantQuota {
                    tenant: tenant.unwrap_or_default(),
                    weight,
                    max_running,
                    lock_policy,
                    running: 0,
                    starts_per_minute,
                })
                .await?
        }
        QuotaCommand::Get => client.get_quota().await?,
    };
    match global.output {
        OutputFormat::Json => print_json(&json::quota(&quota)),
        OutputFormat::Text => Ok(print_stdout(&text::quota(&quota))?),
    }
}

/// Runs a `resources` subcommand.
pub async fn run_resources(cmd: ResourcesCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = connect(global).await?;
    match cmd {
        ResourcesCommand::List => {
            let held = client.list_allocations().await?;
            match global.output {
                OutputFormat::Json => {
                    print_json(&held.iter().map(json::allocation).collect::<Vec<_>>())
                }
                OutputFormat::Text => Ok(print_stdout(&text::allocations(&held))?),
            }
        }
        ResourcesCommand::Waiting => {
            let waiting = client.list_waiting().await?;
            match global.output {
                OutputFormat::Json => {
                    print_json(&waiting.iter().map(json::waiting).collect::<Vec<_>>())
                }
                OutputFormat::Text => Ok(print_stdout(&text::waiting(&waiting))?),
            }
        }
    }
}

/// Runs a `nodes` subcommand.
pub async fn run_nodes(cmd: NodesCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = connect(global).await?;
    match cmd {
        NodesCommand::Top { once, interval } => {
            let live = !once
                && global.output == OutputFormat::Text
                && std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let nodes = client.list_node_resources().await?;
                match global.output {
                    OutputFormat::Json => {
                        print_json(&nodes.iter().map(json::node).collect::<Vec<_>>())?
                    }
                    OutputFormat::Text if live => {
                        // Home the cursor and clear the screen, then draw.
                        print_stdout(&format!("\x1b[H\x1b[2J{}", text::nodes(&nodes)))?
                    }
                    OutputFormat::Text => print_stdout(&text::nodes(&nodes))?,
                }
                if !live {
                    return Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_parse_to_millionths_and_nonsense_is_named() {
        assert_eq!(parse_usd("12.5"), Ok(12_500_000));
        assert_eq!(parse_usd("$0.01"), Ok(10_000));
        assert!(parse_usd("ten").unwrap_err().contains("\"ten\""));
        assert!(parse_usd("-1").is_err());
        assert!(parse_usd("NaN").is_err());
    }
}
