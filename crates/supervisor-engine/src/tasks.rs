//! What users do with tasks: submit, read, list, cancel, retry, follow events, count.

use std::collections::HashMap;

use futures::Stream;
use supervisor_model::{EventKind, NewTask, Task, TaskEvent, TaskId, TaskStatus, TaskType};
use supervisor_store::{RangeOptions, Transaction, Watch};

use crate::codec::{counter, decode};
use crate::event_log::{self, EventLog};
use crate::idempotency::{self, Entry};
use crate::keyspace::{self, Index};
use crate::records;
use crate::{COUNTED_STATUSES, Engine, EngineError, Inner};

/// The result of a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task (the earlier one when the idempotency key was already used).
    pub task: Task,
    /// False when an idempotency key matched an existing task.
    pub created: bool,
}

/// One submit waiting in the batcher. The id and time are fixed before the transaction so
/// a rerun of the transaction creates the very same task.
#[derive(Debug, Clone)]
pub(crate) struct SubmitItem {
    tenant: String,
    task_type: TaskType,
    request: NewTask,
    id: TaskId,
    now: i64,
    retry_of: Option<TaskId>,
    workflow: Option<supervisor_model::WorkflowRef>,
}

/// Filters and paging of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this type.
    pub task_type: Option<TaskType>,
    /// Only tasks with this label.
    pub label: Option<String>,
    /// Page size (1 to 1000).
    pub page_size: usize,
    /// Continue after this task (from a previous page).
    pub page_token: Option<TaskId>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Tasks, without output text.
    pub tasks: Vec<Task>,
    /// Where to continue, if more may follow.
    pub next_page_token: Option<TaskId>,
}

/// Task counts by status, cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// `(status, count)` for every status.
    pub counts: Vec<(TaskStatus, u64)>,
}

impl StatusCounts {
    /// The count of one status.
    pub fn get(&self, status: TaskStatus) -> u64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// Every task counted, whatever its status: the tasks the store holds.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// Durable counters of one provider, cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// Completions the store accepted from this provider.
    pub completions_accepted: u64,
    /// Completions refused because the runner's fencing token was stale.
    pub completions_refused: u64,
    /// Input tokens of accepted completions.
    pub input_tokens: u64,
    /// Output tokens of accepted completions.
    pub output_tokens: u64,
    /// Cost of accepted completions, in millionths of a dollar.
    pub cost_micros: u64,
}

/// Most index entries one list call examines before returning a (possibly short) page.
const LIST_SCAN_BUDGET: usize = 5_000;

fn build_task(item: &SubmitItem, cfg: &crate::EngineConfig) -> Task {
    let r = &item.request;
    Task {
        id: item.id,
        tenant: item.tenant.clone(),
        task_type: item.task_type,
        status: TaskStatus::Queued,
        prompt: r.prompt.clone(),
        priority: r.priority,
        labels: r.labels.clone(),
        context: r.context.clone(),
        idempotency_key: r.idempotency_key.clone(),
        max_attempts: r.max_attempts.unwrap_or(cfg.default_max_attempts),
        timeout_ms: r
            .timeout_ms
            .unwrap_or(cfg.default_attempt_timeout.as_millis() as u64),
        attempt: 0,
        abandoned_attempts: 0,
        lease: None,
        fence: 0,
        next_attempt_at: None,
        result: None,
        output_bytes: 0,
        error: None,
        retry_of: item.retry_of,
        routing: r.routing.clone(),
        workflow: item.workflow.clone(),
        attempts: Vec::new(),
        cost_micros: 0,
        next_event_seq: 1,
        created_at: item.now,
        updated_at: item.now,
        started_at: None,
        finished_at: None,
        submitted_by: r.submitted_by.clone(),
        waiting_for: None,
        holds: Default::default(),
        trace: r.trace.clone(),
        thread: None,
    }
}

/// `Ok(Err(..))` when the task needs a repository lock that is held and its tenant's
/// lock policy is `reject`.
pub(crate) async fn refuse_if_lock_held(
    txn: &mut supervisor_store::Transaction<'_>,
    item: &SubmitItem,
    cfg: &crate::EngineConfig,
) -> Result<Result<(), EngineError>, EngineError> {
    if !item
        .request
        .context
        .contains_key(supervisor_model::REPO_CONTEXT_KEY)
    {
        return Ok(Ok(()));
    }
    let policy = crate::resources::lock_policy(txn, &item.tenant).await?;
    match crate::resources::refuse_if_held(txn, &build_task(item, cfg), policy).await {
        Ok(()) => Ok(Ok(())),
        Err(EngineError::FailedPrecondition(why)) => Ok(Err(EngineError::FailedPrecondition(why))),
        Err(e) => Err(e),
    }
}

