//! The checks every plugin should pass, run against a plugin at an address
//! (`supervisor plugin check`): it says what it can do, answers health, runs a task to one
//! result with its output streamed in order, stops an execution it is told to cancel,
//! ignores a cancel of nothing, refuses what it cannot serve, and runs two executions at
//! once. Each check says what it saw.

use std::time::Duration;

use futures::StreamExt as _;
use supervisor_model::TaskType;
use supervisor_proto::plugin::v1 as wire;
use supervisor_proto::plugin::v1::provider_plugin_client::ProviderPluginClient;
use tonic::transport::Channel;

/// How long any one check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(60);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether the plugin passed.
    pub passed: bool,
    /// What was seen (why it failed, or what passed).
    pub detail: String,
}

/// What one execution sent, in order.
#[derive(Debug, Default)]
struct Run {
    outputs: Vec<String>,
    usages: Vec<wire::Usage>,
    terminal: Vec<wire::execute_event::Event>,
    after_terminal: usize,
    error: Option<tonic::Status>,
    /// What Cancel answered, when the run was cancelled.
    was_running: Option<bool>,
}

impl Run {
    fn streamed(&self) -> String {
        self.outputs.concat()
    }
}

async fn execute(
    client: &mut ProviderPluginClient<Channel>,
    request: wire::ExecuteRequest,
    cancel_after_first_event: bool,
) -> Run {
    let mut run = Run::default();
    let execution_id = request.execution_id.clone();
    let mut stream = match client.execute(request).await {
        Ok(s) => s.into_inner(),
        Err(status) => {
            run.error = Some(status);
            return run;
        }
    };
    let mut cancelled = false;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(e) => e,
            Err(status) => {
                run.error = Some(status);
                break;
            }
        };
        if !cancelled && cancel_after_first_event {
            cancelled = true;
            let mut other = client.clone();
            run.was_running = other
                .cancel(wire::CancelRequest {
                    execution_id: execution_id.clone(),
                })
                .await
                .ok()
                .map(|r| r.get_ref().was_running);
        }
        use wire::execute_event::Event;
        match event.event {
            _ if !run.terminal.is_empty() => run.after_terminal += 1,
            Some(Event::Output(text)) => run.outputs.push(text),
            Some(Event::Usage(u)) => run.usages.push(u),
            Some(Event::Activity(_)) => {}
            Some(e @ (Event::Result(_) | Event::Failure(_))) => run.terminal.push(e),
            None => run.after_terminal += 1,
        }
    }
    run
}

fn request(id: &str, task_type: &str, prompt: &str) -> wire::ExecuteRequest {
    wire::ExecuteRequest {
        execution_id: id.to_string(),
        task_id: format!("conformance-{id}"),
        attempt: 1,
        task_type: task_type.to_string(),
        prompt: prompt.to_string(),
        context: Default::default(),
        timeout_ms: CHECK_LIMIT.as_millis() as u64,
        specialty: "test_engineer".into(),
        system_prompt: "You write tests.".into(),
        allowed_tools: Vec::new(),
    }
}

fn check(name: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            passed: true,
            detail,
        },
        Err(detail) => Check {
            name,
            passed: false,
            detail,
        },
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(CHECK_LIMIT, f)
        .await
        .map_err(|_| format!("{what} did not end within {CHECK_LIMIT:?}"))
}

