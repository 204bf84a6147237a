//! The openai provider against a local fake of an OpenAI-compatible server that speaks the
//! chat completions wire format: `data:` chunks, the usage chunk, `[DONE]`, error bodies.

mod fake_http;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fake_http::{
    FakeServer, Framing, Reply, Step, assert_permanent, assert_retryable, closed_port_url, data,
};
use serde_json::{Value, json};
use supervisor_model::{TaskType, Usage};
use supervisor_providers::config::OpenAiConfig;
use supervisor_providers::factory::BuildContext;
use supervisor_providers::pricing::PriceTable;
use supervisor_providers::{EventSink, Provider, ProviderError, ProviderEvent, ProviderRequest};
use tokio::sync::Notify;

const KEY: &str = "sk-proj-test-0123456789-SECRET";
const MODEL: &str = "gpt-4o-mini";

struct Setup {
    provider: Arc<dyn Provider>,
    _dir: tempfile::TempDir,
}

fn key_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path
}

/// A provider pointed at `url` (which gets `/v1` appended); with a key read from a file
/// (tests must not set env vars) when `with_key`.
fn setup_with(url: &str, model: &str, with_key: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OpenAiConfig {
        base_url: format!("{url}/v1"),
        api_key_env: None,
        api_key_file: with_key.then(|| key_file(&dir)),
        model: model.into(),
        max_tokens: 800,
        ..OpenAiConfig::default()
    };
    let ctx = BuildContext {
        data_dir: dir.path().to_path_buf(),
        hooks: Default::default(),
    };
    let provider =
        supervisor_providers::openai::build("gpt", &cfg, Arc::new(PriceTable::default()), &ctx)
            .expect("build");
    Setup {
        provider,
        _dir: dir,
    }
}

fn setup(url: &str) -> Setup {
    setup_with(url, MODEL, true)
}

fn request() -> ProviderRequest {
    let mut r = ProviderRequest::simple(
        "task-1",
        TaskType::PrReview,
        "Review the change",
        Duration::from_secs(10),
    );
    r.context.insert("pr".into(), "42".into());
    r
}

fn chunk(model: &str, delta: Value, finish_reason: Value) -> Step {
    data(json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }))
}

fn text(t: &str) -> Step {
    chunk(MODEL, json!({"content": t}), Value::Null)
}

fn usage_chunk(model: &str, prompt: u64, completion: u64, cached: u64) -> Step {
    data(json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }))
}

fn error_body(kind: &str, code: Value, message: &str) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ProviderEvent>) -> Vec<ProviderEvent> {
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
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
        let model = "gpt-4o-mini-2024-07-18";
        Reply::sse(vec![
            chunk(
                model,
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ),
            chunk(model, json!({"content": "Looks"}), Value::Null),
            Step::Wait(server_gate.clone()),
            fake_http::raw(": keep-alive\n\n"),
            chunk(model, json!({"content": " good"}), Value::Null),
            chunk(model, json!({"content": " to me ✓"}), Value::Null),
            chunk(model, json!({}), json!("stop")),
            usage_chunk(model, 10_000, 2_000, 4_000),
            data("[DONE]"),
        ])
    })
    .await;
    let s = setup(&server.url());
    let req = request();
    let system_prompt = req.system_prompt.clone();

    let (sink, mut rx) = EventSink::channel();
    let provider = s.provider.clone();
    let running = tokio::spawn(async move { provider.execute(req, sink).await });
    // The first piece arrives while the server is still holding the rest back.
    assert_eq!(rx.recv().await, Some(ProviderEvent::Output("Looks".into())));
    assert!(!running.is_finished());
    gate.notify_one();
    let out = running.await.unwrap().expect("success");

    let rest = drain(&mut rx);
    assert_eq!(
        rest,
        vec![
            ProviderEvent::Output(" good".into()),
            ProviderEvent::Output(" to me ✓".into()),
            ProviderEvent::Usage {
                usage: out.usage,
                cost_micros: out.cost_micros
            },
        ]
    );
    assert_eq!(out.output, "Looks good to me ✓");
    assert_eq!(out.model, "gpt-4o-mini-2024-07-18");
    // Cached tokens are part of prompt_tokens and priced apart.
    let usage = Usage {
        input_tokens: 6_000,
        output_tokens: 2_000,
        cache_read_tokens: 4_000,
        cache_write_tokens: 0,
    };
    assert_eq!(out.usage, usage);
    assert_eq!(
        Some(out.cost_micros),
        PriceTable::default().cost_micros("gpt-4o-mini-2024-07-18", &usage)
    );
    // 6000×0.15 + 2000×0.6 + 4000×0.015 (cache reads at 10% of input) micro-dollars.
    assert_eq!(out.cost_micros, 900 + 1_200 + 60);

    let r = server.single_request();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-api-key"), None);
    let body = r.json();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["max_tokens"], 800);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": "Review the change\n\nContext:\n- pr: 42"},
        ])
    );
}

