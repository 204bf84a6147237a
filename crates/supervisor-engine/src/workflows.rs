//! Durable workflow runs: a DAG of tasks whose progress lives in one record.
//!
//! A run is stored at `("wf", tenant, id)` with its definition, variables, the state of
//! every step and the task behind each started step. Whenever a step's task reaches a
//! terminal status, the same transaction that made it terminal loads the run, records the
//! step's new state, asks the planner (`supervisor_workflow::Plan`) what follows, and
//! applies it: tasks for the steps that became ready are created with their prompts
//! rendered from variables and parents' outputs, steps whose conditions can no longer hold
//! are skipped, and under `fail_fast` the steps still running are cancelled. A crash
//! between two steps therefore loses nothing and starts nothing twice: either the parent's
//! completion and its children's creation committed together, or neither did.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::Stream;
use serde::{Deserialize, Serialize};
use supervisor_model::{Task, TaskId, TaskStatus, WorkflowRef};
use supervisor_store::{RangeOptions, Transaction, Watch};
use supervisor_workflow::{
    Context, Expression, Plan, RenderOptions, RunStatus, StepState, StepStates, StepStatus, When,
    WorkflowDef, placeholders, render_task, retry_plan,
};

use crate::codec::{decode, encode};
use crate::event_log::{self, EventLog};
use crate::records::{self, TimerEntry, TimerKind};
use crate::{Engine, EngineError, keyspace, tasks};

/// A workflow run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// Its id (time-ordered, like task ids).
    pub id: TaskId,
    /// Its tenant.
    pub tenant: String,
    /// The definition it runs.
    pub def: WorkflowDef,
    /// Variables: the definition's, overridden by the submitter's.
    pub vars: BTreeMap<String, String>,
    /// Where it is.
    pub status: RunStatus,
    /// Every step's state.
    pub steps: StepStates,
    /// The latest task of every started step.
    pub tasks: BTreeMap<String, TaskId>,
    /// Why steps failed without a task result (render errors, bad conditions).
    pub failures: BTreeMap<String, String>,
    /// Times retried.
    pub retries: u32,
    /// Creation time (unix microseconds).
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// When the policy's deadline passes, if it has one.
    pub deadline_at: Option<i64>,
    /// The sequence number its next event will get.
    pub next_event_seq: u64,
    /// The W3C `traceparent` of the span that started it: every step's task continues
    /// it, so a run is one trace. `None` when tracing was off.
    #[serde(default)]
    pub trace: Option<String>,
}

/// What happened in a run, in order; resumable by sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowEvent {
    /// Position in the run's log, from 1.
    pub seq: u64,
    /// When (unix microseconds).
    pub at: i64,
    /// The step concerned, if any.
    pub step: Option<String>,
    /// What happened: `run_started`, `step_started`, `step_succeeded`, `step_failed`,
    /// `step_skipped`, `step_cancelled`, `run_succeeded`, `run_failed`, `run_cancelled`,
    /// `run_retried`.
    pub kind: String,
    /// The step's task, when there is one.
    pub task_id: Option<TaskId>,
    /// A line for people.
    pub message: String,
}

/// Filters and paging of a run listing.
#[derive(Debug, Clone, Default)]
pub struct WorkflowQuery {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of workflows with this name.
    pub name: Option<String>,
    /// Page size (1 to 1000).
    pub page_size: usize,
    /// Continue after this run.
    pub page_token: Option<TaskId>,
}

/// One page of runs, newest first.
#[derive(Debug, Clone)]
pub struct WorkflowPage {
    /// Runs.
    pub runs: Vec<WorkflowRun>,
    /// Where to continue, if more may follow.
    pub next_page_token: Option<TaskId>,
}

/// The key watchers of a run watch: its first chunk, rewritten by every change.
fn run_key(tenant: &str, id: TaskId) -> Vec<u8> {
    keyspace::workflow_chunk(tenant, id, 0)
}

/// A run's record is stored in chunks under the value limit.
const RUN_CHUNK_BYTES: usize = 64 * 1024;

