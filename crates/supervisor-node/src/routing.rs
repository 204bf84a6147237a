//! Choosing a provider for an attempt, and the live state that choice depends on.
//!
//! Each provider has a [`ProviderHandle`]: its concurrency slots, its token buckets
//! (requests and tokens per minute), its circuit breaker, the throttle a `retry-after`
//! sets, its last health probe and rolling statistics. Agents consult and update handles
//! directly (a short mutex), so routing costs microseconds and never waits on a mailbox;
//! the provider actor owns the probe and publishes changes.
//!
//! [`Router::choose`] filters the providers that can serve the task (type, exclusions,
//! cost ceiling), orders them (preferred first, then by strategy, providers that already
//! failed this task last), and admits the first one that is healthy, not open-circuited,
//! not throttled and within its rate limits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use supervisor_model::{RoutingPrefs, RoutingStrategy, TaskType};
use supervisor_providers::config::Limits;
use supervisor_providers::{Capabilities, Health, Provider, ProviderRequest};
use tokio::sync::{Semaphore, watch};

use crate::cluster::RemoteDirectory;

/// A token bucket: `capacity` tokens, refilled continuously at `capacity` per minute.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens.
    pub fn per_minute(per_minute: u64, now: Instant) -> Self {
        TokenBucket {
            capacity: per_minute as f64,
            tokens: per_minute as f64,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.capacity / 60.0).min(self.capacity);
        self.updated = now;
    }

    /// How long until `n` tokens are available (zero if they are now).
    pub fn wait_for(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        let n = n.min(self.capacity);
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) * 60.0 / self.capacity)
        }
    }

    /// Takes `n` tokens (may go negative when actual use exceeded the estimate).
    pub fn take(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n;
    }

    /// Tokens available now.
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// State of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Taking work.
    Closed,
    /// Refusing work until the cooldown ends.
    Open {
        /// When it half-opens.
        until: Instant,
    },
    /// One trial request decides whether it closes or opens again.
    HalfOpen {
        /// Whether the trial is running.
        trial_running: bool,
    },
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Opens after `threshold` failures within `window`, cools down, then lets one trial
/// through: success closes it, failure opens it again.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    window: Duration,
    cooldown: Duration,
    failures: VecDeque<Instant>,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, window: Duration, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            window,
            cooldown,
            failures: VecDeque::new(),
            state: BreakerState::Closed,
        }
    }

    /// The state now (an open breaker whose cooldown ended reads as half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let BreakerState::Open { until } = self.state
            && now >= until
        {
            self.state = BreakerState::HalfOpen {
                trial_running: false,
            };
        }
        self.state
    }

    /// Whether a request may go now; `Err` holds how long until it might.
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } => Err(until.saturating_duration_since(now)),
            BreakerState::HalfOpen {
                trial_running: true,
            } => Err(self.cooldown),
            BreakerState::HalfOpen {
                trial_running: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    trial_running: true,
                };
                Ok(())
            }
        }
    }

    /// Records a success.
    pub fn success(&mut self) {
        if matches!(self.state, BreakerState::HalfOpen { .. }) {
            self.state = BreakerState::Closed;
            self.failures.clear();
        }
    }

    /// Records a failure that is the provider's fault.
    pub fn failure(&mut self, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
            }
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() as u32 >= self.threshold {
                    self.failures.clear();
                    self.state = BreakerState::Open {
                        until: now + self.cooldown,
                    };
                }
            }
        }
    }

    /// A trial that never reported (abandoned) must not keep the breaker half-open.
    fn release_trial(&mut self) {
        if let BreakerState::HalfOpen {
            trial_running: true,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                trial_running: false,
            };
        }
    }
}

