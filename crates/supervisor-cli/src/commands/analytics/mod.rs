//! `supervisor analytics summary|trend|predict` and `supervisor stats`: what finished
//! tasks add up to, from the durable rollups any node answers from (`AnalyticsService`).

mod json;
mod text;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use supervisor_model::{Dimension, Specialty};
use supervisor_proto::convert::timestamp_from_micros;
use supervisor_proto::v1::{
    self, Filter, GetSummaryRequest, GetTrendRequest, HypotheticalTask, Scope, TaskType, Window,
};

use crate::commands::{
    GlobalArgs, connect,
    output::{OutputFormat, print_json, print_stdout},
    parse::{EnumArg, ModelArg, ModelName, parse_timeout},
};

pub use json::prediction as prediction_json;
pub use text::prediction_line;

impl ModelName for Dimension {
    const ALL: &'static [Self] = Dimension::ALL;

    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Which tasks count, besides the window.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Every tenant's tasks, not only the caller's (admins of the default tenant).
    #[arg(long)]
    all_tenants: bool,
    /// Only tasks of this type.
    #[arg(long = "type", value_name = "TYPE", value_parser = EnumArg::<TaskType>::new())]
    task_type: Option<TaskType>,
    /// Only tasks whose last attempt ran on this provider ("" for tasks that reached
    /// none).
    #[arg(long, value_name = "NAME")]
    provider: Option<String>,
    /// Only tasks routed to this specialty.
    #[arg(long, value_name = "NAME", value_parser = ModelArg::<Specialty>::new())]
    specialty: Option<Specialty>,
}

impl FilterArgs {
    fn filter(&self) -> Option<Filter> {
        let any = self.task_type.is_some() || self.provider.is_some() || self.specialty.is_some();
        any.then(|| Filter {
            r#type: self.task_type.map_or(0, |t| t as i32),
            specialty: self.specialty.map(|s| s.as_str().to_string()),
            provider: self.provider.clone(),
            ..Filter::default()
        })
    }

    fn scope(&self) -> Option<Scope> {
        self.all_tenants.then_some(Scope { all_tenants: true })
    }
}

/// The dimensions of a summary.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GroupArgs {
    /// Group by these, comma-separated: tenant, type, specialty, provider, size,
    /// repository (none: one line of everything).
    #[arg(long, value_name = "DIMENSIONS", value_delimiter = ',',
          value_parser = ModelArg::<Dimension>::new())]
    by: Vec<Dimension>,
}

/// Analytics of finished tasks.
#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Finished tasks of a window: counts, success rate, latency quantiles, attempts,
    /// tokens and cost, grouped with --by (compare providers with --by provider).
    Summary {
        /// How far back the window starts; it ends now (30m, 24h, 7d...).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_timeout)]
        since: Duration,
        #[command(flatten)]
        group: GroupArgs,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Finished tasks period by period (minutes reach back 48 hours, hours 90 days).
    Trend {
        /// How far back the window starts; it ends now.
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_timeout)]
        since: Duration,
        /// The length of each period.
        #[arg(long, value_name = "PERIOD", default_value = "hour",
              value_parser = ["minute", "hour", "day"])]
        every: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// What history (the last 30 days) says about a task: its duration, the chance it
    /// fails, its cost. Name a task, or describe one with --type.
    Predict {
        /// A task of this tenant.
        #[arg(
            value_name = "TASK_ID",
            required_unless_present = "task_type",
            conflicts_with = "task_type"
        )]
        id: Option<String>,
        /// The type of a task that does not exist yet.
        #[arg(long = "type", value_name = "TYPE", value_parser = EnumArg::<TaskType>::new())]
        task_type: Option<TaskType>,
        /// Its prompt's length in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=supervisor_model::MAX_PROMPT_BYTES as u64))]
        prompt_bytes: u64,
        /// Its labels (a label may name the specialty).
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
        /// Its specialty (default: as its labels and type decide).
        #[arg(long, value_name = "NAME", value_parser = ModelArg::<Specialty>::new())]
        specialty: Option<Specialty>,
        /// The provider it would run on (default: history pooled over providers).
        #[arg(long, value_name = "NAME")]
        provider: Option<String>,
        /// It works on a repository.
        #[arg(long)]
        repository: bool,
    },
}