/// Runs every check against the plugin at `address` (`http://host:port`).
pub async fn run(address: &str) -> Result<Vec<Check>, String> {
    let channel = super::endpoint(address, Duration::from_secs(5))
        .map_err(|e| format!("{address} is not an address like http://127.0.0.1:7400: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("could not connect to the plugin at {address}: {e}"))?;
    let mut client = ProviderPluginClient::new(channel);
    let mut checks = Vec::new();

    // 1. Capabilities.
    let caps = bounded(
        "GetCapabilities",
        client.get_capabilities(wire::GetCapabilitiesRequest {}),
    )
    .await
    .and_then(|r| {
        r.map(|r| r.into_inner())
            .map_err(|s| format!("GetCapabilities failed: {s}"))
    });
    let serve_type = caps
        .as_ref()
        .ok()
        .and_then(|c| c.task_types.first().cloned())
        .unwrap_or_else(|| "testing".into());
    checks.push(check(
        "capabilities",
        caps.as_ref().map_err(Clone::clone).and_then(|c| {
            if let Some(bad) = c.task_types.iter().find(|t| t.parse::<TaskType>().is_err()) {
                return Err(format!("task type {bad:?} is not one of the API's"));
            }
            Ok(format!(
                "{} task type(s) ({}), models {:?}, streaming {}",
                if c.task_types.is_empty() {
                    TaskType::ALL.len()
                } else {
                    c.task_types.len()
                },
                if c.task_types.is_empty() {
                    "every type".to_string()
                } else {
                    c.task_types.join(", ")
                },
                c.models,
                c.streaming
            ))
        }),
    ));

    // 2. Health.
    let health = bounded("Health", client.health(wire::HealthRequest {})).await;
    checks.push(check(
        "health",
        health.and_then(|r| {
            let h = r.map_err(|s| format!("Health failed: {s}"))?.into_inner();
            if h.healthy {
                Ok(h.detail)
            } else {
                Err(format!("it says it is not healthy: {}", h.detail))
            }
        }),
    ));

    // 3. One execution: events in order, exactly one result at the end.
    let one = bounded(
        "an execution",
        execute(
            &mut client,
            request("one", &serve_type, "Say hello in three words."),
            false,
        ),
    )
    .await;
    checks.push(check(
        "execute",
        one.and_then(|run| {
            if let Some(e) = run.error {
                return Err(format!("the stream failed: {e}"));
            }
            if run.after_terminal > 0 {
                return Err(format!("{} event(s) after the result", run.after_terminal));
            }
            let Some(wire::execute_event::Event::Result(result)) = run.terminal.first() else {
                return Err(match run.terminal.first() {
                    Some(wire::execute_event::Event::Failure(f)) => {
                        format!("it failed: {}: {}", f.kind, f.message)
                    }
                    _ => "the stream ended without a result".into(),
                });
            };
            if result.output.is_empty() {
                return Err("the result's output is empty".into());
            }
            if !run.outputs.is_empty() && run.streamed() != result.output {
                return Err(format!(
                    "the streamed output ({} bytes) is not the result's output ({} bytes)",
                    run.streamed().len(),
                    result.output.len()
                ));
            }
            let fell = |a: &wire::Usage, b: &wire::Usage| {
                b.input_tokens < a.input_tokens
                    || b.output_tokens < a.output_tokens
                    || b.cost_micros < a.cost_micros
            };
            if run.usages.windows(2).any(|w| fell(&w[0], &w[1])) {
                return Err("usage went down between two updates: send cumulative totals".into());
            }
            Ok(format!(
                "{} output event(s), {} bytes, model {:?}",
                run.outputs.len(),
                result.output.len(),
                result.model
            ))
        }),
    ));

    // 4. Cancel: the stream ends soon after, with a failure (or a result if it was done).
    let long = "Write a long essay on testing, section by section.";
    let cancelled = bounded(
        "an execution after Cancel",
        execute(&mut client, request("cancelled", &serve_type, long), true),
    )
    .await;
    checks.push(check(
        "cancel",
        cancelled.and_then(|run| match (&run.error, run.terminal.first(), run.was_running) {
            (_, _, None) => Err("Cancel failed or was never answered".into()),
            (Some(s), _, _) if s.code() == tonic::Code::Cancelled => Ok("ended as cancelled".into()),
            (Some(s), _, _) => Err(format!("the stream failed: {s}")),
            (None, Some(wire::execute_event::Event::Failure(f)), _) => {
                Ok(format!("ended with failure {}", f.kind))
            }
            (None, Some(_), Some(false)) => Ok("it had finished before the cancel arrived".into()),
            (None, Some(_), Some(true)) => Err(
                "Cancel answered was_running = true, yet the execution ended with a result: end it with a failure".into(),
            ),
            (None, None, _) => Err("the stream ended without a result or a failure".into()),
        }),
    ));

    // 5. Cancelling nothing is not an error.
    let nothing = bounded(
        "Cancel",
        client.cancel(wire::CancelRequest {
            execution_id: "never-started".into(),
        }),
    )
    .await;
    checks.push(check(
        "cancel of an unknown execution",
        nothing.and_then(|r| match r {
            Ok(r) if !r.get_ref().was_running => Ok("answered was_running = false".into()),
            Ok(_) => Err("it says an execution that never started was running".into()),
            Err(s) => Err(format!("Cancel failed: {s}")),
        }),
    ));

    // 6. A task type that is not one: refused, not run.
    let odd = bounded(
        "an execution of an unknown type",
        execute(&mut client, request("odd", "no_such_type", "hello"), false),
    )
    .await;
    checks.push(check(
        "unknown task type",
        odd.and_then(|run| match (&run.error, run.terminal.first()) {
            (Some(s), _) if s.code() == tonic::Code::InvalidArgument => {
                Ok("refused with INVALID_ARGUMENT".into())
            }
            (None, Some(wire::execute_event::Event::Failure(f))) if !f.retryable => {
                Ok(format!("refused with a permanent failure ({})", f.kind))
            }
            (Some(s), _) => Err(format!(
                "expected INVALID_ARGUMENT or a permanent failure, got {s}"
            )),
            _ => Err("it ran a task of type \"no_such_type\"".into()),
        }),
    ));

    // 7. Two at once.
    let mut a = client.clone();
    let mut b = client.clone();
    let both = bounded("two executions at once", async {
        tokio::join!(
            execute(&mut a, request("a", &serve_type, "First of two."), false),
            execute(&mut b, request("b", &serve_type, "Second of two."), false)
        )
    })
    .await;
    checks.push(check(
        "two at once",
        both.and_then(|(x, y)| {
            let ok = |r: &Run| {
                matches!(
                    r.terminal.first(),
                    Some(wire::execute_event::Event::Result(_))
                ) && r.error.is_none()
            };
            if ok(&x) && ok(&y) {
                Ok("both ended with a result".into())
            } else {
                Err("one of two concurrent executions did not end with a result".into())
            }
        }),
    ));
    Ok(checks)
}