/// Error kinds that say nothing about the provider (the task's own fault, or a throttle
/// handled separately): they do not count against the breaker.
const NOT_PROVIDER_FAULT: &[&str] = &[
    "bad_request",
    "context_too_long",
    "budget",
    "rate_limited",
    "cancelled",
    "output_too_large",
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

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

impl ProviderHandle {
    /// A handle for `provider` under `limits`.
    pub fn new(
        provider: Arc<dyn Provider>,
        max_concurrency: u32,
        limits: Limits,
        changes: watch::Sender<u64>,
    ) -> Self {
        let now = Instant::now();
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
        }
    }

    /// A handle for a provider that runs on node `node` (a
    /// [`RemoteProvider`](crate::cluster::RemoteProvider)): the limits here are this
    /// node's view; the other node applies its own as well.
    pub fn new_remote(
        provider: Arc<dyn Provider>,
        max_concurrency: u32,
        limits: Limits,
        changes: watch::Sender<u64>,
        node: String,
    ) -> Self {
        ProviderHandle {
            node: Some(node),
            ..ProviderHandle::new(provider, max_concurrency, limits, changes)
        }
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

    fn median_latency(&self) -> Option<Duration> {
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
    /// says why and how long until it might accept. An admitted execution must end in
    /// [`Self::report`] or [`Self::abandon`].
    pub fn admit(&self, tokens: u64, now: Instant) -> Result<(), (String, Option<Duration>)> {
        let mut live = self.live();
        if live.probed && !live.health.healthy {
            return Err((format!("unhealthy ({})", live.health.detail), None));
        }
        if let Some(until) = live.throttled_until {
            if now < until {
                let left = until - now;
                return Err((format!("throttled by retry-after for {left:?}"), Some(left)));
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
            return Err(("at its rate limit".into(), Some(wait)));
        }
        if let Err(left) = live.breaker.admit(now) {
            return Err(("circuit open".into(), Some(left)));
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
        let now = Instant::now();
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
        let now = Instant::now();
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

/// What routing needs to know about an attempt.
pub struct RouteRequest<'a> {
    /// The task's type.
    pub task_type: TaskType,
    /// The request as it will be sent (for cost estimates).
    pub request: &'a ProviderRequest,
    /// The task's routing preferences.
    pub prefs: &'a RoutingPrefs,
    /// Providers whose earlier attempts at this task failed, oldest first.
    pub failed_on: &'a [String],
}

/// The provider chosen for an attempt.
pub struct Route {
    /// The provider.
    pub handle: Arc<ProviderHandle>,
    /// Why it was chosen, for the task's event log.
    pub reason: String,
    /// Tokens taken from its token bucket.
    pub tokens_estimated: u64,
}

/// Why no provider was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteError {
    /// No configured provider can ever serve this task (permanent).
    NoneCanServe(String),
    /// Some could, but none is available now; one might be after `retry_in`.
    NoneAvailable {
        /// What each refused.
        why: String,
        /// The soonest one might accept.
        retry_in: Option<Duration>,
    },
}

/// The providers of a node and how to choose among them.
pub struct Router {
    providers: Vec<Arc<ProviderHandle>>,
    strategy: RoutingStrategy,
    chain: Vec<String>,
    next: AtomicUsize,
    changes: watch::Sender<u64>,
    dispatch: Mutex<VecDeque<Duration>>,
    remote: std::sync::RwLock<Option<Arc<RemoteDirectory>>>,
}

/// Samples kept of the time from a lease returning to its request leaving.
const DISPATCH_SAMPLES: usize = 65_536;

impl Router {
    /// A router over `providers` (in configuration order) using `strategy` by default;
    /// `chain` orders `failover_chain` (providers not listed come after, in order).
    pub fn new(
        providers: Vec<Arc<ProviderHandle>>,
        strategy: RoutingStrategy,
        chain: Vec<String>,
        changes: watch::Sender<u64>,
    ) -> Self {
        Router {
            providers,
            strategy,
            chain,
            next: AtomicUsize::new(0),
            changes,
            dispatch: Mutex::new(VecDeque::with_capacity(1024)),
            remote: std::sync::RwLock::new(None),
        }
    }

    /// Makes providers on other nodes candidates (see [`Router::choose`]). The cluster
    /// network keeps `directory` current; attaching again replaces it.
    pub fn attach_remote(&self, directory: Arc<RemoteDirectory>) {
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = Some(directory);
    }

    fn unreachable_remote(&self) -> Vec<crate::cluster::SeenProvider> {
        let directory = self
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        directory.map(|d| d.unreachable()).unwrap_or_default()
    }

    /// Providers reachable on other nodes whose name no provider of this node has.
    pub fn remote_providers(&self) -> Vec<Arc<ProviderHandle>> {
        let directory = self
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match directory {
            Some(d) => d
                .handles()
                .into_iter()
                .filter(|h| self.get(&h.name).is_none())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Records how long an attempt took from its lease returning to the dispatcher to
    /// its request leaving for the provider (agent start, specialty, routing, admission,
    /// slot).
    pub fn record_dispatch(&self, took: Duration) {
        let mut d = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        if d.len() == DISPATCH_SAMPLES {
            d.pop_front();
        }
        d.push_back(took);
    }

    /// Percentiles (p50, p99) of the recent dispatch times, if any were recorded.
    pub fn dispatch_percentiles(&self) -> Option<(Duration, Duration)> {
        let mut v: Vec<Duration> = self
            .dispatch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        v.sort_unstable();
        Some((percentile(&v, 0.5)?, percentile(&v, 0.99)?))
    }

    /// Every provider, in configuration order.
    pub fn providers(&self) -> &[Arc<ProviderHandle>] {
        &self.providers
    }

    /// The provider named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ProviderHandle>> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// Names of every provider.
    pub fn names(&self) -> Vec<String> {
        self.providers.iter().map(|p| p.name.clone()).collect()
    }

    /// Names a task may prefer or exclude: this node's providers, then those reachable
    /// on other nodes, then those seen on nodes that are away now.
    pub fn known_names(&self) -> Vec<String> {
        let mut names = self.names();
        let remote = self.remote_providers().into_iter().map(|h| h.name.clone());
        let away = self.unreachable_remote().into_iter().map(|p| p.name);
        for name in remote.chain(away) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Fires whenever any provider's state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether a provider other than `except` could ever serve this task (ignoring
    /// whether it is available right now). A provider's `retry-after` then only keeps
    /// traffic off that provider instead of delaying the task.
    pub fn others_can_serve(&self, req: &RouteRequest<'_>, except: &str) -> bool {
        let remote = self.remote_providers();
        self.providers
            .iter()
            .chain(remote.iter())
            .any(|p| p.name != except && self.can_serve(p, req))
    }

    /// Chooses and admits a provider for one attempt.
    ///
    /// Providers of this node come first. Providers reachable only on other nodes (a
    /// name no local provider has) join the candidates when no local provider can serve
    /// the task, or when the task prefers one of them by name; they are then ordered and
    /// admitted like local ones. A task that only a provider seen on another node could
    /// serve, while that node is not reachable, gets [`RouteError::NoneAvailable`] (it
    /// will be retried), not [`RouteError::NoneCanServe`].
    pub fn choose(&self, req: &RouteRequest<'_>) -> Result<Route, RouteError> {
        let now = Instant::now();
        let prefs = req.prefs;
        let tokens = estimate_tokens(req.request);
        // 1. Who could ever serve it.
        let mut rejected = Vec::new();
        let mut able: Vec<(&Arc<ProviderHandle>, u64)> = Vec::new();
        let remote = self.remote_providers();
        let prefers_remote = || {
            prefs
                .preferred_providers
                .iter()
                .any(|n| self.get(n).is_none() && remote.iter().any(|r| &r.name == n))
        };
        let local_able = || self.providers.iter().any(|p| self.can_serve(p, req));
        let remote: &[Arc<ProviderHandle>] =
            if !remote.is_empty() && (prefers_remote() || !local_able()) {
                &remote
            } else {
                &[]
            };
        for p in self.providers.iter().chain(remote.iter()) {
            if prefs.excluded_providers.iter().any(|e| e == &p.name) {
                rejected.push(format!("{}: excluded by the task", p.name));
                continue;
            }
            if !p.capabilities.task_types.contains(&req.task_type) {
                rejected.push(format!("{}: does not serve {}", p.name, req.task_type));
                continue;
            }
            let cost = p.provider.estimate_cost(req.request);
            if let Some(max) = prefs.max_cost_micros
                && cost > max
            {
                rejected.push(format!(
                    "{}: estimated ${:.6} is over the task's max ${:.6}",
                    p.name,
                    cost as f64 / 1e6,
                    max as f64 / 1e6
                ));
                continue;
            }
            able.push((p, cost));
        }
        if able.is_empty() {
            let waiting: Vec<String> = self
                .unreachable_remote()
                .into_iter()
                .filter(|s| {
                    self.get(&s.name).is_none()
                        && s.task_types.contains(&req.task_type)
                        && !prefs.excluded_providers.iter().any(|e| e == &s.name)
                })
                .map(|s| format!("{} (on node {}, not reachable now)", s.name, s.node_id))
                .collect();
            if !waiting.is_empty() {
                return Err(RouteError::NoneAvailable {
                    why: waiting.join(", "),
                    retry_in: None,
                });
            }
            return Err(RouteError::NoneCanServe(if rejected.is_empty() {
                "no provider is configured".into()
            } else {
                rejected.join("; ")
            }));
        }
        // 2. In which order to try them.
        let strategy = prefs.strategy.unwrap_or(self.strategy);
        self.order(&mut able, strategy);
        let failed_rank = |name: &str| req.failed_on.iter().rposition(|f| f == name);
        // Failover: providers that failed this task go last, the most recent failure last.
        able.sort_by_key(|(p, _)| failed_rank(&p.name).map_or(0, |r| r + 1));
        let preferred_rank = |name: &str| prefs.preferred_providers.iter().position(|n| n == name);
        able.sort_by_key(|(p, _)| preferred_rank(&p.name).unwrap_or(usize::MAX));
        // 3. The first that admits the request.
        let mut refusals = Vec::new();
        let mut soonest: Option<Duration> = None;
        for (p, _) in &able {
            match p.admit(tokens, now) {
                Ok(()) => {
                    let mut reason = if preferred_rank(&p.name).is_some() {
                        "preferred by the task".to_string()
                    } else {
                        format!("strategy {strategy}")
                    };
                    if let Some(node) = p.node() {
                        reason.push_str(&format!("; runs on node {node}"));
                    }
                    if let Some(last) = req.failed_on.last()
                        && last != &p.name
                    {
                        reason.push_str(&format!("; moved from {last} after it failed"));
                    }
                    if !refusals.is_empty() {
                        reason.push_str(&format!("; skipped {}", refusals.join(", ")));
                    }
                    return Ok(Route {
                        handle: (*p).clone(),
                        reason,
                        tokens_estimated: tokens,
                    });
                }
                Err((why, wait)) => {
                    refusals.push(format!("{} ({why})", p.name));
                    if let Some(w) = wait {
                        soonest = Some(soonest.map_or(w, |s: Duration| s.min(w)));
                    }
                }
            }
        }
        Err(RouteError::NoneAvailable {
            why: refusals.join(", "),
            retry_in: soonest,
        })
    }

    fn can_serve(&self, p: &ProviderHandle, req: &RouteRequest<'_>) -> bool {
        !req.prefs.excluded_providers.iter().any(|e| e == &p.name)
            && p.capabilities.task_types.contains(&req.task_type)
            && req
                .prefs
                .max_cost_micros
                .is_none_or(|max| p.provider.estimate_cost(req.request) <= max)
    }

    fn order(&self, able: &mut [(&Arc<ProviderHandle>, u64)], strategy: RoutingStrategy) {
        match strategy {
            RoutingStrategy::RoundRobin => {
                let n = able.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
                able.rotate_left(start);
            }
            RoutingStrategy::LeastLoaded => able.sort_by(|(a, _), (b, _)| {
                let load = |p: &ProviderHandle| p.in_flight() as f64 / p.max_concurrency as f64;
                load(a).total_cmp(&load(b))
            }),
            RoutingStrategy::Fastest => {
                // Unmeasured providers sort first, so each gets measured.
                able.sort_by_key(|(p, _)| p.median_latency().unwrap_or(Duration::ZERO))
            }
            RoutingStrategy::CostOptimized => able.sort_by_key(|(_, cost)| *cost),
            RoutingStrategy::Capability => able.sort_by_key(|(p, _)| {
                let c = &p.capabilities;
                // Fewer served types = more specialised; tools and streaming are assets.
                let score = i64::from(c.tools) * 4 + i64::from(c.streaming) * 2
                    - c.task_types.len() as i64 / 10;
                std::cmp::Reverse(score)
            }),
            RoutingStrategy::FailoverChain => {
                let rank = |name: &str| {
                    self.chain
                        .iter()
                        .position(|n| n == name)
                        .unwrap_or(usize::MAX)
                };
                able.sort_by_key(|(p, _)| rank(&p.name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(60, t0);
        b.take(60.0, t0);
        assert_eq!(b.wait_for(1.0, t0), Duration::from_secs(1));
        assert_eq!(b.wait_for(1.0, t0 + Duration::from_secs(1)), Duration::ZERO);
        // Actual use over the estimate goes negative and delays later requests.
        b.take(30.0, t0 + Duration::from_secs(1));
        assert_eq!(
            b.wait_for(1.0, t0 + Duration::from_secs(1)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn breaker_opens_cools_down_and_half_opens_with_one_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10), Duration::from_secs(5));
        for i in 0..2 {
            b.failure(t0 + Duration::from_secs(i));
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0 + Duration::from_secs(2));
        assert!(matches!(
            b.state(t0 + Duration::from_secs(2)),
            BreakerState::Open { .. }
        ));
        assert!(b.admit(t0 + Duration::from_secs(3)).is_err());
        let later = t0 + Duration::from_secs(8);
        assert!(b.admit(later).is_ok(), "one trial after the cooldown");
        assert!(b.admit(later).is_err(), "only one trial at a time");
        b.failure(later);
        assert!(
            matches!(b.state(later), BreakerState::Open { .. }),
            "a failed trial reopens"
        );
        let much_later = later + Duration::from_secs(6);
        assert!(b.admit(much_later).is_ok());
        b.success();
        assert_eq!(b.state(much_later), BreakerState::Closed);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(10), Duration::from_secs(5));
        b.failure(t0);
        b.failure(t0 + Duration::from_secs(11));
        assert_eq!(b.state(t0 + Duration::from_secs(11)), BreakerState::Closed);
    }
}
