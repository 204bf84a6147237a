//! `telemetry-overhead`: what traces and metrics cost a node in tasks per second.
//!
//! Runs `supervisor-bench` (a real `supervisor up` on a throwaway embedded store with
//! durable commits, the mock provider at zero latency, 64 gRPC clients) in three
//! configurations, alternating them within each round (off, metrics, metrics+traces, off,
//! metrics, ...) so that the machine's noise spreads over all three:
//!
//! - `off`: `--http-listen ""` and no OTLP collector: the node records nothing;
//! - `metrics`: `/metrics` served (the default), no collector: metrics are recorded, no
//!   span is built;
//! - `metrics+traces`: `/metrics` served and every span (`OTEL_TRACES_SAMPLER=always_on`)
//!   exported over OTLP http/protobuf to a sink this binary runs on 127.0.0.1, which
//!   reads each request fully, counts its bytes and spans, and answers 200.
//!
//! Reports per configuration the median tasks/s, every round's value, the ratio to `off`,
//! the node's peak RSS and, for the traced one, what the sink received (the run fails if
//! it received nothing) and the spans the node counted as dropped. Writes
//! `<out>/<date>-telemetry-overhead.md` and `.json` (`-quick` with `--quick`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
#[path = "../procstat.rs"]
mod procstat;
#[path = "../utc.rs"]
mod utc;

use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Tasks per second of one node with telemetry off, metrics, metrics+traces")]
struct Args {
    /// Tasks per run (default 80,000; 3,000 with --quick).
    #[arg(long)]
    tasks: Option<usize>,
    /// Rounds; the three configurations alternate within each (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// A smoke run: few tasks, one round, results named `...-telemetry-overhead-quick`.
    #[arg(long)]
    quick: bool,
    /// The `supervisor-bench` binary (default: next to this one).
    #[arg(long)]
    bench_bin: Option<PathBuf>,
    /// Where to write the results (markdown and JSON).
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

/// Pause between runs, after a `sync`.
const PAUSE: Duration = Duration::from_secs(3);

/// Share of the machine's CPU that other processes and the hypervisor (steal) may take
/// before a run starts, and during one before the report marks it as disturbed.
const BUSY_PERCENT: f64 = 5.0;
/// Longest wait for a quiet machine before a run.
const QUIET_WAIT: Duration = Duration::from_secs(15 * 60);

/// The aim of the telemetry issue: under this share of tasks/s lost.
const AIM_LOST_PERCENT: f64 = 5.0;

struct Config {
    name: &'static str,
    what: &'static str,
    http_listen: &'static str,
    traced: bool,
}

const CONFIGS: &[Config] = &[
    Config {
        name: "off",
        what: "no `/metrics` (`--http-listen \"\"`), no OTLP: nothing recorded",
        http_listen: "",
        traced: false,
    },
    Config {
        name: "metrics",
        what: "`/metrics` served (default), no OTLP: metrics recorded, no span built",
        http_listen: "127.0.0.1:0",
        traced: false,
    },
    Config {
        name: "metrics+traces",
        what: "`/metrics` served, every span (`always_on`) exported over OTLP http/protobuf to a local sink",
        http_listen: "127.0.0.1:0",
        traced: true,
    },
];

/// What the OTLP sink received.
#[derive(Default)]
struct Counters {
    trace_requests: AtomicU64,
    trace_bytes: AtomicU64,
    spans: AtomicU64,
    /// Trace requests whose body was not plain protobuf (e.g. compressed): not counted
    /// in `spans`.
    undecoded: AtomicU64,
    metric_requests: AtomicU64,
    metric_bytes: AtomicU64,
    other_requests: AtomicU64,
}

impl Counters {
    fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "trace_requests": get(&self.trace_requests),
            "trace_bytes": get(&self.trace_bytes),
            "spans": get(&self.spans),
            "trace_requests_undecoded": get(&self.undecoded),
            "metric_requests": get(&self.metric_requests),
            "metric_bytes": get(&self.metric_bytes),
            "other_requests": get(&self.other_requests),
        })
    }
}

