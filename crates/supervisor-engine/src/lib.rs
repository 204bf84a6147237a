//! The engine: Supervisor's durable logic over the store, with no actors and no network.
//!
//! Every task transition is one store transaction that also appends the task's event, so
//! the store alone holds the truth and the invariants can be tested with a store and a
//! clock. The queue follows Apple's QuiCK design: ready tasks sit in a `ready` range ordered
//! by priority and age; a node *leases* a batch, which hands out a fresh fencing token per
//! task and arms a lease timer; every later write by the runner carries the token and is
//! refused when it is stale. Execution is at-least-once; completion is exactly-once.
//!
//! Group commit: submits and runner writes (progress, completions) from concurrent callers
//! are gathered by [`batch`] into shared transactions; leases are taken in batches.

#![warn(missing_docs)]

mod admission;
mod analytics;
pub mod archive;
mod batch;
mod clock;
mod codec;
mod config;
mod event_log;
mod idempotency;
mod identity;
mod keyspace;
mod ledger;
mod nodes;
mod observe;
mod records;
mod resources;
mod restore;
mod retention;
mod rollups;
mod runner;
mod schedules;
mod slices;
mod tasks;
mod thread_log;
mod threads;
mod timers;
mod workflows;

#[cfg(test)]
mod analytics_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod resources_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod workflow_tests;

use std::sync::Arc;

use supervisor_model::{FieldError, TaskId, TaskStatus};
use supervisor_store::{Db, StoreError, TxnError};
use tokio::sync::Notify;

pub use admission::AdmissionConfig;
pub use analytics::{
    AnalyticsQuery, AnalyticsSummary, AnalyticsTrend, Predictors, ROLLER_DUTY, Roll,
    prediction_query,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::EngineConfig;
pub use identity::{
    ApiKeyInfo, AuditEntry, AuditPage, AuditQuery, KEY_PREFIX, KeyRefusal, NewKey, TenantInfo,
    principal_of,
};
pub use ledger::{LedgerRow, utc_day};
pub use nodes::{
    AttemptUsage, DiskUsage, HeartbeatReply, NodeAnnouncement, NodeIdentity, NodeInfo, NodeLoad,
    NodeResources, NodeState,
};
pub use observe::ClusterGauges;
pub use resources::{
    Allocation, BudgetStatus, DEFAULT_ANSWER_TOKENS, Estimate, Estimator, LeaseOptions,
    LimitStatus, MAX_LISTED, TenantQuotaInfo, WaitingTask, parse_scope,
};
pub use retention::{RETENTION_DUTY, RetentionConfig, RetentionSweep, format_period};
pub use runner::{Finish, LeaseBatch, LeasedTask, Outcome, RunnerWriteResult, Streamed, TaskRef};
pub use schedules::{MAX_SCHEDULE_NAME_BYTES, SCHEDULER_DUTY, SchedulePage, ScheduleRecord};
pub use slices::{Grant, WINDOW_MICROS};
pub use supervisor_workflow as workflow;
pub use tasks::{ListPage, ListQuery, ProviderStats, StatusCounts, Submitted};
pub use threads::{
    DEFAULT_WINDOW_TOKENS, MAX_MESSAGE_BYTES, MAX_TITLE_CHARS, NewThread, Posted, Role, SearchHit,
    ThreadMessage, ThreadPage, ThreadRecord, ThreadUpdate,
};
pub use timers::{REAPER_DUTY, TimerSweep};
pub use workflows::{WorkflowEvent, WorkflowPage, WorkflowQuery, WorkflowRun, run_status_name};

/// Everything an engine operation can fail with. Each variant maps to one gRPC status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// A request field is invalid (gRPC `INVALID_ARGUMENT`).
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] FieldError),
    /// No such task (gRPC `NOT_FOUND`).
    #[error("no task with id {id}")]
    NotFound {
        /// The id that was looked up.
        id: TaskId,
    },
    /// No such workflow run (gRPC `NOT_FOUND`).
    #[error("no workflow run with id {id}")]
    RunNotFound {
        /// The id that was looked up.
        id: TaskId,
    },
    /// The task is not in a state that allows the operation (gRPC `FAILED_PRECONDITION`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The store failed (gRPC `UNAVAILABLE` when retryable, else `INTERNAL`).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Stored data could not be read (gRPC `DATA_LOSS`).
    #[error("{0}")]
    Corrupt(String),
    /// A bug: an invariant did not hold (gRPC `INTERNAL`).
    #[error("internal error: {0}")]
    Internal(String),
    /// A peer fenced this node's incarnation: it must stop taking work and rejoin with a
    /// new epoch (gRPC `UNAVAILABLE`).
    #[error("node {node} epoch {epoch} was fenced ({detail}); it must rejoin with a new epoch")]
    Fenced {
        /// The node.
        node: String,
        /// The fenced epoch.
        epoch: u64,
        /// Who fenced it, or what replaced it.
        detail: String,
    },
    /// No such schedule (gRPC `NOT_FOUND`).
    #[error(
        "no schedule named {}; `supervisor schedule list` shows them",
        supervisor_model::quote(name)
    )]
    ScheduleNotFound {
        /// The name that was looked up.
        name: String,
    },
    /// No such conversation thread (gRPC `NOT_FOUND`).
    #[error("no thread with id {id}; `supervisor chat --list` shows them")]
    ThreadNotFound {
        /// The id that was looked up.
        id: TaskId,
    },
    /// No such node in the cluster (gRPC `NOT_FOUND`).
    #[error(
        "no node with id {} in the cluster; `supervisor cluster status` lists them",
        supervisor_model::quote(id)
    )]
    NodeNotFound {
        /// The id that was looked up.
        id: String,
    },
    /// Refused for overload: the cluster's backlog or this node's store latency is past
    /// its bound (gRPC `RESOURCE_EXHAUSTED` with a `RetryInfo`).
    #[error("the cluster is overloaded: {reason}; retry in {}s", retry_after.as_secs_f64())]
    Overloaded {
        /// Which bound was passed, by how much.
        reason: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// The engine is stopping (gRPC `UNAVAILABLE`).
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// What the request would create exists already (gRPC `ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// No such API key (gRPC `NOT_FOUND`).
    #[error("no API key with id {id}; `supervisor key list` lists them")]
    KeyNotFound {
        /// The id that was looked up.
        id: String,
    },
}

