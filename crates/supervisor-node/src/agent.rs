//! One agent actor per running attempt: it picks the specialty, routes the attempt to a
//! provider, runs the call under the attempt's time limit, streams output and activity to
//! the task's event log (debounced), reports to the provider's live state, and writes the
//! outcome under its fencing token. It never retries by itself: a failure goes back to the
//! engine, which schedules the next attempt (and the router moves it to another provider).
//! A panic here is caught by ractor and reported to the dispatcher, which fails the
//! attempt; the node carries on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, Finish, LeasedTask, Outcome, RunnerWriteResult, Streamed};
use supervisor_model::{TaskResult, analyze};
use supervisor_providers::{EventSink, ProviderError, ProviderEvent, ProviderOutput};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::routing::{Report, Route, RouteError, RouteRequest, Router};
use crate::routing::{SharedLimits, provider_request};
use crate::wire::Spent;

/// Messages of an agent.
pub enum AgentMsg {
    /// Run the attempt (sent to itself on start).
    Run,
}

impl ractor::Message for AgentMsg {}

/// What an agent needs to run one attempt.
pub struct AgentArgs {
    /// The leased task.
    pub leased: LeasedTask,
    /// The engine, for fenced writes.
    pub engine: Engine,
    /// The node's providers.
    pub router: Arc<Router>,
    /// How often streamed output is written to the event log while the call runs.
    pub flush_interval: Duration,
    /// Longest wait for a provider to become available before the attempt fails
    /// (retryably, with the wait the providers asked for).
    pub route_wait: Duration,
    /// Flips to true when the attempt must be abandoned (cancelled, lease lost, drain).
    pub abandon: watch::Receiver<bool>,
    /// When the lease transaction returned to the dispatcher.
    pub leased_at: Instant,
    /// Times the attempt: its limit, route waits, output flushes.
    pub clock: Clock,
    /// The providers' cluster-wide limits, when nodes share a store.
    pub shared: Option<Arc<SharedLimits>>,
}

/// The agent actor.
#[derive(Clone)]
pub struct Agent;

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = Option<AgentArgs>;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AgentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(AgentMsg::Run)?;
        Ok(Some(args))
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        _msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(args) = state.take() else {
            return Ok(());
        };
        let node = args
            .leased
            .task
            .lease
            .as_ref()
            .map(|l| l.node_id.clone())
            .unwrap_or_default();
        let span = crate::spans::task("supervisor.attempt", &args.leased.task, &node);
        run_attempt(args).instrument(span).await;
        myself.stop(None);
        Ok(())
    }
}

/// Resolves once the attempt must be abandoned (never, if the sender is gone).
async fn abandoned(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|a| *a).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How the attempt ended, seen from inside the agent.
enum Ending {
    /// The provider answered (or failed, or no provider could be had).
    Done {
        provider: String,
        result: Result<ProviderOutput, ProviderError>,
        /// What the provider reported spending before the attempt ended (it counts when
        /// the attempt failed: the tokens were used all the same).
        spent: Spent,
    },
    /// No provider can take it now, for a reason that passes by itself: hand the task
    /// back to wait `wait`, without spending the attempt.
    Deferred { why: String, wait: Duration },
    /// Cancelled, lease lost or drained: write nothing.
    Abandoned,
}

/// What routing came to.
enum Routed {
    To(Route),
    Failed(ProviderError),
    Deferred { why: String, wait: Duration },
    Abandoned,
}

/// Waits for a provider, within the attempt's deadline and the node's route wait. A
/// wait that outlasts them becomes a deferral when what stands in the way passes by
/// itself (rate limits, `retry-after`, a breaker's cooldown or trial), and a retryable
/// failure when every provider able to serve the task is down. Any change of a
/// provider's state (a breaker's trial ending, a slot freeing) wakes the wait early.
async fn route(
    clock: &Clock,
    router: &Router,
    req: &RouteRequest<'_>,
    deadline: Instant,
    route_wait: Duration,
    abandon: &mut watch::Receiver<bool>,
) -> Routed {
    let give_up = clock.now() + route_wait;
    let mut changes = router.subscribe();
    loop {
        changes.borrow_and_update();
        match router.choose(req) {
            Ok(route) => return Routed::To(route),
            Err(RouteError::NoneCanServe(why)) => {
                return Routed::Failed(ProviderError::Permanent {
                    kind: "no_provider",
                    message: format!("no configured provider can serve this task: {why}"),
                });
            }
            Err(RouteError::NoneAvailable {
                why,
                retry_in,
                passes,
            }) => {
                let wait = retry_in.unwrap_or(Duration::from_secs(1));
                let wake = clock.now() + wait;
                if wake > give_up || wake > deadline {
                    if passes {
                        return Routed::Deferred { why, wait };
                    }
                    return Routed::Failed(ProviderError::Retryable {
                        kind: "no_provider_available",
                        message: format!("no provider is available now: {why}"),
                        retry_after: retry_in,
                    });
                }
                tokio::select! {
                    _ = clock.sleep_until(wake) => {}
                    _ = changes.changed() => {}
                    _ = abandoned(abandon) => return Routed::Abandoned,
                }
            }
        }
    }
}

