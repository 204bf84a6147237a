//! `routing-overhead`: how long an attempt takes from its lease to the moment its request
//! leaves for the provider, with N mock providers behind the router. Runs a node in
//! process on a throwaway embedded store; a wrapper around each mock provider stamps the
//! time `execute` is called, and the harness compares it with the lease time the engine
//! recorded on the task (`started_at`). The span covers the lease transaction's commit,
//! the dispatcher spawning the agent, the specialty analysis, routing and admission.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use supervisor_engine::{Engine, EngineConfig, SystemClock};
use supervisor_model::{NewTask, RoutingStrategy, TaskStatus, TaskType};
use supervisor_node::{Node, NodeConfig, ProviderSpec, RoutingConfig};
use supervisor_providers::mock::{MockConfig, MockProvider};
use supervisor_providers::{
    Capabilities, EventSink, Health, Provider, ProviderError, ProviderOutput, ProviderRequest,
};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

#[derive(Debug, Parser)]
#[command(about = "Routing overhead: lease to provider request, with N mock providers")]
struct Args {
    /// Tasks to run.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Mock providers behind the router.
    #[arg(long, default_value_t = 8)]
    providers: usize,
    /// Routing strategy.
    #[arg(long, default_value = "least_loaded")]
    strategy: String,
    /// Relaxed store durability (no fsync on the lease commit).
    #[arg(long)]
    relaxed: bool,
    /// Where to write the JSON result.
    #[arg(long, default_value = "benches/results")]
    out: std::path::PathBuf,
}

/// Stamps when each request leaves for the provider.
struct Stamped {
    inner: MockProvider,
    stamps: Arc<Mutex<HashMap<String, i64>>>,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Provider for Stamped {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> &'static str {
        "mock"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn execute(
        &self,
        req: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let at = now_micros();
        if let Ok(mut s) = self.stamps.lock() {
            s.entry(req.task_id.clone()).or_insert(at);
        }
        self.inner.execute(req, sink).await
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
    fn estimate_cost(&self, req: &ProviderRequest) -> u64 {
        self.inner.estimate_cost(req)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let strategy: RoutingStrategy = args.strategy.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = tempfile::tempdir()?;
    let options = EmbeddedOptions {
        durability: if args.relaxed {
            supervisor_store::embedded::Durability::Relaxed
        } else {
            supervisor_store::embedded::Durability::Immediate
        },
        ..EmbeddedOptions::default()
    };
    let db = open_db(&dir.path().join("bench.redb"), options)?;
    let engine = Engine::new(db, EngineConfig::default(), Arc::new(SystemClock));
    let stamps = Arc::new(Mutex::new(HashMap::new()));
    let specs = (0..args.providers.max(1))
        .map(|i| ProviderSpec {
            provider: Arc::new(Stamped {
                inner: MockProvider::new(format!("mock-{i}"), MockConfig::default()),
                stamps: stamps.clone(),
            }),
            max_concurrency: 1024,
            limits: Default::default(),
        })
        .collect();
    let node = Node::start(
        engine.clone(),
        NodeConfig {
            id: "routing-bench".into(),
            ..NodeConfig::default()
        },
        RoutingConfig {
            strategy,
            ..RoutingConfig::default()
        },
        "127.0.0.1:0",
        specs,
    )
    .await?;
    let mut ids = Vec::with_capacity(args.tasks);
    let mut handles = Vec::new();
    for chunk in 0..16 {
        let engine = engine.clone();
        let n = args.tasks / 16;
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let t = engine
                    .submit(
                        "default",
                        NewTask {
                            task_type: Some(TaskType::CodeAnalysis),
                            prompt: format!("routing bench {chunk}-{i}"),
                            ..NewTask::default()
                        },
                    )
                    .await?;
                ids.push(t.task.id);
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    for h in handles {
        ids.extend(h.await??);
    }
    let total = ids.len() as u64;
    loop {
        let c = engine.status_counts().await?;
        if c.get(TaskStatus::Succeeded) + c.get(TaskStatus::Failed) >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stamps = stamps
        .lock()
        .map_err(|_| anyhow::anyhow!("stamp lock poisoned"))?
        .clone();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for id in &ids {
        let task = engine.get("default", *id).await?;
        let leased = task
            .started_at
            .context("a finished task has a start time")?;
        let sent = *stamps
            .get(&id.to_string())
            .context("every task reached a provider")?;
        hist.record((sent - leased).max(1) as u64)?;
    }
    let (d50, d99) = node
        .dispatch_percentiles()
        .context("the node recorded dispatch times")?;
    node.shutdown().await;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "tasks": total,
        "providers": args.providers,
        "strategy": args.strategy,
        "durability": if args.relaxed { "relaxed" } else { "immediate" },
        // From the lease returning to the dispatcher to the request leaving (agent
        // start, specialty analysis, routing, admission, slot).
        "dispatch_ms": {"p50": d50.as_secs_f64() * 1000.0, "p99": d99.as_secs_f64() * 1000.0},
        // From the lease transaction's start (the task's recorded start) to the request
        // leaving: the above plus the lease commit.
        "lease_to_request_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": hist.max() as f64 / 1000.0},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join(format!(
            "routing-overhead-{}p-{}{}.json",
            args.providers,
            args.strategy,
            if args.relaxed { "-relaxed" } else { "" }
        )),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
