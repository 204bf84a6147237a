//! The claude_cli provider against fake `claude` executables: bash scripts written by each
//! test that print real stream-json lines and record their argv and cwd, so the tests see
//! exactly what the provider passes and how it reads the stream, without the real CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use supervisor_model::{Specialty, TaskType};
use supervisor_providers::config::{ClaudeCliConfig, IsolationMode};
use supervisor_providers::factory::BuildContext;
use supervisor_providers::pricing::PriceTable;
use supervisor_providers::{
    EventSink, Provider, ProviderError, ProviderEvent, ProviderOutput, ProviderRequest, claude_cli,
};
use tempfile::TempDir;

const MODEL: &str = "claude-sonnet-4-5-20250929";

const INIT: &str = r#"{"type":"system","subtype":"init","cwd":"/tmp/w","session_id":"3f1c2a9e-5d41-4c1a-9a57-0b6f0c6a1e11","tools":["Task","Bash","Glob","Grep","LS","Read","Edit","Write"],"mcp_servers":[],"model":"claude-sonnet-4-5-20250929","permissionMode":"acceptEdits","slash_commands":["compact","cost"],"apiKeySource":"ANTHROPIC_API_KEY","output_style":"default","uuid":"a7e9d7c4-1f0b-4a53-8d0e-2c3b4d5e6f70"}"#;

const ASSISTANT_TEXT: &str = r#"{"type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"I'll run the tests first."}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":1200,"cache_read_input_tokens":0,"output_tokens":8,"service_tier":"standard"}},"parent_tool_use_id":null,"session_id":"3f1c2a9e-5d41-4c1a-9a57-0b6f0c6a1e11","uuid":"b1"}"#;

const ASSISTANT_TOOL: &str = r#"{"type":"assistant","message":{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"toolu_01X","name":"Bash","input":{"command":"cargo test -p parser","description":"Run the parser tests"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":0,"cache_read_input_tokens":1200,"output_tokens":30,"service_tier":"standard"}},"parent_tool_use_id":null,"session_id":"3f1c2a9e-5d41-4c1a-9a57-0b6f0c6a1e11","uuid":"b2"}"#;

const TOOL_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01X","type":"tool_result","content":"test result: FAILED. 11 passed; 1 failed","is_error":false}]},"parent_tool_use_id":null,"session_id":"3f1c2a9e-5d41-4c1a-9a57-0b6f0c6a1e11","uuid":"b3"}"#;

const ASSISTANT_DONE: &str = r#"{"type":"assistant","message":{"id":"msg_01B","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Fixed the off-by-one in parse()."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":6,"cache_creation_input_tokens":0,"cache_read_input_tokens":2200,"output_tokens":212,"service_tier":"standard"}},"parent_tool_use_id":null,"session_id":"3f1c2a9e-5d41-4c1a-9a57-0b6f0c6a1e11","uuid":"b4"}"#;

const RESULT_OK: &str = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":12034,"duration_api_ms":11020,"num_turns":4,"result":"Fixed the off-by-one in parse().","session_id":"3f1c2a9e-5d41-4c1a-9a57-0b6f0c6a1e11","total_cost_usd":0.0123,"usage":{"input_tokens":14,"cache_creation_input_tokens":1200,"cache_read_input_tokens":3400,"output_tokens":250,"server_tool_use":{"web_search_requests":0},"service_tier":"standard"},"permission_denials":[],"uuid":"b5"}"#;

/// A fake CLI in its own temp dir, with the provider built on it.
struct Fake {
    dir: TempDir,
    bin: PathBuf,
}

impl Fake {
    /// A fake whose script records argv (NUL-separated) and cwd, then runs `body`. `$DIR`
    /// is the fake's directory.
    fn new(body: &str) -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("claude.src");
        let bin = dir.path().join("claude");
        let script = format!(
            "#!/bin/bash\nDIR='{}'\nprintf '%s\\0' \"$@\" > \"$DIR/argv\"\npwd -P > \"$DIR/cwd\"\n{body}\n",
            dir.path().display()
        );
        std::fs::write(&src, script).expect("write script");
        // Copied by another process so this multi-threaded test binary never holds the
        // executable open for writing while another test forks (ETXTBSY).
        let st = Command::new("install")
            .args(["-m", "755"])
            .arg(&src)
            .arg(&bin)
            .status()
            .expect("run install");
        assert!(st.success());
        Fake { dir, bin }
    }

    /// A fake printing `lines` on stdout, then exiting 0.
    fn printing(lines: &[&str]) -> Fake {
        let mut body = String::from("cat <<'EOF'\n");
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
        body.push_str("EOF\n");
        Fake::new(&body)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn worktree_root(&self) -> PathBuf {
        self.path("worktrees")
    }

    fn config(&self) -> ClaudeCliConfig {
        ClaudeCliConfig {
            binary: self.bin.clone(),
            worktree_dir: Some(self.worktree_root()),
            ..ClaudeCliConfig::default()
        }
    }

    fn provider(&self) -> Arc<dyn Provider> {
        self.provider_with(self.config())
    }

    fn provider_with(&self, cfg: ClaudeCliConfig) -> Arc<dyn Provider> {
        let ctx = BuildContext {
            data_dir: self.path("data"),
            hooks: Default::default(),
        };
        claude_cli::build("cli", &cfg, Arc::new(PriceTable::default()), &ctx).expect("build")
    }

    fn argv(&self) -> Vec<String> {
        let raw = std::fs::read(self.path("argv")).expect("argv recorded");
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    fn cwd(&self) -> PathBuf {
        PathBuf::from(
            std::fs::read_to_string(self.path("cwd"))
                .expect("cwd recorded")
                .trim(),
        )
    }
}

fn request(task_type: TaskType, timeout: Duration) -> ProviderRequest {
    ProviderRequest::simple("task-1", task_type, "Fix the parser", timeout)
}

async fn run(
    provider: &Arc<dyn Provider>,
    req: ProviderRequest,
) -> (Result<ProviderOutput, ProviderError>, Vec<ProviderEvent>) {
    let (sink, mut rx) = EventSink::channel();
    let result = provider.execute(req, sink).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (result, events)
}

fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let i = argv.iter().position(|a| a == name)?;
    argv.get(i + 1).map(String::as_str)
}

