//! `workflow-overhead`: the scheduling cost of large DAGs. Runs a node in process on a
//! throwaway embedded store with the mock provider at zero latency, submits a 1,000-step
//! workflow of a given shape, and reports steps per second (submit to the run's end) and
//! the time from a parent's completion (its task's `finished_at`) to its child's lease
//! (the child task's `started_at`), which covers the completion transaction that creates
//! the child, the dispatcher's wake-up and the lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use supervisor_engine::workflow::{RunStatus, WorkflowDef};
use supervisor_engine::{Engine, EngineConfig, SystemClock};
use supervisor_node::{Node, NodeConfig, ProviderSpec, RoutingConfig};
use supervisor_providers::mock::{MockConfig, MockProvider};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

#[derive(Debug, Parser)]
#[command(about = "Scheduling overhead of a large workflow DAG")]
struct Args {
    /// Steps in the DAG.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// `wide` (one root, steps-2 parallel steps, one sink) or `deep` (a chain).
    #[arg(long, default_value = "wide")]
    shape: String,
    /// Where to write the JSON result.
    #[arg(long, default_value = "benches/results")]
    out: std::path::PathBuf,
}

fn dag(shape: &str, n: usize) -> anyhow::Result<WorkflowDef> {
    let mut yaml = format!("name: {shape}-{n}\nsteps:\n");
    let step = |id: &str, needs: &[String]| {
        let needs = if needs.is_empty() {
            String::new()
        } else {
            format!("    needs: [{}]\n", needs.join(", "))
        };
        format!("  - id: {id}\n{needs}    task: {{ type: code_analysis, prompt: \"step {id}\" }}\n")
    };
    match shape {
        "wide" => {
            yaml.push_str(&step("root", &[]));
            let middle: Vec<String> = (0..n.saturating_sub(2)).map(|i| format!("s{i}")).collect();
            for id in &middle {
                yaml.push_str(&step(id, &["root".to_string()]));
            }
            yaml.push_str(&step("sink", &middle));
        }
        "deep" => {
            for i in 0..n {
                let needs = if i == 0 {
                    vec![]
                } else {
                    vec![format!("s{}", i - 1)]
                };
                yaml.push_str(&step(&format!("s{i}"), &needs));
            }
        }
        other => anyhow::bail!("unknown shape {other:?}; use wide or deep"),
    }
    WorkflowDef::from_yaml(&yaml).map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let def = dag(&args.shape, args.steps)?;
    let dir = tempfile::tempdir()?;
    let db = open_db(&dir.path().join("bench.redb"), EmbeddedOptions::default())?;
    let engine = Engine::new(db, EngineConfig::default(), Arc::new(SystemClock));
    let node = Node::start(
        engine.clone(),
        NodeConfig {
            id: "workflow-bench".into(),
            ..NodeConfig::default()
        },
        RoutingConfig::default(),
        "127.0.0.1:0",
        vec![ProviderSpec {
            provider: Arc::new(MockProvider::new("mock", MockConfig::default())),
            max_concurrency: 1024,
            limits: Default::default(),
        }],
    )
    .await?;
    let started = Instant::now();
    let run = engine
        .submit_workflow("default", def.clone(), BTreeMap::new())
        .await?;
    let done = loop {
        let r = engine.get_workflow("default", run.id).await?;
        if r.status != RunStatus::Running {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    if done.status != RunStatus::Succeeded {
        let mut why = Vec::new();
        for (step, state) in &done.steps {
            if matches!(state, supervisor_engine::workflow::StepState::Failed) {
                let err = match done.tasks.get(step) {
                    Some(id) => engine.get("default", *id).await?.error.unwrap_or_default(),
                    None => done.failures.get(step).cloned().unwrap_or_default(),
                };
                why.push(format!("{step}: {err}"));
            }
        }
        anyhow::bail!(
            "the run ended {:?}: {}",
            done.status,
            why.into_iter().take(3).collect::<Vec<_>>().join("; ")
        );
    }
    let mut times = BTreeMap::new();
    for (step, id) in &done.tasks {
        let t = engine.get("default", *id).await?;
        times.insert(
            step.clone(),
            (
                t.started_at.context("started")?,
                t.finished_at.context("finished")?,
            ),
        );
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for step in &def.steps {
        let (child_start, _) = times[&step.id];
        // The last parent to finish is the one that made the child ready.
        if let Some(parent_done) = step.needs.iter().map(|n| times[&n.step].1).max() {
            hist.record((child_start - parent_done).max(1) as u64)?;
        }
    }
    node.shutdown().await;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "shape": args.shape,
        "steps": args.steps,
        "elapsed_s": elapsed.as_secs_f64(),
        "steps_per_s": args.steps as f64 / elapsed.as_secs_f64(),
        "parent_done_to_child_lease_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": hist.max() as f64 / 1000.0},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join(format!(
            "workflow-overhead-{}-{}.json",
            args.shape, args.steps
        )),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
