//! A node configured with the claude_cli provider (pointed at a fake CLI): cancelling a
//! running task kills the CLI's whole process group, so nothing is left behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use supervisor_client::Client;
use supervisor_proto::v1;

use common::NodeProcess;

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/<pid>, but its state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Writes `script` as an executable fake `claude` in `dir` and starts a node whose only
/// provider is a claude_cli provider running it.
fn node_with_fake_cli(dir: &Path, script: &str) -> NodeProcess {
    let fake = dir.join("fake-claude");
    std::fs::write(&fake, script).unwrap();
    let made_executable = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .unwrap()
        .success();
    assert!(made_executable);
    let config = dir.join("supervisor.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.mock]\nkind = \"mock\"\nenabled = false\n\n[providers.cli]\nkind = \"claude_cli\"\nbinary = \"{}\"\n",
            fake.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    NodeProcess::start(&dir.join("data"), &[("SUPERVISOR_CONFIG", config.as_str())])
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_claude_cli_task_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let node = node_with_fake_cli(
        dir.path(),
        &format!(
            "#!/bin/bash\n\
             if [ \"$1\" = \"--version\" ]; then echo '1.0.0 (Claude Code)'; exit 0; fi\n\
             echo $$ > {p}/cli.pid\n\
             sleep 300 &\n\
             echo $! > {p}/child.pid\n\
             echo '{{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"claude-test\",\"tools\":[\"Read\"],\"cwd\":\".\"}}'\n\
             wait\n",
            p = pids.display()
        ),
    );
    let client = Client::connect(&node.url()).await.unwrap();
    let providers = client.providers().await.unwrap();
    assert_eq!(providers.len(), 1);
    assert_eq!(
        (providers[0].name.as_str(), providers[0].kind.as_str()),
        ("cli", "claude_cli")
    );

    let task = client
        .submit(v1::SubmitTaskRequest {
            r#type: v1::TaskType::BugFix as i32,
            prompt: "fix the parser".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (cli, child) = loop {
        if let (Some(a), Some(b)) = (
            read_pid(&pids.join("cli.pid")),
            read_pid(&pids.join("child.pid")),
        ) {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "the fake CLI never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(alive(cli) && alive(child));
    let cancelled = client.cancel(&task.id, "no longer needed").await.unwrap();
    assert_eq!(cancelled.status, v1::TaskStatus::Cancelled as i32);
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(cli) || alive(child) {
        assert!(
            Instant::now() < deadline,
            "the CLI (pid {cli}) or its child (pid {child}) outlived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = client.get(&task.id).await.unwrap();
    assert_eq!(t.status, v1::TaskStatus::Cancelled as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_task_returns_its_diff_as_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(&repo)
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
}
