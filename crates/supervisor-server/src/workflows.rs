//! `supervisor.v1.WorkflowService`: validate, submit, follow, cancel and retry workflow
//! runs, and manage their schedules. A definition may arrive as YAML, JSON or a structured
//! message; the message is turned into the same JSON the files use, so there is one parser
//! and one set of field errors.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use supervisor_engine::workflow::{Missed, RunStatus, ScheduleDef, StepState, WorkflowDef};
use supervisor_engine::{Engine, ScheduleRecord, WorkflowEvent, WorkflowQuery, WorkflowRun};
use supervisor_node::Node;
use supervisor_proto::convert::{EnumName, timestamp_from_micros};
use supervisor_proto::v1;
use supervisor_proto::v1::workflow_service_server::WorkflowService;
use tonic::{Request, Response, Status};

use crate::convert::{check_providers, id_in, invalid, page_size_in, paging_in, status_from};

/// Parses a workflow run id field.
fn run_id_in(field: &str, raw: &str) -> Result<supervisor_model::TaskId, Status> {
    id_in(field, raw, "workflow run id")
}
use crate::tenant;

/// `supervisor.v1.WorkflowService` over a running node.
#[derive(Clone)]
pub struct WorkflowApi {
    engine: Engine,
    node: Arc<Node>,
}

impl WorkflowApi {
    /// A workflow service over `node`'s engine; the providers `node` knows (its own and
    /// those of other nodes) are the names a step may prefer or exclude.
    pub fn new(node: Arc<Node>) -> Self {
        WorkflowApi {
            engine: node.engine().clone(),
            node,
        }
    }

    /// What is wrong with the provider choices of `def`'s steps, by step: a name no
    /// node of the cluster runs, or exclusions that leave no provider (the step could
    /// only fail when it runs).
    fn provider_issues(&self, def: &WorkflowDef) -> Vec<(String, String)> {
        let uses_names = def.steps.iter().any(|s| {
            !s.task.preferred_providers.is_empty() || !s.task.excluded_providers.is_empty()
        });
        if !uses_names {
            return Vec::new();
        }
        let known = self.node.known_provider_names();
        def.steps
            .iter()
            .filter_map(|s| {
                check_providers(
                    &s.task.preferred_providers,
                    &s.task.excluded_providers,
                    &known,
                )
                .err()
                .map(|(field, message)| (s.id.clone(), format!("{field}: {message}")))
            })
            .collect()
    }

    /// Refuses `def` when a step's provider choices cannot be satisfied.
    fn check_providers(&self, def: &WorkflowDef) -> Result<(), Status> {
        let issues = self.provider_issues(def);
        if issues.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = issues
            .iter()
            .map(|(step, message)| format!("[invalid_task] step {step}: {message}"))
            .collect();
        Err(invalid("definition", lines.join("; ")))
    }
}

fn ms(n: u64) -> Value {
    Value::String(format!("{n}ms"))
}

