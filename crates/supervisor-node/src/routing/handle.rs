//! One provider's live state on this node: concurrency slots, token buckets, circuit
//! breaker, `retry-after` throttle, last health probe and rolling statistics. Agents
//! admit, take slots and report through it directly (a short mutex), so routing never
//! waits on a mailbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use supervisor_providers::config::Limits;
use supervisor_providers::{Capabilities, Health, Provider, ProviderRequest};
use tokio::sync::{Semaphore, watch};

use super::limits::{Breaker, BreakerState, TokenBucket};
use crate::clock::Clock;

/// Error kinds that say nothing about the provider (the task's own fault, or a throttle
/// handled separately): they do not count against the breaker.
const NOT_PROVIDER_FAULT: &[&str] = &[
    "bad_request",
    "context_too_long",
    "budget",
    "rate_limited",
    "cancelled",
    "output_too_large",
    // A team's check refused the agent's work: the provider answered.
    "hook_failed",
];

#[derive(Debug)]
struct Live {
    health: Health,
    probed: bool,
    breaker: Breaker,
    rpm: Option<TokenBucket>,
    tpm: Option<TokenBucket>,
    throttled_until: Option<Instant>,
    started: u64,
    succeeded: u64,
    failed: u64,
    recent: VecDeque<(Duration, bool)>,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
}

const RECENT: usize = 512;

/// One provider on this node and everything routing needs to know about it.
pub struct ProviderHandle {
    /// Configured name.
    pub name: String,
    /// What it can do.
    pub capabilities: Capabilities,
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Concurrency slots on this node.
    pub slots: Arc<Semaphore>,
    /// Concurrency limit.
    pub max_concurrency: u32,
    /// Its limits as configured.
    pub limits: Limits,
    live: Mutex<Live>,
    changes: watch::Sender<u64>,
    node: Option<String>,
    clock: Clock,
}

/// A point-in-time view of a provider on this node: live numbers, not estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSnapshot {
    /// Configured name.
    pub name: String,
    /// Implementation.
    pub kind: String,
    /// Models it serves.
    pub models: Vec<String>,
    /// Result of the last health probe (true before the first probe completes).
    pub healthy: bool,
    /// What the probe saw.
    pub health_detail: String,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    /// Executions running now.
    pub in_flight: u32,
    /// Concurrency limit.
    pub max_concurrency: u32,
    /// Requests-per-minute limit, if any.
    pub requests_per_minute: Option<u32>,
    /// Tokens-per-minute limit, if any.
    pub tokens_per_minute: Option<u64>,
    /// Time left on a `retry-after` throttle.
    pub throttled_for: Option<Duration>,
    /// Executions started on this node since it started.
    pub executions_started: u64,
    /// Executions that succeeded.
    pub executions_succeeded: u64,
    /// Executions that failed.
    pub executions_failed: u64,
    /// Share of the recent executions that succeeded (`None` before any).
    pub success_rate: Option<f64>,
    /// Median latency of the recent executions.
    pub latency_p50: Option<Duration>,
    /// 95th percentile latency of the recent executions.
    pub latency_p95: Option<Duration>,
    /// Tokens and cost of executions on this node since it started.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in millionths of a dollar.
    pub cost_micros: u64,
}

/// Why a provider would not take a request now.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// What stood in the way, for people.
    pub why: String,
    /// How long until it might accept, when known.
    pub wait: Option<Duration>,
    /// Whether it passes by itself (a rate limit, a `retry-after`, a breaker's cooldown
    /// or trial), as opposed to the provider being down.
    pub passes: bool,
}

