//! Choosing a provider for an attempt, and the live state that choice depends on.
//!
//! Each provider has a [`ProviderHandle`] ([`handle`]), built on the pure rules of
//! [`limits`]. [`Router::choose`] filters the providers that can serve the task (type,
//! exclusions, cost ceiling), orders them (preferred first, then by strategy, providers
//! that already failed this task last), and admits the first one that is healthy, not
//! open-circuited, not throttled and within its rate limits.
//!
//! Providers on other nodes reach the router through the [`RemoteProviders`] trait,
//! which the cluster network implements: this module knows nothing of actors or
//! sessions.

mod handle;
mod limits;
mod shared;

pub use handle::{ProviderHandle, ProviderSnapshot, Report, estimate_tokens};
pub use shared::SharedLimits;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use supervisor_engine::Estimate;
use supervisor_model::{RoutingPrefs, RoutingStrategy, Task, TaskType, analyze};
use supervisor_providers::{ProviderRequest, REPO_KEY};
use tokio::sync::watch;

use crate::clock::Clock;

/// What a provider is asked for an attempt of `task`: its prompt and context with the
/// system prompt and tools of the specialty the analyzer picks.
pub fn provider_request(task: &Task) -> ProviderRequest {
    let choice = analyze(
        task.task_type,
        &task.labels,
        &task.prompt,
        task.routing.specialty,
    );
    ProviderRequest {
        task_id: task.id.to_string(),
        attempt: task.attempt,
        task_type: task.task_type,
        prompt: task.prompt.clone(),
        context: task.context.clone(),
        timeout: Duration::from_millis(task.timeout_ms),
        specialty: choice.specialty,
        system_prompt: choice.specialty.system_prompt().to_string(),
        tools: choice.specialty.tools(),
        thread: task.thread.map(|r| supervisor_providers::ThreadTurn {
            id: r.thread.to_string(),
            seq: r.seq,
            message: task.thread_message().unwrap_or_default().to_string(),
            previous: r.previous.map(|p| p.to_string()),
        }),
    }
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

impl RouteRequest<'_> {
    /// Whether the task needs a provider that works in a repository (see
    /// [`supervisor_providers::needs_repository`]).
    fn needs_repository(&self) -> bool {
        supervisor_providers::needs_repository(&self.request.context)
    }
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
        /// Whether one of the refusals passes by itself (a rate limit, a `retry-after`,
        /// a breaker's cooldown or trial): the task can wait for it without spending an
        /// attempt. False when every provider able to serve it is down.
        passes: bool,
    },
}

/// A provider seen on another node at some point since this node started.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenProvider {
    /// Its name.
    pub name: String,
    /// The node it was last seen on.
    pub node_id: String,
    /// The task types it serves.
    pub task_types: Vec<TaskType>,
    /// Whether it works in a task's repository.
    pub repository: bool,
}

/// Providers that run on other nodes, as the cluster network sees them now.
pub trait RemoteProviders: Send + Sync {
    /// Handles of the remote providers reachable now, in a stable order.
    fn handles(&self) -> Vec<Arc<ProviderHandle>>;
    /// Providers seen on other nodes that are not reachable now (a task only they can
    /// serve waits for them rather than failing for good).
    fn unreachable(&self) -> Vec<SeenProvider>;
}

/// The providers of a node and how to choose among them.
pub struct Router {
    providers: Vec<Arc<ProviderHandle>>,
    strategy: RoutingStrategy,
    chain: Vec<String>,
    next: AtomicUsize,
    changes: watch::Sender<u64>,
    dispatch: Mutex<VecDeque<Duration>>,
    remote: std::sync::RwLock<Option<Arc<dyn RemoteProviders>>>,
    clock: Clock,
}

/// Samples kept of the time from a lease returning to its request leaving.
const DISPATCH_SAMPLES: usize = 65_536;

impl Router {
    /// A router over `providers` (in configuration order) using `strategy` by default;
    /// `chain` orders `failover_chain` (providers not listed come after, in order);
    /// `changes` is the feed every handle bumps; `clock` times admissions.
    pub fn new(
        providers: Vec<Arc<ProviderHandle>>,
        strategy: RoutingStrategy,
        chain: Vec<String>,
        changes: watch::Sender<u64>,
        clock: Clock,
    ) -> Self {
        Router {
            providers,
            strategy,
            chain,
            next: AtomicUsize::new(0),
            changes,
            dispatch: Mutex::new(VecDeque::with_capacity(1024)),
            remote: std::sync::RwLock::new(None),
            clock,
        }
    }