#[tokio::test]
async fn local_server_without_key_or_usage() {
    // A local server: no key configured, an unpriced model, no usage chunk, no model field.
    let server = FakeServer::start(|_| {
        Reply::sse(vec![
            data(json!({"choices": [{"index": 0, "delta": {"content": "12345678"}}]})),
            data(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": null})),
            data("[DONE]"),
        ])
    })
    .await;
    let s = setup_with(&server.url(), "llama-3.1-8b-instruct", false);
    let req = request();
    let sent = (req.system_prompt.len() + req.prompt_with_context().len()) as u64;
    let (sink, mut rx) = EventSink::channel();
    let out = s.provider.execute(req, sink).await.expect("success");
    assert_eq!(out.output, "12345678");
    assert_eq!(out.model, "llama-3.1-8b-instruct");
    assert_eq!(
        out.usage,
        Usage {
            input_tokens: sent.div_ceil(4),
            output_tokens: 2,
            ..Usage::default()
        }
    );
    assert_eq!(out.cost_micros, 0);
    let notes: Vec<String> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            ProviderEvent::Activity(a) => Some(a),
            ProviderEvent::Output(_) | ProviderEvent::Usage { .. } => None,
        })
        .collect();
    assert!(notes.iter().any(|n| n.contains("estimated")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("max_tokens")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("no price")), "{notes:?}");

    let r = server.single_request();
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.json()["model"], "llama-3.1-8b-instruct");
}

