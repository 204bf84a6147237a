//! `load`: the load generator `benches/run` uses for Supervisor and for the HTTP
//! gateway paths, so that every system is measured the same way.
//!
//! Two shapes of load:
//! - closed (`--clients C --duration D`): C clients each submit a task and wait for it to
//!   finish, again and again until the deadline; tasks still running then are waited for.
//!   This gives the peak throughput.
//! - open (`--rate R --duration D`): one request every 1/R seconds whatever the answers
//!   do; each latency runs from the request's scheduled time (so a stall is charged to
//!   every request it delays, not hidden by the generator waiting for it).
//!
//! Two targets:
//! - `supervisor`: submit over gRPC, then watch the task's events until its terminal
//!   event (submit → completion as the client sees it); `--provider` asks for a provider.
//! - `http`: `POST <url>/chat/completions` with `"stream": true`, reading the whole SSE
//!   answer (the fake server directly, or a gateway such as the LiteLLM proxy in front of
//!   it).
//!
//! Prints one JSON object (counts, elapsed time, throughput) and writes every latency,
//! in microseconds, one per line, to `--samples`; the harness computes percentiles from
//! those files for every system alike. For Supervisor the JSON also splits each task's
//! time into phases, from the client's clock and the events' timestamps (same machine,
//! same clock): the submit call, the wait for a lease, the run up to the terminal event,
//! and the time until the client saw that event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use supervisor_client::Client;
use supervisor_proto::v1;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// A Supervisor node (or several, comma-separated in `--server`).
    Supervisor,
    /// An OpenAI-compatible HTTP endpoint.
    Http,
}

#[derive(Debug, Parser)]
#[command(about = "Closed- or open-loop load on Supervisor or an OpenAI-compatible endpoint")]
struct Args {
    /// What to load.
    #[arg(long, value_enum)]
    target: Target,
    /// Supervisor nodes, `HOST:PORT` comma-separated (target `supervisor`).
    #[arg(long, value_delimiter = ',')]
    server: Vec<String>,
    /// Provider the tasks ask for (target `supervisor`; default: the node's routing).
    #[arg(long)]
    provider: Option<String>,
    /// Base URL including `/v1` (target `http`).
    #[arg(long)]
    url: Option<String>,
    /// Model named in HTTP requests (target `http`).
    #[arg(long, default_value = "fake-model")]
    model: String,
    /// Closed loop: concurrent clients.
    #[arg(long, conflicts_with = "rate")]
    clients: Option<usize>,
    /// Open loop: requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// How long requests are started for.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load of the same shape run first and not measured.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// gRPC connections per node (target `supervisor`).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Where to write the latencies (microseconds, one per line).
    #[arg(long)]
    samples: PathBuf,
}

/// One request against the target: a task to completion, or one chat completion.
#[derive(Clone)]
enum Op {
    Supervisor {
        clients: Arc<Vec<Client>>,
        provider: Option<String>,
    },
    Http {
        client: reqwest::Client,
        url: String,
        body: Arc<String>,
    },
}

/// Where one Supervisor task's time went, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Phases {
    /// The submit call, as the client timed it (includes the submit's commit).
    submit: f64,
    /// From the `SUBMITTED` event to the `STARTED` event (waiting for a lease).
    lease: f64,
    /// From `STARTED` to the terminal event (agent, provider, building the completion).
    run: f64,
    /// From the terminal event's timestamp to the client receiving it (completion commit
    /// and delivery through WatchTask).
    observe: f64,
}

const PHASES: [&str; 4] = ["submit", "lease", "run", "observe"];

impl Phases {
    fn get(&self, name: &str) -> f64 {
        match name {
            "submit" => self.submit,
            "lease" => self.lease,
            "run" => self.run,
            _ => self.observe,
        }
    }
}

/// Microseconds since the epoch of the wall clock (the events' clock).
fn wall_us(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e6)
        .unwrap_or(0.0)
}

