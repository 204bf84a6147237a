//! `footprint`: what a finished task costs on disk.
//!
//! Runs a real `supervisor up` (release build, the mock provider at zero latency,
//! retention off so nothing is deleted) on a fresh store, submits `--tasks` tasks from 64
//! gRPC clients, waits until every one has succeeded, and measures the store:
//!
//! - embedded: the node is stopped, then the file's size, the bytes its pages hold
//!   (redb's page accounting) and, per key family (`task`, `ev`, `ix`, ...), the keys and
//!   bytes each task left; then the file is compacted and measured again;
//! - PostgreSQL (`--postgres URL` of a server the bench may create databases on): the
//!   tables' total size (heap, indexes, TOAST) as the server reports it, and again after
//!   `VACUUM FULL`.
//!
//! Each store runs once with the mock's own output (~200 bytes, a no-op task) and once
//! padded to 10 KB (`providers.mock.output_bytes`). Writes `<out>/<date>-footprint.md`
//! and `.json` (`-quick` with `--quick`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use serde_json::{Value, json};
use supervisor_client::Client;
use supervisor_proto::v1;
use supervisor_store::embedded::{EmbeddedOptions, EmbeddedStore};

#[path = "../node.rs"]
mod node;
#[path = "../utc.rs"]
mod utc;

