//! `resource-overhead`: what the resource managers cost on throughput. Runs a node in
//! process on a throwaway embedded store with an instant provider and, in alternating
//! rounds of the same run, pushes the same number of tasks through in each mode:
//!
//! - `plain`: no budget, no lock, no quota (the fair-queueing lease is always on);
//! - `budgets`: a tenant budget and a label budget cover every task, so each lease
//!   reserves in two budgets and each completion settles both;
//! - `locks`: every task names a repository and its own ref, so each lease takes an
//!   exclusive lock and each completion releases it (no contention);
//! - `all`: budgets, locks and a running limit the load never reaches.
//!
//! Reports tasks per second (submit of the first to completion of the last) per mode and
//! as a ratio to `plain`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use supervisor_engine::{Engine, EngineConfig, SystemClock};
use supervisor_model::{
    Budget, BudgetLimit, BudgetScope, ExceedPolicy, Metric, NewTask, Period, TaskStatus, TaskType,
    TenantQuota,
};
use supervisor_node::{Node, NodeConfig, ProviderSpec, RoutingConfig};
use supervisor_providers::mock::{MockConfig, MockProvider};
use supervisor_providers::{
    Capabilities, EventSink, Health, Provider, ProviderError, ProviderOutput, ProviderRequest,
};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

#[derive(Debug, Parser)]
#[command(about = "Throughput with and without the resource managers' checks")]
struct Args {
    /// Tasks per mode per round.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Rounds; the modes alternate within each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "benches/results")]
    out: std::path::PathBuf,
}

/// The mock, answering at once, that also serves repository tasks (it does not touch
/// the repository): only the engine's lock work differs between modes.
struct Instant0(MockProvider);

#[async_trait::async_trait]
impl Provider for Instant0 {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn kind(&self) -> &'static str {
        "mock"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            repository: true,
            ..self.0.capabilities()
        }
    }
    async fn execute(
        &self,
        request: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        self.0.execute(request, sink).await
    }
    async fn health(&self) -> Health {
        self.0.health().await
    }
    fn estimate_cost(&self, request: &ProviderRequest) -> u64 {
        self.0.estimate_cost(request)
    }
}

const MODES: &[&str] = &["plain", "budgets", "locks", "all"];

async fn prepare(engine: &Engine, tenant: &str, mode: &str) -> anyhow::Result<()> {
    let huge = |scope| Budget {
        scope,
        limits: vec![
            BudgetLimit {
                metric: Metric::CostMicros,
                period: Period::Day,
                hard: u64::MAX / 4,
            },
            BudgetLimit {
                metric: Metric::Tokens,
                period: Period::Month,
                hard: u64::MAX / 4,
            },
        ],
        soft_percent: 100,
        on_exceed: ExceedPolicy::Wait,
        time_zone: "UTC".into(),
        default_reserve_micros: 1000,
        updated_at: 0,
        updated_by: "bench".into(),
    };
    if matches!(mode, "budgets" | "all") {
        engine.set_budget(tenant, huge(BudgetScope::Tenant)).await?;
        engine
            .set_budget(tenant, huge(BudgetScope::Label("team".into())))
            .await?;
    }
    if mode == "all" {
        engine
            .set_quota(
                tenant,
                TenantQuota {
                    max_running: 1_000_000,
                    ..TenantQuota::default()
                },
            )
            .await?;
    }
    Ok(())
}

fn task(mode: &str, i: usize) -> NewTask {
    let mut t = NewTask {
        task_type: Some(TaskType::CodeAnalysis),
        prompt: format!("task {i}"),
        labels: vec!["team".into()],
        ..NewTask::default()
    };
    if matches!(mode, "locks" | "all") {
        t.context.insert("repo".into(), "/srv/repo".into());
        t.context.insert("ref".into(), format!("branch-{i}"));
    }
    t
}

/// Pushes `n` tasks of `tenant` through; returns tasks per second.
async fn run(engine: &Engine, tenant: &str, mode: &str, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut submits = Vec::with_capacity(n);
    for i in 0..n {
        let engine = engine.clone();
        let tenant = tenant.to_string();
        let t = task(mode, i);
        submits.push(tokio::spawn(async move { engine.submit(&tenant, t).await }));
    }
    for s in submits {
        s.await??;
    }
    loop {
        let counts = engine.tenant_status_counts(tenant).await?;
        let done = counts.get(TaskStatus::Succeeded);
        let failed = counts.get(TaskStatus::Failed);
        anyhow::ensure!(failed == 0, "{failed} tasks failed in mode {mode}");
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = open_db(&dir.path().join("bench.redb"), EmbeddedOptions::default())?;
    let engine = Engine::new(db, EngineConfig::default(), Arc::new(SystemClock));
    let node = Node::start(
        engine.clone(),
        NodeConfig {
            id: "resource-bench".into(),
            ..NodeConfig::default()
        },
        RoutingConfig::default(),
        "127.0.0.1:0",
        vec![ProviderSpec {
            provider: Arc::new(Instant0(MockProvider::new("mock", MockConfig::default()))),
            max_concurrency: 1024,
            limits: Default::default(),
        }],
    )
    .await?;
    let mut results: Vec<(String, Vec<f64>)> =
        MODES.iter().map(|m| (m.to_string(), Vec::new())).collect();
    for round in 0..args.rounds {
        // Rotate the order so no mode always runs first (on a cold cache).
        for k in 0..MODES.len() {
            let i = (k + round) % MODES.len();
            let mode = MODES[i];
            let tenant = format!("{mode}-{round}");
            prepare(&engine, &tenant, mode).await?;
            let rate = run(&engine, &tenant, mode, args.tasks)
                .await
                .with_context(|| format!("round {round}, mode {mode}"))?;
            eprintln!("round {round} {mode}: {rate:.0} tasks/s");
            results[i].1.push(rate);
        }
    }
    node.shutdown().await;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let plain = median(&results[0].1);
    let modes: Vec<serde_json::Value> = results
        .iter()
        .map(|(mode, rates)| {
            serde_json::json!({
                "mode": mode,
                "tasks_per_s": rates,
                "median_tasks_per_s": median(rates),
                "ratio_to_plain": median(rates) / plain,
            })
        })
        .collect();
    let report = serde_json::json!({
        "tasks_per_round": args.tasks,
        "rounds": args.rounds,
        "modes": modes,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("resource-overhead.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
