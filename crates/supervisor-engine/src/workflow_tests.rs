//! Workflow runs in the engine: a simulated runner leases whatever is ready and finishes
//! each task by a rule, until the run ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use supervisor_model::{TaskResult, TaskStatus, Usage};
use supervisor_store::embedded::{EmbeddedOptions, open_db};
use supervisor_workflow::{RunStatus, StepState, WorkflowDef};

use crate::*;

struct Fixture {
    engine: Engine,
    clock: ManualClock,
    node: NodeIdentity,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, clock, node) = open(&dir).await;
    Fixture {
        engine,
        clock,
        node,
        dir,
    }
}

async fn open(dir: &tempfile::TempDir) -> (Engine, ManualClock, NodeIdentity) {
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("store");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let cfg = EngineConfig {
        retry_initial_backoff: Duration::from_millis(10),
        ..EngineConfig::default()
    };
    let engine = Engine::new(db, cfg, Arc::new(clock.clone()));
    let node = engine
        .register_node(
            "wf-node",
            &crate::NodeAnnouncement {
                address: "127.0.0.1:1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("register");
    (engine, clock, node)
}

/// How the simulated runner ends a task: `Ok(output)` or `Err(permanent error)`.
type Rule = dyn Fn(&supervisor_model::Task) -> Result<String, String>;

/// Ends a leased task as the simulated runner would: `Ok(output)` succeeds, `Err(error)`
/// fails permanently.
async fn finish_as(f: &Fixture, task_ref: &TaskRef, result: Result<String, String>) {
    let outcome = match result {
        Ok(output) => Outcome::Succeeded(TaskResult {
            output,
            usage: Usage::default(),
            cost_micros: 0,
            provider: "sim".into(),
            model: "sim".into(),
            artifacts: vec![],
        }),
        Err(error) => Outcome::Failed {
            error,
            kind: "bad_request".into(),
            retryable: false,
            retry_after: None,
        },
    };
    f.engine
        .finish(Finish {
            task_ref: task_ref.clone(),
            provider: "sim".into(),
            model: "sim".into(),
            usage: Usage::default(),
            cost_micros: 0,
            trailing: vec![],
            outcome,
        })
        .await
        .expect("finish");
}

/// Leases and finishes tasks until nothing is ready; returns the tasks it ran.
async fn run_ready(f: &Fixture, rule: &Rule) -> Vec<supervisor_model::Task> {
    let mut ran = Vec::new();
    loop {
        let batch = f.engine.lease(&f.node, 100).await.expect("lease");
        if batch.tasks.is_empty() {
            return ran;
        }
        for leased in batch.tasks {
            finish_as(f, &leased.task_ref, rule(&leased.task)).await;
            ran.push(leased.task);
        }
    }
}

fn def(yaml: &str) -> WorkflowDef {
    WorkflowDef::from_yaml(yaml).expect("definition parses")
}

fn succeed_all(t: &supervisor_model::Task) -> Result<String, String> {
    Ok(format!(
        "output of {}",
        t.workflow.as_ref().map(|w| w.step.as_str()).unwrap_or("?")
    ))
}

fn step_of(t: &supervisor_model::Task) -> &str {
    t.workflow.as_ref().map(|w| w.step.as_str()).unwrap_or("")
}

const DIAMOND: &str = r#"
name: diamond
vars: { repo: /src/app }
steps:
  - id: analyse
    task: { type: code_analysis, prompt: "Analyse {{ vars.repo }}" }
  - id: fix
    needs: [analyse]
    task: { type: bug_fix, prompt: "Fix using: {{ steps.analyse.output }}" }
  - id: tests
    needs: [analyse]
    task: { type: testing, prompt: "Test using: {{ steps.analyse.output }}" }
  - id: review
    needs: [fix, tests]
    task: { type: pr_review, prompt: "Review {{ steps.fix.output }} and {{ steps.tests.output }}" }
"#;

#[tokio::test]
async fn a_diamond_runs_in_order_and_passes_outputs_into_prompts() {
    let f = fixture().await;
    let run = f
        .engine
        .submit_workflow("default", def(DIAMOND), BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert!(matches!(run.steps["analyse"], StepState::Running(_)));
    assert_eq!(run.steps["fix"], StepState::Pending);
    let ran = run_ready(&f, &succeed_all).await;
    let order: Vec<&str> = ran.iter().map(step_of).collect();
    assert_eq!(order[0], "analyse");
    assert_eq!(order[3], "review");
    assert_eq!(ran[0].prompt, "Analyse /src/app");
    let review = ran.iter().find(|t| step_of(t) == "review").unwrap();
    assert_eq!(review.prompt, "Review output of fix and output of tests");
    let fix = ran.iter().find(|t| step_of(t) == "fix").unwrap();
    assert_eq!(fix.prompt, "Fix using: output of analyse");
    let done = f.engine.get_workflow("default", run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert!(done.steps.values().all(|s| *s == StepState::Succeeded));
    assert_eq!(done.tasks.len(), 4, "every step ran exactly once");
    let (events, _, _) = f
        .engine
        .read_workflow_events("default", run.id, 0, 100)
        .await
        .unwrap();
    assert_eq!(events.first().unwrap().kind, "run_started");
    assert_eq!(events.last().unwrap().kind, "run_succeeded");
}

#[tokio::test]
async fn an_on_failure_branch_runs_and_the_handled_failure_does_not_fail_the_run() {
    let f = fixture().await;
    let yaml = r#"
name: handled
steps:
  - id: deploy
    task: { type: deployment, prompt: "deploy" }
  - id: announce
    needs: [deploy]
    task: { type: documentation, prompt: "announce" }
  - id: rollback
    needs: [{ step: deploy, when: on_failure }]
    task: { type: deployment, prompt: "roll back" }
"#;
    let run = f
        .engine
        .submit_workflow("default", def(yaml), BTreeMap::new())
        .await
        .unwrap();
    let ran = run_ready(&f, &|t| {
        if step_of(t) == "deploy" {
            Err("boom".into())
        } else {
            succeed_all(t)
        }
    })
    .await;
    let steps: Vec<&str> = ran.iter().map(step_of).collect();
    assert_eq!(steps, vec!["deploy", "rollback"]);
    let done = f.engine.get_workflow("default", run.id).await.unwrap();
    assert_eq!(done.steps["announce"], StepState::Skipped);
    assert_eq!(done.steps["deploy"], StepState::Failed);
    assert_eq!(done.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn prompts_read_the_status_of_earlier_steps() {
    let f = fixture().await;
    let d = def(r#"
name: status
steps:
  - id: fix
    task: { type: bug_fix, prompt: "fix it" }
  - id: review
    needs: [{ step: fix, when: always }]
    task: { type: pr_review, prompt: "Fix attempt ({{ steps.fix.status }}): {{ steps.fix.output }}" }
"#);
    for (rule, expected) in [
        (
            Box::new(succeed_all) as Box<Rule>,
            "Fix attempt (succeeded): output of fix",
        ),
        (
            Box::new(|t: &supervisor_model::Task| match step_of(t) {
                "fix" => Err("no luck".to_string()),
                _ => Ok(String::new()),
            }),
            "Fix attempt (failed): ",
        ),
    ] {
        f.engine
            .submit_workflow("default", d.clone(), BTreeMap::new())
            .await
            .expect("submit");
        let ran = run_ready(&f, rule.as_ref()).await;
        let review = ran
            .iter()
            .find(|t| step_of(t) == "review")
            .expect("review ran");
        assert_eq!(review.prompt, expected);
    }
}

#[tokio::test]
async fn an_expression_condition_decides_a_branch() {
    let yaml = r#"
name: review-loop
steps:
  - id: review
    task: { type: pr_review, prompt: "review" }
  - id: refactor
    needs: [{ step: review, when: 'steps.review.output contains "REJECT"' }]
    task: { type: refactor, prompt: "address: {{ steps.review.output }}" }
"#;
    for (verdict, expect_refactor) in [("REJECT: too clever", true), ("LGTM", false)] {
        let f = fixture().await;
        let run = f
            .engine
            .submit_workflow("default", def(yaml), BTreeMap::new())
            .await
            .unwrap();
        let ran = run_ready(&f, &|t| {
            if step_of(t) == "review" {
                Ok(verdict.to_string())
            } else {
                succeed_all(t)
            }
        })
        .await;
        let done = f.engine.get_workflow("default", run.id).await.unwrap();
        assert_eq!(done.status, RunStatus::Succeeded);
        if expect_refactor {
            assert_eq!(ran.len(), 2);
            assert_eq!(ran[1].prompt, "address: REJECT: too clever");
        } else {
            assert_eq!(ran.len(), 1);
            assert_eq!(done.steps["refactor"], StepState::Skipped);
        }
    }
}

const PARALLEL: &str = r#"
name: parallel
policy: { on_failure: POLICY }
steps:
  - id: left
    task: { type: bug_fix, prompt: "left" }
  - id: right
    task: { type: testing, prompt: "right" }
  - id: after_left
    needs: [left]
    task: { type: pr_review, prompt: "after left" }
  - id: after_right
    needs: [right]
    task: { type: pr_review, prompt: "after right" }
"#;

#[tokio::test]
async fn fail_fast_cancels_what_runs_and_continue_finishes_what_it_can() {
    // fail_fast: left fails while right is running; right is cancelled, the run fails.
    let f = fixture().await;
    let run = f
        .engine
        .submit_workflow(
            "default",
            def(&PARALLEL.replace("POLICY", "fail_fast")),
            BTreeMap::new(),
        )
        .await
        .unwrap();
    let batch = f.engine.lease(&f.node, 10).await.unwrap();
    let left = batch
        .tasks
        .iter()
        .find(|t| step_of(&t.task) == "left")
        .unwrap();
    let right = batch
        .tasks
        .iter()
        .find(|t| step_of(&t.task) == "right")
        .unwrap();
    finish_as(&f, &left.task_ref, Err("broken".into())).await;
    let done = f.engine.get_workflow("default", run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.steps["right"], StepState::Cancelled);
    assert_eq!(
        f.engine.get("default", right.task.id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    assert!(
        f.engine.lease(&f.node, 10).await.unwrap().tasks.is_empty(),
        "nothing new starts"
    );

    // continue: left fails, right and its follower still run; the run fails at the end.
    let f = fixture().await;
    let run = f
        .engine
        .submit_workflow(
            "default",
            def(&PARALLEL.replace("POLICY", "continue")),
            BTreeMap::new(),
        )
        .await
        .unwrap();
    let ran = run_ready(&f, &|t| {
        if step_of(t) == "left" {
            Err("broken".into())
        } else {
            succeed_all(t)
        }
    })
    .await;
    let mut steps: Vec<&str> = ran.iter().map(step_of).collect();
    steps.sort();
    assert_eq!(steps, vec!["after_right", "left", "right"]);
    let done = f.engine.get_workflow("default", run.id).await.unwrap();
    assert_eq!(done.steps["after_left"], StepState::Skipped);
    assert_eq!(done.status, RunStatus::Failed);
}

#[tokio::test]
async fn invalid_definitions_are_refused_with_every_error() {
    let f = fixture().await;
    let yaml = r#"
name: broken
steps:
  - id: a
    needs: [c]
    task: { type: bug_fix, prompt: "{{ vars.nope }}" }
  - id: b
    needs: [a]
    task: { type: bug_fix, prompt: "b" }
  - id: c
    needs: [b]
    task: { type: bug_fix, prompt: "c" }
"#;
    let err = f
        .engine
        .submit_workflow("default", def(yaml), BTreeMap::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("definition") && msg.contains("cycle"), "{msg}");
    assert!(msg.contains("nope"), "all errors at once: {msg}");
}

#[tokio::test]
async fn cancel_then_retry_resumes_from_the_unfinished_steps() {
    let f = fixture().await;
    let run = f
        .engine
        .submit_workflow("default", def(DIAMOND), BTreeMap::new())
        .await
        .unwrap();
    // analyse succeeds; fix and tests start.
    let batch = f.engine.lease(&f.node, 10).await.unwrap();
    let analyse = &batch.tasks[0];
    finish_as(&f, &analyse.task_ref, Ok("A".into())).await;
    let cancelled = f
        .engine
        .cancel_workflow("default", run.id, "rethinking")
        .await
        .unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.steps["fix"], StepState::Cancelled);
    assert_eq!(cancelled.steps["review"], StepState::Skipped);
    for step in ["fix", "tests"] {
        let id = cancelled.tasks[step];
        assert_eq!(
            f.engine.get("default", id).await.unwrap().status,
            TaskStatus::Cancelled
        );
    }
    let err = f
        .engine
        .cancel_workflow("default", run.id, "")
        .await
        .unwrap();
    assert_eq!(
        err.status,
        RunStatus::Cancelled,
        "cancelling again is a no-op"
    );

    let retried = f.engine.retry_workflow("default", run.id).await.unwrap();
    assert_eq!(retried.status, RunStatus::Running);
    assert_eq!(retried.steps["analyse"], StepState::Succeeded, "kept");
    assert_eq!(retried.tasks["analyse"], analyse.task.id, "not run again");
    let ran = run_ready(&f, &succeed_all).await;
    let mut steps: Vec<&str> = ran.iter().map(step_of).collect();
    steps.sort();
    assert_eq!(steps, vec!["fix", "review", "tests"]);
    let fix = ran.iter().find(|t| step_of(t) == "fix").unwrap();
    assert_eq!(
        fix.prompt, "Fix using: A",
        "the kept output flows into the retried steps"
    );
    assert_eq!(
        f.engine
            .get_workflow("default", run.id)
            .await
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
    let err = f
        .engine
        .retry_workflow("default", run.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::FailedPrecondition(ref m) if m.contains("only failed or cancelled")),
        "{err}"
    );
}

#[tokio::test]
async fn a_deadline_stops_the_run() {
    let f = fixture().await;
    let yaml = r#"
name: slow
policy: { deadline: 10m }
steps:
  - id: a
    task: { type: bug_fix, prompt: "a" }
  - id: b
    needs: [a]
    task: { type: bug_fix, prompt: "b" }
"#;
    let run = f
        .engine
        .submit_workflow("default", def(yaml), BTreeMap::new())
        .await
        .unwrap();
    let a = f.engine.lease(&f.node, 10).await.unwrap().tasks.remove(0);
    f.clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(f.engine.sweep_timers(10).await.unwrap().runs_timed_out, 0);
    f.clock.advance(Duration::from_secs(61));
    // The lease lapses too; what matters is the run.
    let sweep = f.engine.sweep_timers(10).await.unwrap();
    assert_eq!(sweep.runs_timed_out, 1);
    let done = f.engine.get_workflow("default", run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.steps["b"], StepState::Skipped);
    assert_eq!(
        f.engine.get("default", a.task.id).await.unwrap().status,
        TaskStatus::Cancelled
    );
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_run_loses_nothing_and_starts_nothing_twice() {
    let f = fixture().await;
    let run = f
        .engine
        .submit_workflow("default", def(DIAMOND), BTreeMap::new())
        .await
        .unwrap();
    // analyse done; fix and tests queued; then the process "dies".
    let batch = f.engine.lease(&f.node, 10).await.unwrap();
    finish_as(&f, &batch.tasks[0].task_ref, Ok("A".into())).await;
    let Fixture { engine, dir, .. } = f;
    drop(engine);
    // Reopen the same store with a new engine and node epoch.
    let (engine, clock, node) = open(&dir).await;
    let f = Fixture {
        engine,
        clock,
        node,
        dir,
    };
    let ran = run_ready(&f, &succeed_all).await;
    let mut steps: Vec<&str> = ran.iter().map(step_of).collect();
    steps.sort();
    assert_eq!(steps, vec!["fix", "review", "tests"]);
    let done = f.engine.get_workflow("default", run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.tasks.len(), 4);
    let page = f
        .engine
        .list(
            "default",
            &ListQuery {
                page_size: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 4, "one task per step, no duplicates");
}

#[tokio::test]
async fn runs_are_listed_newest_first_and_filtered_by_status() {
    let f = fixture().await;
    let a = f
        .engine
        .submit_workflow("default", def(DIAMOND), BTreeMap::new())
        .await
        .unwrap();
    let b = f
        .engine
        .submit_workflow("default", def(DIAMOND), BTreeMap::new())
        .await
        .unwrap();
    f.engine.cancel_workflow("default", a.id, "").await.unwrap();
    let all = f
        .engine
        .list_workflows(
            "default",
            &WorkflowQuery {
                page_size: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![b.id, a.id]
    );
    let cancelled = f
        .engine
        .list_workflows(
            "default",
            &WorkflowQuery {
                status: Some(RunStatus::Cancelled),
                page_size: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.runs.len(), 1);
    assert!(matches!(
        f.engine.get_workflow("other", a.id).await,
        Err(EngineError::RunNotFound { .. })
    ));
}

fn every_five_minutes(missed: supervisor_workflow::Missed) -> supervisor_workflow::ScheduleDef {
    supervisor_workflow::ScheduleDef {
        cron: "*/5 * * * *".into(),
        timezone: "UTC".into(),
        missed,
    }
}

const NIGHTLY: &str = r#"
name: nightly
steps:
  - id: audit
    task: { type: security_audit, prompt: "audit" }
"#;

async fn runs(f: &Fixture) -> usize {
    f.engine
        .list_workflows(
            "default",
            &WorkflowQuery {
                page_size: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .runs
        .len()
}

#[tokio::test]
async fn a_schedule_fires_once_per_tick_under_the_singleton_lease() {
    let f = fixture().await;
    let other = f
        .engine
        .register_node(
            "wf-node-b",
            &crate::NodeAnnouncement {
                address: "127.0.0.1:2".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    f.engine
        .create_schedule(
            "default",
            "audit",
            every_five_minutes(Default::default()),
            def(NIGHTLY),
            BTreeMap::new(),
        )
        .await
        .unwrap();
    let fence = f
        .engine
        .acquire_singleton(SCHEDULER_DUTY, &f.node, ttl)
        .await
        .unwrap()
        .expect("first taker holds it");
    assert_eq!(
        f.engine
            .acquire_singleton(SCHEDULER_DUTY, &other, ttl)
            .await
            .unwrap(),
        None,
        "one holder at a time"
    );
    // Clock starts at 22:13:20; the next tick is 22:15:00.
    assert_eq!(f.engine.fire_due_schedules(fence).await.unwrap().0, 0);
    f.clock.advance(Duration::from_secs(101));
    assert_eq!(
        f.engine
            .acquire_singleton(SCHEDULER_DUTY, &f.node, ttl)
            .await
            .unwrap(),
        Some(fence),
        "renewal keeps the token"
    );
    let (fired, next) = f.engine.fire_due_schedules(fence).await.unwrap();
    assert_eq!(fired, 1);
    assert_eq!(
        f.engine.fire_due_schedules(fence).await.unwrap().0,
        0,
        "a tick fires once"
    );
    assert!(next.is_some_and(|n| n > f.engine.now_micros()));
    // The holder goes silent; the other node takes over with a new token, and the old
    // holder's late firing is refused.
    f.clock.advance(Duration::from_secs(300));
    let taken = f
        .engine
        .acquire_singleton(SCHEDULER_DUTY, &other, ttl)
        .await
        .unwrap()
        .expect("expired lease is free");
    assert!(taken > fence);
    assert_eq!(
        f.engine.fire_due_schedules(fence).await.unwrap().0,
        0,
        "stale token"
    );
    assert_eq!(f.engine.fire_due_schedules(taken).await.unwrap().0, 1);
    assert_eq!(runs(&f).await, 2);
    let s = &f
        .engine
        .list_schedules("default", None, 10)
        .await
        .unwrap()
        .schedules[0];
    assert_eq!(s.runs_started, 2);
}

#[tokio::test]
async fn pause_resume_trigger_and_missed_tick_policies() {
    let f = fixture().await;
    let ttl = Duration::from_secs(3600);
    f.engine
        .create_schedule(
            "default",
            "skip",
            every_five_minutes(supervisor_workflow::Missed::Skip),
            def(NIGHTLY),
            BTreeMap::new(),
        )
        .await
        .unwrap();
    f.engine
        .create_schedule(
            "default",
            "catchup",
            every_five_minutes(supervisor_workflow::Missed::CatchUpOne),
            def(NIGHTLY),
            BTreeMap::new(),
        )
        .await
        .unwrap();
    f.engine
        .set_schedule_paused("default", "catchup", true)
        .await
        .unwrap();
    let fence = f
        .engine
        .acquire_singleton(SCHEDULER_DUTY, &f.node, ttl)
        .await
        .unwrap()
        .unwrap();
    // An hour passes with nothing firing: skip drops the missed ticks; the paused one
    // does nothing.
    f.clock.advance(Duration::from_secs(3600));
    assert_eq!(f.engine.fire_due_schedules(fence).await.unwrap().0, 0);
    // Resumed, catch_up_one does not replay ticks from its pause.
    f.engine
        .set_schedule_paused("default", "catchup", false)
        .await
        .unwrap();
    assert_eq!(f.engine.fire_due_schedules(fence).await.unwrap().0, 0);
    // Another hour passes: catch_up_one fires once for the missed ticks, skip does not.
    f.clock.advance(Duration::from_secs(3600));
    let fence = f
        .engine
        .acquire_singleton(SCHEDULER_DUTY, &f.node, ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.engine.fire_due_schedules(fence).await.unwrap().0, 1);
    let run = f.engine.trigger_schedule("default", "skip").await.unwrap();
    assert_eq!(run.def.name, "nightly");
    assert_eq!(runs(&f).await, 2);
    let err = f
        .engine
        .trigger_schedule("default", "nope")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no schedule named \"nope\""),
        "{err}"
    );
    let bad = f
        .engine
        .create_schedule(
            "default",
            "bad",
            supervisor_workflow::ScheduleDef {
                cron: "61 * * * *".into(),
                timezone: "UTC".into(),
                missed: Default::default(),
            },
            def(NIGHTLY),
            BTreeMap::new(),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("cron"), "{bad}");
    // Listed by name, one page at a time.
    let first = f.engine.list_schedules("default", None, 1).await.unwrap();
    assert!(first.more);
    let name = first.schedules[0].name.clone();
    let second = f
        .engine
        .list_schedules("default", Some(&name), 1)
        .await
        .unwrap();
    assert!(!second.more);
    assert!(second.schedules[0].name > name);
    let deleted = f.engine.delete_schedule("default", "skip").await.unwrap();
    assert_eq!(deleted.name, "skip");
    let page = f.engine.list_schedules("default", None, 10).await.unwrap();
    assert_eq!((page.schedules.len(), page.more), (1, false));
}

#[tokio::test]
async fn a_workflow_too_large_for_one_run_record_is_refused_up_front() {
    let f = fixture().await;
    let mut yaml = String::from("name: huge\nsteps:\n");
    let long = "analyse this part of the repository carefully, listing every module, its public items, its tests and its dependencies, then propose a plan";
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "  - id: step-number-{i}\n    task: {{ type: code_analysis, prompt: \"{long} {i}\" }}\n"
        ));
    }
    let err = f
        .engine
        .submit_workflow("default", def(&yaml), BTreeMap::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("too large to run") && msg.contains("split it"),
        "{msg}"
    );
    assert_eq!(runs(&f).await, 0, "nothing was created");
}

#[tokio::test]
async fn a_run_is_followed_live_until_it_ends_and_resumed_by_sequence_number() {
    use futures::StreamExt as _;

    let f = fixture().await;
    let run = f
        .engine
        .submit_workflow("default", def(DIAMOND), BTreeMap::new())
        .await
        .unwrap();
    let stream = f.engine.watch_workflow("default", run.id, 0).await.unwrap();
    let ran = run_ready(&f, &succeed_all).await;
    assert_eq!(ran.len(), 4);
    let events: Vec<WorkflowEvent> =
        tokio::time::timeout(Duration::from_secs(30), stream.collect::<Vec<_>>())
            .await
            .expect("the stream ends once the run has ended")
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.first().unwrap().kind, "run_started");
    assert_eq!(events.last().unwrap().kind, "run_succeeded");

    let rest: Vec<_> = f
        .engine
        .watch_workflow("default", run.id, 2)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(rest.len(), events.len() - 2);
    assert_eq!(rest[0].as_ref().unwrap().seq, 3);

    let unknown = supervisor_model::TaskId::generate();
    assert!(matches!(
        f.engine.watch_workflow("default", unknown, 0).await,
        Err(EngineError::RunNotFound { .. })
    ));
    assert!(matches!(
        f.engine.watch_workflow("other", run.id, 0).await,
        Err(EngineError::RunNotFound { .. })
    ));
}

const TWO_STEPS: &str = r#"
name: two
steps:
  - id: first
    task: { type: code_analysis, prompt: "first" }
  - id: second
    needs: [first]
    task: { type: bug_fix, prompt: "after {{ steps.first.output }}" }
"#;

#[tokio::test]
async fn retention_leaves_a_going_run_alone_and_deletes_its_steps_only_after_it() {
    let f = fixture().await;
    let cfg = RetentionConfig {
        keep: Duration::from_secs(3),
        ..RetentionConfig::default()
    };
    let run = f
        .engine
        .submit_workflow("default", def(TWO_STEPS), BTreeMap::new())
        .await
        .unwrap();
    let first = f.engine.lease(&f.node, 1).await.unwrap().tasks.remove(0);
    finish_as(&f, &first.task_ref, Ok("one".into())).await;
    let second = f.engine.lease(&f.node, 1).await.unwrap().tasks.remove(0);
    // The first step's task is long over, but its run goes on.
    f.clock.advance(Duration::from_secs(60));
    let sweep = f.engine.sweep_retention(&cfg, None, None).await.unwrap();
    assert_eq!((sweep.tasks_deleted, sweep.runs_deleted), (0, 0));
    assert!(f.engine.get("default", first.task.id).await.is_ok());
    finish_as(&f, &second.task_ref, Ok("two".into())).await;
    assert_eq!(
        f.engine
            .get_workflow("default", run.id)
            .await
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
    // The run has ended but is not yet due: its steps stay with it.
    f.clock.advance(Duration::from_secs(2));
    let sweep = f.engine.sweep_retention(&cfg, None, None).await.unwrap();
    assert_eq!((sweep.tasks_deleted, sweep.runs_deleted), (0, 0));
    f.clock.advance(Duration::from_secs(2));
    let sweep = f.engine.sweep_retention(&cfg, None, None).await.unwrap();
    assert_eq!(sweep.runs_deleted, 1);
    assert!(matches!(
        f.engine.get_workflow("default", run.id).await,
        Err(EngineError::RunNotFound { .. })
    ));
    // Its steps go once the run is gone (this sweep or the next).
    let sweep2 = f.engine.sweep_retention(&cfg, None, None).await.unwrap();
    assert_eq!(sweep.tasks_deleted + sweep2.tasks_deleted, 2);
    for id in [first.task.id, second.task.id] {
        assert!(matches!(
            f.engine.get("default", id).await,
            Err(EngineError::NotFound { .. })
        ));
    }
}