async fn run_attempt(args: AgentArgs) {
    let AgentArgs {
        leased,
        engine,
        router,
        flush_interval,
        route_wait,
        mut abandon,
        leased_at,
        clock,
        shared,
    } = args;
    let task = &leased.task;
    let task_ref = leased.task_ref.clone();
    let timeout = Duration::from_millis(task.timeout_ms);
    let deadline = clock.now() + timeout;
    let mut time_up = clock.sleep_until(deadline);
    let mut buffered: Vec<Streamed> = Vec::new();

    let choice = analyze(
        task.task_type,
        &task.labels,
        &task.prompt,
        task.routing.specialty,
    );
    let request = provider_request(task);
    // Attempts that never reached a provider (no route, a panic) name none.
    let failed_on: Vec<String> = task
        .attempts
        .iter()
        .filter(|a| a.outcome != "succeeded" && !a.provider.is_empty())
        .map(|a| a.provider.clone())
        .collect();
    let route_req = RouteRequest {
        task_type: task.task_type,
        request: &request,
        prefs: &task.routing,
        failed_on: &failed_on,
    };

    let ending = match route(
        &clock,
        &router,
        &route_req,
        deadline,
        route_wait,
        &mut abandon,
    )
    .await
    {
        Routed::Abandoned => Ending::Abandoned,
        Routed::Deferred { why, wait } => Ending::Deferred { why, wait },
        Routed::Failed(err) => Ending::Done {
            provider: String::new(),
            result: Err(err),
            spent: Spent::default(),
        },
        Routed::To(route) => 'to: {
            let handle = route.handle.clone();
            let admission = match &shared {
                Some(shared) => match shared.admit(&handle, route.tokens_estimated).await {
                    Ok(admission) => Some(admission),
                    Err(no) => {
                        break 'to Ending::Deferred {
                            why: format!("provider {}: {}", handle.name, no.why),
                            wait: no.wait,
                        };
                    }
                },
                None => None,
            };
            buffered.push(Streamed::Activity(format!(
                "attempt {}: specialty {} ({}); provider {} ({})",
                task.attempt, choice.specialty, choice.reason, handle.name, route.reason
            )));
            let started = clock.now();
            let call_span = crate::spans::provider_call(
                &handle.name,
                handle.provider.kind(),
                handle
                    .capabilities
                    .models
                    .first()
                    .map_or("", String::as_str),
                &request,
            );
            let mut running = None;
            let (sink, mut events) = EventSink::channel();
            let mut spent = Spent::default();
            let result = 'run: {
                // A slot under the provider's concurrency limit.
                let _permit = tokio::select! {
                    permit = handle.slots.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break 'run None,
                    },
                    _ = abandoned(&mut abandon) => break 'run None,
                    _ = &mut time_up => break 'run Some(Err(timeout_error(timeout))),
                };
                router.record_dispatch(clock.since(leased_at));
                running = Some(RunningAttempt::start(&handle.name));
                let exec = handle
                    .provider
                    .execute(request.clone(), sink)
                    .instrument(call_span.clone());
                tokio::pin!(exec);
                let mut flush = clock.sleep(flush_interval);
                loop {
                    tokio::select! {
                        biased;
                        _ = abandoned(&mut abandon) => break 'run None,
                        result = &mut exec => break 'run Some(result),
                        Some(event) = events.recv() => take_event(event, &mut buffered, &mut spent),
                        _ = &mut flush, if !buffered.is_empty() => {
                            flush = clock.sleep(flush_interval);
                            let items = std::mem::take(&mut buffered);
                            match engine.progress(task_ref.clone(), items).await {
                                Ok(RunnerWriteResult::Accepted(_)) => {}
                                Ok(RunnerWriteResult::Refused(why)) => {
                                    tracing::info!(task = %task.id, %why, "lease lost while running; abandoning the attempt");
                                    break 'run None;
                                }
                                Err(err) => tracing::warn!(task = %task.id, error = %err, "could not record progress; will retry with the next flush"),
                            }
                        }
                        _ = &mut time_up => break 'run Some(Err(timeout_error(timeout))),
                    }
                }
            };
            while let Ok(event) = events.try_recv() {
                take_event(event, &mut buffered, &mut spent);
            }
            if let (Some(shared), Some(admission)) = (&shared, admission) {
                // What the provider reported, or what was streamed before it stopped.
                let usage = match &result {
                    Some(Ok(out)) => out.usage,
                    _ => spent.usage,
                };
                shared
                    .settle(admission, usage.input_tokens + usage.output_tokens)
                    .await;
            }
            match result {
                None => {
                    handle.abandon();
                    Ending::Abandoned
                }
                Some(result) => {
                    drop(running);
                    let (usage, cost) = match &result {
                        Ok(out) => (out.usage, out.cost_micros),
                        Err(_) => (spent.usage, spent.cost_micros),
                    };
                    observe_call(
                        &call_span,
                        &handle.name,
                        &result,
                        usage,
                        cost,
                        clock.since(started),
                    );
                    handle.report(&Report {
                        ok: result.is_ok(),
                        error_kind: result.as_ref().err().map(|e| error_kind(e).to_string()),
                        latency: clock.since(started),
                        tokens_used: usage.input_tokens + usage.output_tokens,
                        tokens_estimated: route.tokens_estimated,
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                        cost_micros: cost,
                        retry_after: result.as_ref().err().and_then(retry_after),
                    });
                    Ending::Done {
                        provider: handle.name.clone(),
                        result: result.map_err(|e| {
                            moved_elsewhere(e, router.others_can_serve(&route_req, &handle.name))
                        }),
                        spent,
                    }
                }
            }
        }
    };

    let (provider, result, spent) = match ending {
        Ending::Abandoned => {
            tracing::debug!(task = %task.id, "attempt abandoned; writing nothing");
            return;
        }
        Ending::Deferred { why, wait } => {
            let why = format!("no provider can take it now: {why}");
            match engine.defer(&task_ref, &why, wait).await {
                Ok(RunnerWriteResult::Accepted(_)) => {
                    tracing::debug!(task = %task.id, ?wait, %why, "deferred without spending the attempt");
                }
                Ok(RunnerWriteResult::Refused(why)) => {
                    tracing::info!(task = %task.id, %why, "deferral refused: another runner owns the task");
                }
                Err(err) => {
                    tracing::warn!(task = %task.id, error = %err, "could not defer; the lease will lapse");
                }
            }
            return;
        }
        Ending::Done {
            provider,
            result,
            spent,
        } => (provider, result, spent),
    };
    let (model, usage, cost_micros, outcome) = match result {
        Ok(out) => {
            for artifact in &out.artifacts {
                buffered.push(Streamed::Activity(format!(
                    "artifact {} ({}, {} bytes) produced",
                    artifact.name,
                    artifact.media_type,
                    artifact.content.len()
                )));
            }
            let artifacts = out
                .artifacts
                .iter()
                .map(|a| supervisor_model::Artifact {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    size_bytes: a.content.len() as u64,
                    content: a.content.clone(),
                })
                .collect();
            (
                out.model.clone(),
                out.usage,
                out.cost_micros,
                Outcome::Succeeded(TaskResult {
                    output: out.output,
                    usage: out.usage,
                    cost_micros: out.cost_micros,
                    provider: provider.clone(),
                    model: out.model,
                    artifacts,
                }),
            )
        }
        Err(err) => {
            let shown = if provider.is_empty() {
                String::new()
            } else {
                format!("provider {provider}: ")
            };
            (
                String::new(),
                spent.usage,
                spent.cost_micros,
                Outcome::Failed {
                    kind: error_kind(&err).to_string(),
                    retryable: err.is_retryable(),
                    retry_after: retry_after(&err),
                    error: format!("{shown}{err}"),
                },
            )
        }
    };
    let finish = Finish {
        task_ref,
        provider,
        model,
        usage,
        cost_micros,
        trailing: buffered,
        outcome,
    };
    let node = task
        .lease
        .as_ref()
        .map(|l| l.node_id.clone())
        .unwrap_or_default();
    let completing = crate::spans::within("supervisor.complete", task, &node);
    match engine.finish(finish).instrument(completing).await {
        Ok(RunnerWriteResult::Accepted(status)) => {
            tracing::debug!(task = %task.id, %status, "attempt recorded");
        }
        Ok(RunnerWriteResult::Refused(why)) => {
            tracing::info!(task = %task.id, %why, "outcome refused: another runner owns the task");
        }
        Err(err) => {
            // The lease will lapse and the task will run again; completion stays exactly-once.
            tracing::error!(task = %task.id, error = %err, "could not record the outcome");
        }
    }
}

