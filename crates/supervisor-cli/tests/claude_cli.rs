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

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_claude_cli_task_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-claude");
    let pids = dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    std::fs::write(
        &fake,
        format!(
            "#!/bin/bash\n\
             if [ \"$1\" = \"--version\" ]; then echo '1.0.0 (Claude Code)'; exit 0; fi\n\
             echo $$ > {p}/cli.pid\n\
             sleep 300 &\n\
             echo $! > {p}/child.pid\n\
             echo '{{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"claude-test\",\"tools\":[\"Read\"],\"cwd\":\".\"}}'\n\
             wait\n",
            p = pids.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .unwrap();
    let config = dir.path().join("supervisor.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.mock]\nkind = \"mock\"\nenabled = false\n\n[providers.cli]\nkind = \"claude_cli\"\nbinary = \"{}\"\n",
            fake.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let config_str = config.display().to_string();
    let node = NodeProcess::start(&data, &[("SUPERVISOR_CONFIG", config_str.as_str())]);
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
