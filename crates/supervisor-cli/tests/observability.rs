//! Traces and metrics against real receivers: Arize Phoenix takes the nodes' OTLP spans
//! and answers queries about them; Prometheus scrapes a node's `/metrics`. Both come
//! from `scripts/obs-env` (run by `scripts/test`); a missing one fails the test, never
//! skips it.

mod common;

use std::time::Duration;

use supervisor_proto::v1;
use supervisor_proto::v1::task_service_client::TaskServiceClient;

use common::NodeProcess;
use common::receivers::{Phoenix, Prometheus, Span, http_request};

/// Guard against hangs only; no assertion depends on how long anything took.
const PATIENCE: Duration = Duration::from_secs(90);

/// A span attribute as a string, whatever its JSON type (Phoenix keeps numbers as
/// numbers and may nest dotted names).
fn attr_str(span: &Span, key: &str) -> Option<String> {
    if let Some(v) = span.attributes.get(key) {
        return Some(v.as_str().map_or_else(|| v.to_string(), str::to_string));
    }
    let mut v = serde_json::Value::Object(span.attributes.clone());
    for part in key.split('.') {
        v = v.get(part)?.clone();
    }
    Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))
}

async fn submit_traced(addr: &str, traceparent: &str, prompt: &str) -> v1::Task {
    let mut client = TaskServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(v1::SubmitTaskRequest {
        r#type: v1::TaskType::Testing as i32,
        prompt: prompt.into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("traceparent", traceparent.parse().expect("metadata"));
    client.submit_task(req).await.expect("submit").into_inner()
}

async fn wait_done(addr: &str, id: &str) {
    let mut client = TaskServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let task = client
            .get_task(v1::GetTaskRequest { id: id.into() })
            .await
            .expect("get")
            .into_inner();
        if task.status == v1::TaskStatus::Succeeded as i32 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} did not finish: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submitted on node n1, run on node n2: one trace holds the caller's context, n1's
/// server and submit spans, n2's lease, attempt, provider call (with GenAI attributes)
/// and completion. n1 cannot take the task: its only provider slot is held by a long
/// task it leased while it was alone.
#[tokio::test(flavor = "multi_thread")]
async fn one_trace_follows_a_task_from_the_node_that_took_it_to_the_node_that_ran_it() {
    let phoenix = Phoenix::start();
    let (_pg, url) = common::pg_store().await;
    let endpoint = phoenix.otlp_grpc_endpoint();
    let otel = |service: &'static str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
            // Phoenix takes traces only.
            ("OTEL_METRICS_EXPORTER", "none".to_string()),
            ("OTEL_SERVICE_NAME", service.to_string()),
        ]
    };
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |i: usize, env: Vec<(&'static str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        NodeProcess::start_with_args(
            dirs[i].path(),
            &[
                "--store",
                &url,
                "--join",
                "--node-id",
                &format!("n{}", i + 1),
            ],
            &env,
        )
    };
    // n1: one slow provider with a single slot (cluster-wide, as provider limits are).
    let mut env1 = otel("sv-n1");
    env1.push(("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "300s".into()));
    env1.push((
        "SUPERVISOR_PROVIDERS__MOCK__LIMITS__MAX_CONCURRENCY",
        "1".into(),
    ));
    let n1 = start(0, env1);
    // n1's only slot: a task it leases while it is alone.
    let blocker = submit_traced(
        &n1.addr,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "hold the slot",
    )
    .await;
    {
        let mut client = TaskServiceClient::connect(n1.url()).await.expect("connect");
        let deadline = std::time::Instant::now() + PATIENCE;
        while client
            .get_task(v1::GetTaskRequest {
                id: blocker.id.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .status
            != v1::TaskStatus::Running as i32
        {
            assert!(
                std::time::Instant::now() < deadline,
                "n1 never ran the blocker"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // n2: a fast provider of its own.
    let mut env2 = otel("sv-n2");
    env2.push(("SUPERVISOR_PROVIDERS__FAST__KIND", "mock".into()));
    env2.push(("SUPERVISOR_PROVIDERS__FAST__LATENCY", "20ms".into()));
    env2.push(("SUPERVISOR_PROVIDERS__FAST__INPUT_TOKENS", "321".into()));
    let n2 = start(1, env2);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let task = submit_traced(
        &n1.addr,
        &format!("00-{trace_id}-{caller_span}-01"),
        "write the tests",
    )
    .await;
    wait_done(&n1.addr, &task.id).await;
    let (code, out, err) = common::cli(&n2.addr, &["task", "get", &task.id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("trace") && l.contains(trace_id)),
        "task get names the trace: {out}"
    );

    let wanted = [
        "supervisor.v1.TaskService/SubmitTask",
        "supervisor.submit",
        "supervisor.lease",
        "supervisor.attempt",
        "supervisor.complete",
    ];
    let spans = phoenix.wait_for_spans(
        |all| {
            let ours: Vec<&Span> = all.iter().filter(|s| s.trace_id == trace_id).collect();
            wanted.iter().all(|w| ours.iter().any(|s| s.name == *w))
                && ours.iter().any(|s| s.name.starts_with("chat"))
        },
        PATIENCE,
    );
    let ours: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let one = |name: &str| -> &Span {
        ours.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in the trace: {ours:#?}"))
    };
    let server = one("supervisor.v1.TaskService/SubmitTask");
    assert_eq!(
        server.parent_id.as_deref(),
        Some(caller_span),
        "the caller's context continues"
    );
    assert_eq!(
        attr_str(server, "supervisor.node.id").as_deref(),
        Some("n1")
    );
    let submit = one("supervisor.submit");
    assert_eq!(submit.parent_id.as_deref(), Some(server.span_id.as_str()));
    assert_eq!(
        attr_str(submit, "supervisor.task.id").as_deref(),
        Some(task.id.as_str())
    );
    for name in ["supervisor.lease", "supervisor.attempt"] {
        let s = one(name);
        assert_eq!(
            attr_str(s, "supervisor.node.id").as_deref(),
            Some("n2"),
            "{name}: {s:#?}"
        );
        assert_eq!(
            attr_str(s, "supervisor.task.id").as_deref(),
            Some(task.id.as_str())
        );
        assert_eq!(
            s.parent_id.as_deref(),
            Some(submit.span_id.as_str()),
            "{name} continues the submit"
        );
    }
    let attempt = one("supervisor.attempt");
    let call = ours
        .iter()
        .find(|s| s.name.starts_with("chat"))
        .expect("provider span");
    assert_eq!(call.parent_id.as_deref(), Some(attempt.span_id.as_str()));
    assert_eq!(
        attr_str(call, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        attr_str(call, "gen_ai.system").as_deref(),
        Some("supervisor.mock")
    );
    assert_eq!(
        attr_str(call, "gen_ai.usage.input_tokens").as_deref(),
        Some("321")
    );
    assert!(
        attr_str(call, "gen_ai.usage.output_tokens").is_some(),
        "{call:#?}"
    );
    assert!(attr_str(call, "supervisor.cost_usd").is_some(), "{call:#?}");
    assert!(
        attr_str(call, "gen_ai.prompt").is_none(),
        "prompts stay out by default"
    );
    let complete = one("supervisor.complete");
    assert_eq!(
        complete.parent_id.as_deref(),
        Some(attempt.span_id.as_str())
    );
    drop((n1, n2));
}

/// Prometheus scrapes a node's `/metrics`: after tasks ran, the task counters and
/// latency histograms moved. The node also exports spans to a collector that is not
/// there: the tasks are unaffected and the dropped spans are counted.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_tasks_move_and_a_dead_collector_costs_only_dropped_spans() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://127.0.0.1:{dead_port}");
    let node = NodeProcess::start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "5ms"),
        ],
    );
    let http = node.http_addr.clone().expect("the node serves /metrics");
    let (status, body) = http_request("GET", &http, "/healthz", None).expect("healthz");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = http_request("GET", &http, "/assets/nothing.txt", None).expect("404");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("nothing at /assets/nothing.txt"));

    let prometheus = Prometheus::start(std::slice::from_ref(&http));
    const N: usize = 20;
    let mut ids = Vec::new();
    for i in 0..N {
        let t = submit_traced(
            &node.addr,
            "00-11111111111111111111111111111111-2222222222222222-01",
            &format!("test {i}"),
        )
        .await;
        ids.push(t.id);
    }
    for id in &ids {
        wait_done(&node.addr, id).await;
    }
    let finished = prometheus.wait_until(
        "sum(supervisor_tasks_finished_total{status=\"succeeded\",task_type=\"testing\"})",
        |r| r.first().is_some_and(|(_, v)| *v == N as f64),
        PATIENCE,
    );
    assert_eq!(finished[0].1, N as f64);
    let submitted = prometheus.query("sum(supervisor_tasks_submitted_total{tenant=\"default\"})");
    assert_eq!(submitted[0].1, N as f64);
    let durations = prometheus.query("sum(supervisor_task_duration_seconds_count)");
    assert_eq!(durations[0].1, N as f64);
    let waits = prometheus.query("sum(supervisor_task_queue_wait_seconds_count)");
    assert_eq!(waits[0].1, N as f64);
    // A quantile Prometheus computes from the histogram's buckets.
    let p50 = prometheus.wait_until(
        "histogram_quantile(0.5, sum by (le) (supervisor_task_duration_seconds_bucket))",
        |r| r.first().is_some_and(|(_, v)| v.is_finite() && *v > 0.0),
        PATIENCE,
    );
    assert!(p50[0].1 < 60.0, "p50 {}", p50[0].1);
    let commits = prometheus
        .query("sum(supervisor_store_commit_duration_seconds_count{backend=\"embedded\"})");
    assert!(commits[0].1 >= N as f64, "{commits:?}");
    let requests = prometheus
        .query("sum(supervisor_provider_requests_total{provider=\"mock\",outcome=\"ok\"})");
    assert_eq!(requests[0].1, N as f64);
    prometheus.wait_until(
        "supervisor_queue_depth{priority=\"normal\"}",
        |r| r.first().is_some_and(|(_, v)| *v == 0.0),
        PATIENCE,
    );
    prometheus.wait_until(
        "supervisor_node_serving",
        |r| r.first().is_some_and(|(_, v)| *v == 1.0),
        PATIENCE,
    );
    // Nothing listens at the collector's address: every span is dropped, and counted.
    let dropped = prometheus.wait_until(
        "supervisor_telemetry_spans_dropped_total",
        |r| r.first().is_some_and(|(_, v)| *v >= N as f64),
        PATIENCE,
    );
    assert!(dropped[0].1 >= N as f64);
}
