//! The Rust SDK's examples (`crates/supervisor-client/examples`) run as their users would
//! run them, against a real `supervisor up` process serving the mock provider: what they
//! print is checked against what the node recorded.
//!
//! `cargo test --workspace` builds the examples; alone, this test needs them built first
//! (`cargo build -p supervisor-client --examples`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_client::{Client, v1};

use common::NodeProcess;

/// How long an example may take before the test gives up on it.
const EXAMPLE_DEADLINE: Duration = Duration::from_secs(120);

/// A node whose mock provider answers quickly.
fn start_node(dir: &Path) -> NodeProcess {
    NodeProcess::start(dir, &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "50ms")])
}

/// The built example `name`: beside the `supervisor` binary, in `examples/`.
fn example_path(name: &str) -> PathBuf {
    let supervisor = Path::new(env!("CARGO_BIN_EXE_supervisor"));
    let dir = supervisor
        .parent()
        .expect("the supervisor binary is in a directory");
    let path = dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "the SDK example {name} is not built (no {}); build them with \
         cargo build -p supervisor-client --examples",
        path.display()
    );
    path
}

/// What an example printed and how it exited.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs example `name` with `args` and extra environment (and none of the caller's
/// `SUPERVISOR_*` client settings), killing it after [`EXAMPLE_DEADLINE`].
fn run_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(example_path(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "SUPERVISOR_SERVER",
        "SUPERVISOR_TOKEN",
        "SUPERVISOR_TOKEN_FILE",
        "SUPERVISOR_CA_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("start the example");
    let deadline = Instant::now() + EXAMPLE_DEADLINE;
    while child.try_wait().expect("poll the example").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the example {name} did not end within {EXAMPLE_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("the example's output");
    let output = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "--- {name} {args:?} exited {:?}\n{}{}",
        output.code, output.stdout, output.stderr
    );
    output
}

/// Runs an example off the async runtime (it blocks until the example ends).
async fn run_example_async(
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_example(name, &args, &env)
    })
    .await
    .expect("the example's runner")
}

/// The text after `prefix` on the first line starting with it.
fn line_after<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
}