pub(crate) async fn load_run(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
) -> Result<Option<WorkflowRun>, EngineError> {
    let (begin, end) = keyspace::workflow_chunks(tenant, id);
    let chunks = txn.get_range(&begin, &end, RangeOptions::new()).await?;
    if chunks.is_empty() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    for kv in chunks {
        bytes.extend_from_slice(&kv.value);
    }
    Ok(Some(decode("workflow run", &bytes)?))
}

/// Deletes an ended run's record and event log, and its retention entry `expiry` (its
/// steps' tasks are deleted on their own, once the run is gone).
pub(crate) fn delete_run(txn: &mut Transaction<'_>, run: &WorkflowRun, expiry: &[u8]) {
    for (begin, end) in [
        keyspace::workflow_chunks(&run.tenant, run.id),
        keyspace::workflow_events(&run.tenant, run.id),
    ] {
        txn.clear_range(&begin, &end);
    }
    txn.clear(expiry);
}

fn put_run(txn: &mut Transaction<'_>, run: &WorkflowRun) -> Result<(), EngineError> {
    let bytes = encode(run)?;
    let (begin, end) = keyspace::workflow_chunks(&run.tenant, run.id);
    txn.clear_range(&begin, &end);
    for (i, chunk) in bytes.chunks(RUN_CHUNK_BYTES).enumerate() {
        txn.set(
            &keyspace::workflow_chunk(&run.tenant, run.id, i as u32),
            chunk,
        );
    }
    Ok(())
}

fn event(
    txn: &mut Transaction<'_>,
    run: &mut WorkflowRun,
    now: i64,
    step: Option<&str>,
    kind: &str,
    task_id: Option<TaskId>,
    message: String,
) -> Result<(), EngineError> {
    let ev = WorkflowEvent {
        seq: run.next_event_seq,
        at: now,
        step: step.map(str::to_string),
        kind: kind.to_string(),
        task_id,
        message,
    };
    txn.set(
        &keyspace::workflow_event(&run.tenant, run.id, ev.seq),
        &encode(&ev)?,
    );
    run.next_event_seq += 1;
    Ok(())
}

/// Values the planner and the templates read: variables, every step's status, and
/// outputs and attempts of the steps that are referenced and have finished.
struct RunContext {
    vars: BTreeMap<String, String>,
    statuses: HashMap<String, StepStatus>,
    outputs: HashMap<String, String>,
    attempts: HashMap<String, u32>,
}

impl Context for RunContext {
    fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
    fn step_output(&self, step: &str) -> Option<&str> {
        self.outputs.get(step).map(String::as_str)
    }
    fn step_attempts(&self, step: &str) -> Option<u32> {
        self.attempts.get(step).copied()
    }
    // Conditions get statuses from the planner; prompts (`{{ steps.x.status }}`) from here.
    fn step_status(&self, step: &str) -> Option<StepStatus> {
        self.statuses.get(step).copied()
    }
}

/// Steps whose outputs the next decision may read: those referenced by the templates and
/// conditions of pending steps.
fn referenced_steps(def: &WorkflowDef, states: &StepStates) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for step in &def.steps {
        if !matches!(states.get(&step.id), Some(StepState::Pending) | None) {
            continue;
        }
        let mut texts: Vec<&str> = vec![step.task.prompt.as_str()];
        texts.extend(step.task.context.values().map(String::as_str));
        for text in texts {
            if let Ok(refs) = placeholders(text) {
                out.extend(
                    refs.into_iter()
                        .filter_map(|r| r.step().map(str::to_string)),
                );
            }
        }
        for need in &step.needs {
            if let When::Expr(src) = &need.when
                && let Ok(expr) = Expression::parse(src)
            {
                out.extend(
                    expr.refs()
                        .into_iter()
                        .filter_map(|r| r.step().map(str::to_string)),
                );
            }
        }
    }
    out
}

