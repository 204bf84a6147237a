//! What the resource managers hand out and enforce: repository locks, budgets, and each
//! tenant's share of the cluster. The engine keeps all of it in the store, acquired in the
//! transaction that leases an attempt and released in the one that ends it.

use serde::{Deserialize, Serialize};

use crate::{FieldError, Task, quote};

/// The context keys naming a task's repository and the ref it works from.
pub const REPO_CONTEXT_KEY: &str = "repo";
/// See [`REPO_CONTEXT_KEY`].
pub const REF_CONTEXT_KEY: &str = "ref";
/// The ref a repository task works from when its context names none.
pub const DEFAULT_REF: &str = "HEAD";

/// How a task holds its repository and ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Read only (review, security audit...): shared with other readers.
    Shared,
    /// It may change files: nobody else holds the ref meanwhile.
    Exclusive,
}

impl LockMode {
    /// The word the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }

    /// Whether a holder in `self` mode and one in `other` mode may hold at once.
    pub fn compatible(self, other: LockMode) -> bool {
        self == LockMode::Shared && other == LockMode::Shared
    }
}

/// A repository lock: one repository and ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoLock {
    /// The repository, as the task's context names it.
    pub repo: String,
    /// The ref (branch) it works from.
    pub git_ref: String,
    /// How it holds them.
    pub mode: LockMode,
}

impl RepoLock {
    /// The lock a task needs, if it works on a repository: exclusive unless its
    /// specialty is read only.
    pub fn for_task(task: &Task) -> Option<RepoLock> {
        let repo = task.context.get(REPO_CONTEXT_KEY)?.trim();
        if repo.is_empty() {
            return None;
        }
        let git_ref = task
            .context
            .get(REF_CONTEXT_KEY)
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
            .unwrap_or(DEFAULT_REF);
        let specialty = crate::analyze(
            task.task_type,
            &task.labels,
            &task.prompt,
            task.routing.specialty,
        )
        .specialty;
        let mode = if specialty.tools().can_write {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        Some(RepoLock {
            repo: repo.to_string(),
            git_ref: git_ref.to_string(),
            mode,
        })
    }

    /// `repo@ref`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}", quote(&self.repo), self.git_ref)
    }
}

/// What a tenant's task does when the repository and ref it needs are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockPolicy {
    /// It stays queued until the holders end; its state says who holds what.
    #[default]
    Queue,
    /// It is refused at submit (`FAILED_PRECONDITION`) while they are held.
    Reject,
    /// A higher-priority task takes the lock: the holders of lower priority are handed
    /// back to the queue (their attempt ends and does not count); otherwise it queues.
    Preempt,
}

impl LockPolicy {
    /// Every policy, in the order the docs list them.
    pub const ALL: &'static [LockPolicy] =
        &[LockPolicy::Queue, LockPolicy::Reject, LockPolicy::Preempt];

    /// The word the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            LockPolicy::Queue => "queue",
            LockPolicy::Reject => "reject",
            LockPolicy::Preempt => "preempt",
        }
    }
}

impl std::str::FromStr for LockPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LockPolicy::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{} is not a lock policy (queue, reject or preempt)",
                    quote(s)
                )
            })
    }
}

/// What a budget counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BudgetScope {
    /// Every task of the tenant.
    Tenant,
    /// Tasks submitted with one API key (its id).
    Key(String),
    /// Tasks carrying one label (a team, a project).
    Label(String),
}

impl BudgetScope {
    /// `tenant`, `key:<id>` or `label:<name>`.
    pub fn describe(&self) -> String {
        match self {
            BudgetScope::Tenant => "tenant".into(),
            BudgetScope::Key(id) => format!("key:{id}"),
            BudgetScope::Label(label) => format!("label:{label}"),
        }
    }

    /// The kind and name the store keys it by.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            BudgetScope::Tenant => ("tenant", ""),
            BudgetScope::Key(id) => ("key", id),
            BudgetScope::Label(label) => ("label", label),
        }
    }

    /// The scope of [`BudgetScope::parts`].
    pub fn from_parts(kind: &str, name: &str) -> Option<BudgetScope> {
        match kind {
            "tenant" => Some(BudgetScope::Tenant),
            "key" => Some(BudgetScope::Key(name.to_string())),
            "label" => Some(BudgetScope::Label(name.to_string())),
            _ => None,
        }
    }

    /// Whether a task is counted by this scope.
    pub fn covers(&self, task: &Task) -> bool {
        match self {
            BudgetScope::Tenant => true,
            BudgetScope::Key(id) => task.submitted_by.as_deref() == Some(&format!("key:{id}")),
            BudgetScope::Label(label) => task.labels.iter().any(|l| l == label),
        }
    }
}

/// What a task does when a hard limit of one of its budgets is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExceedPolicy {
    /// It stays queued until the period turns or the limit is raised.
    #[default]
    Wait,
    /// It fails, saying which limit it hit.
    Fail,
}

impl ExceedPolicy {
    /// The word the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            ExceedPolicy::Wait => "wait",
            ExceedPolicy::Fail => "fail",
        }
    }
}

impl std::str::FromStr for ExceedPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(ExceedPolicy::Wait),
            "fail" => Ok(ExceedPolicy::Fail),
            _ => Err(format!("{} is not a policy (wait or fail)", quote(s))),
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Cost, in millionths of a US dollar.
    CostMicros,
    /// Input plus output tokens.
    Tokens,
}

impl Metric {
    /// The word the store keys and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CostMicros => "cost_micros",
            Metric::Tokens => "tokens",
        }
    }
}

