//! `supervisor-chaos`: runs the chaos scenarios (or the scale measurement) and reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use supervisor_chaos::cluster::{ClusterSpec, Timing};
use supervisor_chaos::scale::{self, ScaleLoad};
use supervisor_chaos::scenario::{self, Profile, Scenario};
use supervisor_chaos::{report, today};

/// Chaos suite: a 3-node Supervisor cluster on a throwaway PostgreSQL, a steady load of
/// tasks, one fault at a time (kill9, sigstop, partition, pg-restart, rolling), and an
/// audit of the store after each.
#[derive(Debug, Parser)]
#[command(name = "supervisor-chaos")]
struct Args {
    /// Scenarios to run, in order (default: all of kill9, sigstop, partition, pg-restart,
    /// rolling, overload).
    scenarios: Vec<Scenario>,
    /// Short phases, for CI (each scenario takes about a minute).
    #[arg(long)]
    quick: bool,
    /// Runs each scenario this many times (each from a clean cluster), e.g. to see the
    /// spread of recovery times.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Instead of faults: measure throughput of 1 node against 3 nodes under the same load.
    #[arg(long, conflicts_with = "scenarios")]
    scale: bool,
    /// The `supervisor` binary (default: target/debug/supervisor of this workspace).
    #[arg(long, env = "SUPERVISOR_CHAOS_BIN")]
    supervisor: Option<PathBuf>,
    /// Submits per second over the cluster (default: 20 quick, 40 full).
    #[arg(long)]
    rate: Option<f64>,
    /// Latency of the mock provider, so tasks are in flight when faults hit.
    #[arg(long, default_value = "300ms")]
    latency: String,
    /// Extra node settings, `SUPERVISOR_X__Y=value` (repeatable), e.g.
    /// `--set SUPERVISOR_ENGINE__LEASE_DURATION=5s`.
    #[arg(long = "set", value_name = "VAR=VALUE")]
    set: Vec<String>,
    /// Extra PostgreSQL server settings, `name=value` (repeatable), e.g.
    /// `--pg-set idle_in_transaction_session_timeout=3s`.
    #[arg(long = "pg-set", value_name = "NAME=VALUE")]
    pg_set: Vec<String>,
    /// Where the markdown report goes (default: chaos/results, or benches/results with
    /// --scale); `-` writes none.
    #[arg(long)]
    results_dir: Option<String>,
    /// Offered loads of the scale measurement, submits per second (each on 1 node, then
    /// on 3 nodes).
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 800.0])]
    scale_rates: Vec<f64>,
    /// Longest wait for a scale run's backlog to drain before it counts as failed.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    scale_drain_limit: Duration,
    /// How long each scale run's load lasts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    scale_duration: Duration,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn supervisor_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = given.unwrap_or_else(|| workspace_root().join("target/debug/supervisor"));
    if !path.is_file() {
        bail!(
            "no supervisor binary at {}; build it (`cargo build -p supervisor-cli`) or pass \
             --supervisor PATH",
            path.display()
        );
    }
    Ok(path)
}

fn node_env(args: &Args) -> Result<Vec<(String, String)>> {
    let mut env = vec![(
        "SUPERVISOR_PROVIDERS__MOCK__LATENCY".to_string(),
        args.latency.clone(),
    )];
    for item in &args.set {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--set {item:?}: expected VAR=VALUE, e.g. SUPERVISOR_ENGINE__LEASE_DURATION=5s");
        };
        if !k.starts_with("SUPERVISOR_") {
            bail!("--set {item:?}: node settings are SUPERVISOR_* variables");
        }
        env.push((k.to_string(), v.to_string()));
    }
    Ok(env)
}