/// Writes every submit of a batch in one transaction.
pub(crate) async fn submit_batch(
    inner: &Inner,
    items: Vec<SubmitItem>,
) -> Result<Vec<Result<Submitted, EngineError>>, EngineError> {
    let cfg = &inner.cfg;
    let items = &items;
    let results = inner
        .db
        .run(|txn| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(items.len());
                // Keys first used in this batch: where, and with which entry.
                let mut batch_keys: HashMap<(String, String), (usize, Entry)> = HashMap::new();
                let default_timeout_ms =
                    u64::try_from(cfg.default_attempt_timeout.as_millis()).unwrap_or(u64::MAX);
                for (i, item) in items.iter().enumerate() {
                    if let Some(key) = &item.request.idempotency_key {
                        let slot = (item.tenant.clone(), key.clone());
                        if let Some((first, entry)) = batch_keys.get(&slot) {
                            let earlier: &Result<Submitted, EngineError> = &out[*first];
                            out.push(match earlier {
                                Ok(s) if !entry.matches(&item.request) => {
                                    let fields = idempotency::differences(
                                        &item.request,
                                        &s.task,
                                        cfg.default_max_attempts,
                                        default_timeout_ms,
                                    );
                                    Err(idempotency::conflict(key, s.task.id, &fields))
                                }
                                _ => earlier.clone().map(|s| Submitted {
                                    task: s.task,
                                    created: false,
                                }),
                            });
                            continue;
                        }
                        let idem_key = keyspace::idempotency(&item.tenant, key);
                        if let Some(existing) = txn.get(&idem_key).await? {
                            let entry = Entry::decode(&existing)?;
                            let task =
                                records::load_existing(txn, &item.tenant, entry.task).await?;
                            if entry.matches(&item.request) {
                                out.push(Ok(Submitted {
                                    task,
                                    created: false,
                                }));
                            } else {
                                let fields = idempotency::differences(
                                    &item.request,
                                    &task,
                                    cfg.default_max_attempts,
                                    default_timeout_ms,
                                );
                                out.push(Err(idempotency::conflict(key, task.id, &fields)));
                            }
                            continue;
                        }
                        if let Err(e) = refuse_if_lock_held(txn, item, cfg).await? {
                            out.push(Err(e));
                            continue;
                        }
                        let entry = Entry::new(item.id, &item.request);
                        txn.set(&idem_key, &entry.encode()?);
                        batch_keys.insert(slot, (i, entry));
                    } else if let Err(e) = refuse_if_lock_held(txn, item, cfg).await? {
                        out.push(Err(e));
                        continue;
                    }
                    out.push(Ok(Submitted {
                        task: create(txn, item, cfg)?,
                        created: true,
                    }));
                }
                Ok::<_, EngineError>(out)
            })
        })
        .await?;
    if results.iter().any(|r| matches!(r, Ok(s) if s.created)) {
        inner.ready.notify_one();
    }
    Ok(results)
}

impl SubmitItem {
    /// A task made inside another operation's transaction (a thread's turn, or a
    /// workflow step's task when `workflow` names it): the caller chose the id and
    /// validated `request`.
    pub(crate) fn prepared(
        tenant: &str,
        request: NewTask,
        task_type: TaskType,
        id: TaskId,
        now: i64,
        workflow: Option<supervisor_model::WorkflowRef>,
    ) -> Self {
        SubmitItem {
            tenant: tenant.to_string(),
            task_type,
            request,
            id,
            now,
            retry_of: None,
            workflow,
        }
    }
}

/// Creates a task inside the caller's transaction (workflow steps, thread turns).
pub(crate) fn create_in_txn(
    txn: &mut Transaction<'_>,
    item: &SubmitItem,
    cfg: &crate::EngineConfig,
) -> Result<Task, EngineError> {
    create(txn, item, cfg)
}