/// Loads what `RunContext` needs from the finished tasks of referenced steps.
async fn context_for(
    txn: &mut Transaction<'_>,
    run: &WorkflowRun,
) -> Result<RunContext, EngineError> {
    let mut ctx = RunContext {
        vars: run.vars.clone(),
        statuses: run
            .steps
            .iter()
            .map(|(id, state)| (id.clone(), state.status()))
            .collect(),
        outputs: HashMap::new(),
        attempts: HashMap::new(),
    };
    for step in referenced_steps(&run.def, &run.steps) {
        let Some(task_id) = run.tasks.get(&step) else {
            continue;
        };
        let Some(task) = records::load(txn, &run.tenant, *task_id).await? else {
            continue;
        };
        ctx.attempts.insert(step.clone(), task.attempt);
        if task.result.is_some() {
            ctx.outputs
                .insert(step, records::read_output(txn, &task).await?);
        }
    }
    Ok(ctx)
}

fn step_state_for(status: TaskStatus) -> Option<StepState> {
    match status {
        TaskStatus::Succeeded => Some(StepState::Succeeded),
        TaskStatus::Failed => Some(StepState::Failed),
        TaskStatus::Cancelled => Some(StepState::Cancelled),
        _ => None,
    }
}

/// Applies the planner's decisions until nothing more changes. Returns the number of
/// tasks created.
async fn advance(
    txn: &mut Transaction<'_>,
    run: &mut WorkflowRun,
    now: i64,
    engine_cfg: &crate::EngineConfig,
) -> Result<usize, EngineError> {
    let plan = Plan::new(&run.def).map_err(|report| {
        EngineError::Corrupt(format!(
            "stored workflow {} no longer validates: {:?}",
            run.id, report.errors
        ))
    })?;
    let mut created = 0;
    // Each round settles at least one step, so the number of steps bounds the loop.
    for _ in 0..=run.def.steps.len() {
        if run.status != RunStatus::Running {
            break;
        }
        let ctx = context_for(txn, run).await?;
        let adv = plan
            .advance(&run.steps, &ctx, &run.def.policy)
            .map_err(|e| EngineError::Internal(format!("workflow {}: {e}", run.id)))?;
        let mut changed = false;
        let mut render_failures = Vec::new();
        for step_id in &adv.start {
            let Some(step) = run.def.step(step_id) else {
                continue;
            };
            match render_task(&step.task, &ctx, &RenderOptions::default()) {
                Ok(mut new) => match new.validate() {
                    Ok(task_type) => {
                        new.trace = run.trace.clone();
                        let id = TaskId::generate();
                        let item = tasks::SubmitItem::prepared(
                            &run.tenant,
                            new,
                            task_type,
                            id,
                            now,
                            Some(WorkflowRef {
                                run: run.id,
                                step: step_id.clone(),
                            }),
                        );
                        let task = tasks::create_in_txn(txn, &item, engine_cfg)?;
                        run.steps
                            .insert(step_id.clone(), StepState::Running(task.id.to_string()));
                        run.tasks.insert(step_id.clone(), task.id);
                        created += 1;
                        changed = true;
                    }
                    Err(e) => {
                        render_failures.push((step_id.clone(), format!("its task is invalid: {e}")))
                    }
                },
                Err(e) => render_failures
                    .push((step_id.clone(), format!("its task could not be built: {e}"))),
            }
        }
        drop(ctx);
        for step_id in &adv.start {
            if let Some(task_id) = run.tasks.get(step_id).copied()
                && matches!(run.steps.get(step_id), Some(StepState::Running(_)))
                && !render_failures.iter().any(|(s, _)| s == step_id)
            {
                event(
                    txn,
                    run,
                    now,
                    Some(step_id),
                    "step_started",
                    Some(task_id),
                    format!("step {step_id} started as task {task_id}"),
                )?;
            }
        }
        for (step_id, reason) in render_failures
            .into_iter()
            .chain(adv.fail.iter().map(|f| (f.step.clone(), f.reason.clone())))
        {
            run.steps.insert(step_id.clone(), StepState::Failed);
            run.failures.insert(step_id.clone(), reason.clone());
            event(
                txn,
                run,
                now,
                Some(&step_id),
                "step_failed",
                None,
                format!("step {step_id} failed: {reason}"),
            )?;
            changed = true;
        }
        for step_id in &adv.skip {
            run.steps.insert(step_id.clone(), StepState::Skipped);
            event(
                txn,
                run,
                now,
                Some(step_id),
                "step_skipped",
                None,
                format!("step {step_id} skipped: its conditions cannot hold"),
            )?;
            changed = true;
        }
        for step_id in &adv.cancel {
            cancel_step(txn, run, step_id, now, "the run stopped (fail_fast)")?;
            changed = true;
        }
        let cancel_tasks: Vec<TaskId> = adv
            .cancel
            .iter()
            .filter_map(|s| run.tasks.get(s).copied())
            .collect();
        for task_id in cancel_tasks {
            cancel_task(
                txn,
                &run.tenant,
                task_id,
                now,
                "its workflow run stopped (fail_fast)",
            )
            .await?;
        }
        if adv.run_status != RunStatus::Running {
            finish_run(txn, run, adv.run_status, now, "")?;
            break;
        }
        if !changed {
            break;
        }
    }
    run.updated_at = now;
    Ok(created)
}