async fn connect(node: &NodeProcess) -> Client {
    Client::connect(&node.url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_prints_the_task_it_submitted_and_its_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start_node(dir.path());
    let out = run_example_async(
        "submit_and_wait",
        vec!["Fix".into(), "the pager".into()],
        vec![("SUPERVISOR_SERVER".into(), node.addr.clone())],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let id = line_after(&out.stdout, "submitted task ").trim();
    assert_eq!(
        line_after(&out.stdout, "task ").trim(),
        format!("{id} ended SUCCEEDED")
    );
    let task = connect(&node).await.get(id).await.expect("the task exists");
    assert_eq!(task.status(), v1::TaskStatus::Succeeded);
    assert_eq!(task.prompt, "Fix the pager");
    let result = task.result.expect("a succeeded task has a result");
    assert!(
        result.output.contains("[mock provider] bug_fix"),
        "{}",
        result.output
    );
    let printed = out
        .stdout
        .split_once("output:\n")
        .map(|(_, output)| output)
        .expect("the output is printed");
    assert_eq!(printed.trim_end(), result.output.trim_end());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_every_event_in_order_ending_with_the_terminal_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start_node(dir.path());
    let out = run_example_async(
        "watch",
        vec!["Review".into(), "it".into()],
        vec![("SUPERVISOR_SERVER".into(), node.addr.clone())],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let id = line_after(&out.stdout, "submitted task ").trim().to_owned();
    // `event <seq> <TYPE> status=<STATUS> ...`
    let printed: Vec<(u64, String)> = out
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("event "))
        .map(|rest| {
            let mut words = rest.split(' ');
            let seq = words
                .next()
                .and_then(|s| s.parse().ok())
                .expect("a sequence number");
            let kind = words.next().expect("an event type").to_owned();
            (seq, kind)
        })
        .collect();
    assert!(!printed.is_empty(), "no events printed:\n{}", out.stdout);
    let seqs: Vec<u64> = printed.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=printed.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        printed.first().map(|(_, kind)| kind.as_str()),
        Some("SUBMITTED")
    );
    assert_eq!(
        printed.last().map(|(_, kind)| kind.as_str()),
        Some("SUCCEEDED")
    );
    assert_eq!(
        line_after(&out.stdout, "task ").trim(),
        format!("{id} ended SUCCEEDED")
    );

    // The same events as the node's log holds, none missing.
    use futures::StreamExt as _;
    let logged: Vec<(u64, String)> = connect(&node)
        .await
        .watch(&id, 0)
        .map(|event| {
            let event = event.expect("an event");
            let kind = event
                .r#type()
                .as_str_name()
                .trim_start_matches("TASK_EVENT_TYPE_");
            (event.seq, kind.to_owned())
        })
        .collect()
        .await;
    assert_eq!(printed, logged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_runs_the_inline_definition_and_a_file_printing_each_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start_node(dir.path());
    let client = connect(&node).await;

    // Without a file: the example's own three-step definition.
    let out = run_example_async(
        "workflow",
        vec![],
        vec![("SUPERVISOR_SERVER".into(), node.addr.clone())],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_steps_succeeded(&client, &out.stdout, &["analyse", "fix", "test"]).await;

    // A definition file, with a variable overridden.
    let file = dir.path().join("two-steps.yaml");
    std::fs::write(
        &file,
        r#"
name: two-steps
vars: { topic: retries }
steps:
  - id: plan
    task: { type: code_analysis, prompt: "Plan the work on {{ vars.topic }}" }
  - id: write
    needs: [plan]
    task: { type: documentation, prompt: "Document: {{ steps.plan.output }}" }
"#,
    )
    .expect("write the definition");
    let out = run_example_async(
        "workflow",
        vec![
            "--var".into(),
            "topic=backoff".into(),
            file.display().to_string(),
        ],
        vec![("SUPERVISOR_SERVER".into(), node.addr.clone())],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let run = assert_steps_succeeded(&client, &out.stdout, &["plan", "write"]).await;
    assert_eq!(run.name, "two-steps");
    assert_eq!(run.vars.get("topic").map(String::as_str), Some("backoff"));
}

/// Checks that `stdout` reports a run that succeeded with `steps` all succeeded, as the
/// node has it; returns the run.
async fn assert_steps_succeeded(client: &Client, stdout: &str, steps: &[&str]) -> v1::WorkflowRun {
    let submitted = line_after(stdout, "submitted run ");
    let id = submitted.split(' ').next().expect("a run id");
    assert_eq!(
        line_after(stdout, "run ").trim(),
        format!("{id} ended SUCCEEDED")
    );
    let run = client.get_workflow(id).await.expect("the run exists");
    assert_eq!(run.status(), v1::RunStatus::Succeeded);
    for step in steps {
        let line = line_after(stdout, &format!("step {step} "));
        let recorded = run
            .steps
            .iter()
            .find(|s| s.id == *step)
            .unwrap_or_else(|| panic!("the run has no step {step}"));
        assert_eq!(recorded.state, "succeeded");
        assert!(
            line.starts_with(&format!("succeeded task={}", recorded.task_id)),
            "step {step}: {line}"
        );
    }
    let printed = stdout.lines().filter(|l| l.starts_with("step ")).count();
    assert_eq!(printed, steps.len(), "{stdout}");
    run
}

#[test]
fn examples_fail_with_a_clear_message_when_no_server_answers() {
    for name in ["submit_and_wait", "watch", "workflow"] {
        // Port 1 on loopback: nothing listens there in the test environment.
        let out = run_example(name, &[], &[("SUPERVISOR_SERVER", "127.0.0.1:1")]);
        assert_eq!(out.code, Some(2), "{name}: {}", out.stderr);
        assert!(
            out.stderr.starts_with(&format!(
                "{name}: could not connect to Supervisor at http://127.0.0.1:1"
            )),
            "{name}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("is `supervisor up` running?"),
            "{}",
            out.stderr
        );
    }
    let out = run_example("workflow", &["--bogus"], &[]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("unknown option --bogus"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("usage: workflow"), "{}", out.stderr);
}
