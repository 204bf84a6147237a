//! End to end over gRPC through the Rust client, against a real `supervisor up` process,
//! and every bad input with its status code and message.

mod common;

use std::time::Duration;

use futures::StreamExt;
use supervisor_client::Client;
use supervisor_proto::v1;
use tonic::Code;

use common::NodeProcess;

fn submit_req(prompt: &str) -> v1::SubmitTaskRequest {
    v1::SubmitTaskRequest {
        r#type: v1::TaskType::BugFix as i32,
        prompt: prompt.into(),
        ..Default::default()
    }
}

async fn connect(node: &NodeProcess) -> Client {
    Client::connect(&node.url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_get_list_cancel_retry() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "200ms")],
    );
    let client = connect(&node).await;

    let mut req = submit_req("fix the off-by-one in the pager");
    req.labels = vec!["team-a".into()];
    req.priority = v1::Priority::High as i32;
    let task = client.submit(req).await.unwrap();
    assert_eq!(task.status, v1::TaskStatus::Queued as i32);
    assert_eq!(task.priority, v1::Priority::High as i32);

    // Watch from the start: events in order, output streamed, ends at the terminal event.
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(60),
        client.watch(&task.id, 0).collect::<Vec<_>>(),
    )
    .await
    .expect("watch ends");
    let events: Vec<v1::TaskEvent> = events.into_iter().map(|e| e.unwrap()).collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events.first().unwrap().r#type,
        v1::TaskEventType::Submitted as i32
    );
    assert_eq!(
        events.last().unwrap().r#type,
        v1::TaskEventType::Succeeded as i32
    );
    let streamed: String = events
        .iter()
        .filter(|e| e.r#type == v1::TaskEventType::Output as i32)
        .map(|e| e.output.as_str())
        .collect();

    let done = client.get(&task.id).await.unwrap();
    assert_eq!(done.status, v1::TaskStatus::Succeeded as i32);
    let result = done.result.expect("result");
    assert_eq!(result.output, streamed);
    assert!(result.output.contains("[mock provider] bug_fix"));
    assert!(result.usage.unwrap().output_tokens > 0);
    assert_eq!(done.attempt, 1);
    assert!(done.finished_at.is_some());

    // Resume a watch after seq 2.
    let rest: Vec<_> = client.watch(&task.id, 2).collect().await;
    assert_eq!(rest.len(), events.len() - 2);

    // List by label and by status.
    let listed = client
        .list(v1::ListTasksRequest {
            label: "team-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!(listed.tasks[0].id, task.id);

    // Idempotency: the same key returns the same task.
    let mut keyed = submit_req("deploy once");
    keyed.idempotency_key = "deploy-7".into();
    let a = client.submit(keyed.clone()).await.unwrap();
    let b = client.submit(keyed).await.unwrap();
    assert_eq!(a.id, b.id);

    // Cancel a slow task, then retry it as a new task.
    let slow = client.submit(submit_req("slow one")).await.unwrap();
    let cancelled = client.cancel(&slow.id, "changed plans").await.unwrap();
    assert_eq!(cancelled.status, v1::TaskStatus::Cancelled as i32);
    assert!(cancelled.error.contains("changed plans"));
    let retried = client.retry(&slow.id).await.unwrap();
    assert_ne!(retried.id, slow.id);
    assert_eq!(retried.retry_of, slow.id);
    let retried_done = tokio::time::timeout(Duration::from_secs(60), client.wait(&retried.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried_done.status, v1::TaskStatus::Succeeded as i32);

    // The keyed task runs on its own; the counts below need it finished.
    tokio::time::timeout(Duration::from_secs(60), client.wait(&a.id))
        .await
        .unwrap()
        .unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.cancelled, 1);
    assert!(stats.succeeded >= 3, "{stats:?}");
    let providers = client.providers().await.unwrap();
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].name, "mock");
    assert!(providers[0].healthy, "{}", providers[0].health_detail);
    assert_eq!(providers[0].completions_accepted, stats.succeeded);
}