fn create(
    txn: &mut Transaction<'_>,
    item: &SubmitItem,
    cfg: &crate::EngineConfig,
) -> Result<Task, EngineError> {
    let mut task = build_task(item, cfg);
    records::index_new(txn, &task);
    let message = match item.retry_of {
        Some(original) => format!("submitted as a retry of {original}"),
        None => "submitted".to_string(),
    };
    records::append_event(
        txn,
        &mut task,
        item.now,
        EventKind::Submitted,
        message,
        String::new(),
    )?;
    records::make_ready(txn, &task);
    records::put(txn, &task)?;
    crate::observe::submitted(txn, &task);
    Ok(task)
}

impl Engine {
    /// Validates and durably queues a task. With an idempotency key this tenant already
    /// used for the same request, returns the first task (`created == false`) and
    /// creates nothing; for a different request, fails with `AlreadyExists` naming the
    /// fields that differ.
    /// Refused with [`EngineError::Overloaded`] while the cluster is past a bound of
    /// [`crate::AdmissionConfig`].
    pub async fn submit(&self, tenant: &str, request: NewTask) -> Result<Submitted, EngineError> {
        let task_type = request.validate()?;
        if let Err(refused) = self.admit().await {
            // A retry of a submit that did create its task gets the task back, overload
            // or not: refusing it would leave the client unsure whether the task exists.
            let known = match &request.idempotency_key {
                Some(key) => {
                    let mut txn = self.inner.db.begin().await?;
                    txn.get_snapshot(&keyspace::idempotency(tenant, key))
                        .await?
                        .is_some()
                }
                None => false,
            };
            if !known {
                return Err(refused);
            }
        }
        self.inner
            .submits
            .call(SubmitItem {
                tenant: tenant.to_string(),
                task_type,
                request,
                id: TaskId::generate(),
                now: self.now_micros(),
                retry_of: None,
                workflow: None,
            })
            .await
    }

