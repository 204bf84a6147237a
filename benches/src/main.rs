//! `supervisor-bench`: starts a real `supervisor up` process, submits N tasks from many
//! concurrent gRPC clients with the mock provider at zero latency, and reports end-to-end
//! throughput (first submit to last completion), submit latency percentiles, and the
//! server's peak memory and CPU time, into `benches/results/`.

#[path = "procstat.rs"]
mod procstat;
#[path = "utc.rs"]
mod utc;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use supervisor_client::Client;
use supervisor_proto::v1;

#[derive(Debug, Parser)]
#[command(about = "End-to-end throughput of one Supervisor node over gRPC")]
struct Args {
    /// Tasks to submit.
    #[arg(long, default_value_t = 50_000)]
    tasks: usize,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Store durability: `immediate` (fsync per group commit) or `relaxed`.
    #[arg(long, default_value = "immediate")]
    durability: String,
    /// Mock provider latency.
    #[arg(long, default_value = "0s")]
    latency: String,
    /// The `supervisor` binary (default: target/release/supervisor next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Use a node that is already running (for profiling it) instead of starting one.
    /// Its memory and CPU are then read from `--server-pid` if given.
    #[arg(long, value_name = "ADDR")]
    server: Option<String>,
    /// Pid of the node given with `--server`.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Where to write the results (markdown and JSON).
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// A label for the result file name.
    #[arg(long, default_value = "foundation")]
    label: String,
    /// The started node's HTTP side (`/metrics`, `/healthz`); "" for none, and then the
    /// node records no metrics at all.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http_listen: String,
    /// An environment variable for the started node, e.g.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318` (repeatable).
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

struct Server {
    child: Child,
    addr: String,
    /// `http://ADDR/metrics` when the node serves it.
    metrics_url: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(args: &Args, bin: &PathBuf) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(bin)
        .args(["up", "--listen", "127.0.0.1:0", "--http-listen"])
        .arg(&args.http_listen)
        .arg("--data-dir")
        .arg(dir.path())
        .env("SUPERVISOR_STORE__DURABILITY", &args.durability)
        .env("SUPERVISOR_PROVIDERS__MOCK__LATENCY", &args.latency)
        .env("RUST_LOG", "warn")
        // The run ends when the status counters show every task finished; retention
        // would empty them, so it is off unless `--server-env` sets it.
        .env("SUPERVISOR_RETENTION__KEEP", "0")
        .envs(args.server_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The start banner: `... listening on ADDR`, then `metrics: http://ADDR/metrics ...`
    // if it serves them, and always `providers: ...`.
    let (mut addr, mut metrics_url) = (None, None);
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.split("listening on ").nth(1) {
                    addr = Some(a.trim().to_string());
                } else if let Some(m) = line.strip_prefix("metrics: ") {
                    metrics_url = m.split_whitespace().next().map(str::to_string);
                } else if line.starts_with("providers:") && addr.is_some() {
                    break;
                }
            }
            _ => bail!("the server exited before it listened"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(Server {
        child,
        addr: addr.context("no listen address")?,
        metrics_url,
        _dir: dir,
    })
}

/// (peak resident set in KiB, CPU seconds) of a process, from /proc.
fn proc_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (cpu_s, _) = procstat::cpu_seconds(&format!("/proc/{pid}/stat"));
    (hwm, cpu_s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary has no directory")?
            .join("supervisor"),
    };
    let (server, pid, url) = match &args.server {
        Some(addr) => (None, args.server_pid.unwrap_or(0), format!("http://{addr}")),
        None => {
            let s = start_server(&args, &bin)?;
            let pid = s.child.id();
            let url = format!("http://{}", s.addr);
            (Some(s), pid, url)
        }
    };
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(Client::connect(&url).await?);
    }
    // Warm up connections and the node.
    for c in &clients {
        c.stats().await?;
    }
    let (_, cpu_before) = proc_usage(pid);

    let per_client = args.tasks / args.clients.max(1);
    let total = per_client * args.clients.max(1);
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..args.clients.max(1) {
        let client = clients[i % clients.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for n in 0..per_client {
                let t0 = Instant::now();
                client
                    .submit(v1::SubmitTaskRequest {
                        r#type: v1::TaskType::CodeAnalysis as i32,
                        prompt: format!("bench task {i}-{n}"),
                        ..Default::default()
                    })
                    .await?;
                hist.record(t0.elapsed().as_micros().max(1) as u64)?;
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let monitor = clients[0].clone();
    let watcher = tokio::spawn(async move {
        loop {
            let s = monitor.stats().await?;
            if s.succeeded + s.failed >= total as u64 {
                return Ok::<_, anyhow::Error>((Instant::now(), s));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for h in handles {
        hist.add(h.await??)?;
    }
    let submitted = started.elapsed();
    let (done_at, final_stats) = watcher.await??;
    let elapsed = done_at.duration_since(started);
    let (peak_kib, cpu_after) = proc_usage(pid);
    let cpu = cpu_after - cpu_before;
    // Spans the node could not export (queue full or collector unreachable), from its
    // `/metrics`; null when it does not serve them.
    let spans_dropped = match server.as_ref().and_then(|s| s.metrics_url.as_deref()) {
        Some(url) => Some(spans_dropped(url).await?),
        None => None,
    };
    drop(server);

    let throughput = total as f64 / elapsed.as_secs_f64();
    let submit_rate = total as f64 / submitted.as_secs_f64();
    let p = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let date = utc::today();
    let report = serde_json::json!({
        "date": date,
        "tasks": total,
        "clients": args.clients,
        "connections": args.connections,
        "durability": args.durability,
        "mock_latency": args.latency,
        "elapsed_s": elapsed.as_secs_f64(),
        "throughput_tasks_per_s": throughput,
        "submit_rate_per_s": submit_rate,
        "submit_latency_ms": {"p50": p(0.50), "p90": p(0.90), "p99": p(0.99), "p999": p(0.999), "max": hist.max() as f64 / 1000.0},
        "server_peak_rss_mib": peak_kib as f64 / 1024.0,
        "server_cpu_s": cpu,
        "server_cpu_us_per_task": cpu * 1e6 / total as f64,
        "server_spans_dropped": spans_dropped,
        "succeeded": final_stats.succeeded,
        "failed": final_stats.failed,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::create_dir_all(&args.out)?;
    let stem = format!("{date}-{}-{}", args.label, args.durability);
    std::fs::write(
        args.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    if final_stats.failed > 0 {
        bail!("{} tasks failed", final_stats.failed);
    }
    Ok(())
}

/// `supervisor_telemetry_spans_dropped_total` from a node's `/metrics` (0 when absent:
/// the counter appears with its first drop).
async fn spans_dropped(url: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("could not read {url}"))?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("supervisor_telemetry_spans_dropped_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b))
}
