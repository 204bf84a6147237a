//! Provider plugins with the Python sample (examples/plugins/python): it passes the
//! conformance checks, a node starts it and runs tasks on it, restarts it when it
//! crashes (tasks caught by the crash are retried), and stops it with its children when
//! the node stops or dies.
//!
//! The sample needs grpcio and grpcio-tools: target/py-venv (scripts/py-env), or the
//! interpreter $SUPERVISOR_PLUGIN_PYTHON names.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{NodeProcess, supervisor};
use supervisor_client::{Client, v1};

/// Bound on waits (a guard only; no assertion depends on how long anything took).
const PATIENCE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    let path = std::env::var("SUPERVISOR_PLUGIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/py-venv/bin/python"));
    assert!(
        path.exists(),
        "no Python with grpcio-tools at {}: run scripts/py-env, or set SUPERVISOR_PLUGIN_PYTHON",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

fn sample() -> String {
    repo()
        .join("examples/plugins/python/run")
        .to_string_lossy()
        .into_owned()
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
        return Vec::new();
    };
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `pid` and every process under it.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children(all[i]));
        i += 1;
    }
    all
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for this purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// The pid the node reports for the plugin's process ("...; pid N at 127.0.0.1:P, ...";
/// the plugin's own description may name a pid of its PID namespace before it).
async fn plugin_pid(client: &Client) -> Option<u32> {
    let providers = client.providers().await.ok()?;
    let plans = providers.iter().find(|p| p.name == "plans")?;
    plans.health_detail.split("pid ").skip(1).find_map(|rest| {
        let (digits, after) = rest.split_once(' ')?;
        after.starts_with("at ").then(|| digits.parse().ok())?
    })
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit_and_wait(client: &Client, n: usize, prompt: &str) -> Vec<v1::Task> {
    let mut ids = Vec::new();
    for i in 0..n {
        let t = client
            .submit(v1::SubmitTaskRequest {
                r#type: v1::TaskType::BugFix as i32,
                prompt: format!("{prompt} {i}"),
                ..Default::default()
            })
            .await
            .expect("submit");
        ids.push(t.id);
    }
    let mut done = Vec::new();
    for id in ids {
        let task = tokio::time::timeout(PATIENCE, client.wait(&id))
            .await
            .expect("the task ends")
            .expect("wait");
        done.push(task);
    }
    done
}

#[test]
fn the_python_sample_passes_the_conformance_checks() {
    let python = python();
    let (code, out, err) = supervisor(
        &["plugin", "check", "--", &sample()],
        &[("PYTHON", python.as_str())],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    for name in [
        "capabilities",
        "health",
        "execute",
        "cancel",
        "cancel of an unknown execution",
        "unknown task type",
        "two at once",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "check {name} did not pass:\n{out}"
        );
    }
}

#[test]
fn the_checks_fail_a_plugin_that_breaks_the_contract() {
    // Not a plugin at all: something that listens and answers no gRPC.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            drop(stream);
        }
    });
    let (code, out, err) = supervisor(&["plugin", "check", "--address", &address], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("FAIL") || err.contains("could not connect"),
        "{out}\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_tasks_on_the_plugin_and_restarts_it_when_it_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("supervisor.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.plans]\nkind = \"plugin\"\ncommand = [{:?}]\nmax_restart_backoff = \"1s\"\n[providers.plans.env]\nPYTHON = {:?}\nPLUGIN_DELAY = \"0.1\"\n",
            sample(),
            python()
        ),
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    let mut node = NodeProcess::start(
        &dir.path().join("data"),
        &[("SUPERVISOR_CONFIG", config.as_str())],
    );
    let client = Client::connect(&node.url()).await.expect("connect");

    // Tasks run on the plugin: routed to it, streamed, accounted.
    let done = submit_and_wait(&client, 4, "fix the flaky retry").await;
    for task in &done {
        assert_eq!(task.status, v1::TaskStatus::Succeeded as i32, "{task:?}");
        let output = task
            .result
            .as_ref()
            .map(|r| r.output.as_str())
            .unwrap_or_default();
        assert!(output.contains("[python plugin] bug fix"), "{output}");
        let last = task.attempts.last().expect("an attempt");
        assert_eq!(last.provider, "plans");
        assert_eq!(last.model, "plan-writer-1");
        assert!(
            last.usage.as_ref().is_some_and(|u| u.output_tokens > 0),
            "{last:?}"
        );
    }

    // The plugin crashes: the node starts it again, and tasks go on.
    let shim = wait_for("the node reports the plugin's pid", || plugin_pid(&client)).await;
    let before = tree(shim);
    let python_pid = *before.last().expect("a process");
    assert!(
        before.len() >= 2,
        "the plugin runs under its confining process: {before:?}"
    );
    // Tasks running when it crashes (each takes a couple of seconds of streamed words).
    let mut caught = Vec::new();
    for i in 0..3 {
        let t = client
            .submit(v1::SubmitTaskRequest {
                r#type: v1::TaskType::BugFix as i32,
                prompt: format!("caught by the crash {i}"),
                ..Default::default()
            })
            .await
            .expect("submit");
        caught.push(t.id);
    }
    wait_for("the tasks run on the plugin", || async {
        let stats = client.stats().await.ok()?;
        (stats.running >= 1).then_some(())
    })
    .await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(python_pid as i32, libc::SIGKILL);
    }
    let during = submit_and_wait(&client, 2, "during the restart").await;
    for task in &during {
        assert_eq!(task.status, v1::TaskStatus::Succeeded as i32, "{task:?}");
    }
    // The attempts the crash cut short failed as retryable and ran again.
    let mut retried = 0;
    for id in &caught {
        let task = tokio::time::timeout(PATIENCE, client.wait(id))
            .await
            .expect("the task ends")
            .expect("wait");
        assert_eq!(task.status, v1::TaskStatus::Succeeded as i32, "{task:?}");
        retried += usize::from(task.attempts.len() > 1);
    }
    assert!(
        retried >= 1,
        "no running attempt was cut short by the crash"
    );
    let again = wait_for("the plugin is running again", || async {
        let pid = plugin_pid(&client).await?;
        (pid != shim).then_some(pid)
    })
    .await;
    let providers = client.providers().await.expect("providers");
    let plans = providers.iter().find(|p| p.name == "plans").expect("plans");
    assert!(
        plans.health_detail.contains("started 2 time(s)"),
        "{}",
        plans.health_detail
    );
    for pid in &before {
        assert!(
            !alive(*pid),
            "process {pid} of the crashed plugin is still alive"
        );
    }

    // The node dies: the plugin and everything under it die with it.
    let after = tree(again);
    node.kill9();
    wait_for("the plugin's processes end with the node", || async {
        after.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
}