/// Starts an OTLP/HTTP sink on 127.0.0.1 (a free port); returns its address and counters.
/// Its threads live until the process exits.
fn start_sink() -> anyhow::Result<(String, Arc<Counters>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                // An error ends only that connection.
                let _ = sink_connection(stream, &c);
            });
        }
    });
    Ok((addr, counters))
}

/// Serves HTTP/1.1 requests (keep-alive) on one connection until the client closes it.
fn sink_connection(stream: TcpStream, c: &Counters) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_string();
        if request_line.is_empty() {
            continue;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let (mut length, mut chunked, mut close, mut encoded) = (0usize, false, false, false);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse().context("content-length")?,
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "content-encoding" => encoded = !value.eq_ignore_ascii_case("identity"),
                _ => {}
            }
        }
        let body = if chunked {
            read_chunked(&mut reader, &mut line)?
        } else {
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            body
        };
        let ok = method == "POST" && (path == "/v1/traces" || path == "/v1/metrics");
        if ok && path == "/v1/traces" {
            c.trace_requests.fetch_add(1, Ordering::Relaxed);
            c.trace_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            match (!encoded).then(|| count_spans(&body)).flatten() {
                Some(n) => c.spans.fetch_add(n, Ordering::Relaxed),
                None => c.undecoded.fetch_add(1, Ordering::Relaxed),
            };
        } else if ok {
            c.metric_requests.fetch_add(1, Ordering::Relaxed);
            c.metric_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
        } else {
            c.other_requests.fetch_add(1, Ordering::Relaxed);
        }
        let status = if ok { "200 OK" } else { "404 Not Found" };
        writer.write_all(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
            )
            .as_bytes(),
        )?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// A `transfer-encoding: chunked` body.
fn read_chunked(reader: &mut impl BufRead, line: &mut String) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        line.clear();
        reader.read_line(line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16).context("chunk size")?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(line)?;
    }
}

/// Spans in an OTLP `ExportTraceServiceRequest`: `resource_spans` (field 1) →
/// `scope_spans` (2) → `spans` (2). None if the body is not such a message.
fn count_spans(body: &[u8]) -> Option<u64> {
    let mut n = 0;
    for resource in fields(body, 1)? {
        for scope in fields(resource, 2)? {
            n += fields(scope, 2)?.len() as u64;
        }
    }
    Some(n)
}

/// The length-delimited values of field `want` in a protobuf message.
fn fields(mut b: &[u8], want: u64) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let value = b.get(..len)?;
                b = &b[len..];
                if key >> 3 == want {
                    out.push(value);
                }
            }
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Waits (up to [`QUIET_WAIT`]) until other processes and the hypervisor take under
/// [`BUSY_PERCENT`] of the machine's CPU over a second: a run started during someone's
/// build measures the build.
fn wait_for_quiet() {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let before = cpu_times();
        std::thread::sleep(Duration::from_secs(1));
        let after = cpu_times();
        let busy = taken(&cpu_percent(&before, &after, 0.0));
        if busy < BUSY_PERCENT {
            return;
        }
        if started.elapsed() > QUIET_WAIT {
            eprintln!("the machine is still busy ({busy:.0}% of its CPU); running anyway");
            return;
        }
        if !said {
            eprintln!(
                "other processes or the hypervisor take {busy:.0}% of the CPU; waiting for a quiet machine..."
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(4));
    }
}

