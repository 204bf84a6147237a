//! The cluster commands against a real node process: `cluster status`, `node drain`
//! (the node finishes its work, records that it left and exits), and the start-up checks
//! of `up --store ... --join`. Multi-node behaviour under faults lives in the chaos suite.

mod common;

use std::time::{Duration, Instant};

use common::{NodeProcess, cli, supervisor};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn status_lists_the_node_and_drain_makes_it_finish_and_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("SUPERVISOR_NODE__ID", "drain-node"),
        ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "300ms"),
    ];
    let mut node = NodeProcess::start(dir.path(), &env);
    let addr = node.url();

    let (code, out, err) = cli(&addr, &["cluster", "status", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let status = json(&out);
    assert_eq!(status["answered_by"], "drain-node");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{out}");
    assert_eq!(nodes[0]["state"], "active");
    assert_eq!(nodes[0]["liveness"], "self");
    assert_eq!(nodes[0]["providers"], serde_json::json!(["mock"]));
    let (code, out, _) = cli(&addr, &["cluster", "status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("drain-node") && out.contains("active"),
        "{out}"
    );

    let mut ids = Vec::new();
    for i in 0..20 {
        let (code, out, err) = cli(
            &addr,
            &[
                "task",
                "submit",
                "--type",
                "bug_fix",
                "--prompt",
                &format!("d{i}"),
            ],
        );
        assert_eq!(code, 0, "{err}");
        ids.push(out.trim().to_string());
    }

    let (code, _, err) = cli(&addr, &["node", "drain", "no-such-node"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no node with id") && err.contains("cluster status"),
        "{err}"
    );

    let (code, out, err) = cli(&addr, &["node", "drain", "drain-node"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("asked node drain-node to drain"), "{out}");
    // The node picks the request up on its next heartbeat, drains and exits cleanly.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not exit after a drain request"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");

    // Restarted on the same store, it finishes whatever it handed back; nothing is lost.
    let node = NodeProcess::start(dir.path(), &env);
    let (code, out, err) = cli(&node.url(), &["cluster", "status", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["nodes"][0]["epoch"], 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let (code, out, err) = cli(&node.url(), &["task", "get", id, "--output", "json"]);
            assert_eq!(code, 0, "{err}");
            let task = json(&out);
            if task["status"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "task {id} did not finish: {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // `--wait` asked of the node it talks to: the node leaves, and the command says so
    // (it may see the node's record say "left" first, or lose the connection first).
    let (code, out, err) = cli(&node.url(), &["node", "drain", "drain-node", "--wait"]);
    match code {
        0 => assert!(out.contains("drained and left"), "{out}"),
        _ => assert!(
            err.contains("lost the node this command talks to") && err.contains("--server OTHER"),
            "{err}"
        ),
    }
}

#[test]
fn up_refuses_a_store_that_does_not_fit_the_join_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let (code, _, err) = supervisor(args, &[]);
        (code, err)
    };
    let (code, err) = run(&[
        "up",
        "--join",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--join needs a store that nodes can share"),
        "{err}"
    );
    let (code, err) = run(&[
        "up",
        "--store",
        "postgres://sv@127.0.0.1:1/sv",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("pass --join"), "{err}");
    let (code, err) = run(&["store", "init", "--store", "mysql://x"]);
    assert_eq!(code, 1);
    assert!(err.contains("postgres://"), "{err}");
    let (code, err) = run(&["store", "init", "--store", "fdb://"]);
    assert_eq!(code, 1);
    assert!(err.contains("--features fdb"), "{err}");
}
