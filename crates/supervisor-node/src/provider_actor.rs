//! One actor per configured provider: it owns the provider's periodic health probe (a real
//! request, or `claude --version`) and records the result in the provider's
//! [`ProviderHandle`], which routing reads. Agents on this node use the handle directly for
//! admission, slots and reports, so a slow call never waits on this actor's mailbox.
//!
//! The actor also makes the provider reachable from other nodes: it joins the process
//! group `provider:<name>`, which ractor_cluster mirrors to every connected node, and
//! answers two remote calls: [`ProviderMsg::Describe`] (what the provider can do) and
//! [`ProviderMsg::Execute`] (run one attempt). A remote attempt goes through the same
//! admission, slots and reports as a local one ([`serve`]), so this node's concurrency,
//! rate limits and circuit breaker hold whoever asks. The execution runs on its own task;
//! the mailbox only starts it.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use supervisor_providers::{EventSink, Health, ProviderError, ProviderEvent, ProviderRequest};

use crate::routing::{ProviderHandle, Report, estimate_tokens};
use crate::wire::{self, Answer, Spent};
use tracing::Instrument as _;

/// The registry name of the actor for provider `name`.
pub fn actor_name(provider: &str) -> String {
    format!("provider:{provider}")
}

/// The process group every node's actor for provider `name` joins.
pub fn group_name(provider: &str) -> String {
    format!("provider:{provider}")
}