/// An attempt counted in `supervisor_attempts_running` while its provider runs it;
/// uncounted when dropped, however the call ended.
struct RunningAttempt {
    provider: [opentelemetry::KeyValue; 1],
}

impl RunningAttempt {
    fn start(provider: &str) -> Option<RunningAttempt> {
        if !supervisor_telemetry::metrics_on() {
            return None;
        }
        let provider = [opentelemetry::KeyValue::new(
            "provider",
            provider.to_string(),
        )];
        supervisor_telemetry::metrics()
            .attempts_running
            .add(1, &provider);
        Some(RunningAttempt { provider })
    }
}

impl Drop for RunningAttempt {
    fn drop(&mut self) {
        supervisor_telemetry::metrics()
            .attempts_running
            .add(-1, &self.provider);
    }
}

/// Records a finished provider call: its span's GenAI usage and status, and the
/// provider metrics (requests, errors by kind, time, tokens, cost).
fn observe_call(
    span: &tracing::Span,
    provider: &str,
    result: &Result<ProviderOutput, ProviderError>,
    usage: supervisor_model::Usage,
    cost_micros: u64,
    took: Duration,
) {
    let model = result.as_ref().map(|o| o.model.as_str()).unwrap_or("");
    crate::spans::provider_usage(
        span,
        model,
        usage.input_tokens,
        usage.output_tokens,
        cost_micros,
    );
    match result {
        Ok(out) if supervisor_telemetry::context::record_content() => {
            supervisor_telemetry::context::set_attribute(
                span,
                "gen_ai.completion",
                out.output.clone(),
            );
        }
        Ok(_) => {}
        Err(e) => {
            supervisor_telemetry::context::set_attribute(span, "error.type", error_kind(e));
            supervisor_telemetry::context::set_error(span, e.to_string());
        }
    }
    if !supervisor_telemetry::metrics_on() {
        return;
    }
    use opentelemetry::KeyValue;
    let m = supervisor_telemetry::metrics();
    let p = KeyValue::new("provider", provider.to_string());
    let model = KeyValue::new("model", model.to_string());
    let outcome = KeyValue::new("outcome", if result.is_ok() { "ok" } else { "error" });
    m.provider_requests
        .add(1, &[p.clone(), model.clone(), outcome]);
    if let Err(e) = result {
        m.provider_errors
            .add(1, &[p.clone(), KeyValue::new("kind", error_kind(e))]);
    }
    m.provider_duration
        .record(took.as_secs_f64(), std::slice::from_ref(&p));
    for (kind, n) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
    ] {
        if n > 0 {
            m.provider_tokens
                .add(n, &[p.clone(), model.clone(), KeyValue::new("type", kind)]);
        }
    }
    if cost_micros > 0 {
        m.provider_cost.add(cost_micros as f64 / 1e6, &[p, model]);
    }
}