    /// Reads a task with its full output.
    pub async fn get(&self, tenant: &str, id: TaskId) -> Result<Task, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        records::load_full(&mut txn, tenant, id)
            .await?
            .ok_or(EngineError::NotFound { id })
    }

    /// Which of `ids` are tasks of `tenant`, in order, from one snapshot read of their
    /// records (without outputs).
    pub async fn tasks_exist(
        &self,
        tenant: &str,
        ids: &[TaskId],
    ) -> Result<Vec<bool>, EngineError> {
        let keys: Vec<(&str, TaskId)> = ids.iter().map(|id| (tenant, *id)).collect();
        let mut txn = self.inner.db.begin().await?;
        let records = records::load_many(&mut txn, &keys, true).await?;
        Ok(records.iter().map(Option::is_some).collect())
    }

    /// Lists tasks newest first. Picks the most selective index among the filters, applies
    /// the others while scanning, and examines a bounded number of entries per call (a
    /// page may come back short with a token to continue).
    pub async fn list(&self, tenant: &str, query: &ListQuery) -> Result<ListPage, EngineError> {
        let page_size = query.page_size.clamp(1, 1000);
        // The most selective filter picks the range; the others are applied while scanning.
        let index = match (&query.label, query.status, query.task_type) {
            (Some(label), _, _) => Some(Index::Label(label)),
            (None, Some(status), _) => Some(Index::Status(status)),
            (None, None, Some(t)) => Some(Index::Type(t.as_str())),
            (None, None, None) => None,
        };
        let primary = index.is_none();
        let (begin, mut end) = match index {
            Some(ix) => keyspace::index_range(tenant, ix),
            None => keyspace::task_range(tenant),
        };
        if let Some(token) = query.page_token {
            // Reverse scans continue strictly before the last key of the previous page.
            end = match index {
                Some(ix) => keyspace::index(tenant, ix, token),
                None => keyspace::task(tenant, token),
            };
        }
        let mut txn = self.inner.db.begin().await?;
        let mut tasks = Vec::new();
        let mut scanned = 0usize;
        let mut last_seen: Option<TaskId> = None;
        let mut exhausted = false;
        while tasks.len() < page_size && scanned < LIST_SCAN_BUDGET {
            let want = (page_size - tasks.len())
                .max(32)
                .min(LIST_SCAN_BUDGET - scanned);
            let kvs = txn
                .get_range(
                    &begin,
                    &end,
                    RangeOptions::new().snapshot().reverse().limit(want),
                )
                .await?;
            if kvs.is_empty() {
                exhausted = true;
                break;
            }
            let short = kvs.len() < want;
            for kv in &kvs {
                scanned += 1;
                let task = if primary {
                    let id = keyspace::parse_task(&kv.key).ok_or_else(|| {
                        EngineError::Corrupt("a task key could not be parsed".into())
                    })?;
                    last_seen = Some(id);
                    decode::<Task>("task record", &kv.value)?
                } else {
                    let id = keyspace::parse_index(&kv.key).ok_or_else(|| {
                        EngineError::Corrupt("an index key could not be parsed".into())
                    })?;
                    last_seen = Some(id);
                    match txn.get_snapshot(&keyspace::task(tenant, id)).await? {
                        Some(bytes) => decode::<Task>("task record", &bytes)?,
                        None => continue,
                    }
                };
                if matches(&task, query) {
                    tasks.push(task);
                    if tasks.len() == page_size {
                        break;
                    }
                }
            }
            if let Some(last) = kvs.last() {
                end = last.key.clone();
            }
            if short && tasks.len() < page_size {
                exhausted = true;
                break;
            }
        }
        let next_page_token = if exhausted { None } else { last_seen };
        Ok(ListPage {
            tasks,
            next_page_token,
        })
    }

    /// Cancels an unfinished task. A running task's node is told through its inbox; its
    /// later writes are refused because cancelling advances the fencing token. A reason
    /// over `MAX_REASON_BYTES` or holding NUL is refused (`InvalidArgument`).
    pub async fn cancel(
        &self,
        tenant: &str,
        id: TaskId,
        reason: &str,
    ) -> Result<Task, EngineError> {
        supervisor_model::check_reason(reason)?;
        let now = self.now_micros();
        let reason = if reason.trim().is_empty() {
            "cancelled by request".to_string()
        } else {
            format!("cancelled: {}", reason.trim())
        };
        let cfg = &self.inner.cfg;
        self.inner
            .db
            .run(|txn| {
                let reason = reason.clone();
                Box::pin(async move {
                    let mut task = records::load_existing(txn, tenant, id).await?;
                    match task.status {
                        TaskStatus::Cancelled => return Ok(task),
                        s if s.is_terminal() => {
                            return Err(EngineError::FailedPrecondition(format!(
                                "task {id} already {s}; only unfinished tasks can be cancelled"
                            )));
                        }
                        _ => {}
                    }
                    records::cancel(txn, &mut task, now, reason)?;
                    crate::workflows::on_task_terminal(txn, &task, now, cfg).await?;
                    Ok(task)
                })
            })
            .await
    }

    /// Re-runs a failed or cancelled task as a new task; the original never changes.
    pub async fn retry(&self, tenant: &str, id: TaskId) -> Result<Task, EngineError> {
        let original = {
            let mut txn = self.inner.db.begin().await?;
            records::load_existing(&mut txn, tenant, id).await?
        };
        if !matches!(original.status, TaskStatus::Failed | TaskStatus::Cancelled) {
            return Err(EngineError::FailedPrecondition(format!(
                "task {id} {}; only failed or cancelled tasks can be retried",
                original.status.predicate()
            )));
        }
        let item = SubmitItem {
            tenant: tenant.to_string(),
            task_type: original.task_type,
            request: NewTask {
                task_type: Some(original.task_type),
                prompt: original.prompt.clone(),
                priority: original.priority,
                labels: original.labels.clone(),
                idempotency_key: None,
                context: original.context.clone(),
                max_attempts: Some(original.max_attempts),
                timeout_ms: Some(original.timeout_ms),
                routing: original.routing.clone(),
                submitted_by: original.submitted_by.clone(),
                // The retry request's trace, not the original's.
                trace: supervisor_telemetry::context::current_traceparent(),
            },
            id: TaskId::generate(),
            now: self.now_micros(),
            retry_of: Some(original.id),
            workflow: None,
        };
        Ok(self.inner.submits.call(item).await?.task)
    }

    /// Reads up to `limit` events after `after_seq`, the task record, and a watch that fires
    /// when the task changes next, all from one snapshot. Fails with `NotFound` if there
    /// is no such task.
    pub async fn read_events(
        &self,
        tenant: &str,
        id: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<(Vec<TaskEvent>, Task, Watch), EngineError> {
        event_log::read(&self.inner.db, &TaskLog::new(tenant, id), after_seq, limit).await
    }

    /// A live stream of a task's events after `after_seq`, ending after the terminal event.
    /// Fails with `NotFound` first if there is no such task.
    pub async fn watch_events(
        &self,
        tenant: &str,
        id: TaskId,
        after_seq: u64,
    ) -> Result<impl Stream<Item = Result<TaskEvent, EngineError>> + Send + 'static, EngineError>
    {
        event_log::follow(self.inner.db.clone(), TaskLog::new(tenant, id), after_seq).await
    }

    /// Counts tasks by status (durable counters kept by every transition).
    pub async fn status_counts(&self) -> Result<StatusCounts, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        let mut counts = Vec::with_capacity(COUNTED_STATUSES.len());
        for status in COUNTED_STATUSES {
            let value = txn.get_snapshot(&keyspace::status_counter(*status)).await?;
            counts.push((*status, counter(value.as_deref()).max(0) as u64));
        }
        Ok(StatusCounts { counts })
    }

    /// Counts one tenant's tasks by status. Tenants other than `default` have counters of
    /// their own; `default` (which holds every task from before tenants existed) counts
    /// what the cluster holds beyond the other tenants.
    pub async fn tenant_status_counts(&self, tenant: &str) -> Result<StatusCounts, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        if tenant != supervisor_model::DEFAULT_TENANT {
            let mut counts = Vec::with_capacity(COUNTED_STATUSES.len());
            for status in COUNTED_STATUSES {
                let key = keyspace::tenant_status_counter(tenant, *status);
                let value = txn.get_snapshot(&key).await?;
                counts.push((*status, counter(value.as_deref()).max(0) as u64));
            }
            return Ok(StatusCounts { counts });
        }
        let (begin, end) = keyspace::tenant_status_counters();
        let others = txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?;
        let mut counts = Vec::with_capacity(COUNTED_STATUSES.len());
        for status in COUNTED_STATUSES {
            let all = counter(
                txn.get_snapshot(&keyspace::status_counter(*status))
                    .await?
                    .as_deref(),
            );
            let elsewhere: i64 = others
                .iter()
                .filter(|kv| keyspace::parse_tenant_status_counter(&kv.key) == Some(*status))
                .map(|kv| counter(Some(&kv.value)))
                .sum();
            counts.push((*status, (all - elsewhere).max(0) as u64));
        }
        Ok(StatusCounts { counts })
    }

    /// Durable counters of one provider.
    pub async fn provider_stats(&self, provider: &str) -> Result<ProviderStats, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        let mut read = async |field: &str| -> Result<u64, EngineError> {
            let v = txn
                .get_snapshot(&keyspace::provider_counter(provider, field))
                .await?;
            Ok(counter(v.as_deref()).max(0) as u64)
        };
        Ok(ProviderStats {
            completions_accepted: read("accepted").await?,
            completions_refused: read("refused").await?,
            input_tokens: read("input_tokens").await?,
            output_tokens: read("output_tokens").await?,
            cost_micros: read("cost_micros").await?,
        })
    }
}