/// Messages of the provider actor. `Execute` and `Describe` may come from another node:
/// their payloads are bytes encoded by [`crate::wire`]. Variant names travel on
/// the wire: renaming one breaks calls between nodes of different releases.
#[derive(RactorClusterMessage)]
pub enum ProviderMsg {
    /// Run the health probe.
    Probe,
    /// The probe finished.
    ProbeDone {
        /// Whether the provider can take work.
        healthy: bool,
        /// What the probe saw.
        detail: String,
    },
    /// Run one attempt (an encoded request); the reply is the encoded outcome.
    #[rpc]
    Execute(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Describe the provider (an encoded description).
    #[rpc]
    Describe(RpcReplyPort<Vec<u8>>),
}

/// Arguments of the provider actor.
pub struct ProviderArgs {
    /// The provider's live state.
    pub handle: Arc<ProviderHandle>,
    /// How often the health probe runs.
    pub probe_interval: Duration,
}

/// The provider actor.
#[derive(Clone)]
pub struct ProviderActor;

/// Its state.
pub struct ProviderState {
    handle: Arc<ProviderHandle>,
    probing: bool,
}

/// Longest a health probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ProviderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.handle
            .clock()
            .send_interval(&myself, args.probe_interval, || ProviderMsg::Probe);
        myself.cast(ProviderMsg::Probe)?;
        ractor::pg::join(group_name(&args.handle.name), vec![myself.get_cell()]);
        Ok(ProviderState {
            handle: args.handle,
            probing: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(group_name(&state.handle.name), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProviderMsg::Probe => {
                if state.probing {
                    return Ok(());
                }
                state.probing = true;
                let provider = state.handle.provider.clone();
                let clock = state.handle.clock().clone();
                tokio::spawn(async move {
                    let health = match clock.timeout(PROBE_TIMEOUT, provider.health()).await {
                        Some(h) => h,
                        None => Health {
                            healthy: false,
                            detail: format!("health probe timed out after {PROBE_TIMEOUT:?}"),
                        },
                    };
                    let _ = myself.cast(ProviderMsg::ProbeDone {
                        healthy: health.healthy,
                        detail: health.detail,
                    });
                });
            }
            ProviderMsg::ProbeDone { healthy, detail } => {
                state.probing = false;
                let before = state.handle.snapshot().healthy;
                if before != healthy {
                    tracing::info!(provider = %state.handle.name, healthy, detail = %detail, "provider health changed");
                }
                state.handle.set_health(Health { healthy, detail });
            }
            ProviderMsg::Execute(bytes, reply) => {
                let handle = state.handle.clone();
                tokio::spawn(async move {
                    let (result, spent) = match wire::decode_request(&bytes) {
                        Ok((request, trace)) => {
                            let span =
                                crate::spans::remote_call(&handle.name, &request, trace.as_deref());
                            serve(&handle, request).instrument(span).await
                        }
                        Err(err) => (
                            Err(ProviderError::Retryable {
                                kind: "unavailable",
                                message: err.to_string(),
                                retry_after: None,
                            }),
                            Spent::default(),
                        ),
                    };
                    // The caller may have given up (timeout, node gone): nothing to do.
                    let _ = reply.send(wire::encode_outcome_within(
                        &result,
                        spent,
                        wire::MAX_OUTCOME_BYTES,
                    ));
                });
            }
            ProviderMsg::Describe(reply) => {
                let h = &state.handle;
                let _ = reply.send(wire::encode_description(
                    &h.name,
                    h.provider.kind(),
                    &h.capabilities,
                    h.max_concurrency,
                ));
            }
        }
        Ok(())
    }
}

/// Runs one attempt asked for by another node, under this node's limits for the
/// provider: admission (health, `retry-after` throttle, circuit breaker, token buckets),
/// a concurrency slot, the attempt's time limit, and a report of how it went. A refusal
/// is a retryable error (`rate_limited` with the wait when the provider knows it, else
/// `unavailable`), so the asking node's engine retries the task, elsewhere if it can.
///
/// Streamed output is not forwarded: the asking node receives the whole output with the
/// outcome.
pub async fn serve(handle: &ProviderHandle, request: ProviderRequest) -> Answer {
    let clock = handle.clock();
    let timeout = request.timeout;
    let deadline = clock.now() + timeout;
    let tokens = estimate_tokens(&request);
    if let Err(refusal) = handle.admit(tokens, clock.now()) {
        let why = refusal.why;
        let error = match refusal.wait {
            Some(wait) => ProviderError::Retryable {
                kind: "rate_limited",
                message: format!("provider {} refused the attempt: {why}", handle.name),
                retry_after: Some(wait),
            },
            None => ProviderError::Retryable {
                kind: "unavailable",
                message: format!("provider {} refused the attempt: {why}", handle.name),
                retry_after: None,
            },
        };
        return (Err(error), Spent::default());
    }
    let timed_out = || ProviderError::Retryable {
        kind: "timeout",
        message: format!("attempt exceeded its time limit of {timeout:?}"),
        retry_after: None,
    };
    let left = deadline.saturating_duration_since(clock.now());
    let _permit = match clock
        .timeout(left, handle.slots.clone().acquire_owned())
        .await
    {
        Some(Ok(permit)) => permit,
        Some(Err(_)) => {
            handle.abandon();
            let error = ProviderError::Retryable {
                kind: "unavailable",
                message: format!("provider {} is shutting down", handle.name),
                retry_after: None,
            };
            return (Err(error), Spent::default());
        }
        None => {
            handle.abandon();
            return (Err(timed_out()), Spent::default());
        }
    };
    let started = clock.now();
    // Output travels with the outcome; of the events only the last usage is kept.
    let (sink, mut events) = EventSink::channel();
    let left = deadline.saturating_duration_since(clock.now());
    let result = match clock
        .timeout(left, handle.provider.execute(request, sink))
        .await
    {
        Some(result) => result,
        None => Err(timed_out()),
    };
    let mut spent = Spent::default();
    while let Ok(event) = events.try_recv() {
        if let ProviderEvent::Usage { usage, cost_micros } = event {
            spent = Spent { usage, cost_micros };
        }
    }
    let (usage, cost) = match &result {
        Ok(out) => (out.usage, out.cost_micros),
        Err(_) => (spent.usage, spent.cost_micros),
    };
    handle.report(&Report {
        ok: result.is_ok(),
        error_kind: result.as_ref().err().map(|e| match e {
            ProviderError::Retryable { kind, .. } | ProviderError::Permanent { kind, .. } => {
                kind.to_string()
            }
        }),
        latency: clock.since(started),
        tokens_used: usage.input_tokens + usage.output_tokens,
        tokens_estimated: tokens,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_micros: cost,
        retry_after: match &result {
            Err(ProviderError::Retryable { retry_after, .. }) => *retry_after,
            _ => None,
        },
    });
    (result, spent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor_model::TaskType;
    use supervisor_providers::config::Limits;
    use supervisor_providers::mock::{MockConfig, MockProvider};

    fn handle(limits: Limits) -> ProviderHandle {
        ProviderHandle::new(
            Arc::new(MockProvider::new("m", MockConfig::default())),
            1,
            limits,
            tokio::sync::watch::channel(0).0,
            crate::clock::Clock::system(),
        )
    }

    fn request() -> ProviderRequest {
        ProviderRequest::simple("t", TaskType::BugFix, "fix", Duration::from_secs(5))
    }

    #[tokio::test]
    async fn remote_work_counts_against_this_nodes_rate_limit() {
        let h = handle(Limits {
            requests_per_minute: Some(1),
            ..Limits::default()
        });
        let out = serve(&h, request()).await.0.unwrap();
        assert_eq!(
            out.output,
            MockProvider::output_for(TaskType::BugFix, "fix")
        );
        match serve(&h, request()).await.0 {
            Err(ProviderError::Retryable {
                kind: "rate_limited",
                retry_after: Some(wait),
                message,
            }) => {
                assert!(!wait.is_zero());
                assert!(message.contains("provider m"), "{message}");
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        let s = h.snapshot();
        assert_eq!((s.executions_started, s.executions_succeeded), (1, 1));
    }

    #[tokio::test]
    async fn an_unhealthy_provider_refuses_remote_work_retryably() {
        let h = handle(Limits::default());
        h.set_health(Health {
            healthy: false,
            detail: "probe failed".into(),
        });
        match serve(&h, request()).await.0 {
            Err(ProviderError::Retryable {
                kind: "unavailable",
                message,
                ..
            }) => assert!(message.contains("probe failed"), "{message}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