/// Files a provider's event: output and activity go to the task's event log; usage
/// replaces what was spent so far (providers report running totals).
fn take_event(event: ProviderEvent, buffered: &mut Vec<Streamed>, spent: &mut Spent) {
    match event {
        ProviderEvent::Output(text) => buffered.push(Streamed::Output(text)),
        ProviderEvent::Activity(line) => buffered.push(Streamed::Activity(line)),
        ProviderEvent::Usage { usage, cost_micros } => {
            *spent = Spent { usage, cost_micros };
        }
    }
}

fn error_kind(err: &ProviderError) -> &'static str {
    match err {
        ProviderError::Retryable { kind, .. } | ProviderError::Permanent { kind, .. } => kind,
    }
}

fn retry_after(err: &ProviderError) -> Option<Duration> {
    match err {
        ProviderError::Retryable { retry_after, .. } => *retry_after,
        ProviderError::Permanent { .. } => None,
    }
}

/// Errors that concern one provider, not the task: another provider may serve it.
const PROVIDER_ONLY: &[&str] = &["auth", "not_installed", "unsupported"];

/// A provider's error as the task sees it when `others` (other providers able to serve
/// it) exist: a `retry-after` only keeps traffic off that provider (its throttle) instead
/// of delaying the task, and a permanent error of that provider alone (bad key, missing
/// CLI) becomes retryable, so the next attempt runs on another provider.
fn moved_elsewhere(err: ProviderError, others: bool) -> ProviderError {
    if !others {
        return err;
    }
    match err {
        ProviderError::Retryable { kind, message, .. } => ProviderError::Retryable {
            kind,
            message,
            retry_after: None,
        },
        ProviderError::Permanent { kind, message } if PROVIDER_ONLY.contains(&kind) => {
            ProviderError::Retryable {
                kind,
                message: format!("{message} (another provider will take the next attempt)"),
                retry_after: None,
            }
        }
        permanent => permanent,
    }
}

fn timeout_error(timeout: Duration) -> ProviderError {
    ProviderError::Retryable {
        kind: "timeout",
        message: format!("attempt exceeded its time limit of {timeout:?}"),
        retry_after: None,
    }
}