fn cancel_step(
    txn: &mut Transaction<'_>,
    run: &mut WorkflowRun,
    step_id: &str,
    now: i64,
    why: &str,
) -> Result<(), EngineError> {
    let task_id = run.tasks.get(step_id).copied();
    run.steps.insert(step_id.to_string(), StepState::Cancelled);
    event(
        txn,
        run,
        now,
        Some(step_id),
        "step_cancelled",
        task_id,
        format!("step {step_id} cancelled: {why}"),
    )
}

/// Cancels a step's task if it has not finished (without re-entering the run).
async fn cancel_task(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
    now: i64,
    why: &str,
) -> Result<(), EngineError> {
    if let Some(mut task) = records::load(txn, tenant, id).await?
        && !task.status.is_terminal()
    {
        records::cancel(txn, &mut task, now, format!("cancelled: {why}"))?;
    }
    Ok(())
}

fn finish_run(
    txn: &mut Transaction<'_>,
    run: &mut WorkflowRun,
    status: RunStatus,
    now: i64,
    why: &str,
) -> Result<(), EngineError> {
    run.status = status;
    run.finished_at = Some(now);
    // The retention sweeper finds it here once its time is up.
    txn.set(
        &keyspace::expiry(keyspace::Expiring::Run, &run.tenant, now, run.id),
        &[],
    );
    if let Some(at) = run.deadline_at.take() {
        txn.clear(&keyspace::timer(at, run.id));
    }
    let (kind, word) = match status {
        RunStatus::Succeeded => ("run_succeeded", "succeeded"),
        RunStatus::Failed => ("run_failed", "failed"),
        RunStatus::Cancelled => ("run_cancelled", "was cancelled"),
        RunStatus::Running => ("run_started", "is running"),
    };
    let mut message = format!("run {word}");
    if !why.is_empty() {
        message.push_str(": ");
        message.push_str(why);
    }
    event(txn, run, now, None, kind, None, message)
}

/// Called in the transaction that made `task` terminal: records its step's outcome and
/// advances the run, or records its reply in its thread. Other tasks are ignored.
pub(crate) async fn on_task_terminal(
    txn: &mut Transaction<'_>,
    task: &Task,
    now: i64,
    cfg: &crate::EngineConfig,
) -> Result<(), EngineError> {
    on_tasks_terminal(txn, std::slice::from_ref(task), now, cfg).await
}