async fn expect_status<T: std::fmt::Debug>(
    result: Result<T, supervisor_client::ClientError>,
    code: Code,
    needles: &[&str],
) {
    let err = result.expect_err("call must fail");
    assert_eq!(err.code(), code, "{err}");
    let message = err.message();
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} lacks {needle:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "5s")]);
    let client = connect(&node).await;

    let mut r = submit_req("x");
    r.r#type = v1::TaskType::Unspecified as i32;
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["type", "required", "bug_fix"],
    )
    .await;

    let mut r = submit_req("x");
    r.r#type = 99;
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["type", "unknown task type 99"],
    )
    .await;

    let r = submit_req("   ");
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["prompt", "empty"],
    )
    .await;

    let r = submit_req(&"a".repeat(65_537));
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["prompt", "65537 bytes", "limit is 65536"],
    )
    .await;

    let mut r = submit_req("x");
    r.priority = 42;
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["priority", "unknown priority 42"],
    )
    .await;

    let mut r = submit_req("x");
    r.max_attempts = 1000;
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["max_attempts", "1000"],
    )
    .await;

    expect_status(
        client.get("not-a-uuid").await,
        Code::InvalidArgument,
        &["id", "not-a-uuid", "UUID"],
    )
    .await;
    expect_status(
        client.get("").await,
        Code::InvalidArgument,
        &["id", "required"],
    )
    .await;
    let unknown = "0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f";
    expect_status(client.get(unknown).await, Code::NotFound, &[unknown]).await;
    expect_status(client.cancel(unknown, "").await, Code::NotFound, &[unknown]).await;
    expect_status(client.retry(unknown).await, Code::NotFound, &[unknown]).await;
    let mut watch = client.watch(unknown, 0);
    let first = watch.next().await.expect("an error item");
    let err = first.expect_err("watching an unknown task fails");
    assert_eq!(err.code(), Code::NotFound, "{err}");

    expect_status(
        client
            .list(v1::ListTasksRequest {
                page_size: 5000,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["page_size", "1000"],
    )
    .await;
    expect_status(
        client
            .list(v1::ListTasksRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["page_token"],
    )
    .await;
    expect_status(
        client
            .list(v1::ListTasksRequest {
                status: 17,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["status", "17"],
    )
    .await;

    // Retry of a task that is running (or queued) is a failed precondition.
    let t = client.submit(submit_req("long running")).await.unwrap();
    expect_status(
        client.retry(&t.id).await,
        Code::FailedPrecondition,
        &[&t.id, "only failed or cancelled"],
    )
    .await;
    let quick = client.cancel(&t.id, "").await.unwrap();
    assert_eq!(quick.status, v1::TaskStatus::Cancelled as i32);
    let again = client.retry(&t.id).await.unwrap();
    client.cancel(&again.id, "").await.unwrap();

    // A repository task on a cluster without a provider that can work in one (only the
    // mock here) is refused at once instead of running without touching the repository.
    let mut repo_task = submit_req("fix the bug in the checkout");
    repo_task.context.insert("repo".into(), "/src/app".into());
    expect_status(
        client.submit(repo_task).await,
        Code::FailedPrecondition,
        &["/src/app", "claude_cli"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(
        dir.path(),
        &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "100ms")],
    );
    let client = connect(&node).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            client
                .submit(submit_req(&format!("task {i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let status = node.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    drop(node);
    let node = NodeProcess::start(dir.path(), &[]);
    let client = connect(&node).await;
    for id in &ids {
        let t = tokio::time::timeout(Duration::from_secs(60), client.wait(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.status, v1::TaskStatus::Succeeded as i32);
    }
    let providers = client.providers().await.unwrap();
    assert_eq!(providers[0].completions_accepted, ids.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_and_health_answer() {
    use tonic_reflection::pb::{v1 as refl_v1, v1alpha as refl_v1alpha};
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let channel = tonic::transport::Endpoint::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .expect("connect");

    let mut v1 = refl_v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = refl_v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl_v1::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1 reflection")
        .into_inner();
    let response = stream.next().await.expect("a response").expect("ok");
    let Some(refl_v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1 reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "supervisor.v1.TaskService"),
        "{names:?}"
    );

    let mut alpha =
        refl_v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = refl_v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl_v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "supervisor.v1.TaskService".into(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let response = stream.next().await.expect("a response").expect("ok");
    assert!(
        matches!(
            response.message_response,
            Some(refl_v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
        ),
        "v1alpha returns the file defining TaskService"
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "",
        "supervisor.v1.TaskService",
        "supervisor.v1.ProviderService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_ledger_and_provider_watch_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            ("SUPERVISOR_PROVIDERS__MOCK__INPUT_TOKENS", "1000"),
            ("SUPERVISOR_PROVIDERS__MOCK__OUTPUT_TOKENS", "500"),
            (
                "SUPERVISOR_PROVIDERS__MOCK__PRICE_MICROS_PER_MTOK",
                "2000000",
            ),
        ],
    );
    let client = connect(&node).await;
    let mut watch = Box::pin(client.watch_providers(Duration::from_millis(100)));
    let first = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the watch sends the current list at once")
        .expect("an item")
        .expect("ok");
    assert_eq!(first[0].name, "mock");
    assert_eq!(first[0].circuit, "closed");
    let mut req = submit_req("charge me");
    req.specialty = "security_analyst".into();
    let t = client.submit(req).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), client.wait(&t.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.specialty, "security_analyst");
    assert_eq!(done.attempts.len(), 1);
    assert_eq!(done.attempts[0].provider, "mock");
    assert_eq!(done.cost_micros, 3000, "1500 tokens at $2 per million");
    // The watch reports the change (one more execution).
    let changed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(item) = watch.next().await {
            let list = item.expect("ok");
            if list[0].executions_succeeded >= 1 {
                return list;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("a change arrives");
    assert!(changed[0].latency_p50_ms >= 0.0);
    let spend = client.spend(None, None).await.unwrap();
    assert_eq!(spend.rows.len(), 1);
    assert_eq!(
        (
            spend.rows[0].provider.as_str(),
            spend.rows[0].attempts,
            spend.rows[0].cost_micros
        ),
        ("mock", 1, 3000)
    );
    assert_eq!(spend.total_cost_micros, 3000);
    // The event log says which specialty and provider ran the attempt.
    let events: Vec<v1::TaskEvent> = client.watch(&t.id, 0).map(|e| e.unwrap()).collect().await;
    assert!(
        events
            .iter()
            .any(|e| e.r#type == v1::TaskEventType::Activity as i32
                && e.message.contains("specialty security_analyst")
                && e.message.contains("provider mock")),
        "{events:?}"
    );
}

/// A finished task to watch or read back.
async fn finished_task(client: &Client) -> v1::Task {
    let task = client.submit(submit_req("finish quickly")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), client.wait(&task.id))
        .await
        .expect("the task finishes")
        .expect("wait")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_after_the_largest_sequence_numbers_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let client = connect(&node).await;
    let task = finished_task(&client).await;
    let mut workflows = client.workflow_service();
    let run = workflows
        .submit_workflow(v1::SubmitWorkflowRequest {
            source: Some(v1::WorkflowSource {
                source: Some(v1::workflow_source::Source::Yaml(
                    "name: one\nsteps:\n  - id: a\n    task: { type: testing, prompt: test }\n"
                        .into(),
                )),
            }),
            vars: Default::default(),
        })
        .await
        .expect("submit")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(60), client.wait_workflow(&run.id))
        .await
        .expect("the run ends")
        .expect("wait");
    for after_seq in [i64::MAX as u64 - 1, i64::MAX as u64, 1 << 63, u64::MAX] {
        let events: Vec<_> = client
            .task_service()
            .watch_task(v1::WatchTaskRequest {
                id: task.id.clone(),
                after_seq,
            })
            .await
            .expect("watch")
            .into_inner()
            .collect()
            .await;
        assert!(events.is_empty(), "after_seq {after_seq}: {events:?}");
        let events: Vec<_> = workflows
            .watch_workflow(v1::WatchWorkflowRequest {
                id: run.id.clone(),
                after_seq,
            })
            .await
            .expect("watch")
            .into_inner()
            .collect()
            .await;
        assert!(events.is_empty(), "after_seq {after_seq}: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_prompt_learns_the_prompt_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let client = connect(&node).await;
    // Under the request limit: decoded, then refused by the field's own limit.
    let r = submit_req(&"a".repeat(5_000_000));
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["prompt", "5000000 bytes", "limit is 65536"],
    )
    .await;
    // Over it: refused before decoding, still naming the prompt's limit.
    let r = submit_req(&"a".repeat(20_000_000));
    let err = client.submit(r).await.expect_err("refused");
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::InvalidArgument),
        "{err}"
    );
    let message = err.message();
    for needle in ["20000", "8388608", "prompt", "65536"] {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "5s")]);
    let client = connect(&node).await;
    let mut first = submit_req("deploy build 7");
    first.idempotency_key = "deploy-7".into();
    first.labels = vec!["b".into(), "a".into()];
    let task = client.submit(first.clone()).await.unwrap();
    // The very same request (labels in another order) is the same task.
    let mut same = first.clone();
    same.labels = vec!["a".into(), "b".into()];
    assert_eq!(client.submit(same).await.unwrap().id, task.id);
    for change in [
        |r: &mut v1::SubmitTaskRequest| r.prompt = "deploy build 8".into(),
        |r: &mut v1::SubmitTaskRequest| r.r#type = v1::TaskType::Deployment as i32,
        |r: &mut v1::SubmitTaskRequest| r.max_attempts = 7,
    ] {
        let mut other = first.clone();
        change(&mut other);
        expect_status(
            client.submit(other).await,
            Code::AlreadyExists,
            &["deploy-7", "different request", &task.id],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_limits_are_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let client = connect(&node).await;
    let mut r = submit_req("x");
    r.timeout_ms = u64::MAX;
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["timeout_ms", "86400000"],
    )
    .await;
    let mut r = submit_req("x");
    r.max_cost_usd = 1e308;
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["max_cost_usd", "10000"],
    )
    .await;
    let mut r = submit_req("x");
    r.max_attempts = 101;
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["max_attempts", "1 to 100"],
    )
    .await;
    // At the limits, accepted as given.
    let mut r = submit_req("x");
    r.timeout_ms = 86_400_000;
    r.max_cost_usd = 10_000.0;
    r.max_attempts = 100;
    let t = client.submit(r).await.unwrap();
    assert_eq!(
        (t.timeout_ms, t.max_cost_usd, t.max_attempts),
        (86_400_000, 10_000.0, 100)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "5s")]);
    let client = connect(&node).await;
    let mut r = submit_req("x");
    r.labels = vec!["ok".into(), "red\u{1b}[31m".into()];
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["labels", "U+001B", "byte 3"],
    )
    .await;
    let mut r = submit_req("x");
    r.labels = vec!["evil\u{202e}txt".into()];
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["labels", "U+202E"],
    )
    .await;
    let mut r = submit_req("x");
    r.context.insert("two\nlines".into(), "v".into());
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["context", "U+000A"],
    )
    .await;
    let mut r = submit_req("x");
    r.context.insert("k".into(), "nul\0here".into());
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["context", "U+0000"],
    )
    .await;
    let r = submit_req(&format!("{}\0", "p".repeat(10_000)));
    let err = client.submit(r).await.expect_err("NUL in a prompt");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("prompt") && err.message().contains("U+0000"),
        "{err}"
    );
    assert!(err.message().len() < 400, "the input is not echoed: {err}");
    // Prompts and context values may hold line breaks and tabs.
    let mut r = submit_req("line one\n\tline two\r\n");
    r.context.insert("notes".into(), "a\nb\tc".into());
    let t = client.submit(r).await.expect("accepted");
    expect_status(
        client.cancel(&t.id, "bad\0reason").await,
        Code::InvalidArgument,
        &["reason", "U+0000"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_choices_no_provider_can_satisfy_are_refused_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let client = connect(&node).await;
    let mut r = submit_req("x");
    r.excluded_providers = vec!["mock".into()];
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["excluded_providers", "every provider", "mock"],
    )
    .await;
    let mut r = submit_req("x");
    r.preferred_providers = vec!["claude".into()];
    expect_status(
        client.submit(r).await,
        Code::InvalidArgument,
        &["preferred_providers", "claude", "mock"],
    )
    .await;
    // The same holds for a workflow's steps.
    let mut workflows = client.workflow_service();
    for (field, yaml) in [
        (
            "excluded_providers",
            "name: w\nsteps:\n  - id: a\n    task: { type: testing, prompt: t, excluded_providers: [mock] }\n",
        ),
        (
            "preferred_providers",
            "name: w\nsteps:\n  - id: a\n    task: { type: testing, prompt: t, preferred_providers: [claude] }\n",
        ),
    ] {
        let err = workflows
            .submit_workflow(v1::SubmitWorkflowRequest {
                source: Some(v1::WorkflowSource {
                    source: Some(v1::workflow_source::Source::Yaml(yaml.into())),
                }),
                vars: Default::default(),
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(field) && err.message().contains("mock"),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_stay_under_the_standard_4_mib_message_limit() {
    use prost::Message as _;
    const LIMIT: usize = 4 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "60s")],
    );
    let client = connect(&node).await;
    // Each task is within every limit; a page of 100 of them is not.
    let prompt = "p".repeat(60 * 1024);
    for _ in 0..80 {
        client.submit(submit_req(&prompt)).await.unwrap();
    }
    // A client with the standard 4 MiB limit.
    let mut tasks = v1::task_service_client::TaskServiceClient::connect(node.url())
        .await
        .unwrap();
    let mut token = String::new();
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = tasks
            .list_tasks(v1::ListTasksRequest {
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page under 4 MiB")
            .into_inner();
        assert!(page.encoded_len() < LIMIT);
        seen += page.tasks.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, 80);
    assert!(pages >= 2, "cut by size into pages");

    // Runs within every limit whose listing is not.
    let mut workflows = v1::workflow_service_client::WorkflowServiceClient::connect(node.url())
        .await
        .unwrap();
    let mut yaml = String::from("name: wide\nsteps:\n");
    for i in 0..25 {
        yaml.push_str(&format!(
            "  - id: s{i}\n    task: {{ type: testing, prompt: \"{}\" }}\n",
            "q".repeat(60 * 1024)
        ));
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let run = workflows
            .submit_workflow(v1::SubmitWorkflowRequest {
                source: Some(v1::WorkflowSource {
                    source: Some(v1::workflow_source::Source::Yaml(yaml.clone())),
                }),
                vars: Default::default(),
            })
            .await
            .expect("submit")
            .into_inner();
        ids.push(run.id);
    }
    let mut token = String::new();
    let mut runs = Vec::new();
    loop {
        let page = workflows
            .list_workflows(v1::ListWorkflowsRequest {
                page_size: 50,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page under 4 MiB")
            .into_inner();
        assert!(page.encoded_len() < LIMIT);
        runs.extend(page.runs.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(runs, ids, "every run, newest first");

    // Schedules are paged too, by name.
    for name in ["a", "b", "c"] {
        workflows
            .create_schedule(v1::CreateScheduleRequest {
                name: name.into(),
                cron: "0 3 * * *".into(),
                source: Some(v1::WorkflowSource {
                    source: Some(v1::workflow_source::Source::Yaml(
                        "name: n\nsteps:\n  - id: a\n    task: { type: testing, prompt: t }\n"
                            .into(),
                    )),
                }),
                ..Default::default()
            })
            .await
            .expect("create");
    }
    let page = workflows
        .list_schedules(v1::ListSchedulesRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = page.schedules.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        (names, page.next_page_token.as_str()),
        (vec!["a", "b"], "b")
    );
    let page = workflows
        .list_schedules(v1::ListSchedulesRequest {
            page_size: 2,
            page_token: "b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.schedules.len(), 1);
    assert!(page.next_page_token.is_empty());
    assert_eq!(client.list_schedules().await.unwrap().len(), 3);
}

/// Stores, as an earlier process could have, a finished task whose output and diff are
/// far over 4 MiB; returns its id.
async fn store_a_task_with_a_huge_result(data_dir: &std::path::Path) -> String {
    use supervisor_engine::{Engine, EngineConfig, Finish, NodeAnnouncement, Outcome, SystemClock};
    let db = supervisor_store::embedded::open_db(
        &data_dir.join("supervisor.redb"),
        supervisor_store::embedded::EmbeddedOptions::default(),
    )
    .expect("open the store");
    let engine = Engine::new(
        db,
        EngineConfig::default(),
        std::sync::Arc::new(SystemClock),
    );
    let node = engine
        .register_node("earlier", &NodeAnnouncement::default())
        .await
        .unwrap();
    let task = supervisor_model::NewTask {
        task_type: Some(supervisor_model::TaskType::Refactor),
        prompt: "rename everything".into(),
        ..Default::default()
    };
    let id = engine.submit("default", task).await.unwrap().task.id;
    let leased = engine.lease(&node, 1).await.unwrap().tasks.remove(0);
    let result = supervisor_model::TaskResult {
        output: "o".repeat(6_000_000),
        provider: "mock".into(),
        artifacts: vec![supervisor_model::Artifact {
            name: "changes.diff".into(),
            media_type: "text/x-diff".into(),
            content: "d".repeat(3_000_000),
            size_bytes: 3_000_000,
        }],
        ..Default::default()
    };
    engine
        .finish(Finish {
            task_ref: leased.task_ref,
            provider: "mock".into(),
            model: String::new(),
            usage: Default::default(),
            cost_micros: 0,
            trailing: vec![],
            outcome: Outcome::Succeeded(result),
        })
        .await
        .unwrap();
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_huge_result_is_read_back_under_4_mib() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let id = store_a_task_with_a_huge_result(dir.path()).await;
    let node = NodeProcess::start(dir.path(), &[]);
    // A client with the standard 4 MiB limit reads it.
    let mut tasks = v1::task_service_client::TaskServiceClient::connect(node.url())
        .await
        .unwrap();
    let task = tasks
        .get_task(v1::GetTaskRequest { id: id.clone() })
        .await
        .expect("a task under 4 MiB")
        .into_inner();
    assert!(task.encoded_len() < 4 * 1024 * 1024);
    assert_eq!(
        task.truncated_fields,
        ["result.output", "result.artifacts[changes.diff].content"]
    );
    let result = task.result.expect("result");
    assert_eq!(result.output_bytes, 6_000_000, "the full length is told");
    assert_eq!(result.artifacts[0].size_bytes, 3_000_000);
    assert!(result.output.len() > 1_000_000 && result.output.len() < 6_000_000);
    // Listed, it carries no output at all.
    let page = tasks
        .list_tasks(v1::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.tasks.len(), 1);
    assert!(page.tasks[0].truncated_fields.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_the_drain_begins() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "5s")]);
    let client = connect(&node).await;
    let task = client
        .submit(submit_req("keeps the drain busy"))
        .await
        .unwrap();
    while client.get(&task.id).await.unwrap().status() != v1::TaskStatus::Running {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = tonic::transport::Channel::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let now = health.check(status("")).await.unwrap().into_inner().status;
    assert_eq!(now, ServingStatus::Serving as i32);
    let http = node.http_addr.clone().expect("the HTTP side");
    let (code, _) = common::receivers::http_request("GET", &http, "/healthz", None).unwrap();
    assert_eq!(code, 200);

    // SIGTERM: the running attempt has seconds to go, so the node drains meanwhile, still
    // answering calls but no longer saying it serves.
    node.signal(libc::SIGTERM);
    let mut seen = Vec::new();
    for service in ["", "supervisor.v1.TaskService"] {
        loop {
            let now = health
                .check(status(service))
                .await
                .unwrap()
                .into_inner()
                .status;
            if now == ServingStatus::NotServing as i32 {
                break;
            }
            seen.push(now);
            assert!(seen.len() < 200, "still {seen:?} 10 s into the drain");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (code, body) = common::receivers::http_request("GET", &http, "/healthz", None).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!((code, body.contains("draining")), (503, true), "{body}");
    assert!(node.terminate().success(), "the drain ends in a clean exit");
}
