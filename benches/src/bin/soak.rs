//! `soak`: a node under steady load with a short retention period, for minutes: does its
//! disk and memory stay bounded?
//!
//! Runs a real `supervisor up` (release build, embedded store with durable commits, the
//! mock provider at zero latency, `[retention] keep` short) and offers it a steady
//! `--rate` of submits per second (open loop, from one process) for `--duration`.
//! Every `--sample` it records the store file's size, the node's resident memory (RSS)
//! and the tasks the store holds (its status counters). Reports whether the file and the
//! memory stopped growing (the last half of the run against the first half's end), and
//! writes `<out>/<date>-soak.md`, `.json` and `.svg` (the plot).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use supervisor_client::Client;
use supervisor_proto::v1;

#[path = "../node.rs"]
mod node;
#[path = "../utc.rs"]
mod utc;

#[derive(Debug, Parser)]
#[command(about = "A node under steady load with a short retention: disk and memory over time")]
struct Args {
    /// How long the load lasts (default 10m; 90s with --quick).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Submits offered per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// The retention period (default 30s; 5s with --quick).
    #[arg(long, value_parser = humantime::parse_duration)]
    keep: Option<Duration>,
    /// Time between samples (default 5s; 2s with --quick).
    #[arg(long, value_parser = humantime::parse_duration)]
    sample: Option<Duration>,
    /// The `supervisor` binary (default: next to this one).
    #[arg(long)]
    supervisor: Option<PathBuf>,
    /// A short run, results named `...-soak-quick`.
    #[arg(long)]
    quick: bool,
    /// Where to write the results.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

/// Growth of the file or memory over the second half of the load, above which the run
/// reports it as still growing.
const BOUNDED_GROWTH: f64 = 0.10;

/// Resident memory of `pid` in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    at_s: f64,
    file_bytes: u64,
    rss_bytes: u64,
    held: u64,
    submitted: u64,
    finished: u64,
}

/// An SVG line plot of the samples: file size and memory (MiB, left axis) and tasks held
/// (right axis) over time.
fn plot(samples: &[Sample], load_ends_s: f64, title: &str) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 70.0, 70.0, 40.0, 50.0);
    let max_t = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let max_mib = samples
        .iter()
        .map(|s| mib(s.file_bytes).max(mib(s.rss_bytes)))
        .fold(1.0, f64::max)
        * 1.1;
    let max_held = samples.iter().map(|s| s.held).max().unwrap_or(1).max(1) as f64 * 1.1;
    let x = |t: f64| left + (w - left - right) * t / max_t;
    let y = |v: f64, max: f64| h - bottom - (h - top - bottom) * v / max;
    let line = |f: &dyn Fn(&Sample) -> f64, max: f64, color: &str| {
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.at_s), y(f(s), max)))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        )
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">{title}</text>\n"
    );
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0}\" stroke=\"black\"/>\n<line x1=\"{1}\" y1=\"{top}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right
    ));
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{:.0}</text>\n<text x=\"{:.0}\" y=\"{:.0}\">{:.0}</text>\n<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{:.0}s</text>\n",
            left - 6.0,
            y(max_mib * f, max_mib) + 4.0,
            max_mib * f,
            w - right + 6.0,
            y(max_held * f, max_held) + 4.0,
            max_held * f,
            x(max_t * f),
            h - bottom + 18.0,
            max_t * f
        ));
    }
    svg.push_str(&format!(
        "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"gray\" stroke-dasharray=\"4\"/>\n<text x=\"{0:.1}\" y=\"{2}\" fill=\"gray\"> load ends</text>\n",
        x(load_ends_s),
        h - bottom,
        top + 12.0
    ));
    svg.push_str(&line(&|s| mib(s.file_bytes), max_mib, "#1f77b4"));
    svg.push_str(&line(&|s| mib(s.rss_bytes), max_mib, "#d62728"));
    svg.push_str(&line(&|s| s.held as f64, max_held, "#2ca02c"));
    svg.push_str(&format!(
        "\n<text x=\"{left}\" y=\"{0}\" fill=\"#1f77b4\">store file (MiB, left)</text><text x=\"{1}\" y=\"{0}\" fill=\"#d62728\">node RSS (MiB, left)</text><text x=\"{2}\" y=\"{0}\" fill=\"#2ca02c\">tasks held (right)</text>\n</svg>\n",
        h - 8.0,
        left + 200.0,
        left + 400.0
    ));
    svg
}