/// Whether `pid` is a live process (a zombie has exited and is only waiting to be reaped by
/// its parent, which after a kill is init, not us).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, None | Some('Z') | Some('X'))
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with one commit: README.md and src/lib.rs.
fn repo(parent: &Path) -> PathBuf {
    let repo = parent.join("repo");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README.md"), "# Demo\nold line\n").expect("write");
    std::fs::write(repo.join("src/lib.rs"), "pub fn f() {}\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "initial"]);
    repo
}

fn assert_worktrees_gone(repo: &Path, root: &Path) {
    let list = git(repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(
        list.lines().filter(|l| l.starts_with("worktree ")).count(),
        1,
        "only the main worktree should remain: {list}"
    );
    let branches = git(repo, &["branch", "--list", "supervisor/*"]);
    assert_eq!(branches.trim(), "", "the attempt's branch should be gone");
    let left: Vec<_> = std::fs::read_dir(root)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "worktree root not empty: {left:?}");
}

#[tokio::test]
async fn success_streams_events_and_reports_usage_and_cost() {
    let fake = Fake::printing(&[
        INIT,
        ASSISTANT_TEXT,
        ASSISTANT_TOOL,
        TOOL_RESULT,
        r#"{"type":"rate_limit_event","info":{}}"#,
        ASSISTANT_DONE,
        RESULT_OK,
    ]);
    let cfg = ClaudeCliConfig {
        model: Some("claude-opus-4-5".into()),
        max_turns: 7,
        extra_args: vec!["--extra".into(), "x".into()],
        ..fake.config()
    };
    let provider = fake.provider_with(cfg);
    let mut req = request(TaskType::BugFix, Duration::from_secs(30));
    req.context.insert("issue".into(), "#12".into());
    let (result, events) = run(&provider, req).await;
    let out = result.expect("success");

    assert_eq!(out.output, "Fixed the off-by-one in parse().");
    assert_eq!(out.model, MODEL);
    assert_eq!(out.cost_micros, 12_300);
    assert_eq!(out.usage.input_tokens, 14);
    assert_eq!(out.usage.output_tokens, 250);
    assert_eq!(out.usage.cache_write_tokens, 1200);
    assert_eq!(out.usage.cache_read_tokens, 3400);
    assert!(out.artifacts.is_empty());
    // Usage as it grew: after each assistant message (summed over messages, the last line
    // of a message winning), then the result's totals, which are the outcome's.
    let (usages, events): (Vec<_>, Vec<_>) = events
        .into_iter()
        .partition(|e| matches!(e, ProviderEvent::Usage { .. }));
    let tokens: Vec<_> = usages
        .iter()
        .map(|e| match e {
            ProviderEvent::Usage { usage, .. } => (usage.input_tokens, usage.output_tokens),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(tokens, vec![(4, 8), (4, 30), (10, 242), (14, 250)]);
    assert_eq!(
        usages.last(),
        Some(&ProviderEvent::Usage {
            usage: out.usage,
            cost_micros: out.cost_micros
        })
    );
    assert_eq!(
        events,
        vec![
            ProviderEvent::Activity(format!("session started: model {MODEL}, 8 tools")),
            ProviderEvent::Output("I'll run the tests first.".into()),
            ProviderEvent::Activity("tool Bash: cargo test -p parser".into()),
            ProviderEvent::Activity("tool result: test result: FAILED. 11 passed; 1 failed".into()),
            ProviderEvent::Output("Fixed the off-by-one in parse().".into()),
        ]
    );

    let system = Specialty::BugHunter.system_prompt().to_string();
    assert_eq!(
        fake.argv(),
        vec![
            "-p",
            "Fix the parser\n\nContext:\n- issue: #12",
            "--output-format",
            "stream-json",
            "--verbose",
            "--append-system-prompt",
            &system,
            "--allowedTools",
            "Read,Grep,Glob,LS,Edit,MultiEdit,Write,NotebookEdit,Bash",
            "--permission-mode",
            "acceptEdits",
            "--max-turns",
            "7",
            "--model",
            "claude-opus-4-5",
            "--extra",
            "x",
        ]
    );
    // Without a repo it ran in a scratch directory under the worktree root, since removed.
    let root = std::fs::canonicalize(fake.worktree_root()).expect("root");
    let cwd = fake.cwd();
    assert!(cwd.starts_with(&root), "{cwd:?} not under {root:?}");
    assert!(!cwd.exists());
}

#[tokio::test]
async fn read_only_specialties_run_in_plan_mode_without_write_tools() {
    for task_type in [TaskType::SecurityAudit, TaskType::PrReview] {
        let fake = Fake::printing(&[INIT, RESULT_OK]);
        let req = request(task_type, Duration::from_secs(30));
        assert!(matches!(
            req.specialty,
            Specialty::SecurityAnalyst | Specialty::CodeReviewer
        ));
        let system = req.system_prompt.clone();
        let (result, _) = run(&fake.provider(), req).await;
        result.expect("success");
        let argv = fake.argv();
        assert_eq!(flag(&argv, "-p"), Some("Fix the parser"));
        assert_eq!(flag(&argv, "--output-format"), Some("stream-json"));
        assert!(argv.iter().any(|a| a == "--verbose"));
        assert_eq!(flag(&argv, "--append-system-prompt"), Some(system.as_str()));
        assert_eq!(flag(&argv, "--permission-mode"), Some("plan"));
        assert_eq!(flag(&argv, "--allowedTools"), Some("Read,Grep,Glob,LS"));
        assert_eq!(
            flag(&argv, "--disallowedTools"),
            Some("Edit,MultiEdit,Write,NotebookEdit,Bash")
        );
        assert_eq!(flag(&argv, "--max-turns"), Some("30"));
        assert!(!argv.iter().any(|a| a == "--model"), "no model configured");
    }
}

#[tokio::test]
async fn an_error_result_fails_with_its_text() {
    let fake = Fake::printing(&[
        INIT,
        r#"{"type":"result","subtype":"success","is_error":true,"duration_ms":310,"duration_api_ms":0,"num_turns":1,"result":"Invalid API key · Please run /login","session_id":"s","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}"#,
    ]);
    let (result, _) = run(
        &fake.provider(),
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    let err = result.expect_err("failure");
    assert!(
        matches!(err, ProviderError::Permanent { kind: "auth", .. }),
        "a login failure cannot be fixed by retrying: {err:?}"
    );
    assert!(err.to_string().contains("Invalid API key"), "{err}");
}

#[tokio::test]
async fn an_error_result_reports_its_usage_and_says_the_cli_failed() {
    // The API was called (and billed) before the CLI gave up: the failure still carries
    // what was spent, as the last usage event.
    let fake = Fake::printing(&[
        INIT,
        ASSISTANT_TEXT,
        r#"{"type":"result","subtype":"success","is_error":true,"duration_ms":9000,"duration_api_ms":8000,"num_turns":2,"result":"API Error: 500 {\"type\":\"api_error\"}","session_id":"s","total_cost_usd":0.0042,"usage":{"input_tokens":900,"cache_creation_input_tokens":0,"cache_read_input_tokens":300,"output_tokens":12}}"#,
    ]);
    let (result, events) = run(
        &fake.provider(),
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    match result {
        Err(ProviderError::Retryable { kind, message, .. }) => {
            assert_eq!(kind, "cli_error");
            assert_eq!(
                message,
                r#"the Claude CLI reported an error: "API Error: 500 {"type":"api_error"}""#
            );
        }
        other => panic!("expected a retryable cli_error, got {other:?}"),
    }
    let last = events
        .iter()
        .rev()
        .find(|e| matches!(e, ProviderEvent::Usage { .. }));
    assert_eq!(
        last,
        Some(&ProviderEvent::Usage {
            usage: supervisor_model::Usage {
                input_tokens: 900,
                output_tokens: 12,
                cache_read_tokens: 300,
                cache_write_tokens: 0,
            },
            cost_micros: 4_200,
        })
    );
}

#[tokio::test]
async fn a_transient_error_result_is_retryable() {
    let fake = Fake::printing(&[
        INIT,
        r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":310,"duration_api_ms":0,"num_turns":1,"result":"API Error: 529 overloaded","session_id":"s","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}"#,
    ]);
    let (result, _) = run(
        &fake.provider(),
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    let err = result.expect_err("failure");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("overloaded"), "{err}");
}

#[tokio::test]
async fn bypassing_permissions_as_root_without_is_sandbox_says_how_to_allow_it() {
    // What the CLI does as root without IS_SANDBOX=1.
    let fake = Fake::new(
        "echo '--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons' >&2\nexit 1",
    );
    let mut req = request(TaskType::BugFix, Duration::from_secs(30));
    req.tools.permission_mode = "bypassPermissions".into();
    let (result, _) = run(&fake.provider(), req).await;
    let err = result.expect_err("a failure").to_string();
    assert!(err.contains("cannot be used with root"), "{err}");
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert_eq!(err.contains("IS_SANDBOX=1"), root, "{err}");
    assert_eq!(err.contains("[providers.cli.env]"), root, "{err}");
}

#[tokio::test]
async fn max_turns_is_permanent() {
    let fake = Fake::printing(&[
        INIT,
        ASSISTANT_TOOL,
        r#"{"type":"result","subtype":"error_max_turns","is_error":false,"duration_ms":50210,"duration_api_ms":48000,"num_turns":31,"session_id":"s","total_cost_usd":0.41,"usage":{"input_tokens":310,"cache_creation_input_tokens":9000,"cache_read_input_tokens":120000,"output_tokens":4100}}"#,
    ]);
    let (result, _) = run(
        &fake.provider(),
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    match result {
        Err(ProviderError::Permanent { kind, message }) => {
            assert_eq!(kind, "max_turns");
            assert!(message.contains("hit max turns 30"), "{message}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_exit_without_result_is_retryable_with_stderr() {
    let fake = Fake::new(&format!(
        "echo '{INIT}'\necho 'Error: connect ECONNREFUSED api.anthropic.com' >&2\nexit 3"
    ));
    let (result, events) = run(
        &fake.provider(),
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    match result {
        Err(ProviderError::Retryable { kind, message, .. }) => {
            assert_eq!(kind, "cli_failed");
            assert!(message.contains("exit status 3"), "{message}");
            assert!(message.contains("ECONNREFUSED"), "{message}");
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
    assert_eq!(events.len(), 1, "the init line was still reported");
}

#[tokio::test]
async fn a_line_that_is_not_json_is_a_bad_stream() {
    let fake = Fake::printing(&[INIT, "Welcome to Claude Code!", RESULT_OK]);
    let (result, _) = run(
        &fake.provider(),
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    match result {
        Err(ProviderError::Retryable { kind, message, .. }) => {
            assert_eq!(kind, "bad_stream");
            assert!(message.contains("Welcome to Claude Code!"), "{message}");
        }
        other => panic!("expected bad_stream, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_binary_is_not_installed() {
    let fake = Fake::printing(&[]);
    let missing = fake.path("no-such-claude");
    let provider = fake.provider_with(ClaudeCliConfig {
        binary: missing.clone(),
        ..fake.config()
    });
    let (result, _) = run(
        &provider,
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    match result {
        Err(ProviderError::Permanent { kind, message }) => {
            assert_eq!(kind, "not_installed");
            assert!(
                message.contains(&missing.display().to_string()),
                "{message}"
            );
            assert!(message.contains("binary"), "{message}");
        }
        other => panic!("expected not_installed, got {other:?}"),
    }
    // Also when looked up on PATH.
    let provider = fake.provider_with(ClaudeCliConfig {
        binary: "supervisor-test-no-such-claude".into(),
        ..fake.config()
    });
    let (result, _) = run(
        &provider,
        request(TaskType::BugFix, Duration::from_secs(30)),
    )
    .await;
    let err = result.expect_err("failure");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("on PATH"), "{err}");
}

/// A number no other process on the machine has in its command line.
fn marker() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}{nanos:09}{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Live processes (not zombies) whose command line contains `needle`. Found through
/// /proc, so processes in other PID namespaces are seen with their pids here.
fn processes_with(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

/// Waits (up to 15 s) until no process has `needle` in its command line.
async fn wait_none_with(needle: &str) -> Result<(), Vec<i32>> {
    for _ in 0..300 {
        if processes_with(needle).is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(processes_with(needle))
}

/// A fake CLI that starts a tool in the background, and one that leaves the CLI's session
/// (`setsid`, as the CLI's Bash tool does), then says it started and hangs. Each sleeps for
/// `300.<marker>` seconds, so it can be found by its command line.
struct Hanging {
    fake: Fake,
    /// Command-line needles: the CLI itself, its plain child, its setsid child.
    needles: [String; 3],
}

fn hanging(ignore_term: bool) -> Hanging {
    let (plain, escaped) = (marker(), marker());
    let fake = Fake::new(&format!(
        "{}sleep 300.{plain} &\nsetsid sleep 300.{escaped} &\necho started > \"$DIR/started\"\necho '{INIT}'\nwait\nsleep 300\n",
        if ignore_term { "trap '' TERM\n" } else { "" }
    ));
    let cli = fake.bin.display().to_string();
    Hanging {
        fake,
        needles: [cli, format!("300.{plain}"), format!("300.{escaped}")],
    }
}

impl Hanging {
    async fn wait_started(&self) {
        for _ in 0..600 {
            if self.fake.path("started").exists()
                && self.needles.iter().all(|n| !processes_with(n).is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the fake CLI never started its tools");
    }

    fn running(&self) -> Vec<(String, Vec<i32>)> {
        self.needles
            .iter()
            .map(|n| (n.clone(), processes_with(n)))
            .filter(|(_, pids)| !pids.is_empty())
            .collect()
    }

    async fn assert_all_gone(&self, when: &str) {
        for needle in &self.needles {
            if let Err(pids) = wait_none_with(needle).await {
                panic!("{when}: {needle} still runs as {pids:?}");
            }
        }
    }
}

/// The provider on `fake` with `mode`, or None (said loudly) if this machine cannot give
/// that isolation.
fn provider_in(fake: &Fake, mode: IsolationMode) -> Option<Arc<dyn Provider>> {
    let ctx = BuildContext {
        data_dir: fake.path("data"),
        hooks: Default::default(),
    };
    let cfg = ClaudeCliConfig {
        isolation: mode,
        ..fake.config()
    };
    match claude_cli::build("cli", &cfg, Arc::new(PriceTable::default()), &ctx) {
        Ok(p) => Some(p),
        Err(e) if e.contains("is not available") => {
            eprintln!("SKIPPED: {mode:?} is not available on this machine: {e}");
            None
        }
        Err(e) => panic!("build: {e}"),
    }
}

const MODES: [IsolationMode; 3] = [
    IsolationMode::PidNamespace,
    IsolationMode::Cgroup,
    IsolationMode::Subreaper,
];

async fn a_timeout_kills_every_process(mode: IsolationMode, ignore_term: bool) {
    let h = hanging(ignore_term);
    let Some(provider) = provider_in(&h.fake, mode) else {
        return;
    };
    let req = request(TaskType::BugFix, Duration::from_secs(3));
    let running = tokio::spawn(async move { run(&provider, req).await });
    h.wait_started().await;
    let (result, events) = running.await.expect("the attempt's task");
    match result {
        Err(ProviderError::Retryable { kind, .. }) => assert_eq!(kind, "timeout"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(events.len(), 1, "the init line arrived before the timeout");
    // Everything is dead by the time execute returns, the session leaver included.
    assert_eq!(
        h.running(),
        vec![],
        "{mode:?}: still running after a timeout"
    );
}

async fn a_dropped_execute_kills_every_process(mode: IsolationMode) {
    let h = hanging(false);
    let repo = repo(h.fake.dir.path());
    let Some(provider) = provider_in(&h.fake, mode) else {
        return;
    };
    let mut req = request(TaskType::BugFix, Duration::from_secs(600));
    req.context
        .insert("repo".into(), repo.display().to_string());
    let (sink, _rx) = EventSink::channel();
    {
        let fut = provider.execute(req, sink);
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => panic!("execute ended: {r:?}"),
            _ = h.wait_started() => {}
        }
        // The future is dropped here, as an agent abandoning the attempt does.
    }
    h.assert_all_gone(&format!("{mode:?}: after a dropped execute"))
        .await;
    let mut clean = false;
    for _ in 0..300 {
        let list = git(&repo, &["worktree", "list", "--porcelain"]);
        let branches = git(&repo, &["branch", "--list", "supervisor/*"]);
        if list.lines().filter(|l| l.starts_with("worktree ")).count() == 1
            && branches.trim().is_empty()
        {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(clean, "the worktree was not removed");
    assert_worktrees_gone(&repo, &h.fake.worktree_root());
}

#[tokio::test]
async fn a_timeout_kills_every_process_in_a_pid_namespace() {
    a_timeout_kills_every_process(MODES[0], false).await;
}

#[tokio::test]
async fn a_timeout_kills_every_process_in_a_cgroup() {
    a_timeout_kills_every_process(MODES[1], false).await;
}

#[tokio::test]
async fn a_timeout_kills_every_process_under_a_subreaper() {
    a_timeout_kills_every_process(MODES[2], false).await;
}

#[tokio::test]
async fn a_timeout_kills_a_cli_that_ignores_sigterm() {
    a_timeout_kills_every_process(IsolationMode::Auto, true).await;
}

#[tokio::test]
async fn a_dropped_execute_kills_every_process_in_a_pid_namespace() {
    a_dropped_execute_kills_every_process(MODES[0]).await;
}

#[tokio::test]
async fn a_dropped_execute_kills_every_process_in_a_cgroup() {
    a_dropped_execute_kills_every_process(MODES[1]).await;
}

#[tokio::test]
async fn a_dropped_execute_kills_every_process_under_a_subreaper() {
    a_dropped_execute_kills_every_process(MODES[2]).await;
}

/// Runs the test `name` of this binary in a child process with `env`, as a stand-in for a
/// node process: it can be killed with SIGKILL, and it can have variables this process
/// must not set (tests run in threads, and changing the environment of a threaded process
/// is unsound).
fn helper(name: &str, env: &[(&str, &str)]) -> std::process::Child {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    cmd.spawn().expect("start the helper process")
}

/// The node-process stand-in: runs an attempt that never ends on the fake CLI and in the
/// isolation its parent names, until it is killed.
#[tokio::test]
async fn node_process_helper() {
    let (Ok(bin), Ok(root), Ok(repo), Ok(mode)) = (
        std::env::var("SV_HELPER_BIN"),
        std::env::var("SV_HELPER_ROOT"),
        std::env::var("SV_HELPER_REPO"),
        std::env::var("SV_HELPER_MODE"),
    ) else {
        return; // Run as a helper only.
    };
    let isolation = match mode.as_str() {
        "pid_namespace" => IsolationMode::PidNamespace,
        "cgroup" => IsolationMode::Cgroup,
        _ => IsolationMode::Subreaper,
    };
    let cfg = ClaudeCliConfig {
        binary: bin.into(),
        worktree_dir: Some(root.clone().into()),
        isolation,
        ..ClaudeCliConfig::default()
    };
    let ctx = BuildContext {
        data_dir: PathBuf::from(&root),
        hooks: Default::default(),
    };
    let provider =
        claude_cli::build("cli", &cfg, Arc::new(PriceTable::default()), &ctx).expect("build");
    let mut req = request(TaskType::BugFix, Duration::from_secs(3600));
    req.context.insert("repo".into(), repo);
    let (sink, _rx) = EventSink::channel();
    let result = provider.execute(req, sink).await;
    panic!("the attempt was meant to hang until this process is killed: {result:?}");
}

async fn a_killed_node_leaves_no_process_and_recovery_cleans_up(mode: IsolationMode) {
    let h = hanging(false);
    let repo = repo(h.fake.dir.path());
    // Skip (loudly) what this machine cannot do, as the helper would fail to build.
    if provider_in(&h.fake, mode).is_none() {
        return;
    }
    let mode_name = match mode {
        IsolationMode::PidNamespace => "pid_namespace",
        IsolationMode::Cgroup => "cgroup",
        _ => "subreaper",
    };
    let root = h.fake.worktree_root();
    let mut node = helper(
        "node_process_helper",
        &[
            ("SV_HELPER_BIN", &h.fake.bin.display().to_string()),
            ("SV_HELPER_ROOT", &root.display().to_string()),
            ("SV_HELPER_REPO", &repo.display().to_string()),
            ("SV_HELPER_MODE", mode_name),
        ],
    );
    h.wait_started().await;
    // The attempt's directory and its record are there while it runs.
    let attempt = std::fs::canonicalize(&root)
        .expect("root")
        .join("task-1-a1");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(attempt.join("run.json")).expect("run.json"))
            .expect("a JSON record");
    let cgroup = record["cgroup"].as_str().map(PathBuf::from);
    assert_eq!(cgroup.is_some(), mode == IsolationMode::Cgroup, "{record}");

    node.kill().expect("kill -9 the node");
    node.wait().expect("reap the node");
    h.assert_all_gone(&format!("{mode:?}: after the node was killed"))
        .await;

    // What the dead node could not clean up, its next start does.
    assert!(attempt.exists());
    let report = claude_cli::recover(&root);
    assert_eq!(report.workspaces, vec![attempt.clone()], "{report:?}");
    assert_eq!(
        report.branches_deleted,
        vec!["supervisor/task-1-a1".to_string()]
    );
    assert!(report.problems.is_empty(), "{report:?}");
    assert_worktrees_gone(&repo, &root);
    if let Some(cgroup) = cgroup {
        assert!(!cgroup.exists(), "{} was not removed", cgroup.display());
    }
    // Nothing left: a second recovery finds nothing.
    assert!(claude_cli::recover(&root).is_empty());
}

#[tokio::test]
async fn a_killed_node_leaves_no_process_in_a_pid_namespace() {
    a_killed_node_leaves_no_process_and_recovery_cleans_up(MODES[0]).await;
}

#[tokio::test]
async fn a_killed_node_leaves_no_process_in_a_cgroup() {
    a_killed_node_leaves_no_process_and_recovery_cleans_up(MODES[1]).await;
}

#[tokio::test]
async fn a_killed_node_leaves_no_process_under_a_subreaper() {
    a_killed_node_leaves_no_process_and_recovery_cleans_up(MODES[2]).await;
}

/// A fake CLI that edits a repository's file, adds one, and keeps files in its HOME and
/// TMPDIR (which must not reach the diff).
const EDITING: &str = "git rev-parse --abbrev-ref HEAD > \"$DIR/branch\"\nsed -i 's/old line/new line/' README.md\nprintf 'fresh\\n' > notes.txt\necho cache > \"$HOME/.cache-file\"\necho scratch > \"$TMPDIR/scratch-file\"\n";

fn repo_request(repo: &Path) -> ProviderRequest {
    let mut req = ProviderRequest::simple(
        "t-42",
        TaskType::BugFix,
        "Fix the parser\nIt drops the last token.",
        Duration::from_secs(30),
    );
    req.attempt = 2;
    req.context
        .insert("repo".into(), repo.display().to_string());
    req.context.insert("ref".into(), "main".into());
    req
}

#[tokio::test]
async fn repo_tasks_run_in_a_worktree_return_its_diff_and_keep_a_commit() {
    let fake = Fake::new(&format!("{EDITING}echo '{INIT}'\necho '{RESULT_OK}'"));
    let repo = repo(fake.dir.path());
    let (result, events) = run(&fake.provider(), repo_request(&repo)).await;
    let out = result.expect("success");

    let root = std::fs::canonicalize(fake.worktree_root()).expect("root");
    let cwd = fake.cwd();
    assert!(cwd.starts_with(&root), "{cwd:?} not under {root:?}");
    let branch = std::fs::read_to_string(fake.path("branch")).expect("branch");
    assert_eq!(branch.trim(), "supervisor/t-42-a2");
    // The prompt does not repeat the run keys.
    assert_eq!(
        flag(&fake.argv(), "-p"),
        Some("Fix the parser\nIt drops the last token.")
    );

    let names: Vec<_> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["changes.diff", "branch"]);
    let diff = &out.artifacts[0];
    assert_eq!(diff.media_type, "text/x-diff");
    assert!(diff.content.contains("-old line"), "{}", diff.content);
    assert!(diff.content.contains("+new line"), "{}", diff.content);
    assert!(diff.content.contains("+++ b/notes.txt"), "{}", diff.content);
    assert!(diff.content.contains("+fresh"), "{}", diff.content);
    // What the agent kept in its HOME and TMPDIR is not part of the change.
    assert!(!diff.content.contains("cache-file"), "{}", diff.content);
    assert!(!diff.content.contains("scratch-file"), "{}", diff.content);
    // The user's checkout is untouched.
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("readme");
    assert!(readme.contains("old line"));
    assert!(!repo.join("notes.txt").exists());

    // The change is a commit on the kept branch, named after the task.
    let head = git(&repo, &["rev-parse", "supervisor/t-42-a2"]);
    assert_eq!(
        out.artifacts[1].content,
        format!(
            "repo {}\nbranch supervisor/t-42-a2\ncommit {}\n",
            std::fs::canonicalize(&repo).expect("repo").display(),
            head.trim()
        )
    );
    let log = git(
        &repo,
        &[
            "log",
            "-1",
            "--format=%an <%ae>%n%cn <%ce>%n%B",
            "supervisor/t-42-a2",
        ],
    );
    assert_eq!(
        log.trim_end(),
        "Supervisor <supervisor@localhost>\nSupervisor <supervisor@localhost>\nsupervisor: bug_fix task t-42 attempt 2\n\nFix the parser"
    );
    let shown = git(&repo, &["diff", "main", "supervisor/t-42-a2"]);
    assert!(
        shown.contains("+new line") && shown.contains("+fresh"),
        "{shown}"
    );
    assert!(
        events.iter().any(|e| matches!(e, ProviderEvent::Activity(a)
            if a.contains("committed") && a.contains("supervisor/t-42-a2"))),
        "{events:?}"
    );
    // Only the worktree directory is gone.
    let list = git(&repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(
        list.lines().filter(|l| l.starts_with("worktree ")).count(),
        1,
        "{list}"
    );
    assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
}

#[tokio::test]
async fn without_keep_branch_only_the_diff_survives() {
    let fake = Fake::new(&format!("{EDITING}echo '{INIT}'\necho '{RESULT_OK}'"));
    let repo = repo(fake.dir.path());
    let provider = fake.provider_with(ClaudeCliConfig {
        keep_branch: false,
        commit_author: "Bot <bot@example.invalid>".into(),
        ..fake.config()
    });
    let (result, _) = run(&provider, repo_request(&repo)).await;
    let out = result.expect("success");
    let names: Vec<_> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["changes.diff"]);
    assert_worktrees_gone(&repo, &fake.worktree_root());
}

#[tokio::test]
async fn a_bad_commit_author_is_refused_at_build() {
    let fake = Fake::printing(&[]);
    let ctx = BuildContext {
        data_dir: fake.path("data"),
        hooks: Default::default(),
    };
    let cfg = ClaudeCliConfig {
        commit_author: "nobody".into(),
        ..fake.config()
    };
    let err = claude_cli::build("cli", &cfg, Arc::new(PriceTable::default()), &ctx)
        .err()
        .expect("an error");
    assert!(err.contains("commit_author"), "{err}");
}

/// Sentinels the env test's helper process has in its environment, standing for the
/// node's secrets.
const SENTINELS: &[(&str, &str)] = &[
    ("OTHER_PROVIDER_KEY", "sk-other-provider-SENTINEL-1"),
    ("SUPERVISOR_CLUSTER__COOKIE", "cluster-cookie-SENTINEL-2"),
    ("AWS_SECRET_ACCESS_KEY", "aws-SENTINEL-3"),
    // Would point the node's own git commands elsewhere if they inherited it.
    ("GIT_DIR", "/nonexistent-SENTINEL-4"),
];

/// The key the env test's provider gives its CLI.
const CLI_KEY: &str = "sk-ant-cli-own-key-0123456789";

/// Variables a shell adds by itself.
const SHELL_VARS: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_"];

fn env_file(path: &Path) -> Vec<(String, String)> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = String::from_utf8_lossy(s);
            let (k, v) = s.split_once('=').unwrap_or((&s, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The env test, run in a helper process whose environment holds [`SENTINELS`].
#[tokio::test]
async fn agent_environment_helper() {
    if std::env::var("SV_ENV_HELPER").is_err() {
        return; // Run as a helper only.
    }
    for (name, value) in SENTINELS {
        assert_eq!(std::env::var(name).as_deref(), Ok(*value), "helper env");
    }
    // The fake CLI records its environment, and that of a tool that leaves its session,
    // and writes everything into the worktree, as `env > env.txt` in a Bash tool would.
    let fake = Fake::new(&format!(
        "env -0 > \"$DIR/env.cli\"\n\
         setsid -w bash -c 'env -0 > \"$1/env.tool\"' tool \"$DIR\"\n\
         printf '%s\\n%s\\n' \"$HOME\" \"$TMPDIR\" > \"$DIR/dirs\"\n\
         test -d \"$HOME\" && test -d \"$TMPDIR\" && test -w \"$HOME\" && echo yes > \"$DIR/dirs-exist\"\n\
         env > env.txt\n\
         echo '{INIT}'\necho '{RESULT_OK}'"
    ));
    let repo = repo(fake.dir.path());
    let key_file = fake.path("cli.key");
    std::fs::write(&key_file, format!("{CLI_KEY}\n")).expect("key file");
    let mut env = std::collections::BTreeMap::new();
    env.insert("IS_SANDBOX".to_string(), "1".to_string());
    env.insert("DISABLE_TELEMETRY".to_string(), "1".to_string());
    let provider = fake.provider_with(ClaudeCliConfig {
        api_key_file: Some(key_file),
        base_url: Some("http://127.0.0.1:9/gateway".into()),
        env,
        ..fake.config()
    });
    let mut req = request(TaskType::BugFix, Duration::from_secs(60));
    req.context
        .insert("repo".into(), repo.display().to_string());
    let (result, events) = run(&provider, req).await;
    let out = result.expect("success");

    let allowed = |name: &str| {
        [
            "PATH",
            "LANG",
            "TERM",
            "HOME",
            "TMPDIR",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "IS_SANDBOX",
            "DISABLE_TELEMETRY",
        ]
        .contains(&name)
            || name.starts_with("LC_")
            || SHELL_VARS.contains(&name)
    };
    let root = std::fs::canonicalize(fake.worktree_root()).expect("root");
    let attempt = root.join("task-1-a1");
    for file in ["env.cli", "env.tool"] {
        let vars = env_file(&fake.path(file));
        for (name, value) in &vars {
            assert!(allowed(name), "{file}: {name} reached the agent");
            for (_, secret) in SENTINELS {
                assert!(!value.contains(secret), "{file}: {name} carries {secret}");
            }
        }
        let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("ANTHROPIC_API_KEY"), Some(CLI_KEY), "{file}");
        assert_eq!(
            get("ANTHROPIC_BASE_URL"),
            Some("http://127.0.0.1:9/gateway"),
            "{file}"
        );
        assert_eq!(get("IS_SANDBOX"), Some("1"), "{file}");
        assert_eq!(get("PATH"), std::env::var("PATH").ok().as_deref(), "{file}");
        assert_eq!(
            get("HOME"),
            Some(attempt.join("home").to_str().expect("utf-8")),
            "{file}"
        );
        assert_eq!(
            get("TMPDIR"),
            Some(attempt.join("tmp").to_str().expect("utf-8")),
            "{file}"
        );
    }
    // No variable of this process got through but the allowed ones.
    let cli = env_file(&fake.path("env.cli"));
    for (name, _) in std::env::vars() {
        if !allowed(&name) {
            assert!(
                !cli.iter().any(|(k, _)| *k == name),
                "{name} of the node reached the agent"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(fake.path("dirs-exist"))
            .ok()
            .as_deref(),
        Some("yes\n"),
        "HOME and TMPDIR existed during the run"
    );
    assert!(
        !attempt.exists(),
        "the attempt's HOME and TMPDIR are removed with it"
    );

    // The diff has the file, with none of the node's secrets and the CLI's own key
    // redacted; a change holding the key is not committed.
    let diff = &out.artifacts[0];
    assert!(diff.content.contains("+++ b/env.txt"), "{}", diff.content);
    for (_, secret) in SENTINELS {
        assert!(!diff.content.contains(secret), "{secret} in the diff");
    }
    assert!(!diff.content.contains(CLI_KEY), "the CLI's key in the diff");
    assert!(
        diff.content.contains("ANTHROPIC_API_KEY=[redacted]"),
        "{}",
        diff.content
    );
    assert_eq!(out.artifacts.len(), 1, "no branch artifact");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProviderEvent::Activity(a) if a.contains("not committed"))),
        "{events:?}"
    );
    assert_worktrees_gone(&repo, &root);
}

#[test]
fn the_agent_sees_none_of_the_nodes_environment() {
    let mut env = vec![("SV_ENV_HELPER", "1")];
    env.extend_from_slice(SENTINELS);
    let out = helper("agent_environment_helper", &env)
        .wait_with_output()
        .expect("the helper ran");
    assert!(out.status.success(), "the helper failed: {:?}", out.status);
}

/// This process's start time, as recovery records it (`/proc/self/stat`, field 22).
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat format");
    rest.split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("start time")
}

fn write_record(dir: &Path, start: u64, repo: Option<&Path>, branch: Option<&str>, keep: bool) {
    let record = serde_json::json!({
        "owner": {"pid": std::process::id(), "start": start},
        "repo": repo,
        "branch": branch,
        "cgroup": null,
        "keep_branch": keep,
    });
    std::fs::write(dir.join("run.json"), record.to_string()).expect("record");
}

#[test]
fn recovery_removes_what_dead_nodes_left_and_spares_live_attempts() {
    let fake = Fake::printing(&[]);
    let repo = repo(fake.dir.path());
    std::fs::create_dir_all(fake.worktree_root()).expect("root");
    let root = std::fs::canonicalize(fake.worktree_root()).expect("root");
    let dead_start = own_start_time() + 1; // Same pid, another start: a dead process.
    let attempt = |name: &str, start: u64, keep: bool| {
        let dir = root.join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        let branch = format!("supervisor/{name}");
        let work = dir.join("work");
        git(
            &repo,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                &branch,
                work.to_str().expect("utf-8"),
            ],
        );
        write_record(&dir, start, Some(&repo), Some(&branch), keep);
        dir
    };
    // An unfinished attempt of a dead node, with a tool still working in it.
    let dead = attempt("t-dead-a1", dead_start, false);
    let needle = format!("300.{}", marker());
    let mut tool = Command::new("setsid")
        .args(["sleep", &needle])
        .current_dir(dead.join("work"))
        .spawn()
        .expect("start a leftover tool");
    // A finished attempt whose node died before removing its directory: the branch stays.
    let kept = attempt("t-kept-a1", dead_start, true);
    // An attempt of a live node (this process): left alone.
    let live = root.join("t-live-a1");
    std::fs::create_dir_all(live.join("work")).expect("mkdir");
    write_record(&live, own_start_time(), None, None, false);
    // A worktree made by an older version: no record, the worktree is the directory.
    let old = root.join("t-old-a1");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "supervisor/t-old-a1",
            old.to_str().expect("utf-8"),
        ],
    );

    let report = claude_cli::recover(&root);
    let mut removed = report.workspaces.clone();
    removed.sort();
    assert_eq!(removed, vec![dead, kept, old], "{report:?}");
    let mut deleted = report.branches_deleted.clone();
    deleted.sort();
    assert_eq!(deleted, vec!["supervisor/t-dead-a1", "supervisor/t-old-a1"]);
    assert_eq!(report.processes_killed, 1, "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(!tool.wait().expect("reap").success());
    assert!(processes_with(&needle).is_empty());
    assert!(live.join("work").exists(), "a live attempt was touched");
    let branches = git(&repo, &["branch", "--list", "supervisor/*"]);
    assert_eq!(branches.trim(), "supervisor/t-kept-a1");
    let list = git(&repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(
        list.lines().filter(|l| l.starts_with("worktree ")).count(),
        1,
        "{list}"
    );
}

#[tokio::test]
async fn a_run_without_changes_has_no_diff_and_failures_still_clean_up() {
    let fake = Fake::printing(&[INIT, RESULT_OK]);
    let repo = repo(fake.dir.path());
    let mut req = request(TaskType::PrReview, Duration::from_secs(30));
    req.context
        .insert("repo".into(), repo.display().to_string());
    let (result, _) = run(&fake.provider(), req.clone()).await;
    assert!(result.expect("success").artifacts.is_empty());
    assert_worktrees_gone(&repo, &fake.worktree_root());

    let failing = Fake::new("touch junk.txt\necho 'boom' >&2\nexit 1");
    let provider = failing.provider_with(ClaudeCliConfig {
        worktree_dir: Some(fake.worktree_root()),
        ..failing.config()
    });
    let (result, _) = run(&provider, req).await;
    assert!(result.is_err());
    assert_worktrees_gone(&repo, &fake.worktree_root());
}

#[tokio::test]
async fn a_bad_repo_or_ref_is_a_bad_request() {
    let fake = Fake::printing(&[INIT, RESULT_OK]);
    let plain = fake.path("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    let repo = repo(fake.dir.path());
    let cases = [
        (plain.display().to_string(), None),
        (fake.path("missing").display().to_string(), None),
        (repo.display().to_string(), Some("no-such-branch")),
    ];
    for (path, git_ref) in cases {
        let mut req = request(TaskType::BugFix, Duration::from_secs(30));
        req.context.insert("repo".into(), path.clone());
        if let Some(r) = git_ref {
            req.context.insert("ref".into(), r.into());
        }
        let (result, _) = run(&fake.provider(), req).await;
        match result {
            Err(ProviderError::Permanent { kind, message }) => {
                assert_eq!(kind, "bad_request");
                let named = git_ref.unwrap_or(&path);
                assert!(message.contains(named), "{message}");
            }
            other => panic!("expected bad_request for {path}, got {other:?}"),
        }
    }
    assert!(!fake.path("argv").exists(), "the CLI must not have run");
    assert_worktrees_gone(&repo, &fake.worktree_root());
}

#[tokio::test]
async fn health_runs_version() {
    let fake = Fake::new(
        "if [ \"$1\" = --version ]; then echo '2.0.14 (Claude Code)'; exit 0; fi\nexit 1",
    );
    let h = fake.provider().health().await;
    assert!(h.healthy, "{h:?}");
    assert!(
        h.detail.starts_with("2.0.14 (Claude Code); sandbox: "),
        "{h:?}"
    );
    assert_eq!(fake.argv(), vec!["--version"]);

    let broken = Fake::new("echo 'node: not found' >&2\nexit 127");
    let h = broken.provider().health().await;
    assert!(!h.healthy);
    assert!(h.detail.contains("node: not found"), "{h:?}");

    let missing = fake.provider_with(ClaudeCliConfig {
        binary: fake.path("nope"),
        ..fake.config()
    });
    let h = missing.health().await;
    assert!(!h.healthy);
    assert!(h.detail.starts_with("not installed: "), "{h:?}");
}

#[test]
fn the_sandbox_is_described_for_the_node_to_print() {
    let fake = Fake::printing(&[]);
    for (mode, words) in [
        (IsolationMode::PidNamespace, "pid namespace"),
        (IsolationMode::Cgroup, "cgroup"),
        (IsolationMode::Subreaper, "subreaper"),
    ] {
        let Some(p) = provider_in(&fake, mode) else {
            continue;
        };
        let said = p.sandbox().expect("a description");
        assert!(said.starts_with(words), "{mode:?}: {said}");
    }
    let auto = fake.provider().sandbox().expect("a description");
    assert!(!auto.is_empty());
}

#[tokio::test]
async fn capabilities_and_estimate() {
    let fake = Fake::printing(&[]);
    let p = fake.provider();
    let caps = p.capabilities();
    assert_eq!(caps.task_types, TaskType::ALL.to_vec());
    assert_eq!(caps.models, vec!["default".to_string()]);
    assert_eq!(caps.max_context_tokens, 200_000);
    assert!(caps.streaming && caps.tools);
    assert_eq!(p.kind(), "claude_cli");
    // Sonnet prices: 2000 output tokens are $0.03; the prompt adds a little.
    let est = p.estimate_cost(&request(TaskType::BugFix, Duration::from_secs(1)));
    assert!(est > 30_000 && est < 31_000, "{est}");
}