fn write_report(dir: &str, default_dir: &Path, name: &str, text: &str) -> Result<()> {
    if dir == "-" {
        return Ok(());
    }
    let dir = if dir.is_empty() {
        default_dir.to_path_buf()
    } else {
        PathBuf::from(dir)
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("report written to {}", path.display());
    Ok(())
}

async fn run(args: Args) -> Result<bool> {
    let supervisor = supervisor_binary(args.supervisor.clone())?;
    let env = node_env(&args)?;
    let timing = Timing::in_force(&supervisor, &env)?;
    let work = tempfile::Builder::new()
        .prefix("supervisor-chaos-")
        .tempdir()
        .context("cannot create a work directory")?;
    let spec = ClusterSpec {
        supervisor: supervisor.clone(),
        nodes: 3,
        namespaces: false,
        env: env.clone(),
        work_dir: work.path().to_path_buf(),
        pg_settings: args.pg_set.clone(),
    };
    let mut header = vec![
        format!("binary: {}", supervisor.display()),
        format!(
            "node settings: mock latency {} ({} in overload), lease {:?}, heartbeat {:?}, failure timeout {:?}{}",
            args.latency,
            scenario::OVERLOAD_MOCK_LATENCY,
            timing.lease,
            timing.heartbeat,
            timing.failure_timeout,
            if args.set.is_empty() {
                String::new()
            } else {
                format!(", {}", args.set.join(" "))
            }
        ),
        format!(
            "PostgreSQL settings: fsync=off{}",
            args.pg_set
                .iter()
                .map(|s| format!(", {s}"))
                .collect::<String>()
        ),
        format!(
            "machine: {} cores shared by the nodes, PostgreSQL (fsync off) and the load generator",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        ),
    ];
    let results_dir = args.results_dir.clone().unwrap_or_default();
    if args.scale {
        header.push(format!(
            "offered load: the rate below for {:?}, spread over the nodes; each cluster fresh",
            args.scale_duration
        ));
        let mut runs = Vec::new();
        let mut failures = Vec::new();
        for rate in &args.scale_rates {
            let load = ScaleLoad {
                rate: *rate,
                duration: args.scale_duration,
                drain_limit: args.scale_drain_limit,
            };
            for nodes in [1, 3] {
                println!(
                    "scale: {nodes} node(s), {rate} submits/s for {:?}",
                    load.duration
                );
                match scale::measure(&spec, nodes, &load).await {
                    Ok(r) => {
                        println!(
                            "  {:.1} completions/s under load, drained in {:.1}s, p50 {:.0} ms",
                            r.completions_per_s, r.drain_s, r.latency_ms.0
                        );
                        runs.push(r);
                    }
                    Err(err) => {
                        println!("  failed: {err:#}");
                        failures.push(format!("{nodes} node(s) at {rate}/s failed: {err:#}"));
                    }
                }
            }
        }
        header.extend(failures.iter().cloned());
        let text = scale::render(&header, &runs);
        println!("\n{text}");
        let ok = failures.is_empty() && runs.iter().all(|r| r.violations.is_empty());
        write_report(
            &results_dir,
            &workspace_root().join("benches/results"),
            &format!("{}-cluster.md", today()),
            &text,
        )?;
        return Ok(ok);
    }
    let profile = if args.quick {
        Profile {
            rate: args.rate.unwrap_or(20.0),
            warm_up: Duration::from_secs(6),
            cool_down: Duration::from_secs(8),
            pg_down: Duration::from_secs(3),
            drain_limit: Duration::from_secs(120),
            burst: 1_000,
            overload_for: Duration::from_secs(10),
            overload_max_queued: 3_000,
        }
    } else {
        Profile {
            rate: args.rate.unwrap_or(40.0),
            warm_up: Duration::from_secs(20),
            cool_down: Duration::from_secs(30),
            pg_down: Duration::from_secs(10),
            drain_limit: Duration::from_secs(300),
            burst: 3_000,
            overload_for: Duration::from_secs(60),
            overload_max_queued: 20_000,
        }
    };
    header.push(format!(
        "load: {} submits/s over 3 nodes; {:?} before the fault, {:?} after it is lifted",
        profile.rate, profile.warm_up, profile.cool_down
    ));
    let chosen = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let scenarios: Vec<Scenario> = chosen
        .iter()
        .flat_map(|s| std::iter::repeat_n(*s, args.repeat.max(1)))
        .collect();
    let mut outcomes = Vec::new();
    for sc in scenarios {
        println!("== {sc}: starting PostgreSQL and 3 nodes");
        let outcome = scenario::run(sc, &spec, &profile, timing).await;
        println!(
            "== {sc}: {} in {:.0}s",
            if outcome.passed() { "PASS" } else { "FAIL" },
            outcome.elapsed_s
        );
        outcomes.push(outcome);
    }
    let mut mode = String::from(if args.quick { "quick" } else { "full" });
    if !args.scenarios.is_empty() {
        for s in &chosen {
            mode.push('-');
            mode.push_str(s.name());
        }
    }
    if args.repeat > 1 {
        mode.push_str(&format!("-x{}", args.repeat));
    }
    let text = report::render(
        &format!("Chaos run ({mode}), {}", today()),
        &header,
        &outcomes,
    );
    println!("\n{text}");
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    write_report(
        &results_dir,
        &workspace_root().join("chaos/results"),
        &format!("{}-{mode}.md", today()),
        &text,
    )?;
    if failed > 0 {
        let kept = work.keep();
        println!("node logs kept in {}", kept.display());
    }
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    Ok(failed == 0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    // On Ctrl-C or SIGTERM the run is dropped, which kills the nodes, stops PostgreSQL
    // and removes the namespaces.
    let interrupted = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let result = tokio::select! {
        result = run(args) => result,
        () = interrupted => Err(anyhow::anyhow!("interrupted; the cluster was torn down")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("supervisor-chaos: {err:#}");
            ExitCode::FAILURE
        }
    }
}