/// One `supervisor-bench` run of `config`: its JSON report, and what the sink received.
fn run(
    bench: &PathBuf,
    config: &Config,
    tasks: usize,
    clients: usize,
    scratch: &std::path::Path,
) -> anyhow::Result<(Value, Option<Value>)> {
    let mut cmd = Command::new(bench);
    cmd.args(["--tasks", &tasks.to_string()])
        .args(["--clients", &clients.to_string()])
        .args(["--durability", "immediate", "--latency", "0s"])
        .args(["--label", "telemetry"])
        .arg("--out")
        .arg(scratch)
        .args(["--http-listen", config.http_listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Only what this configuration sets reaches the node.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    let sink = if config.traced {
        let (addr, counters) = start_sink()?;
        for env in [
            format!("OTEL_EXPORTER_OTLP_ENDPOINT=http://{addr}"),
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf".into(),
            "OTEL_TRACES_SAMPLER=always_on".into(),
            "OTEL_TRACES_EXPORTER=otlp".into(),
            "OTEL_METRICS_EXPORTER=none".into(),
        ] {
            cmd.args(["--server-env", &env]);
        }
        Some(counters)
    } else {
        None
    };
    wait_for_quiet();
    let before = cpu_times();
    let own_before = own_cpu_s();
    let output = cmd
        .output()
        .with_context(|| format!("could not run {}", bench.display()))?;
    let after = cpu_times();
    let own_after = own_cpu_s();
    let own_cpu = own_after.0 - own_before.0;
    let tree_cpu = own_cpu + own_after.1 - own_before.1;
    ensure!(
        output.status.success(),
        "supervisor-bench ({}) failed: {}",
        config.name,
        output.status
    );
    let mut report: Value = serde_json::from_slice(&output.stdout)
        .context("supervisor-bench did not print its JSON report")?;
    report["machine_cpu_percent"] = cpu_percent(&before, &after, tree_cpu);
    // While the run lasts this process only waits for it, so its CPU is the sink's.
    let sink = sink.map(|c| {
        let mut j = c.to_json();
        j["sink_cpu_s"] = json!(own_cpu);
        j
    });
    if let Some(s) = &sink {
        let requests = s["trace_requests"].as_u64().unwrap_or(0);
        ensure!(
            requests > 0,
            "the OTLP sink received no trace request: spans were not exported"
        );
    }
    Ok((report, sink))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `12,345` (no decimals).
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 && s != "0" {
        out.insert(0, '-');
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tasks = args
        .tasks
        .unwrap_or(if args.quick { 3_000 } else { 80_000 });
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let bench = match &args.bench_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("supervisor-bench"),
    };
    let scratch = tempfile::tempdir()?;
    let started = utc::now();
    // Others may rebuild the node while this runs (a shared target directory).
    let node_bin = bench.with_file_name("supervisor");
    let modified = || {
        std::fs::metadata(&node_bin)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let node_bin_before = modified();

    // A warm-up run, not counted: the first run after a quiet spell was often the
    // slowest of all on this machine, whatever its configuration.
    let warmup = (tasks / 4).max(args.clients);
    eprintln!(
        "warm-up ({}): {warmup} tasks, not counted...",
        CONFIGS[1].name
    );
    let (warmup_report, _) =
        run(&bench, &CONFIGS[1], warmup, args.clients, scratch.path()).context("warm-up")?;
    let warmup_tasks = warmup_report["tasks"].as_u64().unwrap_or(0);
    let _ = Command::new("sync").status();
    std::thread::sleep(PAUSE);

    // runs[config][round] = (supervisor-bench report, sink counters)
    let mut runs: Vec<Vec<(Value, Option<Value>)>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, config) in CONFIGS.iter().enumerate() {
            eprintln!(
                "round {}/{rounds} {}: {tasks} tasks...",
                round + 1,
                config.name
            );
            let (report, sink) = run(&bench, config, tasks, args.clients, scratch.path())
                .with_context(|| format!("round {}, {}", round + 1, config.name))?;
            eprintln!(
                "round {}/{rounds} {}: {:.0} tasks/s",
                round + 1,
                config.name,
                report["throughput_tasks_per_s"].as_f64().unwrap_or(0.0)
            );
            runs[i].push((report, sink));
            // Let the disk settle (the run's store was just deleted) before the next.
            let _ = Command::new("sync").status();
            std::thread::sleep(PAUSE);
        }
    }
    let finished = utc::now();
    let node_bin_changed = modified() != node_bin_before;

    let series = |i: usize, key: &str| -> Vec<f64> {
        runs[i]
            .iter()
            .map(|(r, _)| r[key].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let off = series(0, "throughput_tasks_per_s");
    let off_median = median(&off);
    let mut configs_json = Vec::new();
    for (i, config) in CONFIGS.iter().enumerate() {
        let rates = series(i, "throughput_tasks_per_s");
        let per_round: Vec<f64> = rates.iter().zip(&off).map(|(r, o)| r / o).collect();
        let m = median(&rates);
        let sinks: Vec<Value> = runs[i].iter().filter_map(|(_, s)| s.clone()).collect();
        let dropped: Vec<Value> = runs[i]
            .iter()
            .map(|(r, _)| r["server_spans_dropped"].clone())
            .collect();
        configs_json.push(json!({
            "name": config.name,
            "description": config.what,
            "http_listen": config.http_listen,
            "traced": config.traced,
            "tasks_per_s": rates,
            "median_tasks_per_s": m,
            "ratio_to_off": m / off_median,
            "lost_percent": (1.0 - m / off_median) * 100.0,
            "per_round_ratio_to_off": per_round,
            "median_per_round_ratio_to_off": median(&per_round),
            "server_peak_rss_mib": series(i, "server_peak_rss_mib"),
            "server_cpu_us_per_task": series(i, "server_cpu_us_per_task"),
            "cpu_per_task_ratio_to_off": median(&series(i, "server_cpu_us_per_task"))
                / median(&series(0, "server_cpu_us_per_task")),
            "sink": if config.traced { Value::from(sinks) } else { Value::Null },
            "server_spans_dropped": dropped,
            "runs": runs[i].iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
        }));
    }
    let tasks_run = runs[0][0].0["tasks"].as_u64().unwrap_or(0);
    let command = std::iter::once("telemetry-overhead".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let report = json!({
        "date": started.0,
        "started_utc": format!("{} {}", started.0, started.1),
        "finished_utc": format!("{} {}", finished.0, finished.1),
        "command": command,
        "quick": args.quick,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "tasks_per_run": tasks_run,
        "clients": args.clients,
        "durability": "immediate",
        "mock_latency": "0s",
        "rounds": rounds,
        "warmup": {"config": CONFIGS[1].name, "tasks": warmup_tasks},
        "pause_s": PAUSE.as_secs_f64(),
        "busy_percent_limit": BUSY_PERCENT,
        "quiet_wait_s": QUIET_WAIT.as_secs_f64(),
        "order": CONFIGS.iter().map(|c| c.name).collect::<Vec<_>>(),
        "aim_lost_percent_under": AIM_LOST_PERCENT,
        "machine": machine(),
        "node_binary": node_bin.display().to_string(),
        "node_binary_changed_during_run": node_bin_changed,
        "configs": configs_json,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::create_dir_all(&args.out)?;
    let stem = format!(
        "{}-telemetry-overhead{}",
        started.0,
        if args.quick { "-quick" } else { "" }
    );
    let json_path = args.out.join(format!("{stem}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let md_path = args.out.join(format!("{stem}.md"));
    std::fs::write(&md_path, markdown(&report, &format!("{stem}.json")))?;
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// The report, every figure in it taken from `r`.
fn markdown(r: &Value, json_name: &str) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let list = |v: &Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
            .unwrap_or_default()
    };
    let m = &r["machine"];
    let configs = r["configs"].as_array().cloned().unwrap_or_default();
    let mut s = String::new();
    s.push_str(&format!(
        "# Telemetry overhead ({}){}\n\n",
        r["date"].as_str().unwrap_or(""),
        if r["quick"].as_bool() == Some(true) {
            ", quick smoke run"
        } else {
            ""
        }
    ));
    s.push_str(&format!(
        "Produced by `{}` ({} build) from {} to {} UTC. JSON with every run's full \
         report: `{json_name}`.\n\n",
        r["command"].as_str().unwrap_or(""),
        r["build"].as_str().unwrap_or("release"),
        r["started_utc"].as_str().unwrap_or(""),
        r["finished_utc"].as_str().unwrap_or("")
    ));
    s.push_str(&format!(
        "Machine: {} cores ({}), {} MiB of memory, {}. The load generator, the node and the \
         OTLP sink all run on it and share its cores.\n\n",
        m["cores"],
        m["cpu_model"].as_str().unwrap_or("unknown CPU"),
        m["mem_total_mib"],
        m["kernel"].as_str().unwrap_or("Linux")
    ));
    if r["node_binary_changed_during_run"] == true {
        s.push_str(&format!(
            "**Warning:** `{}` was rebuilt while this benchmark ran: the runs may not all \
             measure the same node.\n\n",
            r["node_binary"].as_str().unwrap_or("supervisor")
        ));
    }
    s.push_str("## What it measures\n\n");
    s.push_str(&format!(
        "Each run is one `supervisor-bench`: a fresh `supervisor up` on a throwaway embedded \
         store with durable commits (`immediate`: fsync per group commit) and the mock \
         provider at zero latency; {} concurrent gRPC clients over 4 HTTP/2 connections \
         submit {} `code_analysis` tasks, and tasks/s runs from the first submit until \
         `GetTaskStats` shows every task succeeded. The load generator runs on the same \
         {}-core machine as the node, so the two compete for the cores: CPU that telemetry \
         takes is mostly taken from the work. The three configurations alternate within \
         each round ({}), {} round(s), so that drift in the machine's state spreads over \
         all three; one warm-up run ({} tasks, `{}`) comes first and is not counted, and \
         every run is followed by `sync` and a {} s pause. In the traced configuration the OTLP sink is a \
         small HTTP/1.1 server in the benchmark process that reads each request fully, \
         counts bytes and spans and answers 200 at once: the cost measured is the node's \
         (building, queueing, encoding and sending spans), not a real collector's.\n\n",
        r["clients"],
        thousands(f(&r["tasks_per_run"])),
        m["cores"],
        r["order"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        r["rounds"],
        thousands(f(&r["warmup"]["tasks"])),
        r["warmup"]["config"].as_str().unwrap_or(""),
        f(&r["pause_s"]),
    ));
    s.push_str("## Results\n\n");
    s.push_str(
        "| configuration | what the node does | median tasks/s | ratio to off | lost | rounds (tasks/s) | node peak RSS (median) | node CPU per task (median, × off) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &configs {
        let rates = list(&c["tasks_per_s"]);
        let lost = f(&c["lost_percent"]);
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {} | {} | {:.0} MiB | {:.0} µs (×{:.2}) |\n",
            c["name"].as_str().unwrap_or(""),
            c["description"].as_str().unwrap_or(""),
            thousands(f(&c["median_tasks_per_s"])),
            f(&c["ratio_to_off"]),
            if c["name"] == "off" {
                "–".to_string()
            } else {
                format!("{lost:.1}%")
            },
            rates
                .iter()
                .map(|x| thousands(*x))
                .collect::<Vec<_>>()
                .join(" · "),
            median(&list(&c["server_peak_rss_mib"])),
            median(&list(&c["server_cpu_us_per_task"])),
            f(&c["cpu_per_task_ratio_to_off"]),
        ));
    }
    s.push('\n');
    s.push_str(
        "Ratio to off: the configuration's median over off's median. Per round (each \
         configuration against off in the same round):\n\n",
    );
    for c in configs.iter().skip(1) {
        s.push_str(&format!(
            "- {}: {} (median {:.3})\n",
            c["name"].as_str().unwrap_or(""),
            list(&c["per_round_ratio_to_off"])
                .iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            f(&c["median_per_round_ratio_to_off"])
        ));
    }
    s.push('\n');

    // Noise: the spread of each configuration's own rounds.
    let spread = configs
        .iter()
        .map(|c| {
            let v = list(&c["tasks_per_s"]);
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                    (lo.min(*x), hi.max(*x))
                });
            (hi - lo) / median(&v) * 100.0
        })
        .fold(0.0f64, f64::max);
    if r["rounds"].as_u64().unwrap_or(0) > 1 {
        s.push_str(&format!(
            "Noise: the rounds of one configuration differ by up to {spread:.1}% of its median \
             (max − min); differences between configurations smaller than that are within \
             this machine's noise.\n\n"
        ));
    } else {
        s.push_str("One round only: no measure of the noise; do not read small differences.\n\n");
    }

    // The machine's CPU during the runs (all processes, from /proc/stat).
    let usage: Vec<Value> = configs
        .iter()
        .flat_map(|c| c["runs"].as_array().cloned().unwrap_or_default())
        .map(|run| run["machine_cpu_percent"].clone())
        .filter(|u| u.is_object())
        .collect();
    if !usage.is_empty() {
        let range = |key: &str| {
            let v: Vec<f64> = usage.iter().map(|u| f(&u[key])).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.1}–{hi:.1}%")
        };
        s.push_str(&format!(
            "The machine's CPU during the runs (all processes, /proc/stat, lowest–highest \
             run): idle {}, waiting for the disk {}, stolen by the hypervisor {}, used by \
             processes other than this benchmark's {}. Each run started once other \
             processes and the hypervisor took under {:.0}% of the CPU (or after {} minutes \
             of waiting).\n\n",
            range("idle"),
            range("iowait"),
            range("steal"),
            range("other_processes"),
            f(&r["busy_percent_limit"]),
            f(&r["quiet_wait_s"]) / 60.0,
        ));
        // Runs during which other processes took their share of the machine.
        let limit = f(&r["busy_percent_limit"]);
        let busy = |run: &Value| taken(&run["machine_cpu_percent"]);
        let mut disturbed = Vec::new();
        for c in &configs {
            for (i, run) in c["runs"].as_array().into_iter().flatten().enumerate() {
                if busy(run) >= limit {
                    disturbed.push(format!(
                        "round {} {} ({:.0}%)",
                        i + 1,
                        c["name"].as_str().unwrap_or(""),
                        busy(run)
                    ));
                }
            }
        }
        if disturbed.is_empty() {
            s.push_str(&format!(
                "No run was disturbed: other processes and the hypervisor took under \
                 {limit:.0}% of the CPU during every run.\n\n"
            ));
        } else {
            let quiet: Vec<Vec<f64>> = configs
                .iter()
                .map(|c| {
                    c["runs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|run| busy(run) < limit)
                        .map(|run| f(&run["throughput_tasks_per_s"]))
                        .collect()
                })
                .collect();
            s.push_str(&format!(
                "Disturbed runs, during which other processes and the hypervisor (steal) took \
                 {limit:.0}% or more of the CPU: {}. ",
                disturbed.join(", ")
            ));
            if quiet.iter().all(|v| !v.is_empty()) {
                let off = median(&quiet[0]);
                let medians: Vec<String> = configs
                    .iter()
                    .zip(&quiet)
                    .map(|(c, v)| {
                        format!(
                            "{} {} ({} runs, ratio to off {:.3})",
                            c["name"].as_str().unwrap_or(""),
                            thousands(median(v)),
                            v.len(),
                            median(v) / off
                        )
                    })
                    .collect();
                s.push_str(&format!(
                    "Medians of the other runs: {}.",
                    medians.join(", ")
                ));
            }
            s.push_str("\n\n");
        }
    }

    if let Some(traced) = configs.iter().find(|c| c["traced"] == true) {
        s.push_str("## Spans exported (metrics+traces)\n\n");
        s.push_str(
            "What the sink received per round, until the node was stopped right after the \
             last task succeeded (spans still queued then, up to a second's worth, are not \
             counted), and the spans the node itself counted as dropped \
             (`supervisor_telemetry_spans_dropped_total`: its queue full or the export \
             failed):\n\n\
             | round | trace requests | bytes | spans | spans per task | spans dropped by the node | sink CPU |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let sinks = traced["sink"].as_array().cloned().unwrap_or_default();
        let dropped = traced["server_spans_dropped"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let tasks = f(&r["tasks_per_run"]);
        for (i, sink) in sinks.iter().enumerate() {
            let spans = f(&sink["spans"]);
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {:.1} s |\n",
                i + 1,
                thousands(f(&sink["trace_requests"])),
                thousands(f(&sink["trace_bytes"])),
                thousands(spans),
                spans / tasks,
                dropped
                    .get(i)
                    .and_then(|d| d.as_f64())
                    .map(thousands)
                    .unwrap_or_else(|| "not read".into()),
                f(&sink["sink_cpu_s"]),
            ));
        }
        let undecoded: u64 = sinks
            .iter()
            .map(|s| s["trace_requests_undecoded"].as_u64().unwrap_or(0))
            .sum();
        if undecoded > 0 {
            s.push_str(&format!(
                "\n{undecoded} trace request(s) were not plain protobuf; their spans are not \
                 counted above.\n"
            ));
        }
        s.push('\n');
    }

    s.push_str("## Against the aim\n\n");
    s.push_str(&format!(
        "Aim: under {:.0}% of tasks/s lost with tracing and metrics on.\n\n",
        f(&r["aim_lost_percent_under"])
    ));
    for c in configs.iter().skip(1) {
        let lost = f(&c["lost_percent"]);
        let name = c["name"].as_str().unwrap_or("");
        let verdict = if lost < f(&r["aim_lost_percent_under"]) {
            "within the aim"
        } else {
            "over the aim"
        };
        let dropped: f64 = list(&c["server_spans_dropped"])
            .iter()
            .filter(|x| x.is_finite())
            .sum();
        let caveat = if c["traced"] == true && dropped > 0.0 {
            format!(
                " The node dropped {} spans over the rounds, so it did not pay for \
                 exporting all of them: the full cost is higher.",
                thousands(dropped)
            )
        } else {
            String::new()
        };
        if lost < 0.0 {
            s.push_str(&format!(
                "- {name}: {:.1}% faster than off (median tasks/s): no loss measured, \
                 {verdict}.{caveat}\n",
                -lost
            ));
        } else {
            s.push_str(&format!(
                "- {name}: {lost:.1}% lost (median tasks/s against off's), {verdict}.{caveat}\n"
            ));
        }
    }
    s
}

/// The machine's CPU time counters (the `cpu` line of /proc/stat).
fn cpu_times() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// The share of the machine's CPU that others took: other processes and the hypervisor.
fn taken(usage: &Value) -> f64 {
    let get = |k: &str| usage[k].as_f64().unwrap_or(0.0);
    get("other_processes") + get("steal")
}

/// CPU seconds used by this process (all its threads) and by its children that ended
/// (`supervisor-bench` and, through it, the node), from /proc/self/stat.
fn own_cpu_s() -> (f64, f64) {
    procstat::cpu_seconds("/proc/self/stat")
}

/// Where the machine's CPU time went between two [`cpu_times`], in percent of it all;
/// `other_processes` is the busy time not used by this benchmark's processes
/// (`tree_cpu_s`: this one, `supervisor-bench` and the node), which includes kernel
/// threads working for them (e.g. disk writeback).
fn cpu_percent(before: &[u64], after: &[u64], tree_cpu_s: f64) -> Value {
    let d: Vec<f64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b) as f64)
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let total: f64 = d.iter().take(8).sum();
    if d.len() < 8 || total <= 0.0 {
        return Value::Null;
    }
    let pct = |x: f64| x * 100.0 / total;
    // user nice system irq softirq, in ticks of 1/100 s like /proc/self/stat's.
    let busy = d[0] + d[1] + d[2] + d[5] + d[6];
    json!({
        "other_processes": pct((busy - tree_cpu_s * 100.0).max(0.0)),
        "user": pct(d[0] + d[1]),
        "system": pct(d[2] + d[5] + d[6]),
        "idle": pct(d[3]),
        "iowait": pct(d[4]),
        "steal": pct(d[7]),
    })
}

/// Cores, CPU model, memory and kernel, from /proc.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| format!("Linux {}", k.trim()));
    let mut m = BTreeMap::new();
    m.insert(
        "cores",
        json!(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
    );
    m.insert("cpu_model", json!(cpu_model));
    m.insert("mem_total_mib", json!(mem_kib.map(|k| k / 1024)));
    m.insert("kernel", json!(kernel));
    json!(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf length-delimited field.
    fn ld(field: u64, value: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3 | 2) as u8, value.len() as u8];
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn counts_spans_of_an_otlp_request() {
        let span = ld(1, b"0123456789abcdef"); // a span with only its trace id
        let mut scope = ld(1, b"\x0a\x03lib"); // scope
        scope.extend(ld(2, &span));
        scope.extend(ld(2, &span));
        scope.extend([0x18, 0x96, 0x01]); // an unknown varint field
        let mut resource = ld(1, b""); // resource
        resource.extend(ld(2, &scope));
        resource.extend(ld(2, &ld(2, &span)));
        let body = ld(1, &resource);
        assert_eq!(count_spans(&body), Some(3));
        assert_eq!(count_spans(&body[..body.len() - 1]), None);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