/// `supervisor stats`: today's summary (since midnight UTC).
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    group: GroupArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

fn dimension_out(d: Dimension) -> v1::Dimension {
    match d {
        Dimension::Tenant => v1::Dimension::Tenant,
        Dimension::TaskType => v1::Dimension::Type,
        Dimension::Specialty => v1::Dimension::Specialty,
        Dimension::Provider => v1::Dimension::Provider,
        Dimension::SizeClass => v1::Dimension::SizeClass,
        Dimension::Repository => v1::Dimension::Repository,
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The window from `from` (unix microseconds) to now (the server's now).
fn window_from(from: i64) -> Option<Window> {
    Some(Window {
        from: Some(timestamp_from_micros(from)),
        to: None,
    })
}

fn since(back: Duration) -> i64 {
    now_micros().saturating_sub(back.as_micros() as i64)
}

async fn summary(
    global: &GlobalArgs,
    from: i64,
    group: &GroupArgs,
    filter: &FilterArgs,
) -> anyhow::Result<()> {
    let mut by: Vec<Dimension> = Vec::new();
    for d in &group.by {
        if !by.contains(d) {
            by.push(*d);
        }
    }
    let response = connect(global)
        .await?
        .analytics_summary(GetSummaryRequest {
            window: window_from(from),
            group_by: by.iter().map(|d| dimension_out(*d) as i32).collect(),
            filter: filter.filter(),
            scope: filter.scope(),
        })
        .await?;
    match global.output {
        OutputFormat::Json => print_json(&json::summary(&response, &by)),
        OutputFormat::Text => Ok(print_stdout(&text::summary(&response, &by))?),
    }
}

/// Runs an `analytics` subcommand.
pub async fn run(cmd: AnalyticsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        AnalyticsCommand::Summary {
            since: back,
            group,
            filter,
        } => summary(global, since(back), &group, &filter).await,
        AnalyticsCommand::Trend {
            since: back,
            every,
            filter,
        } => {
            let granularity = match every.as_str() {
                "minute" => v1::Granularity::Minute,
                "day" => v1::Granularity::Day,
                _ => v1::Granularity::Hour,
            };
            let response = connect(global)
                .await?
                .analytics_trend(GetTrendRequest {
                    window: window_from(since(back)),
                    granularity: granularity as i32,
                    filter: filter.filter(),
                    scope: filter.scope(),
                })
                .await?;
            match global.output {
                OutputFormat::Json => print_json(&json::trend(&response)),
                OutputFormat::Text => Ok(print_stdout(&text::trend(&response))?),
            }
        }
        AnalyticsCommand::Predict {
            id,
            task_type,
            prompt_bytes,
            labels,
            specialty,
            provider,
            repository,
        } => {
            let client = connect(global).await?;
            let prediction = match (id, task_type) {
                (Some(id), _) => client.predict_task(&id).await?,
                (None, Some(t)) => {
                    client
                        .predict(HypotheticalTask {
                            r#type: t as i32,
                            prompt_bytes,
                            labels,
                            specialty: specialty
                                .map(|s| s.as_str().to_string())
                                .unwrap_or_default(),
                            repository,
                            provider: provider.unwrap_or_default(),
                        })
                        .await?
                }
                (None, None) => anyhow::bail!("name a task, or describe one with --type"),
            };
            match global.output {
                OutputFormat::Json => print_json(&json::prediction(&prediction)),
                OutputFormat::Text => Ok(print_stdout(&text::prediction(&prediction))?),
            }
        }
    }
}

/// Runs `supervisor stats`: the summary of today (UTC).
pub async fn run_stats(args: StatsArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    const DAY_MICROS: i64 = 86_400_000_000;
    let midnight = now_micros().div_euclid(DAY_MICROS) * DAY_MICROS;
    summary(global, midnight, &args.group, &args.filter).await
}
