//! The anthropic provider against a local fake of the Messages API that speaks its wire
//! format: SSE frames as Anthropic sends them, its error bodies and statuses.

mod fake_http;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fake_http::{
    FakeServer, Framing, Reply, Step, assert_permanent, assert_retryable, closed_port_url, data,
    event, raw,
};
use serde_json::json;
use supervisor_model::{TaskType, Usage};
use supervisor_providers::config::AnthropicConfig;
use supervisor_providers::factory::BuildContext;
use supervisor_providers::pricing::{ModelPrice, PriceTable};
use supervisor_providers::{EventSink, Provider, ProviderError, ProviderEvent, ProviderRequest};
use tokio::sync::Notify;

const KEY: &str = "sk-ant-test-0123456789-SECRET";
const MODEL: &str = "claude-sonnet-4-5";

/// A provider pointed at `url`, its key read from a file (tests must not set env vars).
struct Setup {
    provider: Arc<dyn Provider>,
    _dir: tempfile::TempDir,
}

fn key_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path
}

fn setup_with(url: &str, prices: PriceTable) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AnthropicConfig {
        base_url: format!("{url}/"),
        api_key_env: None,
        api_key_file: Some(key_file(&dir)),
        model: MODEL.into(),
        max_tokens: 1000,
        ..AnthropicConfig::default()
    };
    let ctx = BuildContext {
        data_dir: dir.path().to_path_buf(),
        hooks: Default::default(),
    };
    let provider = supervisor_providers::anthropic::build("claude", &cfg, Arc::new(prices), &ctx)
        .expect("build");
    Setup {
        provider,
        _dir: dir,
    }
}

fn setup(url: &str) -> Setup {
    setup_with(url, PriceTable::default())
}

fn request() -> ProviderRequest {
    let mut r = ProviderRequest::simple(
        "task-1",
        TaskType::BugFix,
        "Fix the flaky test",
        Duration::from_secs(10),
    );
    r.context.insert("file".into(), "tests/flaky.rs".into());
    r
}

fn message_start(model: &str) -> Step {
    event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 1200, "cache_creation_input_tokens": 100,
                      "cache_read_input_tokens": 2000, "output_tokens": 1}}}),
    )
}

fn block_start() -> Step {
    event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
    )
}

fn text(t: &str) -> Step {
    event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": t}}),
    )
}

fn message_end(stop_reason: &str, output_tokens: u64) -> Vec<Step> {
    vec![
        event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens}}),
        ),
        event("message_stop", &json!({"type": "message_stop"})),
    ]
}

fn error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

async fn run(setup: &Setup, request: ProviderRequest) -> Result<Vec<ProviderEvent>, ProviderError> {
    let (sink, mut rx) = EventSink::channel();
    let result = setup.provider.execute(request, sink).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    result.map(|_| events)
}

/// Runs a request expected to fail and checks the key is nowhere in the error.
async fn fail(setup: &Setup, request: ProviderRequest) -> ProviderError {
    fake_http::fail_without_leaking(setup.provider.as_ref(), request, KEY).await
}