/// Like [`on_task_terminal`] for many tasks made terminal in one transaction: each run is
/// loaded, updated with all of its steps' outcomes, advanced and written once, so a
/// batch of sibling completions costs one run write, not one per sibling.
pub(crate) async fn on_tasks_terminal(
    txn: &mut Transaction<'_>,
    tasks: &[Task],
    now: i64,
    cfg: &crate::EngineConfig,
) -> Result<(), EngineError> {
    crate::thread_log::on_turns_ended(txn, tasks, now).await?;
    let mut by_run: BTreeMap<(String, TaskId), Vec<&Task>> = BTreeMap::new();
    for task in tasks {
        if let Some(wref) = &task.workflow
            && step_state_for(task.status).is_some()
        {
            by_run
                .entry((task.tenant.clone(), wref.run))
                .or_default()
                .push(task);
        }
    }
    for ((tenant, run_id), tasks) in by_run {
        let Some(mut run) = load_run(txn, &tenant, run_id).await? else {
            continue;
        };
        let mut changed = false;
        for task in tasks {
            let (Some(wref), Some(state)) = (&task.workflow, step_state_for(task.status)) else {
                continue;
            };
            let current = matches!(run.steps.get(&wref.step), Some(StepState::Running(id)) if *id == task.id.to_string());
            if !current {
                continue;
            }
            let kind = match state {
                StepState::Succeeded => "step_succeeded",
                StepState::Failed => "step_failed",
                _ => "step_cancelled",
            };
            run.steps.insert(wref.step.clone(), state);
            let detail = task.error.clone().unwrap_or_default();
            let message = if detail.is_empty() {
                format!("step {} {} (task {})", wref.step, task.status, task.id)
            } else {
                format!(
                    "step {} {} (task {}): {detail}",
                    wref.step, task.status, task.id
                )
            };
            event(
                txn,
                &mut run,
                now,
                Some(&wref.step),
                kind,
                Some(task.id),
                message,
            )?;
            changed = true;
        }
        if changed {
            advance(txn, &mut run, now, cfg).await?;
            run.updated_at = now;
            put_run(txn, &run)?;
        }
    }
    Ok(())
}

/// The deadline of a run passed: stop it as failed.
pub(crate) async fn on_deadline(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
    due: i64,
    now: i64,
    _cfg: &crate::EngineConfig,
) -> Result<bool, EngineError> {
    let Some(mut run) = load_run(txn, tenant, id).await? else {
        return Ok(false);
    };
    if run.status != RunStatus::Running || run.deadline_at != Some(due) {
        return Ok(false);
    }
    stop(txn, &mut run, RunStatus::Failed, now, "its deadline passed").await?;
    put_run(txn, &run)?;
    Ok(true)
}

/// Stops a run: cancels running steps, skips pending ones, ends it with `status`.
async fn stop(
    txn: &mut Transaction<'_>,
    run: &mut WorkflowRun,
    status: RunStatus,
    now: i64,
    why: &str,
) -> Result<(), EngineError> {
    let plan = Plan::new(&run.def).map_err(|r| {
        EngineError::Corrupt(format!(
            "stored workflow no longer validates: {:?}",
            r.errors
        ))
    })?;
    let adv = plan
        .halt(&run.steps, status)
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    for step_id in &adv.cancel {
        if let Some(task_id) = run.tasks.get(step_id).copied() {
            cancel_task(txn, &run.tenant, task_id, now, why).await?;
        }
        cancel_step(txn, run, step_id, now, why)?;
    }
    for step_id in &adv.skip {
        run.steps.insert(step_id.clone(), StepState::Skipped);
        event(
            txn,
            run,
            now,
            Some(step_id),
            "step_skipped",
            None,
            format!("step {step_id} skipped: {why}"),
        )?;
    }
    finish_run(txn, run, status, now, why)?;
    run.updated_at = now;
    Ok(())
}

/// Errors of an invalid definition quoted in a refusal; `ValidateWorkflow` lists them all.
const ERRORS_SHOWN: usize = 10;

/// Refuses a definition that does not validate, naming its first errors.
pub(crate) fn check_definition(def: &WorkflowDef) -> Result<(), EngineError> {
    let report = supervisor_workflow::validate(def);
    if report.is_ok() {
        return Ok(());
    }
    Err(EngineError::InvalidArgument(
        supervisor_model::FieldError::new("definition", report.errors_line(ERRORS_SHOWN)),
    ))
}

/// Largest encoded run record accepted: each change rewrites it, so it must stay well
/// inside the store's transaction limit (10 MB).
const MAX_RUN_BYTES: usize = 2_000_000;