#[tokio::test]
async fn rate_limited_429_carries_retry_after() {
    let server = FakeServer::start(|_| {
        Reply::json(
            429,
            &error_body(
                "requests",
                json!("rate_limit_exceeded"),
                "Rate limit reached",
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
async fn overloaded_503_is_retryable() {
    let server = FakeServer::start(|_| {
        Reply::json(
            503,
            &error_body(
                "server_error",
                Value::Null,
                "The engine is currently overloaded",
            ),
        )
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_retryable(&err, "overloaded");
}

#[tokio::test]
async fn unauthorized_401_is_permanent_and_never_shows_the_key() {
    // OpenAI quotes the key it was given; the error must not carry it.
    let server = FakeServer::start(|r| {
        let given = r
            .header("authorization")
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .to_string();
        Reply::json(
            401,
            &error_body(
                "invalid_request_error",
                json!("invalid_api_key"),
                &format!("Incorrect API key provided: {given}."),
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
                json!("context_length_exceeded"),
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
            ),
        )
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_permanent(&err, "context_too_long");
}

#[tokio::test]
async fn error_object_mid_stream_is_a_typed_error_not_success() {
    for (error, retryable, want) in [
        (
            json!({"message": "The server had an error", "type": "server_error", "code": null}),
            true,
            "unavailable",
        ),
        (
            json!({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}),
            true,
            "rate_limited",
        ),
        // vLLM's shape: the HTTP status in `code`.
        (
            json!({"object": "error", "message": "bad sampling params", "type": "BadRequestError", "code": 400}),
            false,
            "bad_request",
        ),
    ] {
        let server = FakeServer::start(move |_| {
            Reply::sse(vec![
                text("Partial answ"),
                data(json!({ "error": error })),
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
    }
}

#[tokio::test]
async fn usage_reported_before_an_error_is_sent_first() {
    // A gateway that sends the usage chunk and then an error: the attempt fails, but the
    // tokens it reported are on record.
    let server = FakeServer::start(|_| {
        let model = "gpt-4o-mini-2024-07-18";
        Reply::sse(vec![
            chunk(model, json!({"content": "Partial"}), Value::Null),
            usage_chunk(model, 1_000, 10, 0),
            data(json!({"error": {"message": "upstream failed", "type": "server_error"}})),
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
    assert_retryable(&err, "unavailable");
    let usage = Usage {
        input_tokens: 1_000,
        output_tokens: 10,
        ..Usage::default()
    };
    assert_eq!(
        drain(&mut rx),
        vec![
            ProviderEvent::Output("Partial".into()),
            ProviderEvent::Usage {
                usage,
                cost_micros: 150 + 6
            },
        ]
    );
}

#[tokio::test]
async fn missing_done_is_connection_reset() {
    // Cut off mid-stream (chunked and close-delimited), and a stream that ends after the
    // last chunk without `[DONE]`.
    for framing in [Framing::Chunked, Framing::Close] {
        let server =
            FakeServer::start(move |_| Reply::sse(vec![text("Half"), Step::Drop]).framing(framing))
                .await;
        let err = fail(&setup(&server.url()), request()).await;
        assert_retryable(&err, "connection_reset");
    }
    let server = FakeServer::start(|_| {
        Reply::sse(vec![
            text("All"),
            chunk(MODEL, json!({}), json!("stop")),
            usage_chunk(MODEL, 10, 1, 0),
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
            text("Hi"),
            data(format!("Internal Server Error {}", "y".repeat(1000))),
            Step::Hang,
        ])
    })
    .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_retryable(&err, "bad_stream");
    let text = err.to_string();
    assert!(text.contains("Internal Server Error"), "{text}");
    assert!(text.len() < 600, "not truncated: {} chars", text.len());
}

#[tokio::test]
async fn a_json_answer_instead_of_a_stream_is_bad_stream() {
    // A server that ignores `stream: true`.
    let server =
        FakeServer::start(|_| Reply::json(200, r#"{"choices":[{"message":{"content":"whole"}}]}"#))
            .await;
    let err = fail(&setup(&server.url()), request()).await;
    assert_retryable(&err, "bad_stream");
    assert!(err.to_string().contains("application/json"), "{err}");
}

#[tokio::test]
async fn a_server_that_hangs_past_the_timeout_is_a_timeout() {
    let before = FakeServer::start(|_| Reply::never()).await;
    let during = FakeServer::start(|_| Reply::sse(vec![text("slow"), Step::Hang])).await;
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
                r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model"}]}"#,
            )
        } else {
            Reply::json(404, "{}")
        }
    })
    .await;
    let health = setup(&server.url()).provider.health().await;
    assert!(health.healthy, "{health:?}");
    let r = server.single_request();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/v1/models");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    // Without a key, none is sent.
    let keyless = FakeServer::start(|_| Reply::json(200, r#"{"data":[]}"#)).await;
    let health = setup_with(&keyless.url(), MODEL, false)
        .provider
        .health()
        .await;
    assert!(health.healthy, "{health:?}");
    assert_eq!(keyless.single_request().header("authorization"), None);
}

#[tokio::test]
async fn health_is_unhealthy_when_the_key_is_rejected() {
    let server = FakeServer::start(|r| {
        let given = r.header("authorization").unwrap_or_default().to_string();
        Reply::json(
            401,
            &error_body("invalid_request_error", json!("invalid_api_key"), &given),
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
    assert!(health.detail.contains("GET /models failed"), "{health:?}");
}

#[test]
fn build_fails_naming_a_missing_env_var() {
    let cfg = OpenAiConfig {
        api_key_env: Some("SUPERVISOR_TEST_OPENAI_KEY_SURELY_UNSET".into()),
        ..OpenAiConfig::default()
    };
    let ctx = BuildContext {
        data_dir: std::env::temp_dir(),
        hooks: Default::default(),
    };
    let err =
        supervisor_providers::openai::build("gpt", &cfg, Arc::new(PriceTable::default()), &ctx)
            .err()
            .expect("build should fail");
    assert!(
        err.contains("SUPERVISOR_TEST_OPENAI_KEY_SURELY_UNSET"),
        "{err}"
    );
    // No key source at all is fine: local servers need none.
    assert!(
        supervisor_providers::openai::build(
            "local",
            &OpenAiConfig::default(),
            Arc::new(PriceTable::default()),
            &ctx
        )
        .is_ok()
    );
}

#[test]
fn capabilities_and_estimate() {
    let s = setup(&closed_port_url());
    let caps = s.provider.capabilities();
    assert_eq!(caps.task_types, TaskType::ALL.to_vec());
    assert_eq!(caps.models, vec![MODEL.to_string()]);
    assert!(caps.streaming && !caps.tools);
    assert_eq!(s.provider.kind(), "openai");
    assert_eq!(s.provider.name(), "gpt");
    let req = request();
    let sent = (req.system_prompt.len() + req.prompt_with_context().len()) as u64;
    let usage = Usage {
        input_tokens: sent.div_ceil(4),
        output_tokens: 200,
        ..Usage::default()
    };
    assert_eq!(
        Some(s.provider.estimate_cost(&req)),
        PriceTable::default().cost_micros(MODEL, &usage)
    );
    assert!(s.provider.estimate_cost(&req) > 0);
}