/// Growth from the sample nearest `from_s` to the last sample before `to_s`.
fn growth(samples: &[Sample], from_s: f64, to_s: f64, f: fn(&Sample) -> u64) -> f64 {
    let at = |t: f64| {
        samples
            .iter()
            .rev()
            .find(|s| s.at_s <= t)
            .or(samples.first())
            .map_or(0, f)
    };
    let (a, b) = (at(from_s), at(to_s));
    if a == 0 {
        return 0.0;
    }
    (b as f64 - a as f64) / a as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = args.duration.unwrap_or(if args.quick {
        Duration::from_secs(90)
    } else {
        Duration::from_secs(600)
    });
    let keep = args.keep.unwrap_or(if args.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    });
    let every = args.sample.unwrap_or(if args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    });
    let bin = node::supervisor_bin(args.supervisor.as_deref())?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("supervisor.redb");
    let keep_text = humantime::format_duration(keep).to_string();
    let node = node::start(
        &bin,
        dir.path(),
        &[],
        &[("SUPERVISOR_RETENTION__KEEP", keep_text)],
    )?;
    let pid = node.child.id();
    let client = Client::connect(&format!("http://{}", node.addr)).await?;

    let submitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let load = {
        let (client, submitted, refused) = (client.clone(), submitted.clone(), refused.clone());
        let rate = args.rate.max(1);
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(512));
            let tick = Duration::from_millis(10);
            let mut next = Instant::now();
            let mut owed = 0.0f64;
            while started.elapsed() < duration {
                next += tick;
                owed += rate as f64 * tick.as_secs_f64();
                while owed >= 1.0 {
                    owed -= 1.0;
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let (client, submitted, refused) =
                        (client.clone(), submitted.clone(), refused.clone());
                    tokio::spawn(async move {
                        let n = submitted.fetch_add(1, Ordering::Relaxed);
                        let result = client
                            .submit(v1::SubmitTaskRequest {
                                r#type: v1::TaskType::Testing as i32,
                                prompt: format!("soak task {n}: check the module for errors"),
                                ..Default::default()
                            })
                            .await;
                        if result.is_err() {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(permit);
                    });
                }
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };

    let mut samples = Vec::new();
    // After the load: long enough for every task to pass its retention period and be swept.
    let tail = keep + Duration::from_secs(10);
    while started.elapsed() < duration + tail {
        tokio::time::sleep(every).await;
        let stats = client.stats().await?;
        let held = stats.queued
            + stats.running
            + stats.retry_wait
            + stats.succeeded
            + stats.failed
            + stats.cancelled;
        let s = Sample {
            at_s: started.elapsed().as_secs_f64(),
            file_bytes: std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
            rss_bytes: rss(pid),
            held,
            submitted: submitted.load(Ordering::Relaxed),
            finished: stats.succeeded + stats.failed + stats.cancelled,
        };
        eprintln!("{s:?}");
        samples.push(s);
    }
    load.await?;
    let store = client.store_stats().await?;
    drop(node);

    let load_s = duration.as_secs_f64();
    let file_growth = growth(&samples, load_s / 2.0, load_s, |s| s.file_bytes);
    let rss_growth = growth(&samples, load_s / 2.0, load_s, |s| s.rss_bytes);
    let offered = submitted.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let max_file = samples.iter().map(|s| s.file_bytes).max().unwrap_or(0);
    let max_rss = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    let max_held = samples.iter().map(|s| s.held).max().unwrap_or(0);
    let bounded = |g: f64| {
        if g <= BOUNDED_GROWTH {
            "bounded"
        } else {
            "still growing"
        }
    };
    let (date, time) = utc::now();
    let stem = if args.quick {
        format!("{date}-soak-quick")
    } else {
        format!("{date}-soak")
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let md = format!(
        "# Soak: steady load with a short retention ({date} {time} UTC)\n\n\
         `soak` (benches/src/bin/soak.rs): a release `supervisor up` on the embedded store (durable commits), the mock provider at zero latency, `[retention] keep = \"{keep}\"`; {rate} submits/s offered for {dur} (open loop), sampled every {every}; then {tail} more so the last tasks pass their period.\n\n\
         ![soak]({stem}.svg)\n\n\
         | | |\n|---|---|\n\
         | submits offered / refused | {offered} / {refused} |\n\
         | tasks accepted (held by the store at the end) | {accepted} ({held_end}) |\n\
         | most tasks held at once | {max_held} |\n\
         | store file: largest / at the end | {max_file:.1} MiB / {end_file:.1} MiB ({end_free:.1} MiB of it free) |\n\
         | store file growth over the load's second half | {fg:+.1}% ({fgv}) |\n\
         | node RSS: largest | {max_rss:.1} MiB |\n\
         | node RSS growth over the load's second half | {rg:+.1}% ({rgv}) |\n\n\
         Without retention the store would hold all {accepted} tasks (see the footprint report for bytes per task).\n",
        accepted = offered - refused,
        keep = humantime::format_duration(keep),
        rate = args.rate,
        dur = humantime::format_duration(duration),
        every = humantime::format_duration(every),
        tail = humantime::format_duration(tail),
        held_end = samples.last().map_or(0, |s| s.held),
        max_file = mib(max_file),
        end_file = mib(store.file_bytes),
        end_free = mib(store.free_bytes),
        fg = file_growth * 100.0,
        fgv = bounded(file_growth),
        max_rss = mib(max_rss),
        rg = rss_growth * 100.0,
        rgv = bounded(rss_growth),
    );
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        args.out.join(format!("{stem}.svg")),
        plot(
            &samples,
            load_s,
            &format!(
                "soak: {} submits/s, keep {}",
                args.rate,
                humantime::format_duration(keep)
            ),
        ),
    )?;
    std::fs::write(
        args.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&json!({
            "date": date, "time": time, "rate": args.rate, "duration_s": load_s,
            "keep_s": keep.as_secs_f64(), "offered": offered, "refused": refused,
            "file_growth": file_growth, "rss_growth": rss_growth, "samples": samples,
        }))?,
    )?;
    println!("{md}");
    Ok(())
}