#[tokio::test]
async fn streamed_success_assembles_text_usage_and_cost() {
    let gate = Arc::new(Notify::new());
    let server_gate = gate.clone();
    let server = FakeServer::start(move |_| {
        let mut steps = vec![
            message_start("claude-sonnet-4-5-20250929"),
            block_start(),
            event("ping", &json!({"type": "ping"})),
            text("Hello"),
            Step::Wait(server_gate.clone()),
            // Deltas that carry no output text are skipped.
            event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            ),
            text(", wor"),
            text("ld ✓"),
        ];
        steps.extend(message_end("end_turn", 500));
        Reply::sse(steps)
    })
    .await;
    let mut prices = PriceTable::default();
    prices.overrides.insert(
        MODEL.into(),
        ModelPrice {
            input: 3.0,
            output: 15.0,
            cache_read: Some(0.5),
            cache_write: Some(4.0),
        },
    );
    let s = setup_with(&server.url(), prices);
    let req = request();
    let system_prompt = req.system_prompt.clone();

    let (sink, mut rx) = EventSink::channel();
    let provider = s.provider.clone();
    let running = tokio::spawn(async move { provider.execute(req, sink).await });
    // The usage of message_start, then the first piece, arrive while the server is still
    // holding the rest back.
    let started = Usage {
        input_tokens: 1200,
        output_tokens: 1,
        cache_read_tokens: 2000,
        cache_write_tokens: 100,
    };
    assert_eq!(
        rx.recv().await,
        Some(ProviderEvent::Usage {
            usage: started,
            cost_micros: 3600 + 15 + 1000 + 400
        })
    );
    assert_eq!(rx.recv().await, Some(ProviderEvent::Output("Hello".into())));
    assert!(!running.is_finished());
    gate.notify_one();
    let out = running.await.unwrap().expect("success");

    let mut streamed = vec!["Hello".to_string()];
    let mut usages = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            ProviderEvent::Output(t) => streamed.push(t),
            ProviderEvent::Usage { usage, cost_micros } => usages.push((usage, cost_micros)),
            ProviderEvent::Activity(a) => panic!("unexpected activity {a}"),
        }
    }
    assert_eq!(streamed, vec!["Hello", ", wor", "ld ✓"]);
    // Usage as the stream reported it: the input at message_start (it came before
    // "Hello", which the first recv took), the final output at message_delta, which is
    // the usage of the result.
    assert_eq!(usages.len(), 1, "{usages:?}");
    assert_eq!((usages[0].0, usages[0].1), (out.usage, out.cost_micros));
    assert_eq!(out.output, "Hello, world ✓");
    assert_eq!(out.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        out.usage,
        Usage {
            input_tokens: 1200,
            output_tokens: 500,
            cache_read_tokens: 2000,
            cache_write_tokens: 100,
        }
    );
    // 1200×3 + 500×15 + 2000×0.5 + 100×4 micro-dollars (the override wins by prefix).
    assert_eq!(out.cost_micros, 3600 + 7500 + 1000 + 400);

    let r = server.single_request();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some(KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("authorization"), None);
    let body = r.json();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["max_tokens"], 1000);
    assert_eq!(body["stream"], true);
    assert_eq!(body["system"], system_prompt.as_str());
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(
        body["messages"][0]["content"],
        "Fix the flaky test\n\nContext:\n- file: tests/flaky.rs"
    );
}

