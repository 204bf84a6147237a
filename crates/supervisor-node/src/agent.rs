//! One agent actor per running attempt: it checks the provider out, runs the call under
//! the attempt's time limit, streams output to the task's event log (debounced), and
//! writes the outcome under its fencing token. It never retries by itself: a failure goes
//! back to the engine, which schedules the next attempt. A panic here is caught by ractor
//! and reported to the dispatcher, which fails the attempt; the node carries on.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, Finish, LeasedTask, Outcome, RunnerWriteResult};
use supervisor_model::TaskResult;
use supervisor_providers::{EventSink, ProviderError, ProviderEvent, ProviderRequest};
use tokio::sync::watch;

use crate::provider_actor::{Checkout, ExecutionReport, ProviderMsg};

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
    /// Registry name of the provider actor to use.
    pub provider_actor: String,
    /// The provider's configured name (for durable counters).
    pub provider_name: String,
    /// How often streamed output is written to the event log while the call runs.
    pub flush_interval: Duration,
    /// Flips to true when the attempt must be abandoned (cancelled, lease lost, drain).
    pub abandon: watch::Receiver<bool>,
}

/// The agent actor.
pub struct Agent;

/// How an attempt ended, seen from inside the agent.
enum Ending {
    Done(Result<supervisor_providers::ProviderOutput, ProviderError>),
    Abandoned,
}

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
        run_attempt(args).await;
        myself.stop(None);
        Ok(())
    }
}

async fn checkout(actor_name: &str) -> Result<(ActorRef<ProviderMsg>, Checkout), ProviderError> {
    let unavailable = |why: String| ProviderError::Retryable {
        kind: "unavailable",
        message: why,
        retry_after: None,
    };
    let cell = ractor::registry::where_is(actor_name).ok_or_else(|| {
        unavailable(format!(
            "provider actor {actor_name} is not running (restarting?)"
        ))
    })?;
    let actor: ActorRef<ProviderMsg> = cell.into();
    let checkout = ractor::call!(actor, ProviderMsg::Checkout)
        .map_err(|e| unavailable(format!("provider actor {actor_name} did not answer: {e}")))?;
    Ok((actor, checkout))
}

async fn run_attempt(args: AgentArgs) {
    let AgentArgs {
        leased,
        engine,
        provider_actor,
        provider_name,
        flush_interval,
        mut abandon,
    } = args;
    let task = &leased.task;
    let task_ref = leased.task_ref.clone();
    let timeout = Duration::from_millis(task.timeout_ms);
    let started = Instant::now();
    let (sink, mut events) = EventSink::channel();
    let mut buffered: Vec<String> = Vec::new();

    let ending = match checkout(&provider_actor).await {
        Err(err) => Ending::Done(Err(err)),
        Ok((actor, checkout)) => {
            let choice =
                supervisor_model::analyze(task.task_type, &task.labels, &task.prompt, None);
            let request = ProviderRequest {
                task_id: task.id.to_string(),
                attempt: task.attempt,
                task_type: task.task_type,
                prompt: task.prompt.clone(),
                context: task.context.clone(),
                timeout,
                specialty: choice.specialty,
                system_prompt: choice.specialty.system_prompt().to_string(),
                tools: choice.specialty.tools(),
            };
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let ending = 'run: {
                // Wait for a slot under the provider's concurrency limit.
                let _permit = tokio::select! {
                    permit = checkout.slots.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break 'run Ending::Done(Err(ProviderError::Retryable {
                            kind: "unavailable",
                            message: format!("provider {provider_name} is shutting down"),
                            retry_after: None,
                        })),
                    },
                    _ = abandoned(&mut abandon) => break 'run Ending::Abandoned,
                    _ = &mut deadline => break 'run Ending::Done(Err(timeout_error(timeout))),
                };
                let exec = checkout.provider.execute(request, sink);
                tokio::pin!(exec);
                let mut flush = tokio::time::interval_at(
                    tokio::time::Instant::now() + flush_interval,
                    flush_interval,
                );
                loop {
                    tokio::select! {
                        biased;
                        _ = abandoned(&mut abandon) => break 'run Ending::Abandoned,
                        result = &mut exec => break 'run Ending::Done(result),
                        Some(ProviderEvent::Output(text)) = events.recv() => buffered.push(text),
                        _ = flush.tick(), if !buffered.is_empty() => {
                            let output = std::mem::take(&mut buffered);
                            match engine.progress(task_ref.clone(), output).await {
                                Ok(RunnerWriteResult::Accepted(_)) => {}
                                Ok(RunnerWriteResult::Refused(why)) => {
                                    tracing::info!(task = %task.id, %why, "lease lost while running; abandoning the attempt");
                                    break 'run Ending::Abandoned;
                                }
                                Err(err) => tracing::warn!(task = %task.id, error = %err, "could not record progress; will retry with the next flush"),
                            }
                        }
                        _ = &mut deadline => break 'run Ending::Done(Err(timeout_error(timeout))),
                    }
                }
            };
            let ok = matches!(ending, Ending::Done(Ok(_)));
            let _ = actor.cast(ProviderMsg::Report(ExecutionReport {
                ok,
                latency: started.elapsed(),
            }));
            ending
        }
    };

    let result = match ending {
        Ending::Abandoned => {
            tracing::debug!(task = %task.id, "attempt abandoned; writing nothing");
            return;
        }
        Ending::Done(result) => result,
    };
    while let Ok(ProviderEvent::Output(text)) = events.try_recv() {
        buffered.push(text);
    }
    let outcome = match result {
        Ok(out) => Outcome::Succeeded(TaskResult {
            output: out.output,
            usage: out.usage,
            cost_micros: out.cost_micros,
            provider: provider_name.clone(),
            model: out.model,
        }),
        Err(err) => Outcome::Failed {
            retryable: err.is_retryable(),
            error: format!("provider {provider_name}: {err}"),
        },
    };
    let finish = Finish {
        task_ref,
        provider: provider_name,
        trailing_output: buffered,
        outcome,
    };
    match engine.finish(finish).await {
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

/// Resolves once the attempt must be abandoned (never, if the sender is gone).
async fn abandoned(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|a| *a).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn timeout_error(timeout: Duration) -> ProviderError {
    ProviderError::Retryable {
        kind: "timeout",
        message: format!("attempt exceeded its time limit of {timeout:?}"),
        retry_after: None,
    }
}