fn event_us(event: &v1::TaskEvent) -> Option<f64> {
    event
        .at
        .as_ref()
        .map(|t| t.seconds as f64 * 1e6 + f64::from(t.nanos) / 1e3)
}

impl Op {
    async fn run(&self, n: usize) -> anyhow::Result<Option<Phases>> {
        match self {
            Op::Supervisor { clients, provider } => {
                let client = &clients[n % clients.len()];
                let sent = SystemTime::now();
                let task = client
                    .submit(v1::SubmitTaskRequest {
                        r#type: v1::TaskType::CodeAnalysis as i32,
                        prompt: format!("bench task {n}"),
                        preferred_providers: provider.iter().cloned().collect(),
                        ..Default::default()
                    })
                    .await?;
                let accepted = SystemTime::now();
                let mut events = client.watch(&task.id, 0);
                let (mut submitted, mut started, mut ended) = (None, None, None);
                let mut last = None;
                while let Some(event) = events.next().await {
                    let event = event?;
                    let at = event_us(&event);
                    match v1::TaskEventType::try_from(event.r#type) {
                        Ok(v1::TaskEventType::Submitted) => submitted = at,
                        Ok(v1::TaskEventType::Started) => started = at,
                        Ok(
                            v1::TaskEventType::Succeeded
                            | v1::TaskEventType::Failed
                            | v1::TaskEventType::Cancelled,
                        ) => ended = at,
                        _ => {}
                    }
                    last = Some(event.status);
                }
                let seen = SystemTime::now();
                if last != Some(v1::TaskStatus::Succeeded as i32) {
                    bail!("task {} ended with status {last:?}, not SUCCEEDED", task.id);
                }
                Ok(match (submitted, started, ended) {
                    (Some(s), Some(b), Some(e)) => Some(Phases {
                        submit: wall_us(accepted) - wall_us(sent),
                        lease: b - s,
                        run: e - b,
                        observe: wall_us(seen) - e,
                    }),
                    _ => None,
                })
            }
            Op::Http { client, url, body } => {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await?;
                let status = response.status();
                let text = response.bytes().await?;
                if !status.is_success() {
                    bail!(
                        "{url} answered {status}: {}",
                        String::from_utf8_lossy(&text)
                    );
                }
                if !text.windows(6).any(|w| w == b"[DONE]") {
                    bail!("{url} ended its stream without [DONE]");
                }
                Ok(None)
            }
        }
    }
}

/// Latencies (µs) of the requests that succeeded, and how many failed (with the first
/// error, for the report).
#[derive(Default)]
struct Outcome {
    latencies: Vec<u64>,
    phases: Vec<Phases>,
    failed: usize,
    first_error: Option<String>,
}