#[tokio::test]
async fn max_tokens_and_unknown_model_succeed_with_notes() {
    let server = FakeServer::start(|_| {
        let mut steps = vec![
            message_start("claude-experimental-9"),
            block_start(),
            text("cut sh"),
        ];
        steps.extend(message_end("max_tokens", 1000));
        Reply::sse(steps)
    })
    .await;
    let s = setup(&server.url());
    let (sink, mut rx) = EventSink::channel();
    let out = s.provider.execute(request(), sink).await.expect("success");
    assert_eq!(out.output, "cut sh");
    assert_eq!(out.cost_micros, 0);
    let mut notes = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let ProviderEvent::Activity(a) = e {
            notes.push(a);
        }
    }
    assert!(notes.iter().any(|n| n.contains("max_tokens")), "{notes:?}");
    assert!(
        notes.iter().any(|n| n.contains("claude-experimental-9")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn rate_limited_429_carries_retry_after() {
    let server = FakeServer::start(|_| {
        Reply::json(
            429,
            &error_body(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
        )
        .header("retry-after", "7")
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert!(
        matches!(&err, ProviderError::Retryable { kind: "rate_limited", retry_after: Some(d), .. } if *d == Duration::from_secs(7)),
        "{err:?}"
    );
}

#[tokio::test]
async fn overloaded_529_is_retryable() {
    let server = FakeServer::start(|_| {
        Reply::json(529, &error_body("overloaded_error", "Overloaded")).header("retry-after", "2")
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_retryable(&err, "overloaded");
    assert!(
        matches!(err, ProviderError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(2))
    );
}

#[tokio::test]
async fn unauthorized_401_is_permanent_and_never_shows_the_key() {
    // A server that echoes the key it was given must not get it into the error.
    let server = FakeServer::start(|r| {
        let given = r.header("x-api-key").unwrap_or_default().to_string();
        Reply::json(
            401,
            &error_body(
                "authentication_error",
                &format!("invalid x-api-key {given}"),
            ),
        )
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_permanent(&err, "auth");
    assert!(err.to_string().contains("[redacted]"), "{err}");
}

#[tokio::test]
async fn context_too_long_400_is_permanent() {
    let server = FakeServer::start(|_| {
        Reply::json(
            400,
            &error_body(
                "invalid_request_error",
                "prompt is too long: 215000 tokens > 200000 maximum",
            ),
        )
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_permanent(&err, "context_too_long");
}

#[tokio::test]
async fn error_event_mid_stream_is_a_typed_error_not_success() {
    for (kind, retryable, want) in [
        ("overloaded_error", true, "overloaded"),
        ("rate_limit_error", true, "rate_limited"),
        ("api_error", true, "unavailable"),
        ("invalid_request_error", false, "bad_request"),
    ] {
        let server = FakeServer::start(move |_| {
            Reply::sse(vec![
                message_start(MODEL),
                block_start(),
                text("Partial answ"),
                event(
                    "error",
                    &json!({"type": "error", "error": {"type": kind, "message": "it broke"}}),
                ),
                Step::Hang,
            ])
        })
        .await;
        let err = fail(&setup(&server.url()), request()).await;
        if retryable {
            assert_retryable(&err, want);
        } else {
            assert_permanent(&err, want);
        }
        assert!(err.to_string().contains("it broke"), "{err}");
    }
}

#[tokio::test]
async fn usage_reported_before_an_error_mid_stream_is_sent_first() {
    // The API counted the prompt (message_start) and then failed: the attempt fails, but
    // what it consumed has been reported for the ledger.
    let server = FakeServer::start(|_| {
        Reply::sse(vec![
            message_start(MODEL),
            block_start(),
            text("Partial"),
            event(
                "error",
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            Step::Hang,
        ])
    })
    .await;
    let s = setup(&server.url());
    let (sink, mut rx) = EventSink::channel();
    let err = s
        .provider
        .execute(request(), sink)
        .await
        .expect_err("an error");
    assert_retryable(&err, "overloaded");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let usage = Usage {
        input_tokens: 1200,
        output_tokens: 1,
        cache_read_tokens: 2000,
        cache_write_tokens: 100,
    };
    let cost = PriceTable::default()
        .cost_micros(MODEL, &usage)
        .expect("a price for the model");
    assert_eq!(
        events,
        vec![
            ProviderEvent::Usage {
                usage,
                cost_micros: cost
            },
            ProviderEvent::Output("Partial".into()),
        ]
    );
    assert!(cost > 0);
}

#[tokio::test]
async fn dropped_connection_is_connection_reset() {
    // Chunked body cut off mid-stream, and a close-delimited body that just ends.
    for framing in [Framing::Chunked, Framing::Close] {
        let server = FakeServer::start(move |_| {
            Reply::sse(vec![
                message_start(MODEL),
                block_start(),
                text("Half"),
                Step::Drop,
            ])
            .framing(framing)
        })
        .await;
        let err = fail(&setup(&server.url()), request()).await;
        assert_retryable(&err, "connection_reset");
    }
    // Dropped in the middle of an event.
    let server = FakeServer::start(|_| {
        Reply::sse(vec![
            message_start(MODEL),
            raw("event: content_block_delta\ndata: {\"type\":\"content_blo"),
            Step::Drop,
        ])
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_retryable(&err, "connection_reset");
}

#[tokio::test]
async fn garbage_line_is_bad_stream_naming_what_arrived() {
    let server = FakeServer::start(|_| {
        Reply::sse(vec![
            message_start(MODEL),
            data(format!(
                "<html>upstream proxy error</html>{}",
                "x".repeat(1000)
            )),
            Step::Hang,
        ])
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_retryable(&err, "bad_stream");
    let text = err.to_string();
    assert!(text.contains("<html>upstream proxy error"), "{text}");
    assert!(text.len() < 600, "not truncated: {} chars", text.len());
}

#[tokio::test]
async fn a_server_that_hangs_past_the_timeout_is_a_timeout() {
    // Hanging before the answer starts, and in the middle of the stream.
    let before = FakeServer::start(|_| Reply::never()).await;
    let during = FakeServer::start(|_| {
        Reply::sse(vec![
            message_start(MODEL),
            block_start(),
            text("slow"),
            Step::Hang,
        ])
    })
    .await;
    for server in [&before, &during] {
        let mut req = request();
        req.timeout = Duration::from_millis(300);
        let err = fail(&setup(&server.url()), req).await;
        assert_retryable(&err, "timeout");
    }
}

#[tokio::test]
async fn health_probes_the_models_endpoint() {
    let server = FakeServer::start(|r| {
        if r.path == "/v1/models" {
            Reply::json(
                200,
                r#"{"data":[{"id":"claude-sonnet-4-5","type":"model"}]}"#,
            )
        } else {
            Reply::json(404, "{}")
        }
    })
    .await;
    let health = setup(&server.url()).provider.health().await;
    assert!(health.healthy, "{health:?}");
    assert!(health.detail.contains("ms"), "{health:?}");
    let r = server.single_request();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/v1/models");
    assert_eq!(r.header("x-api-key"), Some(KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn health_is_unhealthy_when_the_key_is_rejected() {
    let server = FakeServer::start(|r| {
        let given = r.header("x-api-key").unwrap_or_default().to_string();
        Reply::json(
            401,
            &error_body("authentication_error", &format!("bad key {given}")),
        )
    })
    .await;
    let health = setup(&server.url()).provider.health().await;
    assert!(!health.healthy);
    assert!(health.detail.contains("API key rejected"), "{health:?}");
    assert!(!health.detail.contains(KEY), "{health:?}");
}

#[tokio::test]
async fn health_is_unhealthy_when_nothing_listens() {
    let health = setup(&closed_port_url()).provider.health().await;
    assert!(!health.healthy);
    assert!(
        health.detail.contains("GET /v1/models failed"),
        "{health:?}"
    );
}

#[test]
fn build_fails_naming_a_missing_env_var() {
    let cfg = AnthropicConfig {
        api_key_env: Some("SUPERVISOR_TEST_ANTHROPIC_KEY_SURELY_UNSET".into()),
        ..AnthropicConfig::default()
    };
    let ctx = BuildContext {
        data_dir: std::env::temp_dir(),
        hooks: Default::default(),
    };
    let err = supervisor_providers::anthropic::build(
        "claude",
        &cfg,
        Arc::new(PriceTable::default()),
        &ctx,
    )
    .err()
    .expect("build should fail");
    assert!(
        err.contains("SUPERVISOR_TEST_ANTHROPIC_KEY_SURELY_UNSET"),
        "{err}"
    );
}

#[test]
fn capabilities_and_estimate() {
    let s = setup(&closed_port_url());
    let caps = s.provider.capabilities();
    assert_eq!(caps.task_types, TaskType::ALL.to_vec());
    assert_eq!(caps.models, vec![MODEL.to_string()]);
    assert_eq!(caps.max_context_tokens, 200_000);
    assert!(caps.streaming && !caps.tools);
    assert_eq!(s.provider.kind(), "anthropic");
    assert_eq!(s.provider.name(), "claude");
    // Input: the bytes sent / 4; output: max_tokens / 4 = 250, at $3 and $15 per Mtok.
    let req = request();
    let sent = (req.system_prompt.len() + req.prompt_with_context().len()) as u64;
    let expected = sent.div_ceil(4) * 3 + 250 * 15;
    assert_eq!(s.provider.estimate_cost(&req), expected);
}

#[tokio::test]
async fn keys_never_reach_events() {
    let server = FakeServer::start(|_| {
        let mut steps = vec![message_start(MODEL), block_start(), text("ok")];
        steps.extend(message_end("end_turn", 2));
        Reply::sse(steps)
    })
    .await;
    let events = run(&setup(&server.url()), request())
        .await
        .expect("success");
    for e in events {
        assert!(!format!("{e:?}").contains(KEY));
    }
}