    /// Makes providers on other nodes candidates (see [`Router::choose`]). The cluster
    /// network keeps `directory` current; attaching again replaces it.
    pub fn attach_remote(&self, directory: Arc<dyn RemoteProviders>) {
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = Some(directory);
    }

    fn unreachable_remote(&self) -> Vec<SeenProvider> {
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
        Some((handle::percentile(&v, 0.5)?, handle::percentile(&v, 0.99)?))
    }

    /// What an attempt of `task` is expected to spend at most, for its budget
    /// reservations: its cost ceiling if it names one (no provider estimated above it is
    /// chosen), else the highest estimate among this node's providers that could serve
    /// it (none: the budget's default reservation); tokens from the prompt's size.
    pub fn estimate(&self, task: &Task) -> Estimate {
        let request = provider_request(task);
        let cost = task.routing.max_cost_micros.or_else(|| {
            self.providers
                .iter()
                .filter(|p| {
                    p.capabilities.task_types.contains(&task.task_type)
                        && (p.capabilities.repository
                            || !supervisor_providers::needs_repository(&task.context))
                        && !task.routing.excluded_providers.iter().any(|e| e == &p.name)
                })
                .map(|p| p.provider.estimate_cost(&request))
                .max()
        });
        Estimate {
            cost_micros: cost,
            tokens: estimate_tokens(&request),
        }
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

    /// Names of the providers that can work in a task's repository: this node's, those
    /// reachable on other nodes, and those seen on nodes that are away now.
    pub fn repository_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .providers
            .iter()
            .chain(self.remote_providers().iter())
            .filter(|p| p.capabilities.repository)
            .map(|p| p.name.clone())
            .collect();
        for seen in self.unreachable_remote() {
            if seen.repository && !names.contains(&seen.name) {
                names.push(seen.name);
            }
        }
        names
    }

    /// The context window (tokens) a task of `task_type` can count on: the first of
    /// `preferred` that serves the type, else the smallest among the providers that do
    /// (the task may go to any of them); `None` when none does.
    pub fn context_window(&self, task_type: TaskType, preferred: &[String]) -> Option<u64> {
        let remote = self.remote_providers();
        let serving: Vec<_> = self
            .providers
            .iter()
            .chain(remote.iter())
            .filter(|p| p.capabilities.task_types.contains(&task_type))
            .filter(|p| p.capabilities.max_context_tokens > 0)
            .collect();
        for name in preferred {
            if let Some(p) = serving.iter().find(|p| &p.name == name) {
                return Some(p.capabilities.max_context_tokens);
            }
        }
        serving
            .iter()
            .map(|p| p.capabilities.max_context_tokens)
            .min()
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
        let now = self.clock.now();
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
            if req.needs_repository() && !p.capabilities.repository {
                rejected.push(format!(
                    "{}: cannot work in a repository (the task names {REPO_KEY}= or hooks=)",
                    p.name
                ));
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
                        && (s.repository || !req.needs_repository())
                        && !prefs.excluded_providers.iter().any(|e| e == &s.name)
                })
                .map(|s| format!("{} (on node {}, not reachable now)", s.name, s.node_id))
                .collect();
            if !waiting.is_empty() {
                return Err(RouteError::NoneAvailable {
                    why: waiting.join(", "),
                    retry_in: None,
                    passes: false,
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
        let mut passes = false;
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
                Err(refusal) => {
                    refusals.push(format!("{} ({})", p.name, refusal.why));
                    passes |= refusal.passes;
                    if let Some(w) = refusal.wait {
                        soonest = Some(soonest.map_or(w, |s: Duration| s.min(w)));
                    }
                }
            }
        }
        Err(RouteError::NoneAvailable {
            why: refusals.join(", "),
            retry_in: soonest,
            passes,
        })
    }

    fn can_serve(&self, p: &ProviderHandle, req: &RouteRequest<'_>) -> bool {
        !req.prefs.excluded_providers.iter().any(|e| e == &p.name)
            && p.capabilities.task_types.contains(&req.task_type)
            && (p.capabilities.repository || !req.needs_repository())
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