/// Refuses a workflow whose run record, once every step has a task, would be too large to
/// rewrite in one transaction.
pub(crate) fn check_run_size(
    def: &WorkflowDef,
    vars: &BTreeMap<String, String>,
) -> Result<(), EngineError> {
    let full = WorkflowRun {
        id: TaskId::generate(),
        tenant: String::new(),
        def: def.clone(),
        vars: vars.clone(),
        status: RunStatus::Running,
        steps: def
            .steps
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    StepState::Running(TaskId::generate().to_string()),
                )
            })
            .collect(),
        tasks: def
            .steps
            .iter()
            .map(|s| (s.id.clone(), TaskId::generate()))
            .collect(),
        failures: BTreeMap::new(),
        retries: 0,
        created_at: 0,
        updated_at: 0,
        finished_at: None,
        deadline_at: None,
        next_event_seq: 0,
        // As long as a trace context gets.
        trace: Some(format!("00-{:032}-{:016}-01", 0, 0)),
    };
    let size = encode(&full)?.len();
    if size > MAX_RUN_BYTES {
        return Err(EngineError::InvalidArgument(
            supervisor_model::FieldError::new(
                "definition",
                format!(
                    "this workflow is too large to run: its run record would take {size} bytes, over the limit of {MAX_RUN_BYTES} (about {} steps of this size); split it into smaller workflows",
                    def.steps.len() * MAX_RUN_BYTES / size.max(1)
                ),
            ),
        ));
    }
    Ok(())
}

/// Creates a run of a validated definition and starts its root steps, inside the
/// caller's transaction (submits and schedule ticks).
pub(crate) async fn start_run_in_txn(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
    def: WorkflowDef,
    vars: BTreeMap<String, String>,
    now: i64,
    cfg: &crate::EngineConfig,
) -> Result<WorkflowRun, EngineError> {
    let mut run = WorkflowRun {
        id,
        tenant: tenant.to_string(),
        steps: def
            .steps
            .iter()
            .map(|s| (s.id.clone(), StepState::Pending))
            .collect(),
        deadline_at: def.policy.deadline.map(|d| now + d.as_micros() as i64),
        def,
        vars,
        status: RunStatus::Running,
        tasks: BTreeMap::new(),
        failures: BTreeMap::new(),
        retries: 0,
        created_at: now,
        updated_at: now,
        finished_at: None,
        next_event_seq: 1,
        trace: supervisor_telemetry::context::current_traceparent(),
    };
    let name = run.def.name.clone();
    event(
        txn,
        &mut run,
        now,
        None,
        "run_started",
        None,
        format!("run of {name} started"),
    )?;
    if let Some(at) = run.deadline_at {
        records::arm_timer(
            txn,
            at,
            run.id,
            &TimerEntry::waiting(&run.tenant, TimerKind::RunDeadline, 0),
        )?;
    }
    advance(txn, &mut run, now, cfg).await?;
    put_run(txn, &run)?;
    Ok(run)
}

impl Engine {
    /// Validates `def` (naming its first errors) and starts a run of it: its root steps'
    /// tasks are queued in the same transaction. `vars` override the definition's; a
    /// variable the definition does not declare is refused. Refused with
    /// [`EngineError::Overloaded`] while the cluster is past a bound of
    /// [`crate::AdmissionConfig`].
    pub async fn submit_workflow(
        &self,
        tenant: &str,
        def: WorkflowDef,
        vars: BTreeMap<String, String>,
    ) -> Result<WorkflowRun, EngineError> {
        check_definition(&def)?;
        let all_vars = supervisor_workflow::run_vars(&def.vars, vars)?;
        check_run_size(&def, &all_vars)?;
        self.admit().await?;
        let now = self.now_micros();
        let id = TaskId::generate();
        let cfg = &self.inner.cfg;
        let run = self
            .inner
            .db
            .run(|txn| {
                let def = def.clone();
                let vars = all_vars.clone();
                Box::pin(
                    async move { start_run_in_txn(txn, tenant, id, def, vars, now, cfg).await },
                )
            })
            .await?;
        self.inner.ready.notify_one();
        Ok(run)
    }

