//! The `supervisor` command itself against a real node: submit --wait, get and list as
//! JSON, piped watch output, cancel, retry, stats, providers, its error messages, what it
//! prints of hostile text, which commands take which options, and what `up` leaves
//! behind when it cannot start.

mod common;

use common::{NodeProcess, cli, supervisor, supervisor_in};

/// The characters a terminal would obey rather than show.
fn obeyed(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| {
            matches!(*c, '\x1b' | '\x07' | '\x7f' | '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}')
        })
        .collect()
}

#[test]
fn task_commands_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "50ms")],
    );
    let addr = node.addr.as_str();

    let (code, out, err) = cli(
        addr,
        &[
            "task",
            "submit",
            "--type",
            "pr_review",
            "--prompt",
            "review the pager change",
            "--label",
            "cli",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let id = out.lines().next().expect("id line").trim().to_string();
    assert_eq!(id.len(), 36, "first line is the task id: {out}");
    assert!(out.contains("succeeded"), "{out}");
    assert!(
        out.contains("[mock provider] pr_review"),
        "streamed output is shown: {out}"
    );

    let (code, out, _) = cli(addr, &["task", "get", &id, "--output", "json"]);
    assert_eq!(code, 0);
    let task: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["type"], "pr_review");
    assert!(
        task["result"]["output"]
            .as_str()
            .unwrap_or("")
            .contains("pr_review")
    );

    let (code, out, _) = cli(
        addr,
        &["task", "list", "--label", "cli", "--output", "json"],
    );
    assert_eq!(code, 0);
    let tasks: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(tasks.as_array().map(|a| a.len()), Some(1));

    // Piped watch prints plain lines and ends with the terminal event.
    let (code, out, _) = cli(addr, &["task", "watch", &id]);
    assert_eq!(code, 0);
    let first = out.lines().next().unwrap_or("");
    assert!(
        first.starts_with("1 ") && first.contains("submitted"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("  | ")),
        "output lines are prefixed: {out}"
    );
    assert!(out.contains("succeeded"), "{out}");

    // Cancel and retry.
    let (code, out, _) = cli(
        addr,
        &[
            "task",
            "submit",
            "--type",
            "feature",
            "--prompt",
            "later",
            "--priority",
            "low",
        ],
    );
    assert_eq!(code, 0);
    let second = out.trim().to_string();
    let (code, _, err) = cli(addr, &["task", "cancel", &second, "--reason", "not now"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(addr, &["task", "retry", &second, "--output", "json"]);
    assert_eq!(code, 0);
    let retried: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(retried["retry_of"], second.as_str());

    let (code, out, _) = cli(addr, &["task", "stats", "--output", "json"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(stats["cancelled"], 1);

    let (code, out, _) = cli(addr, &["providers", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("mock"), "{out}");
}

#[test]
fn errors_are_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let addr = node.addr.as_str();

    let (code, _, err) = cli(
        addr,
        &["task", "submit", "--type", "bugfix", "--prompt", "x"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("bugfix") && err.contains("bug_fix"), "{err}");

    let (code, _, err) = cli(
        addr,
        &["task", "get", "0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");

    let (code, _, err) = cli("127.0.0.1:1", &["task", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("supervisor up"),
        "says how to start a node: {err}"
    );
}

#[test]
fn config_default_prints_the_annotated_defaults() {
    let (code, text, _) = supervisor(&["config", "default"], &[]);
    assert_eq!(code, 0);
    assert!(text.contains("lease_duration = \"5s\""), "{text}");
    let (code, _, err) = supervisor(
        &["up", "--listen", "127.0.0.1:0"],
        &[("SUPERVISOR_ENGINE__LEASE_DURATION", "1ms")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("lease_duration"), "names the bad key: {err}");
}

#[test]
fn hostile_text_is_shown_escaped_and_json_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "300ms")],
    );
    let addr = node.addr.as_str();
    // The mock echoes the prompt's first words in its output, as a model may.
    let prompt = "fix \x1b[31mred\x1b[0m bug \u{202e}txt.exe\x07\nand\tthis";

    let (code, out, err) = cli(
        addr,
        &[
            "task", "submit", "--type", "bug_fix", "--prompt", prompt, "--wait",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(obeyed(&out), Vec::<char>::new(), "submit --wait: {out:?}");
    assert!(out.contains("\\e[31mred\\e[0m"), "{out}");
    let id = out.lines().next().unwrap_or_default().trim().to_owned();

    let (code, out, _) = cli(addr, &["task", "get", &id]);
    assert_eq!(code, 0);
    assert_eq!(obeyed(&out), Vec::<char>::new(), "task get: {out:?}");
    // The prompt is a body: its line break and tab stay, the rest is escaped.
    assert!(
        out.contains("prompt:\n  fix \\e[31mred\\e[0m bug \\u{202e}txt.exe\\u{7}\n  and\tthis\n"),
        "{out}"
    );
    let (code, out, _) = cli(addr, &["task", "get", &id, "--output", "json"]);
    assert_eq!(code, 0);
    let task: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(task["prompt"], prompt, "JSON is exact");

    // A cancel reason is one line wherever it shows.
    let (code, out, _) = cli(
        addr,
        &["task", "submit", "--type", "feature", "--prompt", "later"],
    );
    assert_eq!(code, 0);
    let second = out.trim().to_owned();
    let reason = "\x1b[2Jgone\nfor good";
    let (code, out, err) = cli(addr, &["task", "cancel", &second, "--reason", reason]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("task {second} cancelled\n"));
    let (code, out, _) = cli(addr, &["task", "get", &second]);
    assert_eq!(code, 0);
    assert_eq!(obeyed(&out), Vec::<char>::new(), "{out:?}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("error:") && l.ends_with("cancelled: \\e[2Jgone\\nfor good")),
        "{out}"
    );
    let (code, out, _) = cli(addr, &["task", "watch", &second]);
    assert_eq!(code, 4, "{out}");
    assert_eq!(obeyed(&out), Vec::<char>::new(), "{out:?}");
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("task {second} cancelled in "))
            && last.ends_with("s: \\e[2Jgone\\nfor good"),
        "says cancelled once, on one line: {out}"
    );

    let (code, out, _) = cli(addr, &["task", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "a header and a row per task: {out}");

    // Errors quote what the client sent: escaped too.
    let (code, _, err) = cli(addr, &["task", "get", "\x1b[31mnot-an-id"]);
    assert_eq!(code, 1);
    assert_eq!(obeyed(&err), Vec::<char>::new(), "{err:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn only_the_commands_that_talk_to_a_node_take_server_and_output() {
    for args in [
        &["up", "--help"][..],
        &["config", "show", "--help"],
        &["store", "init", "--help"],
    ] {
        let (code, out, _) = supervisor(args, &[]);
        assert_eq!(code, 0);
        assert!(
            !out.contains("--server") && !out.contains("--output"),
            "{args:?}: {out}"
        );
    }
    let (_, out, _) = supervisor(&["up", "--help"], &[]);
    assert!(out.contains("--listen"), "{out}");
    let (_, out, _) = supervisor(&["task", "list", "--help"], &[]);
    assert!(
        out.contains("--server") && out.contains("--output"),
        "{out}"
    );

    let (code, _, err) = supervisor(&["config", "show", "--server", "h:1"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--server"), "{err}");
    for args in [
        &["--server", "h:1", "config", "show"][..],
        &["--output", "json", "up"],
        &["--server", "h:1", "store", "init"],
    ] {
        let (code, _, err) = supervisor(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("talk to a node"), "{args:?}: {err}");
    }

    // `config show` says what it shows.
    let (code, out, _) = supervisor(
        &["config", "show"],
        &[("SUPERVISOR_ENGINE__LEASE_DURATION", "7s")],
    );
    assert_eq!(code, 0);
    assert!(
        out.starts_with("# The configuration a node started here with `supervisor up`"),
        "{out}"
    );
    assert!(
        out.contains("SUPERVISOR_* variables of this environment"),
        "{out}"
    );
    assert!(out.contains("lease_duration = \"7s\""), "{out}");

    // The client options work before the subject, after it, and after its command.
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    for args in [
        &[
            "--server",
            node.addr.as_str(),
            "--output",
            "json",
            "task",
            "list",
        ][..],
        &[
            "task",
            "--server",
            node.addr.as_str(),
            "--output",
            "json",
            "list",
        ],
        &[
            "task",
            "list",
            "--server",
            node.addr.as_str(),
            "--output",
            "json",
        ],
        &[
            "--server",
            "127.0.0.1:1",
            "task",
            "list",
            "--server",
            node.addr.as_str(),
            "--output",
            "json",
        ],
    ] {
        let (code, out, err) = supervisor(args, &[("SUPERVISOR_SERVER", "127.0.0.1:1")]);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(out.trim(), "[]", "{args:?}");
    }

    // `providers list` says which numbers are the node's since it started.
    let (code, out, _) = cli(&node.addr, &["providers", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("since the answering node started"), "{out}");
    assert!(out.contains("durable and cluster-wide"), "{out}");
}

#[test]
fn up_leaves_nothing_behind_when_it_cannot_start() {
    // The port is taken: no store file, no data directory.
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let (code, _, err) = supervisor(
        &[
            "up",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("could not listen on"), "{err}");
    assert!(!data.exists(), "created {}", data.display());

    // A node on PostgreSQL (here one that cannot be reached) makes no ./supervisor-data.
    let (code, _, err) = supervisor_in(
        dir.path(),
        &[
            "up",
            "--store",
            "postgres://sv@127.0.0.1:1/sv",
            "--join",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_node_with_authentication_takes_the_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_AUTH__ENABLED", "true")]);
    // The first start writes an admin key, just after it says where it listens.
    let key_file = dir.path().join("admin.key");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let key = loop {
        match std::fs::read_to_string(&key_file) {
            Ok(key) if key.ends_with('\n') => break key,
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => panic!("no admin key at {}: {other:?}", key_file.display()),
        }
    };

    let (code, _, err) = cli(&node.addr, &["task", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("UNAUTHENTICATED"), "{err}");
    for (name, value) in [
        ("SUPERVISOR_TOKEN", key.trim()),
        ("SUPERVISOR_TOKEN_FILE", key_file.to_str().unwrap()),
    ] {
        let (code, out, err) = supervisor(
            &["task", "list", "--output", "json"],
            &[("SUPERVISOR_SERVER", &node.addr), (name, value)],
        );
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(out.trim(), "[]", "{name}");
    }
}