/// The structured message as the definition file's JSON.
fn definition_json(d: v1::WorkflowDefinition) -> Value {
    let mut root = Map::new();
    root.insert("name".into(), json!(d.name));
    if !d.description.is_empty() {
        root.insert("description".into(), json!(d.description));
    }
    if !d.vars.is_empty() {
        root.insert(
            "vars".into(),
            json!(d.vars.into_iter().collect::<BTreeMap<_, _>>()),
        );
    }
    if let Some(p) = d.policy {
        let mut policy = Map::new();
        if !p.on_failure.is_empty() {
            policy.insert("on_failure".into(), json!(p.on_failure));
        }
        if p.max_concurrency > 0 {
            policy.insert("max_concurrency".into(), json!(p.max_concurrency));
        }
        if p.deadline_ms > 0 {
            policy.insert("deadline".into(), ms(p.deadline_ms));
        }
        root.insert("policy".into(), Value::Object(policy));
    }
    let steps: Vec<Value> = d
        .steps
        .into_iter()
        .map(|s| {
            let mut step = Map::new();
            step.insert("id".into(), json!(s.id));
            if !s.needs.is_empty() {
                let needs: Vec<Value> = s
                    .needs
                    .into_iter()
                    .map(|n| {
                        if n.when.is_empty() {
                            json!(n.step)
                        } else {
                            json!({"step": n.step, "when": n.when})
                        }
                    })
                    .collect();
                step.insert("needs".into(), Value::Array(needs));
            }
            let t = s.task.unwrap_or_default();
            let mut task = Map::new();
            task.insert("type".into(), json!(v1::TaskType::name_of(t.r#type)));
            task.insert("prompt".into(), json!(t.prompt));
            if !t.specialty.is_empty() {
                task.insert("specialty".into(), json!(t.specialty));
            }
            if t.priority != 0 {
                task.insert("priority".into(), json!(v1::Priority::name_of(t.priority)));
            }
            if !t.labels.is_empty() {
                task.insert("labels".into(), json!(t.labels));
            }
            if !t.context.is_empty() {
                task.insert(
                    "context".into(),
                    json!(t.context.into_iter().collect::<BTreeMap<_, _>>()),
                );
            }
            if t.max_attempts > 0 {
                task.insert("max_attempts".into(), json!(t.max_attempts));
            }
            if t.timeout_ms > 0 {
                task.insert("timeout".into(), ms(t.timeout_ms));
            }
            if !t.preferred_providers.is_empty() {
                task.insert("preferred_providers".into(), json!(t.preferred_providers));
            }
            if !t.excluded_providers.is_empty() {
                task.insert("excluded_providers".into(), json!(t.excluded_providers));
            }
            if !t.routing_strategy.is_empty() {
                task.insert("strategy".into(), json!(t.routing_strategy));
            }
            step.insert("task".into(), Value::Object(task));
            Value::Object(step)
        })
        .collect();
    root.insert("steps".into(), Value::Array(steps));
    Value::Object(root)
}

/// The definition a request carries.
fn definition_in(source: Option<v1::WorkflowSource>) -> Result<WorkflowDef, Status> {
    use v1::workflow_source::Source;
    let source = source.and_then(|s| s.source).ok_or_else(|| {
        invalid(
            "source",
            "a workflow is required: give definition, yaml or json",
        )
    })?;
    let parsed = match source {
        Source::Yaml(text) => WorkflowDef::from_yaml(&text),
        Source::Json(text) => WorkflowDef::from_json(&text),
        Source::Definition(d) => WorkflowDef::from_json(&definition_json(d).to_string()),
    };
    parsed.map_err(|e| invalid("source", e))
}

fn run_status_out(s: RunStatus) -> v1::RunStatus {
    match s {
        RunStatus::Running => v1::RunStatus::Running,
        RunStatus::Succeeded => v1::RunStatus::Succeeded,
        RunStatus::Failed => v1::RunStatus::Failed,
        RunStatus::Cancelled => v1::RunStatus::Cancelled,
    }
}

fn step_state_name(s: &StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Running(_) => "running",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Cancelled => "cancelled",
        StepState::Skipped => "skipped",
    }
}

/// A run as its message, fitted under the response limit (`fit::run`); `summaries`
/// holds output summaries of succeeded steps.
fn run_out(run: WorkflowRun, summaries: &BTreeMap<String, String>) -> v1::WorkflowRun {
    let mut message = run_message(run, summaries);
    crate::fit::run(&mut message, crate::fit::ITEM_BUDGET);
    message
}

fn run_message(run: WorkflowRun, summaries: &BTreeMap<String, String>) -> v1::WorkflowRun {
    let steps = run
        .def
        .steps
        .iter()
        .map(|s| v1::StepRun {
            id: s.id.clone(),
            state: run
                .steps
                .get(&s.id)
                .map(step_state_name)
                .unwrap_or("pending")
                .into(),
            task_id: run
                .tasks
                .get(&s.id)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            output_summary: summaries.get(&s.id).cloned().unwrap_or_default(),
            failure: run.failures.get(&s.id).cloned().unwrap_or_default(),
        })
        .collect();
    v1::WorkflowRun {
        id: run.id.to_string(),
        name: run.def.name.clone(),
        status: run_status_out(run.status) as i32,
        vars: run.vars.clone().into_iter().collect(),
        steps,
        retries: run.retries,
        definition_json: run.def.to_json().unwrap_or_default(),
        created_at: Some(timestamp_from_micros(run.created_at)),
        updated_at: Some(timestamp_from_micros(run.updated_at)),
        finished_at: run.finished_at.map(timestamp_from_micros),
        deadline_at: run.deadline_at.map(timestamp_from_micros),
        truncated_fields: Vec::new(),
    }
}

fn event_out(e: WorkflowEvent, run: &str) -> v1::WorkflowEvent {
    v1::WorkflowEvent {
        run_id: run.to_string(),
        seq: e.seq,
        kind: e.kind,
        step: e.step.unwrap_or_default(),
        task_id: e.task_id.map(|t| t.to_string()).unwrap_or_default(),
        message: e.message,
        at: Some(timestamp_from_micros(e.at)),
    }
}

fn missed_name(m: Missed) -> &'static str {
    match m {
        Missed::Skip => "skip",
        Missed::CatchUpOne => "catch_up_one",
    }
}

/// A schedule as its message, fitted under the response limit (`fit::schedule`).
fn schedule_out(s: ScheduleRecord) -> v1::Schedule {
    let mut schedule = v1::Schedule {
        name: s.name,
        cron: s.spec.cron,
        timezone: s.spec.timezone,
        missed: missed_name(s.spec.missed).into(),
        paused: s.paused,
        workflow_name: s.def.name,
        next_fire_at: s.next_fire_at.map(timestamp_from_micros),
        last_fired_at: s.last_fired_at.map(timestamp_from_micros),
        last_run_id: s.last_run.map(|r| r.to_string()).unwrap_or_default(),
        runs_started: s.runs_started,
        truncated_fields: Vec::new(),
    };
    crate::fit::schedule(&mut schedule, crate::fit::ITEM_BUDGET);
    schedule
}

/// The schedule a `CreateSchedule` request asks for: each of its fields when given,
/// otherwise the one of the definition's `schedule:` block, otherwise the default (UTC,
/// skip). Without a cron in either, the request is refused.
fn schedule_in(
    cron: &str,
    timezone: &str,
    missed: &str,
    block: Option<&ScheduleDef>,
) -> Result<ScheduleDef, Status> {
    let cron = match (cron.trim(), block) {
        ("", Some(block)) => block.cron.clone(),
        ("", None) => {
            return Err(invalid(
                "cron",
                "a cron expression is required: give one (e.g. \"0 3 * * *\"), or a `schedule:` block in the definition",
            ));
        }
        (given, _) => given.to_string(),
    };
    let timezone = match (timezone.trim(), block) {
        ("", Some(block)) => block.timezone.clone(),
        ("", None) => "UTC".to_string(),
        (given, _) => given.to_string(),
    };
    let missed = match (missed, block) {
        ("", Some(block)) => block.missed,
        ("" | "skip", _) => Missed::Skip,
        ("catch_up_one", _) => Missed::CatchUpOne,
        (other, _) => {
            return Err(invalid(
                "missed",
                format!(
                    "unknown policy {}; expected skip or catch_up_one",
                    supervisor_model::quote(other)
                ),
            ));
        }
    };
    Ok(ScheduleDef {
        cron,
        timezone,
        missed,
    })
}

/// Most characters of a step's output shown in a run.
const SUMMARY_CHARS: usize = 200;

impl WorkflowApi {
    /// Pauses (`true`) or resumes a schedule.
    async fn set_paused(
        &self,
        req: Request<v1::ScheduleRef>,
        paused: bool,
    ) -> Result<Response<v1::Schedule>, Status> {
        let tenant = &tenant(&req);
        let s = self
            .engine
            .set_schedule_paused(tenant, &req.get_ref().name, paused)
            .await
            .map_err(status_from)?;
        Ok(Response::new(schedule_out(s)))
    }

    async fn summaries(
        &self,
        tenant: &str,
        run: &WorkflowRun,
    ) -> Result<BTreeMap<String, String>, Status> {
        let mut out = BTreeMap::new();
        for (step, state) in &run.steps {
            if *state != StepState::Succeeded {
                continue;
            }
            let Some(task_id) = run.tasks.get(step) else {
                continue;
            };
            let task = self
                .engine
                .get(tenant, *task_id)
                .await
                .map_err(status_from)?;
            let output = task.result.map(|r| r.output).unwrap_or_default();
            out.insert(step.clone(), output.chars().take(SUMMARY_CHARS).collect());
        }
        Ok(out)
    }

    async fn full(
        &self,
        tenant: &str,
        run: WorkflowRun,
    ) -> Result<Response<v1::WorkflowRun>, Status> {
        let summaries = self.summaries(tenant, &run).await?;
        Ok(Response::new(run_out(run, &summaries)))
    }
}

type WorkflowEventStream = Pin<Box<dyn Stream<Item = Result<v1::WorkflowEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn validate_workflow(
        &self,
        req: Request<v1::ValidateWorkflowRequest>,
    ) -> Result<Response<v1::ValidateWorkflowResponse>, Status> {
        let def = match definition_in(req.into_inner().source) {
            Ok(def) => def,
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                return Ok(Response::new(v1::ValidateWorkflowResponse {
                    valid: false,
                    errors: vec![v1::ValidationIssue {
                        code: "parse".into(),
                        step: String::new(),
                        message: status.message().to_string(),
                    }],
                    warnings: vec![],
                }));
            }
            Err(status) => return Err(status),
        };
        let report = supervisor_engine::workflow::validate(&def);
        let issue = |i: &supervisor_engine::workflow::Issue| v1::ValidationIssue {
            code: i.code.to_string(),
            step: i.step.clone().unwrap_or_default(),
            message: i.message.clone(),
        };
        let mut errors: Vec<v1::ValidationIssue> = report.errors.iter().map(issue).collect();
        errors.extend(
            self.provider_issues(&def)
                .into_iter()
                .map(|(step, message)| v1::ValidationIssue {
                    code: supervisor_engine::workflow::codes::INVALID_TASK.into(),
                    step,
                    message,
                }),
        );
        Ok(Response::new(v1::ValidateWorkflowResponse {
            valid: errors.is_empty(),
            errors,
            warnings: report.warnings.iter().map(issue).collect(),
        }))
    }

    async fn submit_workflow(
        &self,
        req: Request<v1::SubmitWorkflowRequest>,
    ) -> Result<Response<v1::WorkflowRun>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let def = definition_in(r.source)?;
        self.check_providers(&def)?;
        let run = self
            .engine
            .submit_workflow(tenant, def, r.vars.into_iter().collect())
            .await
            .map_err(status_from)?;
        Ok(Response::new(run_out(run, &BTreeMap::new())))
    }

    async fn get_workflow(
        &self,
        req: Request<v1::GetWorkflowRequest>,
    ) -> Result<Response<v1::WorkflowRun>, Status> {
        let tenant = &tenant(&req);
        let id = run_id_in("id", &req.get_ref().id)?;
        let run = self
            .engine
            .get_workflow(tenant, id)
            .await
            .map_err(status_from)?;
        self.full(tenant, run).await
    }

    async fn list_workflows(
        &self,
        req: Request<v1::ListWorkflowsRequest>,
    ) -> Result<Response<v1::ListWorkflowsResponse>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let (page_size, page_token) = paging_in(r.page_size, &r.page_token, "ListWorkflows")?;
        let status = match v1::RunStatus::try_from(r.status) {
            Ok(v1::RunStatus::Unspecified) => None,
            Ok(v1::RunStatus::Running) => Some(RunStatus::Running),
            Ok(v1::RunStatus::Succeeded) => Some(RunStatus::Succeeded),
            Ok(v1::RunStatus::Failed) => Some(RunStatus::Failed),
            Ok(v1::RunStatus::Cancelled) => Some(RunStatus::Cancelled),
            Err(_) => {
                return Err(invalid(
                    "status",
                    format!(
                        "unknown run status {}; expected running, succeeded, failed or cancelled",
                        r.status
                    ),
                ));
            }
        };
        let page = self
            .engine
            .list_workflows(
                tenant,
                &WorkflowQuery {
                    status,
                    name: Some(r.name).filter(|n| !n.is_empty()),
                    page_size,
                    page_token,
                },
            )
            .await
            .map_err(status_from)?;
        let mut runs: Vec<v1::WorkflowRun> = page
            .runs
            .into_iter()
            .map(|r| run_out(r, &BTreeMap::new()))
            .collect();
        let next_page_token = if crate::fit::page(&mut runs) {
            // Cut by size: continue after the last run this page holds.
            runs.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            page.next_page_token
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        Ok(Response::new(v1::ListWorkflowsResponse {
            runs,
            next_page_token,
        }))
    }

    async fn cancel_workflow(
        &self,
        req: Request<v1::CancelWorkflowRequest>,
    ) -> Result<Response<v1::WorkflowRun>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let id = run_id_in("id", &r.id)?;
        let run = self
            .engine
            .cancel_workflow(tenant, id, &r.reason)
            .await
            .map_err(status_from)?;
        self.full(tenant, run).await
    }

    async fn retry_workflow(
        &self,
        req: Request<v1::RetryWorkflowRequest>,
    ) -> Result<Response<v1::WorkflowRun>, Status> {
        let tenant = &tenant(&req);
        let id = run_id_in("id", &req.get_ref().id)?;
        let run = self
            .engine
            .retry_workflow(tenant, id)
            .await
            .map_err(status_from)?;
        self.full(tenant, run).await
    }

    type WatchWorkflowStream = WorkflowEventStream;

    async fn watch_workflow(
        &self,
        req: Request<v1::WatchWorkflowRequest>,
    ) -> Result<Response<Self::WatchWorkflowStream>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let id = run_id_in("id", &r.id)?;
        let events = self
            .engine
            .watch_workflow(tenant, id, r.after_seq)
            .await
            .map_err(status_from)?;
        let run = id.to_string();
        Ok(Response::new(Box::pin(events.map(move |e| {
            e.map(|e| event_out(e, &run)).map_err(status_from)
        }))))
    }

    async fn create_schedule(
        &self,
        req: Request<v1::CreateScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let def = definition_in(r.source)?;
        self.check_providers(&def)?;
        let spec = schedule_in(&r.cron, &r.timezone, &r.missed, def.schedule.as_ref())?;
        let s = self
            .engine
            .create_schedule(tenant, &r.name, spec, def, r.vars.into_iter().collect())
            .await
            .map_err(status_from)?;
        Ok(Response::new(schedule_out(s)))
    }

    async fn list_schedules(
        &self,
        req: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        page_size_in(r.page_size)?;
        let page_size = match r.page_size {
            0 => crate::DEFAULT_PAGE_SIZE,
            n => n,
        } as usize;
        // A token is the name of the last schedule of the previous page.
        let after = Some(r.page_token.as_str()).filter(|t| !t.is_empty());
        if after.is_some_and(|t| {
            t.len() > supervisor_engine::MAX_SCHEDULE_NAME_BYTES
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        }) {
            return Err(invalid(
                "page_token",
                "not a token from a previous ListSchedules response",
            ));
        }
        let page = self
            .engine
            .list_schedules(tenant, after, page_size)
            .await
            .map_err(status_from)?;
        let mut schedules: Vec<v1::Schedule> =
            page.schedules.into_iter().map(schedule_out).collect();
        let cut = crate::fit::page(&mut schedules);
        let next_page_token = if cut || page.more {
            schedules.last().map(|s| s.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListSchedulesResponse {
            schedules,
            next_page_token,
        }))
    }

    async fn pause_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.set_paused(req, true).await
    }

    async fn resume_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.set_paused(req, false).await
    }

    async fn trigger_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::WorkflowRun>, Status> {
        let tenant = &tenant(&req);
        let run = self
            .engine
            .trigger_schedule(tenant, &req.get_ref().name)
            .await
            .map_err(status_from)?;
        Ok(Response::new(run_out(run, &BTreeMap::new())))
    }

    async fn delete_schedule(
        &self,
        req: Request<v1::ScheduleRef>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let tenant = &tenant(&req);
        let s = self
            .engine
            .delete_schedule(tenant, &req.get_ref().name)
            .await
            .map_err(status_from)?;
        Ok(Response::new(schedule_out(s)))
    }
}
