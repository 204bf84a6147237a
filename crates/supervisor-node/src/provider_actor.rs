//! One actor per configured provider: it owns the provider, its concurrency limit, its
//! health probe and its live counters. Agents check a provider out (getting the provider
//! and its slot semaphore), run the call themselves, and report back, so a slow call never
//! blocks the actor's mailbox.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use supervisor_providers::{Health, Provider};
use tokio::sync::Semaphore;

/// The registry name of the actor for provider `name`.
pub fn actor_name(provider: &str) -> String {
    format!("provider:{provider}")
}

/// What an agent gets when it checks a provider out.
#[derive(Clone)]
pub struct Checkout {
    /// The provider to call.
    pub provider: Arc<dyn Provider>,
    /// Acquire one permit for the length of the call.
    pub slots: Arc<Semaphore>,
}

/// How one execution went, reported by the agent that ran it.
#[derive(Debug, Clone, Copy)]
pub struct ExecutionReport {
    /// Whether it produced a result.
    pub ok: bool,
    /// How long the call took.
    pub latency: Duration,
}

/// A point-in-time view of a provider on this node (live numbers, not estimates).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSnapshot {
    /// Configured name.
    pub name: String,
    /// Implementation.
    pub kind: String,
    /// Result of the last health probe.
    pub healthy: bool,
    /// What the probe saw.
    pub health_detail: String,
    /// Executions running now.
    pub in_flight: u32,
    /// Concurrency limit.
    pub max_concurrency: u32,
    /// Executions started since the node started.
    pub executions_started: u64,
    /// Executions that failed since the node started.
    pub executions_failed: u64,
    /// Median latency of the recent executions.
    pub latency_p50: Option<Duration>,
    /// 95th percentile latency of the recent executions.
    pub latency_p95: Option<Duration>,
}

/// Messages of the provider actor.
pub enum ProviderMsg {
    /// Hand out the provider and its slots.
    Checkout(RpcReplyPort<Checkout>),
    /// An execution ended.
    Report(ExecutionReport),
    /// Current numbers.
    Snapshot(RpcReplyPort<ProviderSnapshot>),
    /// Run the health probe.
    Probe,
    /// The probe finished.
    ProbeDone(Health),
}

impl ractor::Message for ProviderMsg {}

/// Arguments of the provider actor.
pub struct ProviderArgs {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Most concurrent executions on this node.
    pub max_concurrency: u32,
    /// How often the health probe runs.
    pub probe_interval: Duration,
}

/// The provider actor.
pub struct ProviderActor;

/// Its state.
pub struct ProviderState {
    provider: Arc<dyn Provider>,
    slots: Arc<Semaphore>,
    max_concurrency: u32,
    started: u64,
    failed: u64,
    recent: VecDeque<Duration>,
    health: Health,
    probing_since: Option<Instant>,
}

const RECENT_LATENCIES: usize = 1024;

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ProviderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.probe_interval, || ProviderMsg::Probe);
        myself.cast(ProviderMsg::Probe)?;
        Ok(ProviderState {
            slots: Arc::new(Semaphore::new(args.max_concurrency as usize)),
            max_concurrency: args.max_concurrency,
            provider: args.provider,
            started: 0,
            failed: 0,
            recent: VecDeque::with_capacity(RECENT_LATENCIES),
            health: Health {
                healthy: false,
                detail: "not probed yet".into(),
            },
            probing_since: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProviderMsg::Checkout(reply) => {
                state.started += 1;
                let _ = reply.send(Checkout {
                    provider: state.provider.clone(),
                    slots: state.slots.clone(),
                });
            }
            ProviderMsg::Report(report) => {
                if !report.ok {
                    state.failed += 1;
                }
                if state.recent.len() == RECENT_LATENCIES {
                    state.recent.pop_front();
                }
                state.recent.push_back(report.latency);
            }
            ProviderMsg::Snapshot(reply) => {
                let mut sorted: Vec<Duration> = state.recent.iter().copied().collect();
                sorted.sort_unstable();
                let available = state.slots.available_permits() as u32;
                let _ = reply.send(ProviderSnapshot {
                    name: state.provider.name().to_string(),
                    kind: state.provider.kind().to_string(),
                    healthy: state.health.healthy,
                    health_detail: state.health.detail.clone(),
                    in_flight: state.max_concurrency.saturating_sub(available),
                    max_concurrency: state.max_concurrency,
                    executions_started: state.started,
                    executions_failed: state.failed,
                    latency_p50: percentile(&sorted, 0.50),
                    latency_p95: percentile(&sorted, 0.95),
                });
            }
            ProviderMsg::Probe => {
                if state.probing_since.is_some() {
                    return Ok(());
                }
                state.probing_since = Some(Instant::now());
                let provider = state.provider.clone();
                tokio::spawn(async move {
                    let health = match tokio::time::timeout(
                        Duration::from_secs(10),
                        provider.health(),
                    )
                    .await
                    {
                        Ok(h) => h,
                        Err(_) => Health {
                            healthy: false,
                            detail: "health probe timed out after 10s".into(),
                        },
                    };
                    let _ = myself.cast(ProviderMsg::ProbeDone(health));
                });
            }
            ProviderMsg::ProbeDone(health) => {
                if health.healthy != state.health.healthy {
                    tracing::info!(provider = state.provider.name(), healthy = health.healthy, detail = %health.detail, "provider health changed");
                }
                state.health = health;
                state.probing_since = None;
            }
        }
        Ok(())
    }
}
