//! `supervisor analytics` and `supervisor stats` against a real node process (embedded
//! store, mock providers): a mix of tasks that succeed, fail and are cancelled adds up
//! exactly in the summary, per provider, in the trend and in today's stats, and `task get`
//! shows a prediction once tasks have finished.

mod common;

use std::time::{Duration, Instant};

use common::{NodeProcess, cli};
use serde_json::Value;

/// Guard against hangs only.
const PATIENCE: Duration = Duration::from_secs(120);

/// Three mock providers: `mock` succeeds at once (100 tokens in, 50 out, at $1 per
/// million tokens: 150 micros an attempt), `flaky` always fails (with a breaker that never
/// opens), `slow` takes a minute.
const CONFIG: &str = r#"
[providers.mock]
kind = "mock"
input_tokens = 100
output_tokens = 50
price_micros_per_mtok = 1000000

[providers.flaky]
kind = "mock"
failure_rate = 1.0

[providers.flaky.limits]
breaker_failures = 1000

[providers.slow]
kind = "mock"
latency = "60s"
"#;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Runs the CLI; returns stdout, failing on an exit code not in `ok`.
fn run(addr: &str, args: &[&str], ok: &[i32]) -> String {
    let (code, out, err) = cli(addr, args);
    assert!(ok.contains(&code), "{args:?} exited {code}: {err}{out}");
    out
}

/// Submits a task routed to `provider` only (the others excluded) and waits for it.
fn submit(addr: &str, provider: &str, wait: bool) -> String {
    let mut args = vec![
        "task",
        "submit",
        "--type",
        "bug_fix",
        "--prompt",
        "fix the flaky retry test",
        "--max-attempts",
        "1",
        "--output",
        "json",
    ];
    for other in ["mock", "flaky", "slow"] {
        if other != provider {
            args.extend(["--exclude", other]);
        }
    }
    if wait {
        args.push("--wait");
    }
    // --wait exits 3 when the task failed.
    let out = run(addr, &args, &[0, 3]);
    json(&out)["id"].as_str().expect("task id").to_string()
}

fn stat(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn a_mix_of_outcomes_adds_up_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("supervisor.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let config = config.to_string_lossy().into_owned();
    let node = NodeProcess::start(&dir.path().join("data"), &[("SUPERVISOR_CONFIG", &config)]);
    let addr = node.addr.as_str();

    let done = submit(addr, "mock", true);
    for _ in 0..2 {
        submit(addr, "mock", true);
        submit(addr, "flaky", true);
    }
    let slow = submit(addr, "slow", false);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let task = json(&run(
            addr,
            &["task", "get", &slow, "--output", "json"],
            &[0],
        ));
        if task["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the slow task never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    run(addr, &["task", "cancel", &slow], &[0]);

    let summary = json(&run(
        addr,
        &["analytics", "summary", "--since", "1h", "--output", "json"],
        &[0],
    ));
    let total = &summary["total"];
    assert_eq!(stat(total, "finished"), 6, "{summary}");
    assert_eq!(stat(total, "succeeded"), 3, "{summary}");
    assert_eq!(stat(total, "failed"), 2, "{summary}");
    assert_eq!(stat(total, "cancelled"), 1, "{summary}");
    assert_eq!(total["success_rate"].as_f64(), Some(0.6), "{summary}");
    assert_eq!(stat(total, "attempts"), 6, "{summary}");
    assert_eq!(stat(total, "input_tokens"), 300, "{summary}");
    assert_eq!(stat(total, "output_tokens"), 150, "{summary}");
    assert_eq!(stat(total, "cost_micros"), 450, "{summary}");

    // Per provider: the cancelled task reached none.
    let by = json(&run(
        addr,
        &[
            "analytics",
            "summary",
            "--since",
            "1h",
            "--by",
            "provider",
            "--output",
            "json",
        ],
        &[0],
    ));
    let groups: Vec<(String, u64, u64, u64, u64)> = by["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let s = &g["stats"];
            (
                g["provider"].as_str().expect("provider").to_string(),
                stat(s, "finished"),
                stat(s, "succeeded"),
                stat(s, "failed"),
                stat(s, "cancelled"),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("mock".to_string(), 3, 3, 0, 0),
            ("flaky".to_string(), 2, 0, 2, 0),
            (String::new(), 1, 0, 0, 1),
        ]
    );
    let text = run(
        addr,
        &["analytics", "summary", "--since", "1h", "--by", "provider"],
        &[0],
    );
    assert!(
        text.contains("PROVIDER") && text.contains("flaky"),
        "{text}"
    );
    assert!(text.contains("60.0%"), "{text}");

    // Minute by minute, the same six.
    let trend = json(&run(
        addr,
        &[
            "analytics",
            "trend",
            "--since",
            "30m",
            "--every",
            "minute",
            "--output",
            "json",
        ],
        &[0],
    ));
    let points = trend["points"].as_array().expect("points");
    assert!(points.len() >= 30, "{trend}");
    let finished: u64 = points.iter().map(|p| stat(&p["stats"], "finished")).sum();
    assert_eq!(finished, 6, "{trend}");

    // Today's stats count them too (unless the day turned during the test).
    let stats = json(&run(addr, &["stats", "--output", "json"], &[0]));
    let secs_today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 86_400);
    if secs_today > PATIENCE.as_secs() * 2 {
        assert_eq!(stat(&stats["total"], "finished"), 6, "{stats}");
    }
    let text = run(addr, &["stats"], &[0]);
    assert!(
        text.contains("6 (3 succeeded, 2 failed, 1 cancelled)"),
        "{text}"
    );

    // Once the finished tasks are learnt from, `task get` predicts.
    let deadline = Instant::now() + PATIENCE;
    let prediction = loop {
        let task = json(&run(
            addr,
            &["task", "get", &done, "--output", "json"],
            &[0],
        ));
        if !task["prediction"].is_null() {
            break task["prediction"].clone();
        }
        assert!(Instant::now() < deadline, "no prediction: {task}");
        std::thread::sleep(Duration::from_millis(500));
    };
    // The predictor may have learnt from the first tasks only (`--wait` reads the task,
    // which trains it; it is trained again every 5 minutes).
    let based_on = stat(&prediction, "based_on");
    assert!((1..=6).contains(&based_on), "{prediction}");
    let p = prediction["failure_probability"]
        .as_f64()
        .expect("probability");
    assert!(p > 0.0 && p < 1.0, "{prediction}");
    let text = run(addr, &["task", "get", &done], &[0]);
    assert!(text.contains("predicted:"), "{text}");
    let hypothetical = json(&run(
        addr,
        &[
            "analytics",
            "predict",
            "--type",
            "bug_fix",
            "--prompt-bytes",
            "30",
            "--output",
            "json",
        ],
        &[0],
    ));
    assert_eq!(stat(&hypothetical, "based_on"), based_on, "{hypothetical}");
}