/// The calendar period a limit covers, in the budget's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Period {
    /// One calendar day.
    Day,
    /// One calendar month.
    Month,
}

impl Period {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// One limit of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLimit {
    /// What it counts.
    pub metric: Metric,
    /// Over which period.
    pub period: Period,
    /// Attempts start only while settled spend plus reservations plus their own estimate
    /// stay within it.
    pub hard: u64,
}

/// A budget: hard limits on what tasks of one scope may spend per day and month, and a
/// soft threshold (a share of each hard limit) past which the tasks' events warn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Whose tasks it counts (within its tenant).
    pub scope: BudgetScope,
    /// Its limits; at most one per metric and period.
    pub limits: Vec<BudgetLimit>,
    /// The share of a hard limit, in percent, past which starting an attempt records a
    /// warning (the soft limit). 100 turns warnings off.
    pub soft_percent: u8,
    /// What a task does at a hard limit.
    pub on_exceed: ExceedPolicy,
    /// The IANA time zone its days and months follow (`UTC`, `Europe/Paris`...).
    pub time_zone: String,
    /// What an attempt reserves when its task names no cost ceiling and the node has no
    /// estimate, in millionths of a dollar.
    pub default_reserve_micros: u64,
    /// When it was last set (unix microseconds), and by whom.
    pub updated_at: i64,
    /// The principal that last set it.
    pub updated_by: String,
}

impl Budget {
    /// The soft limit of `limit`: its hard limit times the budget's soft share.
    pub fn soft(&self, limit: &BudgetLimit) -> u64 {
        (u128::from(limit.hard) * u128::from(self.soft_percent) / 100) as u64
    }
}

/// What an attempt reserves by default when nothing better is known: $0.50.
pub const DEFAULT_RESERVE_MICROS: u64 = 500_000;
/// Most budgets one tenant may have.
pub const MAX_BUDGETS_PER_TENANT: usize = 256;

impl Budget {
    /// Checks the budget, naming the first thing wrong.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.limits.is_empty() {
            return Err(FieldError::new(
                "limits",
                "a budget needs at least one limit (USD or tokens, per day or month)",
            ));
        }
        for (i, a) in self.limits.iter().enumerate() {
            if self.limits[..i]
                .iter()
                .any(|b| b.metric == a.metric && b.period == a.period)
            {
                return Err(FieldError::new(
                    "limits",
                    format!(
                        "two {} limits per {}; give each metric and period once",
                        a.metric.as_str(),
                        a.period.as_str()
                    ),
                ));
            }
        }
        if self.soft_percent == 0 || self.soft_percent > 100 {
            return Err(FieldError::new(
                "soft_percent",
                format!(
                    "{} is not a share of the hard limit between 1 and 100",
                    self.soft_percent
                ),
            ));
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(FieldError::new(
                "time_zone",
                format!(
                    "{} is not an IANA time zone (like UTC or Europe/Paris)",
                    quote(&self.time_zone)
                ),
            ));
        }
        match &self.scope {
            BudgetScope::Tenant => {}
            BudgetScope::Key(name) | BudgetScope::Label(name) => {
                if name.is_empty() || name.len() > crate::MAX_LABEL_BYTES {
                    return Err(FieldError::new(
                        "scope",
                        format!(
                            "a key id or label of 1 to {} bytes is needed",
                            crate::MAX_LABEL_BYTES
                        ),
                    ));
                }
                crate::check_name("scope", "a budget's key id or label", name)?
            }
        }
        Ok(())
    }
}

/// A tenant's share of the cluster and how its tasks take repositories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantQuota {
    /// Its weight in fair queueing: with weights 3 and 1, two tenants with work waiting
    /// get attempts started in the ratio 3:1.
    pub weight: u32,
    /// Most of its tasks running at once in the whole cluster (0: no limit).
    pub max_running: u32,
    /// What its tasks do when their repository and ref are held.
    pub lock_policy: LockPolicy,
    /// Most attempts of its tasks started per minute in the whole cluster (0: no limit).
    #[serde(default)]
    pub starts_per_minute: u32,
}

/// Largest fair-queueing weight.
pub const MAX_TENANT_WEIGHT: u32 = 1000;

impl Default for TenantQuota {
    fn default() -> Self {
        TenantQuota {
            weight: 1,
            max_running: 0,
            lock_policy: LockPolicy::Queue,
            starts_per_minute: 0,
        }
    }
}

impl TenantQuota {
    /// Checks the quota, naming the first thing wrong.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.weight == 0 || self.weight > MAX_TENANT_WEIGHT {
            return Err(FieldError::new(
                "weight",
                format!(
                    "{} is not a weight between 1 and {MAX_TENANT_WEIGHT}",
                    self.weight
                ),
            ));
        }
        Ok(())
    }
}

/// A budget reservation an attempt holds while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The budget's scope (within the task's tenant).
    pub scope: BudgetScope,
    /// Reserved cost, in millionths of a dollar.
    pub cost_micros: u64,
    /// Reserved tokens.
    pub tokens: u64,
    /// The budget's time zone, so the attempt's real spend lands in the right day.
    pub time_zone: String,
}

/// What a running attempt holds from the resource managers; released in the transaction
/// that ends the attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    /// Its repository lock.
    pub lock: Option<RepoLock>,
    /// Its budget reservations.
    pub reservations: Vec<Reservation>,
}

impl Holds {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock.is_none() && self.reservations.is_empty()
    }
}
