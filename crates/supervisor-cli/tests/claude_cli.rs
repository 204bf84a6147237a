//! A node configured with the claude_cli provider (pointed at a fake CLI). The fake starts
//! two tools the way a real agent's Bash tool may: one in the background and one in a
//! session of its own (`setsid`), which a process group kill would miss. Whatever ends
//! the attempt (a cancel, its time limit, the node draining on SIGINT, the node killed
//! with `kill -9`), none of them survives, and a node restarted after `kill -9` removes
//! the workspace its dead predecessor left.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use supervisor_client::Client;
use supervisor_proto::v1;

use common::{NodeProcess, fake_cli_config};

/// Guard against hangs only; no assertion depends on how long anything took.
const PATIENCE: Duration = Duration::from_secs(60);

/// Pids of live (not zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until no process carries `marker`.
async fn all_gone(marker: &str, after: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes {left:?} of the attempt outlived {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A marker no other test's processes carry: `sleep 300.<marker>`.
fn marker() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn node_with_fake_cli(dir: &Path, script: &str) -> NodeProcess {
    let config = fake_cli_config(dir, script);
    let config = config.display().to_string();
    NodeProcess::start(&dir.join("data"), &[("SUPERVISOR_CONFIG", config.as_str())])
}

/// A fake CLI that starts `sleep 300.<marker>` twice (once in its own session) and waits;
/// it marks `<dir>/started` when they run. With `once`, a second run (after a restart)
/// answers at once instead.
fn lingering_cli(dir: &Path, marker: &str, once: bool) -> String {
    let again = if once {
        format!(
            "if [ -e {d}/started ]; then echo '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"done\",\"num_turns\":1,\"usage\":{{\"input_tokens\":1,\"output_tokens\":1}}}}'; exit 0; fi\n",
            d = dir.display()
        )
    } else {
        String::new()
    };
    format!(
        "#!/bin/bash\n\
         if [ \"$1\" = \"--version\" ]; then echo '1.0.0 (Claude Code)'; exit 0; fi\n\
         {again}\
         setsid sleep 300.{marker}1 </dev/null >/dev/null 2>&1 &\n\
         sleep 300.{marker}2 &\n\
         echo '{{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"claude-test\",\"tools\":[\"Bash\"],\"cwd\":\".\"}}'\n\
         touch {d}/started\n\
         wait\n",
        d = dir.display()
    )
}

/// Waits until the fake CLI's tools run (both of them).
async fn tools_running(dir: &Path, marker: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !(dir.join("started").exists() && processes_with(marker).len() >= 2) {
        assert!(
            Instant::now() < deadline,
            "the fake CLI never started its tools"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bug_fix(timeout: Option<Duration>) -> v1::SubmitTaskRequest {
    v1::SubmitTaskRequest {
        r#type: v1::TaskType::BugFix as i32,
        prompt: "fix the parser".into(),
        timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
        max_attempts: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_claude_cli_task_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let marker = marker();
    let node = node_with_fake_cli(dir.path(), &lingering_cli(dir.path(), &marker, false));
    let client = Client::connect(&node.url()).await.unwrap();
    let providers = client.providers().await.unwrap();
    assert_eq!(providers.len(), 1);
    assert_eq!(
        (providers[0].name.as_str(), providers[0].kind.as_str()),
        ("cli", "claude_cli")
    );
    let task = client.submit(bug_fix(None)).await.unwrap();
    tools_running(dir.path(), &marker).await;
    let cancelled = client.cancel(&task.id, "no longer needed").await.unwrap();
    assert_eq!(cancelled.status, v1::TaskStatus::Cancelled as i32);
    all_gone(&marker, "the cancel").await;
    let t = client.get(&task.id).await.unwrap();
    assert_eq!(t.status, v1::TaskStatus::Cancelled as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_over_its_time_limit_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let marker = marker();
    let node = node_with_fake_cli(dir.path(), &lingering_cli(dir.path(), &marker, false));
    let client = Client::connect(&node.url()).await.unwrap();
    let task = client
        .submit(bug_fix(Some(Duration::from_secs(3))))
        .await
        .unwrap();
    tools_running(dir.path(), &marker).await;
    let done = tokio::time::timeout(PATIENCE, client.wait(&task.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, v1::TaskStatus::Failed as i32);
    assert!(done.error.contains("timeout"), "{}", done.error);
    all_gone(&marker, "the attempt's time limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_ctrl_c_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let marker = marker();
    let config = fake_cli_config(dir.path(), &lingering_cli(dir.path(), &marker, false));
    let config = config.display().to_string();
    let mut node = NodeProcess::start(
        &dir.path().join("data"),
        &[
            ("SUPERVISOR_CONFIG", config.as_str()),
            ("SUPERVISOR_NODE__DRAIN_TIMEOUT", "1s"),
        ],
    );
    let client = Client::connect(&node.url()).await.unwrap();
    let task = client.submit(bug_fix(None)).await.unwrap();
    tools_running(dir.path(), &marker).await;
    let status = node.stop_with(libc::SIGINT);
    assert!(
        status.success(),
        "the node drains and exits cleanly: {status}"
    );
    all_gone(&marker, "the node's drain on SIGINT").await;
    drop(client);
    // The attempt was handed back, not lost.
    let node = NodeProcess::start(
        &dir.path().join("data"),
        &[("SUPERVISOR_CONFIG", config.as_str())],
    );
    let client = Client::connect(&node.url()).await.unwrap();
    let t = client.get(&task.id).await.unwrap();
    assert_ne!(t.status, v1::TaskStatus::Failed as i32, "{}", t.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_no_process_and_its_restart_no_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&repo);
    let marker = marker();
    let config = fake_cli_config(dir.path(), &lingering_cli(dir.path(), &marker, true));
    let config = config.display().to_string();
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(&data, &[("SUPERVISOR_CONFIG", config.as_str())]);
    let client = Client::connect(&node.url()).await.unwrap();
    let mut context = std::collections::HashMap::new();
    context.insert("repo".to_string(), repo.display().to_string());
    let task = client
        .submit(v1::SubmitTaskRequest {
            context,
            max_attempts: 3,
            ..bug_fix(None)
        })
        .await
        .unwrap();
    tools_running(dir.path(), &marker).await;
    let workspaces = data.join("worktrees");
    let left: Vec<_> = std::fs::read_dir(&workspaces).unwrap().collect();
    assert!(!left.is_empty(), "the attempt works in a workspace");
    node.kill9();
    all_gone(&marker, "kill -9 of the node").await;
    drop(client);

    // The next start cleans up before it leases: the task then runs again and succeeds.
    let node = NodeProcess::start(&data, &[("SUPERVISOR_CONFIG", config.as_str())]);
    let client = Client::connect(&node.url()).await.unwrap();
    let done = tokio::time::timeout(PATIENCE, client.wait(&task.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        done.status,
        v1::TaskStatus::Succeeded as i32,
        "{}",
        done.error
    );
    let remaining: Vec<_> = std::fs::read_dir(&workspaces)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(remaining.is_empty(), "workspaces left: {remaining:?}");
    let worktrees = std::process::Command::new("git")
        .args(["worktree", "list", "--porcelain"])
        .current_dir(&repo)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&worktrees.stdout);
    assert_eq!(
        listed.matches("worktree ").count(),
        1,
        "only the checkout itself: {listed}"
    );
}

/// A git repository with one commit.
fn init_repo(repo: &Path) {
    std::fs::create_dir_all(repo).unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(repo)
            .output()
            .expect("git runs")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("lib.rs"), "fn buggy() -> u32 { 1 }\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_task_returns_its_diff_as_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&repo);

    // A fake CLI that fixes the file in its working directory and reports success.
    let node = node_with_fake_cli(
        dir.path(),
        "#!/bin/bash\n\
         if [ \"$1\" = \"--version\" ]; then echo '1.0.0 (Claude Code)'; exit 0; fi\n\
         echo 'fn buggy() -> u32 { 2 }' > lib.rs\n\
         echo '{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"claude-test\",\"tools\":[\"Edit\"],\"cwd\":\".\"}'\n\
         echo '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"Fixed the off-by-one.\"}]}}'\n\
         echo '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"Fixed the off-by-one.\",\"num_turns\":2,\"total_cost_usd\":0.0123,\"usage\":{\"input_tokens\":100,\"output_tokens\":20}}'\n",
    );
    let client = Client::connect(&node.url()).await.unwrap();
    let mut context = std::collections::HashMap::new();
    context.insert("repo".to_string(), repo.display().to_string());
    let task = client
        .submit(v1::SubmitTaskRequest {
            r#type: v1::TaskType::BugFix as i32,
            prompt: "fix buggy()".into(),
            context,
            ..Default::default()
        })
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), client.wait(&task.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        done.status,
        v1::TaskStatus::Succeeded as i32,
        "{}",
        done.error
    );
    let result = done.result.expect("result");
    assert_eq!(result.output, "Fixed the off-by-one.");
    assert_eq!(result.cost_micros, 12_300);
    let diff = result
        .artifacts
        .iter()
        .find(|a| a.name == "changes.diff")
        .expect("a diff artifact");
    assert!(
        diff.content.contains("-fn buggy() -> u32 { 1 }")
            && diff.content.contains("+fn buggy() -> u32 { 2 }"),
        "{}",
        diff.content
    );
    // The user's checkout is untouched: the work happened in a worktree.
    assert_eq!(
        std::fs::read_to_string(repo.join("lib.rs")).unwrap(),
        "fn buggy() -> u32 { 1 }\n"
    );
    let (code, out, err) = common::cli(&node.addr, &["task", "artifact", &task.id, "changes.diff"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, diff.content);
    let (code, _, err) = common::cli(&node.addr, &["task", "artifact", &task.id, "nope.txt"]);
    assert_eq!(code, 1);
    assert!(err.contains("no artifact named \"nope.txt\""), "{err}");

    // The agent's work stays on its branch, committed, naming the task.
    let log = std::process::Command::new("git")
        .args(["log", "--format=%an|%s", "--branches=supervisor/*"])
        .current_dir(&repo)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.lines()
            .any(|l| l.starts_with("Supervisor|") && l.contains(&task.id)),
        "{log}"
    );
    // And `task apply` puts it into the checkout (the repository the task named).
    let (code, out, err) = common::cli(&node.addr, &["task", "apply", &task.id, "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("would apply the changes"), "{out}");
    assert_eq!(
        std::fs::read_to_string(repo.join("lib.rs")).unwrap(),
        "fn buggy() -> u32 { 1 }\n"
    );
    let (code, out, err) = common::cli(&node.addr, &["task", "apply", &task.id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lib.rs"), "{out}");
    assert_eq!(
        std::fs::read_to_string(repo.join("lib.rs")).unwrap(),
        "fn buggy() -> u32 { 2 }\n"
    );
    // A second time it no longer applies, and says so.
    let (code, _, err) = common::cli(&node.addr, &["task", "apply", &task.id]);
    assert_eq!(code, 1);
    assert!(err.contains("do not apply"), "{err}");
}

/// The fake CLI of the hooks test: it counts its runs in `<dir>/runs`; the first adds a
/// line with trailing whitespace to `lib.rs` (`git diff --check` refuses it), the second a
/// clean line but marks the tests as failing (`status.txt`), the third does it right.
fn three_tries_cli(dir: &Path) -> String {
    format!(
        "#!/bin/bash\n\
         if [ \"$1\" = \"--version\" ]; then echo '1.0.0 (Claude Code)'; exit 0; fi\n\
         n=$(( $(cat {d}/runs 2>/dev/null || echo 0) + 1 )); echo $n > {d}/runs\n\
         case $n in\n\
           1) printf 'fn fixed() -> u32 {{ 2 }}   \\n' >> lib.rs ;;\n\
           2) printf 'fn fixed() -> u32 {{ 2 }}\\n' >> lib.rs; echo broken > status.txt ;;\n\
           *) printf 'fn fixed() -> u32 {{ 2 }}\\n' >> lib.rs ;;\n\
         esac\n\
         echo '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"try '$n'\",\"num_turns\":1,\"usage\":{{\"input_tokens\":10,\"output_tokens\":5}}}}'\n",
        d = dir.display()
    )
}

/// Submits `request` and waits (bounded) until the task ends.
async fn run_to_end(client: &Client, request: v1::SubmitTaskRequest) -> v1::Task {
    let task = client.submit(request).await.unwrap();
    tokio::time::timeout(PATIENCE, client.wait(&task.id))
        .await
        .unwrap()
        .unwrap()
}

/// Whether the task's event log has an event whose message contains `text`.
async fn logged(client: &Client, id: &str, text: &str) -> bool {
    let mut events = client.watch(id, 0);
    while let Some(event) = tokio_stream::StreamExt::next(&mut events).await {
        let event = event.unwrap();
        if event.message.contains(text) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hooks_turn_bad_attempts_into_retries_and_a_strict_one_fails_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&repo);
    std::fs::write(repo.join("status.txt"), "ok\n").unwrap();
    let committed = std::process::Command::new("sh")
        .args([
            "-c",
            "git add status.txt && git -c user.name=t -c user.email=t@example.invalid commit -qm status",
        ])
        .current_dir(&repo)
        .status()
        .unwrap()
        .success();
    assert!(committed, "commit status.txt");
    let config = fake_cli_config(dir.path(), &three_tries_cli(dir.path()));
    // A check for every bug fix in a repository, one named by the task (which also sees
    // none of the node's environment), and a strict one.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[hooks.diff-check]\ncommand = [\"git\", \"diff\", \"--check\"]\ntask_types = [\"bug_fix\"]\n\
         \n[hooks.tests]\ncommand = [\"sh\", \"-c\", \"test -z \\\"$NODE_SECRET\\\" && test \\\"$(cat status.txt)\\\" = ok\"]\n\
         \n[hooks.strict]\ncommand = [\"sh\", \"-c\", \"echo not today; exit 3\"]\non_failure = \"fail\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let config = config.display().to_string();
    let node = NodeProcess::start(
        &dir.path().join("data"),
        &[
            ("SUPERVISOR_CONFIG", config.as_str()),
            ("NODE_SECRET", "hunter2"),
        ],
    );
    let client = Client::connect(&node.url()).await.unwrap();
    let mut context = std::collections::HashMap::new();
    context.insert("repo".to_string(), repo.display().to_string());
    context.insert("hooks".to_string(), "tests".to_string());
    let done = run_to_end(
        &client,
        v1::SubmitTaskRequest {
            context: context.clone(),
            max_attempts: 3,
            ..bug_fix(None)
        },
    )
    .await;
    assert_eq!(
        done.status,
        v1::TaskStatus::Succeeded as i32,
        "{}",
        done.error
    );
    let outcomes: Vec<&str> = done.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["hook_failed", "hook_failed", "succeeded"]);
    let result = done.result.expect("result");
    assert_eq!(result.output, "try 3");
    assert!(logged(&client, &done.id, "hook diff-check failed").await);
    assert!(logged(&client, &done.id, "hook tests failed: exit status 1").await);
    assert!(logged(&client, &done.id, "hook tests passed").await);
    let diff = result
        .artifacts
        .iter()
        .find(|a| a.name == "changes.diff")
        .expect("a diff artifact");
    assert!(
        diff.content.contains("+fn fixed() -> u32 { 2 }\n"),
        "{}",
        diff.content
    );

    // A strict hook fails the task at its first attempt, quoting the hook's output.
    context.insert("hooks".to_string(), "strict".to_string());
    let done = run_to_end(
        &client,
        v1::SubmitTaskRequest {
            context: context.clone(),
            r#type: v1::TaskType::Documentation as i32,
            max_attempts: 3,
            ..bug_fix(None)
        },
    )
    .await;
    assert_eq!(done.status, v1::TaskStatus::Failed as i32);
    assert_eq!(done.attempts.len(), 1);
    assert!(
        done.error.contains("hook strict failed: exit status 3")
            && done.error.contains("not today"),
        "{}",
        done.error
    );

    // A hook the node does not have fails the task before the agent runs.
    let runs_before = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    context.insert("hooks".to_string(), "lint".to_string());
    let done = run_to_end(
        &client,
        v1::SubmitTaskRequest {
            context,
            max_attempts: 3,
            ..bug_fix(None)
        },
    )
    .await;
    assert_eq!(done.status, v1::TaskStatus::Failed as i32);
    assert!(
        done.error.contains("\"lint\"") && done.error.contains("diff-check, strict, tests"),
        "{}",
        done.error
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs")).unwrap(),
        runs_before,
        "the agent did not run"
    );
}
