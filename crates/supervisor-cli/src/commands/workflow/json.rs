//! Workflow runs, their events and validation reports as `--output json` prints them. A
//! run's definition is its JSON object.

use std::collections::BTreeMap;

use serde::Serialize;
use supervisor_proto::v1::{
    StepRun, ValidateWorkflowResponse, ValidationIssue, WorkflowEvent, WorkflowRun,
};

use super::text::run_status_name;
use crate::commands::output::{non_empty, optional_rfc3339};

/// A workflow run and its steps.
#[derive(Debug, Serialize)]
pub struct WorkflowRunJson {
    id: String,
    name: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    status: String,
    vars: BTreeMap<String, String>,
    steps: Vec<StepRunJson>,
    retries: u32,
    /// The definition it runs, as a JSON object (its text when it is not JSON).
    definition: Option<serde_json::Value>,
    created_at: Option<String>,
    updated_at: Option<String>,
    finished_at: Option<String>,
    deadline_at: Option<String>,
}

/// One step of a workflow run.
#[derive(Debug, Serialize)]
pub struct StepRunJson {
    id: String,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled` or `skipped`.
    state: String,
    task_id: Option<String>,
    output_summary: Option<String>,
    failure: Option<String>,
}

/// One event of a workflow run's log.
#[derive(Debug, Serialize)]
pub struct WorkflowEventJson {
    run_id: String,
    seq: u64,
    kind: String,
    step: Option<String>,
    task_id: Option<String>,
    message: String,
    at: Option<String>,
}

/// The verdict on a workflow definition, with every error and warning.
#[derive(Debug, Serialize)]
pub struct ValidationJson {
    valid: bool,
    errors: Vec<IssueJson>,
    warnings: Vec<IssueJson>,
}

/// One problem found in a workflow definition.
#[derive(Debug, Serialize)]
pub struct IssueJson {
    code: String,
    step: Option<String>,
    message: String,
}

impl From<&WorkflowRun> for WorkflowRunJson {
    fn from(run: &WorkflowRun) -> Self {
        let definition = (!run.definition_json.is_empty()).then(|| {
            serde_json::from_str(&run.definition_json)
                .unwrap_or_else(|_| serde_json::Value::String(run.definition_json.clone()))
        });
        Self {
            id: run.id.clone(),
            name: run.name.clone(),
            status: run_status_name(run.status).into_owned(),
            vars: run
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            steps: run.steps.iter().map(StepRunJson::from).collect(),
            retries: run.retries,
            definition,
            created_at: optional_rfc3339(run.created_at.as_ref()),
            updated_at: optional_rfc3339(run.updated_at.as_ref()),
            finished_at: optional_rfc3339(run.finished_at.as_ref()),
            deadline_at: optional_rfc3339(run.deadline_at.as_ref()),
        }
    }
}

impl From<&StepRun> for StepRunJson {
    fn from(step: &StepRun) -> Self {
        Self {
            id: step.id.clone(),
            state: step.state.clone(),
            task_id: non_empty(&step.task_id),
            output_summary: non_empty(&step.output_summary),
            failure: non_empty(&step.failure),
        }
    }
}

impl From<&WorkflowEvent> for WorkflowEventJson {
    fn from(event: &WorkflowEvent) -> Self {
        Self {
            run_id: event.run_id.clone(),
            seq: event.seq,
            kind: event.kind.clone(),
            step: non_empty(&event.step),
            task_id: non_empty(&event.task_id),
            message: event.message.clone(),
            at: optional_rfc3339(event.at.as_ref()),
        }
    }
}

impl From<&ValidateWorkflowResponse> for ValidationJson {
    fn from(report: &ValidateWorkflowResponse) -> Self {
        Self {
            valid: report.valid,
            errors: report.errors.iter().map(IssueJson::from).collect(),
            warnings: report.warnings.iter().map(IssueJson::from).collect(),
        }
    }
}

impl From<&ValidationIssue> for IssueJson {
    fn from(issue: &ValidationIssue) -> Self {
        Self {
            code: issue.code.clone(),
            step: non_empty(&issue.step),
            message: issue.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use supervisor_proto::convert::timestamp_from_micros;

    use super::*;

    #[test]
    fn workflow_run_json_shape() {
        let run = WorkflowRun {
            id: "r1".into(),
            name: "fix".into(),
            status: 3,
            vars: [("repo".to_owned(), "/src".to_owned())].into(),
            steps: vec![
                StepRun {
                    id: "analyse".into(),
                    state: "succeeded".into(),
                    task_id: "t1".into(),
                    output_summary: "found it".into(),
                    failure: String::new(),
                },
                StepRun {
                    id: "fix".into(),
                    state: "pending".into(),
                    ..Default::default()
                },
            ],
            retries: 0,
            definition_json: r#"{"name":"fix","steps":[]}"#.into(),
            created_at: Some(timestamp_from_micros(0)),
            ..Default::default()
        };
        let value = serde_json::to_value(WorkflowRunJson::from(&run)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "id": "r1",
                "name": "fix",
                "status": "failed",
                "vars": {"repo": "/src"},
                "steps": [
                    {
                        "id": "analyse",
                        "state": "succeeded",
                        "task_id": "t1",
                        "output_summary": "found it",
                        "failure": null,
                    },
                    {
                        "id": "fix",
                        "state": "pending",
                        "task_id": null,
                        "output_summary": null,
                        "failure": null,
                    },
                ],
                "retries": 0,
                "definition": {"name": "fix", "steps": []},
                "created_at": "1970-01-01T00:00:00.000000Z",
                "updated_at": null,
                "finished_at": null,
                "deadline_at": null,
            })
        );
        let odd = WorkflowRun {
            definition_json: "not json".into(),
            status: 1,
            ..Default::default()
        };
        let value = serde_json::to_value(WorkflowRunJson::from(&odd)).expect("serializes");
        assert_eq!(value["definition"], "not json");
        assert_eq!(value["status"], "running");
        let value =
            serde_json::to_value(WorkflowRunJson::from(&WorkflowRun::default())).expect("json");
        assert_eq!(value["definition"], serde_json::Value::Null);
    }

    #[test]
    fn validation_json_shape() {
        let report = ValidateWorkflowResponse {
            valid: false,
            errors: vec![ValidationIssue {
                code: "cycle".into(),
                step: "fix".into(),
                message: "fix needs itself".into(),
            }],
            warnings: vec![ValidationIssue {
                code: "unused_var".into(),
                step: String::new(),
                message: "x is never used".into(),
            }],
        };
        let value = serde_json::to_value(ValidationJson::from(&report)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "valid": false,
                "errors": [{"code": "cycle", "step": "fix", "message": "fix needs itself"}],
                "warnings": [{"code": "unused_var", "step": null, "message": "x is never used"}],
            })
        );
    }
}