    /// Reads a run.
    pub async fn get_workflow(&self, tenant: &str, id: TaskId) -> Result<WorkflowRun, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        load_run(&mut txn, tenant, id)
            .await?
            .ok_or(EngineError::RunNotFound { id })
    }

    /// Lists runs newest first.
    pub async fn list_workflows(
        &self,
        tenant: &str,
        q: &WorkflowQuery,
    ) -> Result<WorkflowPage, EngineError> {
        let page_size = q.page_size.clamp(1, 1000);
        let (begin, mut end) = keyspace::workflow_range(tenant);
        if let Some(token) = q.page_token {
            end = keyspace::workflow_chunks(tenant, token).0;
        }
        let mut txn = self.inner.db.begin().await?;
        let mut runs = Vec::new();
        let mut scanned = 0;
        let mut last = None;
        let mut exhausted = false;
        // Reverse order yields a run's chunks last to first; gather them until chunk 0.
        let mut gathering: Option<(TaskId, Vec<Vec<u8>>)> = None;
        'scan: while runs.len() < page_size && scanned < 5_000 {
            let kvs = txn
                .get_range(
                    &begin,
                    &end,
                    RangeOptions::new().snapshot().reverse().limit(64),
                )
                .await?;
            if kvs.is_empty() {
                exhausted = true;
                break;
            }
            let short = kvs.len() < 64;
            for kv in &kvs {
                end = kv.key.clone();
                let Some((id, chunk)) = keyspace::parse_workflow_chunk(&kv.key) else {
                    return Err(EngineError::Corrupt(
                        "a workflow key could not be parsed".into(),
                    ));
                };
                let parts = match &mut gathering {
                    Some((current, parts)) if *current == id => parts,
                    _ => {
                        gathering = Some((id, Vec::new()));
                        match &mut gathering {
                            Some((_, parts)) => parts,
                            None => continue,
                        }
                    }
                };
                parts.push(kv.value.clone());
                if chunk != 0 {
                    continue;
                }
                let Some((id, mut parts)) = gathering.take() else {
                    continue;
                };
                parts.reverse();
                let run: WorkflowRun = decode("workflow run", &parts.concat())?;
                scanned += 1;
                last = Some(id);
                if q.status.is_none_or(|s| run.status == s)
                    && q.name.as_ref().is_none_or(|n| &run.def.name == n)
                {
                    runs.push(run);
                    if runs.len() == page_size {
                        break 'scan;
                    }
                }
            }
            if short {
                exhausted = true;
                break;
            }
        }
        Ok(WorkflowPage {
            runs,
            next_page_token: if exhausted { None } else { last },
        })
    }

    /// Cancels a run: its running steps' tasks are cancelled and pending steps skipped.
    pub async fn cancel_workflow(
        &self,
        tenant: &str,
        id: TaskId,
        reason: &str,
    ) -> Result<WorkflowRun, EngineError> {
        supervisor_model::check_reason(reason)?;
        let now = self.now_micros();
        let why = if reason.trim().is_empty() {
            "cancelled by request".to_string()
        } else {
            format!("cancelled: {}", reason.trim())
        };
        self.inner
            .db
            .run(|txn| {
                let why = why.clone();
                Box::pin(async move {
                    let mut run = load_run(txn, tenant, id)
                        .await?
                        .ok_or(EngineError::RunNotFound { id })?;
                    match run.status {
                        RunStatus::Cancelled => return Ok(run),
                        RunStatus::Running => {}
                        s => {
                            return Err(EngineError::FailedPrecondition(format!(
                                "workflow run {id} already {}; only running runs can be cancelled",
                                run_status_name(s)
                            )));
                        }
                    }
                    stop(txn, &mut run, RunStatus::Cancelled, now, &why).await?;
                    put_run(txn, &run)?;
                    Ok::<_, EngineError>(run)
                })
            })
            .await
    }

    /// Re-runs a failed or cancelled run from its failed, cancelled and skipped steps,
    /// keeping the outputs of the steps that succeeded.
    pub async fn retry_workflow(
        &self,
        tenant: &str,
        id: TaskId,
    ) -> Result<WorkflowRun, EngineError> {
        let now = self.now_micros();
        let cfg = &self.inner.cfg;
        let run = self
            .inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let mut run = load_run(txn, tenant, id)
                        .await?
                        .ok_or(EngineError::RunNotFound { id })?;
                    if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
                        return Err(EngineError::FailedPrecondition(format!(
                            "workflow run {id} {}; only failed or cancelled runs can be retried",
                            match run.status {
                                RunStatus::Running => "is still running",
                                _ => "has succeeded",
                            }
                        )));
                    }
                    run.steps = retry_plan(&run.steps);
                    run.failures.clear();
                    run.status = RunStatus::Running;
                    if let Some(ended) = run.finished_at.take() {
                        txn.clear(&keyspace::expiry(
                            keyspace::Expiring::Run,
                            &run.tenant,
                            ended,
                            run.id,
                        ));
                    }
                    run.retries += 1;
                    run.deadline_at = run.def.policy.deadline.map(|d| now + d.as_micros() as i64);
                    if let Some(at) = run.deadline_at {
                        records::arm_timer(
                            txn,
                            at,
                            run.id,
                            &TimerEntry::waiting(&run.tenant, TimerKind::RunDeadline, 0),
                        )?;
                    }
                    let retries = run.retries;
                    event(
                        txn,
                        &mut run,
                        now,
                        None,
                        "run_retried",
                        None,
                        format!(
                            "run retried (retry {retries}); succeeded steps keep their outputs"
                        ),
                    )?;
                    advance(txn, &mut run, now, cfg).await?;
                    put_run(txn, &run)?;
                    Ok::<_, EngineError>(run)
                })
            })
            .await?;
        self.inner.ready.notify_one();
        Ok(run)
    }

    /// Events of a run after `after_seq` (at most `limit`), the run, and a watch on its
    /// next change, all from one snapshot. Fails with `RunNotFound` if there is no such
    /// run.
    pub async fn read_workflow_events(
        &self,
        tenant: &str,
        id: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<(Vec<WorkflowEvent>, WorkflowRun, Watch), EngineError> {
        event_log::read(&self.inner.db, &RunLog::new(tenant, id), after_seq, limit).await
    }

    /// A live stream of a run's events after `after_seq`, ending when the run has ended
    /// and every event was sent. Fails with `RunNotFound` first if there is no such run.
    pub async fn watch_workflow(
        &self,
        tenant: &str,
        id: TaskId,
        after_seq: u64,
    ) -> Result<impl Stream<Item = Result<WorkflowEvent, EngineError>> + Send + 'static, EngineError>
    {
        event_log::follow(self.inner.db.clone(), RunLog::new(tenant, id), after_seq).await
    }
}