impl TxnError for EngineError {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            EngineError::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// The durable core of a node. Cheap to clone; all clones share batchers and notifiers.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cfg: EngineConfig,
    clock: Arc<dyn Clock>,
    submits: batch::Batcher<tasks::SubmitItem, Submitted>,
    runner_writes: batch::Batcher<runner::RunnerWrite, RunnerWriteResult>,
    audits: batch::Batcher<AuditEntry, ()>,
    /// Woken after a local commit made a task ready (faster than a store watch).
    ready: Notify,
    /// Woken after a local commit armed a timer that may be due before the sweeper's sleep.
    timers: Notify,
    /// The predictions learnt from the analytics rollups, retrained every few minutes.
    predictor: analytics::PredictorCache,
    /// The cluster's backlog as admission control last read it.
    backlog: admission::Backlog,
    /// When a lease last conflicted (engine clock): leases spread over the queue's head
    /// for a while after.
    lease_contended_at: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("db", &self.inner.db)
            .finish()
    }
}

impl Engine {
    /// Builds an engine over `db`. Must be called inside a tokio runtime (it starts the
    /// group-commit batchers).
    pub fn new(db: Db, cfg: EngineConfig, clock: Arc<dyn Clock>) -> Engine {
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let submit_weak = weak.clone();
            let submits = batch::Batcher::spawn(
                "submit",
                (cfg.max_batch, cfg.batches_in_flight),
                true,
                Arc::new(move |items| {
                    let weak = submit_weak.clone();
                    Box::pin(async move {
                        let inner = weak.upgrade().ok_or(EngineError::ShuttingDown)?;
                        tasks::submit_batch(&inner, items).await
                    })
                }),
            );
            let runner_weak = weak.clone();
            let runner_writes = batch::Batcher::spawn(
                "runner",
                (cfg.max_batch, cfg.batches_in_flight),
                false,
                Arc::new(move |items| {
                    let weak = runner_weak.clone();
                    Box::pin(async move {
                        let inner = weak.upgrade().ok_or(EngineError::ShuttingDown)?;
                        runner::write_batch(&inner, items).await
                    })
                }),
            );
            let audit_weak = weak.clone();
            let audits = batch::Batcher::spawn(
                "audit",
                (cfg.max_batch, cfg.batches_in_flight),
                false,
                Arc::new(move |items| {
                    let weak = audit_weak.clone();
                    Box::pin(async move {
                        let inner = weak.upgrade().ok_or(EngineError::ShuttingDown)?;
                        identity::write_audits(&inner, items).await
                    })
                }),
            );
            Inner {
                db,
                cfg,
                clock,
                submits,
                runner_writes,
                audits,
                ready: Notify::new(),
                timers: Notify::new(),
                predictor: analytics::PredictorCache::default(),
                backlog: admission::Backlog::default(),
                lease_contended_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            }
        });
        Engine { inner }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The store handle.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Now, by the engine's clock (unix microseconds).
    pub fn now_micros(&self) -> i64 {
        self.inner.clock.now_micros()
    }

    /// Resolves when a local commit made a task ready to lease.
    pub async fn ready_notified(&self) {
        self.inner.ready.notified().await
    }

    /// Resolves when a local commit armed a timer.
    pub async fn timers_notified(&self) {
        self.inner.timers.notified().await
    }
}

/// The statuses a counter is kept for, in display order.
pub const COUNTED_STATUSES: &[TaskStatus] = TaskStatus::ALL;