/// A task's event log: `("ev", tenant, id, seq)`, ended once the task is terminal.
struct TaskLog {
    tenant: String,
    id: TaskId,
}

impl TaskLog {
    fn new(tenant: &str, id: TaskId) -> Self {
        TaskLog {
            tenant: tenant.to_string(),
            id,
        }
    }
}

impl EventLog for TaskLog {
    type Owner = Task;
    type Event = TaskEvent;
    const EVENT: &'static str = "task event";

    async fn load_owner(&self, txn: &mut Transaction<'_>) -> Result<Task, EngineError> {
        records::load_existing(txn, &self.tenant, self.id).await
    }

    fn owner_key(&self) -> Vec<u8> {
        keyspace::task(&self.tenant, self.id)
    }

    fn events_after(&self, after_seq: u64) -> (Vec<u8>, Vec<u8>) {
        keyspace::events_after(&self.tenant, self.id, after_seq)
    }

    fn seq(event: &TaskEvent) -> u64 {
        event.seq
    }

    fn ended(task: &Task) -> bool {
        task.status.is_terminal()
    }

    fn next_seq(task: &Task) -> u64 {
        task.next_event_seq
    }
}

fn matches(task: &Task, q: &ListQuery) -> bool {
    q.status.is_none_or(|s| task.status == s)
        && q.task_type.is_none_or(|t| task.task_type == t)
        && q.label
            .as_ref()
            .is_none_or(|l| task.labels.iter().any(|x| x == l))
}