#[derive(Debug, Parser)]
#[command(about = "Bytes on disk per finished task, embedded and PostgreSQL")]
struct Args {
    /// Tasks per run (default 20,000; 2,000 with --quick).
    #[arg(long)]
    tasks: Option<usize>,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Also measure PostgreSQL: a URL whose user may create databases
    /// (postgres://postgres@127.0.0.1:5432/postgres); each run gets a fresh database.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// The `supervisor` binary (default: next to this one).
    #[arg(long)]
    supervisor: Option<PathBuf>,
    /// A smoke run: few tasks, results named `...-footprint-quick`.
    #[arg(long)]
    quick: bool,
    /// Where to write the results (markdown and JSON).
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

/// Output sizes measured: the mock's own (a no-op task) and 10 KB.
const OUTPUTS: &[u64] = &[0, 10 * 1024];

/// The aim of the data-lifecycle issue for a no-op task on the embedded store.
const AIM_NOOP_EMBEDDED: f64 = 1536.0;

fn start_node(
    bin: &Path,
    data_dir: &Path,
    store: Option<&str>,
    output_bytes: u64,
) -> anyhow::Result<node::Node> {
    let mut env = vec![
        ("SUPERVISOR_RETENTION__KEEP", "0".to_string()),
        (
            "SUPERVISOR_PROVIDERS__MOCK__OUTPUT_BYTES",
            output_bytes.to_string(),
        ),
    ];
    let mut args = Vec::new();
    if let Some(url) = store {
        args = vec!["--store", url, "--join", "--node-id", "footprint"];
        env.push(("SUPERVISOR_CLUSTER__COOKIE", "footprint".to_string()));
    }
    node::start(bin, data_dir, &args, &env)
}

/// Submits `tasks` tasks from `clients` clients and waits until all have succeeded.
async fn run_tasks(addr: &str, tasks: usize, clients: usize) -> anyhow::Result<()> {
    let client = Client::connect(&format!("http://{addr}")).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (client, next) = (client.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tasks {
                    return Ok::<_, anyhow::Error>(());
                }
                client
                    .submit(v1::SubmitTaskRequest {
                        r#type: v1::TaskType::Testing as i32,
                        prompt: format!("footprint task {i}: check the module for errors"),
                        ..Default::default()
                    })
                    .await?;
            }
        }));
    }
    for h in handles {
        h.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = client.stats().await?;
        if s.succeeded as usize >= tasks {
            return Ok(());
        }
        ensure!(s.failed + s.cancelled == 0, "tasks failed: {s:?}");
        ensure!(
            Instant::now() < deadline,
            "tasks did not finish within 10 minutes: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The family of a key: the first element after the engine's root, `("sv", family, ...)`
/// in the tuple encoding (a string is 0x02, its bytes, 0x00).
fn family(key: &[u8]) -> String {
    let rest = key.strip_prefix(b"\x02sv\x00\x02").unwrap_or(key);
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

/// Keys and bytes per family in a stopped node's embedded store, and its space figures.
async fn measure_embedded(path: &Path) -> anyhow::Result<Value> {
    let store = EmbeddedStore::open(path, EmbeddedOptions::default())?;
    let space = store.space()?;
    let db = supervisor_store::Db::new(store);
    let mut families: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut txn = db.begin().await?;
    let mut begin = Vec::new();
    loop {
        let page = txn
            .get_range(
                &begin,
                &[0xff],
                supervisor_store::RangeOptions::new()
                    .limit(10_000)
                    .snapshot(),
            )
            .await?;
        let Some(last) = page.last() else { break };
        begin = supervisor_store::keys::key_after(&last.key);
        for kv in &page {
            let f = families.entry(family(&kv.key)).or_default();
            f.0 += 1;
            f.1 += kv.key.len() as u64;
            f.2 += kv.value.len() as u64;
        }
    }
    drop(txn);
    drop(db);
    let compaction = supervisor_store::embedded::compact(path)?;
    Ok(json!({
        "file_bytes": space.file_bytes,
        "allocated_bytes": space.allocated_bytes,
        "stored_bytes": space.stored_bytes,
        "metadata_bytes": space.metadata_bytes,
        "fragmented_bytes": space.fragmented_bytes,
        "compacted_file_bytes": compaction.after_bytes,
        "families": families.iter().map(|(name, (keys, kb, vb))| json!({
            "family": name, "keys": keys, "key_bytes": kb, "value_bytes": vb,
        })).collect::<Vec<_>>(),
    }))
}

fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .context("running psql (install the PostgreSQL client)")?;
    ensure!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The URL of database `name` on the server of `admin`.
fn database_url(admin: &str, name: &str) -> String {
    match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => format!("{admin}/{name}"),
    }
}

const PG_SIZE: &str = "select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'r'";

fn measure_postgres(url: &str) -> anyhow::Result<Value> {
    let total: u64 = psql(url, PG_SIZE)?.parse()?;
    let tables = psql(
        url,
        "select string_agg(c.relname || '=' || pg_total_relation_size(c.oid), ',' order by c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'r'",
    )?;
    psql(url, "vacuum full")?;
    let vacuumed: u64 = psql(url, PG_SIZE)?.parse()?;
    Ok(json!({ "total_bytes": total, "tables": tables, "vacuumed_bytes": vacuumed }))
}

fn per_task(bytes: &Value, tasks: usize) -> f64 {
    bytes.as_u64().unwrap_or(0) as f64 / tasks as f64
}

fn report(runs: &[Value], tasks: usize, date: &str, time: &str) -> String {
    let mut md = format!(
        "# Bytes on disk per finished task ({date} {time} UTC)\n\n\
         `footprint` (benches/src/bin/footprint.rs): a release `supervisor up`, the mock provider at zero latency, retention off; {tasks} tasks submitted by 64 gRPC clients, all succeeded, then the store is measured. A no-op task is the mock's own output (~200 bytes); the other is padded to 10 KB with repetitive filler lines, which zstd shrinks about 30 times (real model output shrinks 3 to 4 times, so expect a few KB more per task than measured here). Per task = measure / tasks. PostgreSQL: the tables' total size (heap, indexes, TOAST, with the dead rows autovacuum has not yet removed), and after `VACUUM FULL`; `supervisor_kv` is kept at fillfactor 50 (docs/cluster.md).\n\n\
         | store | output | file per task | in pages per task | data per task | after compaction / VACUUM FULL per task |\n|---|---|---|---|---|---|\n"
    );
    for r in runs {
        let m = &r["measure"];
        let output = match r["output_bytes"].as_u64() {
            Some(0) => "no-op (~200 B)".to_string(),
            Some(n) => format!("{} KB", n / 1024),
            None => String::new(),
        };
        if r["store"] == "embedded" {
            md.push_str(&format!(
                "| embedded | {output} | {:.0} B | {:.0} B | {:.0} B | {:.0} B |\n",
                per_task(&m["file_bytes"], tasks),
                per_task(&m["allocated_bytes"], tasks),
                per_task(&m["stored_bytes"], tasks),
                per_task(&m["compacted_file_bytes"], tasks),
            ));
        } else {
            md.push_str(&format!(
                "| PostgreSQL | {output} | {:.0} B | | | {:.0} B |\n",
                per_task(&m["total_bytes"], tasks),
                per_task(&m["vacuumed_bytes"], tasks),
            ));
        }
    }
    if let Some(noop) = runs
        .iter()
        .find(|r| r["store"] == "embedded" && r["output_bytes"] == 0)
    {
        let compacted = per_task(&noop["measure"]["compacted_file_bytes"], tasks);
        md.push_str(&format!(
            "\nAim (issue 17): at most {AIM_NOOP_EMBEDDED:.0} B per no-op task on the embedded store: {} ({compacted:.0} B after compaction, {:.0} B in the live file).\n",
            if compacted <= AIM_NOOP_EMBEDDED { "met" } else { "not met" },
            per_task(&noop["measure"]["file_bytes"], tasks),
        ));
    }
    for r in runs.iter().filter(|r| r["store"] == "embedded") {
        md.push_str(&format!(
            "\n## Where the bytes go: embedded, output {} bytes padded\n\n| key family | keys per task | key bytes per task | value bytes per task |\n|---|---|---|---|\n",
            r["output_bytes"]
        ));
        if let Some(families) = r["measure"]["families"].as_array() {
            for f in families {
                md.push_str(&format!(
                    "| `{}` | {:.2} | {:.0} | {:.0} |\n",
                    f["family"].as_str().unwrap_or(""),
                    per_task(&f["keys"], tasks),
                    per_task(&f["key_bytes"], tasks),
                    per_task(&f["value_bytes"], tasks),
                ));
            }
        }
    }
    for r in runs.iter().filter(|r| r["store"] == "postgres") {
        md.push_str(&format!(
            "\nPostgreSQL tables, output {} bytes padded (bytes, before VACUUM FULL): {}\n",
            r["output_bytes"],
            r["measure"]["tables"].as_str().unwrap_or("")
        ));
    }
    md
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tasks = args
        .tasks
        .unwrap_or(if args.quick { 2_000 } else { 20_000 });
    let bin = node::supervisor_bin(args.supervisor.as_deref())?;
    let mut runs = Vec::new();
    for &output in OUTPUTS {
        let dir = tempfile::tempdir()?;
        let node = start_node(&bin, dir.path(), None, output)?;
        run_tasks(&node.addr, tasks, args.clients).await?;
        node::stop(node)?;
        let measure = measure_embedded(&dir.path().join("supervisor.redb")).await?;
        eprintln!("embedded, output {output}: {measure}");
        runs.push(json!({"store": "embedded", "output_bytes": output, "measure": measure}));
        if let Some(admin) = &args.postgres {
            let name = format!("footprint_{output}_{}", std::process::id());
            psql(admin, &format!("create database {name}"))?;
            let url = database_url(admin, &name);
            let init = Command::new(&bin)
                .args(["store", "init", "--store", &url])
                .output()?;
            ensure!(
                init.status.success(),
                "store init: {}",
                String::from_utf8_lossy(&init.stderr)
            );
            let pg_dir = tempfile::tempdir()?;
            let node = start_node(&bin, pg_dir.path(), Some(&url), output)?;
            run_tasks(&node.addr, tasks, args.clients).await?;
            node::stop(node)?;
            let measure = measure_postgres(&url)?;
            eprintln!("postgres, output {output}: {measure}");
            runs.push(json!({"store": "postgres", "output_bytes": output, "measure": measure}));
            psql(admin, &format!("drop database {name}"))?;
        }
    }
    let (date, time) = utc::now();
    let stem = if args.quick {
        format!("{date}-footprint-quick")
    } else {
        format!("{date}-footprint")
    };
    std::fs::create_dir_all(&args.out)?;
    let md = report(&runs, tasks, &date, &time);
    std::fs::write(args.out.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        args.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(
            &json!({"date": date, "time": time, "tasks": tasks, "runs": runs}),
        )?,
    )?;
    println!("{md}");
    Ok(())
}
