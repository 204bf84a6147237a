//! Workflows over gRPC against real `supervisor up` processes: a process killed in the
//! middle of a run and restarted (every step runs to completion exactly once), validation
//! errors all at once, and a schedule firing once per tick on one node.

mod common;

use std::time::{Duration, Instant};

use supervisor_proto::v1;
use supervisor_proto::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

use common::NodeProcess;

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

async fn client(node: &NodeProcess) -> WorkflowServiceClient<Channel> {
    WorkflowServiceClient::connect(node.url())
        .await
        .expect("connect")
}

fn yaml(text: &str) -> Option<v1::WorkflowSource> {
    Some(v1::WorkflowSource {
        source: Some(v1::workflow_source::Source::Yaml(text.into())),
    })
}

async fn get(c: &mut WorkflowServiceClient<Channel>, id: &str) -> v1::WorkflowRun {
    c.get_workflow(v1::GetWorkflowRequest { id: id.into() })
        .await
        .expect("get")
        .into_inner()
}

const ENV: &[(&str, &str)] = &[
    ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "400ms"),
    ("SUPERVISOR_ENGINE__LEASE_DURATION", "3s"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_kill_9_and_every_step_runs_to_completion_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), ENV);
    let mut c = client(&node).await;
    let run = c
        .submit_workflow(v1::SubmitWorkflowRequest {
            source: yaml(DIAMOND),
            vars: Default::default(),
        })
        .await
        .expect("submit")
        .into_inner();
    // Kill the node once the first step is done and the middle ones are running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(&mut c, &run.id).await;
        let state = |id: &str| {
            r.steps
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.state.clone())
                .unwrap_or_default()
        };
        if state("analyse") == "succeeded" && state("fix") == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached its middle: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9();
    drop(node);
    let node = NodeProcess::start(dir.path(), ENV);
    let mut c = client(&node).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let r = get(&mut c, &run.id).await;
        if r.status != v1::RunStatus::Running as i32 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, v1::RunStatus::Succeeded as i32, "{done:?}");
    assert!(
        done.steps.iter().all(|s| s.state == "succeeded"),
        "{:?}",
        done.steps
    );
    assert!(
        done.steps
            .iter()
            .find(|s| s.id == "review")
            .is_some_and(|s| s.output_summary.contains("pr_review"))
    );
    // One task per step: nothing started twice.
    let tasks = supervisor_client::Client::connect(&node.url())
        .await
        .unwrap()
        .list_all(Default::default())
        .await
        .unwrap();
    assert_eq!(
        tasks.len(),
        4,
        "{:?}",
        tasks.iter().map(|t| &t.prompt).collect::<Vec<_>>()
    );
    // The event log, resumable, ends with the run's success.
    let mut stream = c
        .watch_workflow(v1::WatchWorkflowRequest {
            id: run.id.clone(),
            after_seq: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(ev) = stream.message().await.expect("event") {
        kinds.push(ev.kind);
    }
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_succeeded"));
    assert_eq!(kinds.iter().filter(|k| *k == "step_started").count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reports_every_error_and_bad_runs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let mut c = client(&node).await;
    let broken = r#"
name: broken
steps:
  - id: a
    needs: [c]
    task: { type: bug_fix, prompt: "{{ vars.nope }}" }
  - id: b
    needs: [a, ghost]
    task: { type: bug_fix, prompt: "b" }
  - id: c
    needs: [b]
    task: { type: bug_fix, prompt: "c" }
  - id: c
    task: { type: bug_fix, prompt: "dup" }
"#;
    let report = c
        .validate_workflow(v1::ValidateWorkflowRequest {
            source: yaml(broken),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(!report.valid);
    let codes: Vec<&str> = report.errors.iter().map(|e| e.code.as_str()).collect();
    for code in [
        "duplicate_step",
        "unknown_dependency",
        "cycle",
        "unknown_variable",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    let err = c
        .submit_workflow(v1::SubmitWorkflowRequest {
            source: yaml(broken),
            vars: Default::default(),
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("definition"), "{}", err.message());
    let err = c
        .submit_workflow(v1::SubmitWorkflowRequest {
            source: None,
            vars: Default::default(),
        })
        .await
        .expect_err("refused");
    assert!(err.message().contains("source"), "{}", err.message());
    let err = c
        .get_workflow(v1::GetWorkflowRequest {
            id: "0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_tick_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            ("SUPERVISOR_NODE__DUTY_LEASE", "3s"),
            // Ticks every second, below the default minimum of a minute.
            ("SUPERVISOR_ENGINE__MIN_SCHEDULE_INTERVAL", "1s"),
        ],
    );
    let mut c = client(&node).await;
    let nightly = "name: tick\nsteps:\n  - id: audit\n    task: { type: security_audit, prompt: \"audit\" }\n";
    let s = c
        .create_schedule(v1::CreateScheduleRequest {
            name: "every-second".into(),
            cron: "* * * * * *".into(),
            timezone: "Europe/Paris".into(),
            missed: "skip".into(),
            source: yaml(nightly),
            vars: Default::default(),
        })
        .await
        .expect("create")
        .into_inner();
    assert!(s.next_fire_at.is_some());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = c
            .list_schedules(v1::ListSchedulesRequest::default())
            .await
            .unwrap()
            .into_inner();
        if list.schedules[0].runs_started >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not fire: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.pause_schedule(v1::ScheduleRef {
        name: "every-second".into(),
    })
    .await
    .unwrap();
    let paused = c
        .list_schedules(v1::ListSchedulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .schedules
        .remove(0);
    assert!(paused.paused);
    let runs = c
        .list_workflows(v1::ListWorkflowsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(
        runs.len() as u64,
        paused.runs_started,
        "one run per fired tick"
    );
    // One tick, one run: no two runs in the same second.
    let mut seconds: Vec<i64> = runs
        .iter()
        .filter_map(|r| r.created_at.as_ref().map(|t| t.seconds))
        .collect();
    let before = seconds.len();
    seconds.dedup();
    assert_eq!(seconds.len(), before, "two runs for one tick");
    let triggered = c
        .trigger_schedule(v1::ScheduleRef {
            name: "every-second".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(triggered.name, "tick");
    let err = c
        .trigger_schedule(v1::ScheduleRef {
            name: "nope".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

async fn wait_run(c: &mut WorkflowServiceClient<Channel>, id: &str) -> v1::WorkflowRun {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(c, id).await;
        if r.status != v1::RunStatus::Running as i32 {
            return r;
        }
        assert!(Instant::now() < deadline, "the run did not end: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_reads_the_status_of_an_earlier_step() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let mut c = client(&node).await;
    // The review step of examples/fix-and-review.yaml.
    let flow = r#"
name: status
vars: { issue: "flaky retry test" }
steps:
  - id: fix
    task: { type: bug_fix, prompt: "Fix the {{ vars.issue }}" }
  - id: review
    needs: [{ step: fix, when: always }]
    task:
      type: pr_review
      prompt: "Fix attempt ({{ steps.fix.status }}, {{ steps.fix.attempts }} attempt): {{ steps.fix.output }}"
"#;
    let run = c
        .submit_workflow(v1::SubmitWorkflowRequest {
            source: yaml(flow),
            vars: Default::default(),
        })
        .await
        .expect("submit")
        .into_inner();
    let done = wait_run(&mut c, &run.id).await;
    assert_eq!(done.status, v1::RunStatus::Succeeded as i32, "{done:?}");
    let review = done
        .steps
        .iter()
        .find(|s| s.id == "review")
        .expect("review step");
    let task = supervisor_client::Client::connect(&node.url())
        .await
        .unwrap()
        .get(&review.task_id)
        .await
        .unwrap();
    assert!(
        task.prompt
            .starts_with("Fix attempt (succeeded, 1 attempt): [mock provider] bug_fix"),
        "{}",
        task.prompt
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_variable_is_refused_naming_the_declared_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let mut c = client(&node).await;
    let vars = |k: &str| [(k.to_string(), "/src/other".to_string())].into();
    let err = c
        .submit_workflow(v1::SubmitWorkflowRequest {
            source: yaml(DIAMOND),
            vars: vars("rpeo"),
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("rpeo") && err.message().contains("`repo`"),
        "{}",
        err.message()
    );
    let err = c
        .create_schedule(v1::CreateScheduleRequest {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            source: yaml(DIAMOND),
            vars: vars("rpeo"),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("rpeo"), "{}", err.message());
    // A declared one is fine.
    c.submit_workflow(v1::SubmitWorkflowRequest {
        source: yaml(DIAMOND),
        vars: vars("repo"),
    })
    .await
    .expect("declared variable");
    // The CLI says the same.
    let file = dir.path().join("diamond.yaml");
    std::fs::write(&file, DIAMOND).unwrap();
    let (code, _, err) = common::cli(
        &node.addr,
        &[
            "workflow",
            "submit",
            "-f",
            file.to_str().unwrap(),
            "--var",
            "rpeo=/src/other",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("rpeo") && err.contains("`repo`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_names_and_crons_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let mut c = client(&node).await;
    let flow = "name: tick\nsteps:\n  - id: audit\n    task: { type: security_audit, prompt: \"audit\" }\n";
    let err = c
        .pause_schedule(v1::ScheduleRef { name: "".into() })
        .await
        .expect_err("empty name");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("name"), "{}", err.message());
    for (name, cron, needles) in [
        ("fast", "* * * * * *", &["cron", "1m"][..]),
        ("fast", "*/30 * * * * *", &["cron", "30s", "1m"][..]),
    ] {
        let err = c
            .create_schedule(v1::CreateScheduleRequest {
                name: name.into(),
                cron: cron.into(),
                source: yaml(flow),
                ..Default::default()
            })
            .await
            .expect_err("under the minimum interval");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        for needle in needles {
            assert!(err.message().contains(needle), "{}", err.message());
        }
    }
    let huge = "1 ".repeat(50_000);
    let err = c
        .create_schedule(v1::CreateScheduleRequest {
            name: "huge".into(),
            cron: huge,
            source: yaml(flow),
            ..Default::default()
        })
        .await
        .expect_err("oversize cron");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().len() < 500, "{}", err.message());
    assert!(err.message().contains("cron"), "{}", err.message());
    // Once a minute is fine.
    c.create_schedule(v1::CreateScheduleRequest {
        name: "minutely".into(),
        cron: "* * * * *".into(),
        source: yaml(flow),
        ..Default::default()
    })
    .await
    .expect("a minute apart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_takes_the_definitions_schedule_block_unless_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let mut c = client(&node).await;
    let audit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nightly-audit.yaml"
    ))
    .expect("example");
    let s = c
        .create_schedule(v1::CreateScheduleRequest {
            name: "nightly".into(),
            source: yaml(&audit),
            ..Default::default()
        })
        .await
        .expect("created from the definition's schedule")
        .into_inner();
    assert_eq!(
        (s.cron.as_str(), s.timezone.as_str(), s.missed.as_str()),
        ("30 2 * * *", "Europe/Paris", "catch_up_one")
    );
    // The request's fields override the block's, one by one.
    let s = c
        .create_schedule(v1::CreateScheduleRequest {
            name: "nightly".into(),
            cron: "0 4 * * *".into(),
            source: yaml(&audit),
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    assert_eq!(
        (s.cron.as_str(), s.timezone.as_str(), s.missed.as_str()),
        ("0 4 * * *", "Europe/Paris", "catch_up_one")
    );
    // Without a block, a cron is required.
    let err = c
        .create_schedule(v1::CreateScheduleRequest {
            name: "bare".into(),
            source: yaml(DIAMOND),
            ..Default::default()
        })
        .await
        .expect_err("no cron anywhere");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("schedule:"), "{}", err.message());

    // The CLI: no flag takes the file's block; a flag overrides it and says so.
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nightly-audit.yaml"
    );
    let (code, out, err) = common::cli(
        &node.addr,
        &[
            "schedule", "create", "audit", "-f", file, "--output", "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["cron"], "30 2 * * *");
    assert_eq!(json["missed"], "catch_up_one");
    let (code, out, err) = common::cli(
        &node.addr,
        &[
            "schedule", "create", "audit", "-f", file, "--missed", "skip",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("--missed skip overrides") && err.contains("catch_up_one"),
        "{err}"
    );
}