/// A run's event log: `("wfev", tenant, id, seq)`, ended while the run is not running (a
/// retry starts it again).
struct RunLog {
    tenant: String,
    id: TaskId,
}

impl RunLog {
    fn new(tenant: &str, id: TaskId) -> Self {
        RunLog {
            tenant: tenant.to_string(),
            id,
        }
    }
}

impl EventLog for RunLog {
    type Owner = WorkflowRun;
    type Event = WorkflowEvent;
    const EVENT: &'static str = "workflow event";

    async fn load_owner(&self, txn: &mut Transaction<'_>) -> Result<WorkflowRun, EngineError> {
        load_run(txn, &self.tenant, self.id)
            .await?
            .ok_or(EngineError::RunNotFound { id: self.id })
    }

    fn owner_key(&self) -> Vec<u8> {
        run_key(&self.tenant, self.id)
    }

    fn events_after(&self, after_seq: u64) -> (Vec<u8>, Vec<u8>) {
        keyspace::workflow_events_after(&self.tenant, self.id, after_seq)
    }

    fn seq(event: &WorkflowEvent) -> u64 {
        event.seq
    }

    fn ended(run: &WorkflowRun) -> bool {
        run.status != RunStatus::Running
    }

    fn next_seq(run: &WorkflowRun) -> u64 {
        run.next_event_seq
    }
}

/// The stable name of a run status.
pub fn run_status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}