/// A duration as people read it: `1.5s`, `250ms`.
pub(crate) fn short(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// How an execution went, as the agent reports it.
#[derive(Debug, Clone)]
pub struct Report {
    /// Whether it succeeded.
    pub ok: bool,
    /// The error kind, when it failed.
    pub error_kind: Option<String>,
    /// How long the call took.
    pub latency: Duration,
    /// Tokens used (input + output), to correct the token bucket's estimate.
    pub tokens_used: u64,
    /// The estimate taken at admission.
    pub tokens_estimated: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost.
    pub cost_micros: u64,
    /// The provider's `retry-after`, if it gave one.
    pub retry_after: Option<Duration>,
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

impl ProviderHandle {
    /// A handle for `provider` under `limits`; `changes` is bumped whenever its state
    /// changes, and `clock` times its buckets, breaker and throttle.
    pub fn new(
        provider: Arc<dyn Provider>,
        max_concurrency: u32,
        limits: Limits,
        changes: watch::Sender<u64>,
        clock: Clock,
    ) -> Self {
        let now = clock.now();
        let breaker = Breaker::new(
            limits.breaker_failures.unwrap_or(5),
            limits.breaker_window.unwrap_or(Duration::from_secs(60)),
            limits.breaker_cooldown.unwrap_or(Duration::from_secs(30)),
        );
        ProviderHandle {
            node: None,
            name: provider.name().to_string(),
            capabilities: provider.capabilities(),
            slots: Arc::new(Semaphore::new(max_concurrency.max(1) as usize)),
            max_concurrency: max_concurrency.max(1),
            live: Mutex::new(Live {
                health: Health {
                    healthy: true,
                    detail: "not probed yet".into(),
                },
                probed: false,
                breaker,
                rpm: limits
                    .requests_per_minute
                    .map(|n| TokenBucket::per_minute(n as u64, now)),
                tpm: limits
                    .tokens_per_minute
                    .map(|n| TokenBucket::per_minute(n, now)),
                throttled_until: None,
                started: 0,
                succeeded: 0,
                failed: 0,
                recent: VecDeque::with_capacity(RECENT),
                input_tokens: 0,
                output_tokens: 0,
                cost_micros: 0,
            }),
            limits,
            provider,
            changes,
            clock,
        }
    }

    /// A handle for a provider that runs on node `node`: the limits here are this
    /// node's view; the other node applies its own as well.
    pub fn new_remote(
        provider: Arc<dyn Provider>,
        max_concurrency: u32,
        limits: Limits,
        changes: watch::Sender<u64>,
        node: String,
        clock: Clock,
    ) -> Self {
        ProviderHandle {
            node: Some(node),
            ..ProviderHandle::new(provider, max_concurrency, limits, changes, clock)
        }
    }

    /// The clock its limits are timed on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The node the provider runs on, when it is not this one.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Executions running now.
    pub fn in_flight(&self) -> u32 {
        self.max_concurrency
            .saturating_sub(self.slots.available_permits() as u32)
    }

    pub(super) fn median_latency(&self) -> Option<Duration> {
        let live = self.live();
        let mut lat: Vec<Duration> = live.recent.iter().map(|(d, _)| *d).collect();
        drop(live);
        lat.sort_unstable();
        percentile(&lat, 0.5)
    }

    /// Records a health probe.
    pub fn set_health(&self, health: Health) {
        let mut live = self.live();
        let changed = !live.probed || live.health != health;
        live.health = health;
        live.probed = true;
        drop(live);
        if changed {
            self.changed();
        }
    }

    /// Tries to take this provider for one request of about `tokens` tokens. On refusal,
    /// says why, how long until it might accept, and whether that passes by itself. An
    /// admitted execution must end in [`Self::report`] or [`Self::abandon`].
    pub fn admit(&self, tokens: u64, now: Instant) -> Result<(), Refusal> {
        let mut live = self.live();
        if live.probed && !live.health.healthy {
            return Err(Refusal {
                why: format!("unhealthy ({})", live.health.detail),
                wait: None,
                passes: false,
            });
        }
        if let Some(until) = live.throttled_until {
            if now < until {
                let left = until - now;
                return Err(Refusal {
                    why: format!(
                        "it asked for no requests for {} more (retry-after)",
                        short(left)
                    ),
                    wait: Some(left),
                    passes: true,
                });
            }
            live.throttled_until = None;
        }
        let mut wait = Duration::ZERO;
        if let Some(b) = live.rpm.as_mut() {
            wait = wait.max(b.wait_for(1.0, now));
        }
        if let Some(b) = live.tpm.as_mut() {
            wait = wait.max(b.wait_for(tokens as f64, now));
        }
        if !wait.is_zero() {
            return Err(Refusal {
                why: format!("at its rate limit for {} more", short(wait)),
                wait: Some(wait),
                passes: true,
            });
        }
        if let Err(left) = live.breaker.admit(now) {
            let why = match live.breaker.state(now) {
                BreakerState::HalfOpen { .. } => {
                    "circuit half-open: its trial request is running".to_string()
                }
                _ => format!(
                    "circuit open after repeated failures; it lets a trial through in {}",
                    short(left)
                ),
            };
            return Err(Refusal {
                why,
                wait: Some(left),
                passes: true,
            });
        }
        if let Some(b) = live.rpm.as_mut() {
            b.take(1.0, now);
        }
        if let Some(b) = live.tpm.as_mut() {
            b.take(tokens as f64, now);
        }
        live.started += 1;
        Ok(())
    }

    /// Records how an admitted execution went.
    pub fn report(&self, r: &Report) {
        let now = self.clock.now();
        let mut live = self.live();
        let before = live.breaker.state(now).name();
        if r.ok {
            live.succeeded += 1;
            live.breaker.success();
        } else {
            live.failed += 1;
            let kind = r.error_kind.as_deref().unwrap_or("unavailable");
            if !NOT_PROVIDER_FAULT.contains(&kind) {
                live.breaker.failure(now);
            } else {
                live.breaker.release_trial();
            }
            if let Some(after) = r.retry_after {
                live.throttled_until = Some(now + after);
            }
        }
        if let Some(b) = live.tpm.as_mut() {
            b.take(r.tokens_used as f64 - r.tokens_estimated as f64, now);
        }
        if live.recent.len() == RECENT {
            live.recent.pop_front();
        }
        live.recent.push_back((r.latency, r.ok));
        live.input_tokens += r.input_tokens;
        live.output_tokens += r.output_tokens;
        live.cost_micros += r.cost_micros;
        let after = live.breaker.state(now).name();
        drop(live);
        if before != after {
            tracing::info!(provider = %self.name, from = before, to = after, "circuit breaker changed");
        }
        self.changed();
    }

    /// An admitted execution that never ran to a report (abandoned).
    pub fn abandon(&self) {
        self.live().breaker.release_trial();
    }

    /// Live numbers.
    pub fn snapshot(&self) -> ProviderSnapshot {
        let now = self.clock.now();
        let mut live = self.live();
        let mut lat: Vec<Duration> = live.recent.iter().map(|(d, _)| *d).collect();
        lat.sort_unstable();
        let ok = live.recent.iter().filter(|(_, ok)| *ok).count();
        let success_rate = (!live.recent.is_empty()).then(|| ok as f64 / live.recent.len() as f64);
        ProviderSnapshot {
            name: self.name.clone(),
            kind: self.provider.kind().to_string(),
            models: self.capabilities.models.clone(),
            healthy: live.health.healthy,
            health_detail: live.health.detail.clone(),
            circuit: live.breaker.state(now).name().to_string(),
            in_flight: self.in_flight(),
            max_concurrency: self.max_concurrency,
            requests_per_minute: self.limits.requests_per_minute,
            tokens_per_minute: self.limits.tokens_per_minute,
            throttled_for: live
                .throttled_until
                .and_then(|u| u.checked_duration_since(now)),
            executions_started: live.started,
            executions_succeeded: live.succeeded,
            executions_failed: live.failed,
            success_rate,
            latency_p50: percentile(&lat, 0.5),
            latency_p95: percentile(&lat, 0.95),
            input_tokens: live.input_tokens,
            output_tokens: live.output_tokens,
            cost_micros: live.cost_micros,
        }
    }
}

/// Tokens an execution of `request` is taken to use before it reports the real count: a
/// quarter of the prompt's bytes plus room for the answer.
pub fn estimate_tokens(request: &ProviderRequest) -> u64 {
    (request.prompt.len() + request.system_prompt.len()) as u64 / 4 + 1024
}