impl Outcome {
    fn record(&mut self, result: anyhow::Result<Option<Phases>>, latency: Duration) {
        match result {
            Ok(phases) => {
                self.latencies.push(latency.as_micros().max(1) as u64);
                self.phases.extend(phases);
            }
            Err(err) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{err:#}"));
                }
            }
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        self.phases.extend(other.phases);
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// C clients, each running one request at a time until `duration` has passed.
async fn closed(
    op: &Op,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(Outcome, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = JoinSet::new();
    for i in 0..clients.max(1) {
        let op = op.clone();
        set.spawn(async move {
            let mut outcome = Outcome::default();
            let mut n = i;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let result = op.run(n).await;
                outcome.record(result, t0.elapsed());
                n += clients;
            }
            (outcome, Instant::now())
        });
    }
    let mut total = Outcome::default();
    let mut last = started;
    while let Some(joined) = set.join_next().await {
        let (outcome, ended) = joined.context("a client panicked")?;
        total.merge(outcome);
        last = last.max(ended);
    }
    Ok((total, last.duration_since(started)))
}

/// One request every 1/rate seconds for `duration`, each timed from its scheduled start.
async fn open(op: &Op, rate: f64, duration: Duration) -> anyhow::Result<(Outcome, Duration)> {
    if !rate.is_finite() || rate <= 0.0 {
        bail!("--rate must be above 0, got {rate}");
    }
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for n in 0..count {
        let at = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let op = op.clone();
        set.spawn(async move {
            let result = op.run(n).await;
            (result, at.elapsed(), Instant::now())
        });
    }
    let mut total = Outcome::default();
    let mut last = started;
    while let Some(joined) = set.join_next().await {
        let (result, latency, ended) = joined.context("a request panicked")?;
        total.record(result, latency);
        last = last.max(ended);
    }
    Ok((total, last.duration_since(started)))
}

async fn build_op(args: &Args) -> anyhow::Result<Op> {
    match args.target {
        Target::Supervisor => {
            if args.server.is_empty() {
                bail!("--target supervisor needs --server HOST:PORT[,HOST:PORT...]");
            }
            let mut clients = Vec::new();
            for _ in 0..args.connections.max(1) {
                for server in &args.server {
                    let client = Client::connect(server)
                        .await
                        .with_context(|| format!("could not connect to the node at {server}"))?;
                    client.stats().await?;
                    clients.push(client);
                }
            }
            Ok(Op::Supervisor {
                clients: Arc::new(clients),
                provider: args.provider.clone(),
            })
        }
        Target::Http => {
            let Some(base) = &args.url else {
                bail!("--target http needs --url BASE (including /v1)");
            };
            let body = serde_json::json!({
                "model": args.model,
                "messages": [{"role": "user", "content": "Review this diff for bugs."}],
                "max_tokens": 64,
                "stream": true,
                "stream_options": {"include_usage": true},
            });
            Ok(Op::Http {
                client: reqwest::Client::builder()
                    .pool_max_idle_per_host(1024)
                    .tcp_nodelay(true)
                    .build()?,
                url: format!("{}/chat/completions", base.trim_end_matches('/')),
                body: Arc::new(body.to_string()),
            })
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let op = build_op(&args).await?;
    let run = |duration: Duration| {
        let op = op.clone();
        let (clients, rate) = (args.clients, args.rate);
        async move {
            match (clients, rate) {
                (Some(c), None) => closed(&op, c, duration).await,
                (None, Some(r)) => open(&op, r, duration).await,
                _ => bail!("give either --clients (closed loop) or --rate (open loop)"),
            }
        }
    };
    if !args.warmup.is_zero() {
        let (warm, _) = run(args.warmup).await?;
        if warm.failed > 0 {
            bail!(
                "{} warm-up requests failed; the first: {}",
                warm.failed,
                warm.first_error.unwrap_or_default()
            );
        }
    }
    let (outcome, elapsed) = run(args.duration).await?;
    let mut text = String::with_capacity(outcome.latencies.len() * 6);
    for l in &outcome.latencies {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    std::fs::write(&args.samples, text)
        .with_context(|| format!("could not write {}", args.samples.display()))?;
    let ok = outcome.latencies.len();
    let mut phases = serde_json::Map::new();
    if !outcome.phases.is_empty() {
        for name in PHASES {
            let mut v: Vec<f64> = outcome.phases.iter().map(|p| p.get(name)).collect();
            v.sort_by(f64::total_cmp);
            let q = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] / 1e3;
            phases.insert(
                name.to_string(),
                serde_json::json!({"p50": q(0.5), "p99": q(0.99)}),
            );
        }
    }
    let report = serde_json::json!({
        "ok": ok,
        "failed": outcome.failed,
        "first_error": outcome.first_error,
        "elapsed_s": elapsed.as_secs_f64(),
        "throughput_per_s": ok as f64 / elapsed.as_secs_f64().max(1e-9),
        "phases_ms": phases,
    });
    println!("{report}");
    Ok(())
}
