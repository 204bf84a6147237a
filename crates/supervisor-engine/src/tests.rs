//! Engine invariants, pinned with a real embedded store and a hand-moved clock.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use supervisor_model::{EventKind, NewTask, Priority, TaskResult, TaskStatus, TaskType, Usage};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

use crate::*;

pub(crate) struct Fixture {
    pub engine: Engine,
    pub clock: ManualClock,
    pub node: NodeIdentity,
    _dir: tempfile::TempDir,
}

pub(crate) async fn fixture() -> Fixture {
    fixture_with(EngineConfig {
        lease_duration: Duration::from_secs(10),
        retry_initial_backoff: Duration::from_secs(2),
        ..EngineConfig::default()
    })
    .await
}

async fn fixture_with(cfg: EngineConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("open store");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let engine = Engine::new(db, cfg, Arc::new(clock.clone()));
    let node = engine
        .register_node(
            "node-a",
            &crate::NodeAnnouncement {
                address: "127.0.0.1:1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("register");
    Fixture {
        engine,
        clock,
        node,
        _dir: dir,
    }
}

pub(crate) fn new_task(prompt: &str) -> NewTask {
    NewTask {
        task_type: Some(TaskType::BugFix),
        prompt: prompt.to_string(),
        ..NewTask::default()
    }
}

pub(crate) fn success(output: &str) -> Outcome {
    Outcome::Succeeded(TaskResult {
        output: output.to_string(),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 20,
            ..Usage::default()
        },
        cost_micros: 30,
        provider: "mock".into(),
        model: "mock-1".into(),
        artifacts: vec![],
    })
}

pub(crate) fn finish(task_ref: &TaskRef, outcome: Outcome) -> Finish {
    let (usage, cost_micros) = match &outcome {
        Outcome::Succeeded(r) => (r.usage, r.cost_micros),
        Outcome::Failed { .. } => (Usage::default(), 0),
    };
    Finish {
        task_ref: task_ref.clone(),
        provider: "mock".into(),
        model: "mock-1".into(),
        usage,
        cost_micros,
        trailing: vec![],
        outcome,
    }
}

fn failed(error: &str, retryable: bool) -> Outcome {
    Outcome::Failed {
        error: error.to_string(),
        kind: if retryable {
            "unavailable"
        } else {
            "bad_request"
        }
        .into(),
        retryable,
        retry_after: None,
    }
}

/// Submits a task with `prompt` for the `default` tenant; its id.
pub(crate) async fn submit_one(f: &Fixture, prompt: &str) -> TaskId {
    f.engine
        .submit("default", new_task(prompt))
        .await
        .expect("submit")
        .task
        .id
}

/// Renews one lease; whether it was renewed.
async fn renew_one(f: &Fixture, task_ref: &TaskRef) -> bool {
    let renewed = f
        .engine
        .renew(std::slice::from_ref(task_ref))
        .await
        .expect("renew");
    renewed == [true]
}

pub(crate) async fn lease_one(f: &Fixture) -> LeasedTask {
    let mut batch = f.engine.lease(&f.node, 1).await.expect("lease");
    assert_eq!(batch.tasks.len(), 1, "expected one task to lease");
    batch.tasks.remove(0)
}

pub(crate) async fn events_of(
    f: &Fixture,
    id: supervisor_model::TaskId,
) -> Vec<supervisor_model::TaskEvent> {
    f.engine
        .read_events("default", id, 0, 1000)
        .await
        .expect("events")
        .0
}

#[tokio::test]
async fn submit_lease_finish_records_one_terminal_event() {
    let f = fixture().await;
    let submitted = f
        .engine
        .submit("default", new_task("fix the bug"))
        .await
        .unwrap();
    assert!(submitted.created);
    assert_eq!(submitted.task.status, TaskStatus::Queued);
    let leased = lease_one(&f).await;
    assert_eq!(leased.task.attempt, 1);
    assert_eq!(leased.task.status, TaskStatus::Running);
    let res = f
        .engine
        .finish(finish(&leased.task_ref, success("done")))
        .await
        .unwrap();
    assert_eq!(res, RunnerWriteResult::Accepted(TaskStatus::Succeeded));
    let task = f.engine.get("default", submitted.task.id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.result.as_ref().unwrap().output, "done");
    let kinds: Vec<EventKind> = events_of(&f, task.id)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Submitted,
            EventKind::Started,
            EventKind::Succeeded
        ]
    );
    let stats = f.engine.provider_stats("mock").await.unwrap();
    assert_eq!(stats.completions_accepted, 1);
    assert_eq!(stats.cost_micros, 30);
    let counts = f.engine.status_counts().await.unwrap();
    assert_eq!(counts.get(TaskStatus::Succeeded), 1);
    assert_eq!(counts.get(TaskStatus::Queued), 0);
    assert_eq!(counts.get(TaskStatus::Running), 0);
}

#[tokio::test]
async fn lapsed_lease_makes_the_task_eligible_again() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let first = lease_one(&f).await;
    assert!(
        f.engine.lease(&f.node, 10).await.unwrap().tasks.is_empty(),
        "leased task must not be leased twice"
    );
    // Not yet due: nothing happens.
    f.clock.advance(Duration::from_secs(9));
    assert_eq!(
        f.engine.sweep_timers(100).await.unwrap().leases_reclaimed,
        0
    );
    f.clock.advance(Duration::from_secs(2));
    let sweep = f.engine.sweep_timers(100).await.unwrap();
    assert_eq!(sweep.leases_reclaimed, 1);
    let second = lease_one(&f).await;
    assert_eq!(second.task.id, id);
    // The lapsed attempt does not count: this is attempt 1 again, after one abandoned.
    assert_eq!(
        (second.task.attempt, second.task.abandoned_attempts),
        (1, 1)
    );
    assert!(second.task_ref.fence > first.task_ref.fence);
}

#[tokio::test]
async fn attempts_abandoned_by_a_dead_node_do_not_count_but_are_bounded() {
    let f = fixture().await;
    let mut req = new_task("brings its node down");
    req.max_attempts = Some(2);
    let id = f.engine.submit("default", req).await.unwrap().task.id;
    let allowed = 2 * supervisor_model::ABANDONED_ATTEMPTS_PER_ATTEMPT;
    // Every attempt dies with its node: the lease lapses, or the node restarts.
    let mut node = f.node.clone();
    for round in 1..=allowed {
        let leased = lease_one_as(&f, &node).await;
        assert_eq!(leased.task.attempt, 1, "round {round}");
        if round % 2 == 0 {
            node = f
                .engine
                .register_node("node-a", &crate::NodeAnnouncement::default())
                .await
                .unwrap();
            assert_eq!(f.engine.reclaim_orphaned_leases(&node).await.unwrap(), 1);
        } else {
            f.clock.advance(Duration::from_secs(11));
            assert_eq!(f.engine.sweep_timers(10).await.unwrap().leases_reclaimed, 1);
        }
        let task = f.engine.get("default", id).await.unwrap();
        assert_eq!(task.status, TaskStatus::Queued, "round {round}");
        assert_eq!((task.attempt, task.abandoned_attempts), (0, round));
    }
    let events = events_of(&f, id).await;
    let requeued = events
        .iter()
        .rfind(|e| e.kind == EventKind::Requeued)
        .expect("a requeue");
    assert!(
        requeued
            .message
            .contains("the attempt does not count (node node-a stopped answering)"),
        "{}",
        requeued.message
    );
    assert!(
        requeued
            .message
            .contains("6 of 6 abandoned attempts allowed"),
        "{}",
        requeued.message
    );
    // One more, and the task fails instead of looping forever.
    lease_one_as(&f, &node).await;
    f.clock.advance(Duration::from_secs(11));
    f.engine.sweep_timers(10).await.unwrap();
    let task = f.engine.get("default", id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.abandoned_attempts, allowed + 1);
    let error = task.error.unwrap_or_default();
    assert!(
        error.contains("7 attempts were abandoned") && error.contains("over the limit of 6"),
        "{error}"
    );
    // A real failure still counts: attempts and abandons are separate budgets.
    let id = submit_one(&f, "fails").await;
    let leased = lease_one_as(&f, &node).await;
    f.engine
        .finish(finish(&leased.task_ref, failed("boom", true)))
        .await
        .unwrap();
    let task = f.engine.get("default", id).await.unwrap();
    assert_eq!((task.attempt, task.abandoned_attempts), (1, 0));
}

async fn lease_one_as(f: &Fixture, node: &NodeIdentity) -> LeasedTask {
    let mut batch = f.engine.lease(node, 1).await.expect("lease");
    assert_eq!(batch.tasks.len(), 1, "expected one task to lease");
    batch.tasks.remove(0)
}

#[tokio::test]
async fn stale_fencing_token_is_refused() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let first = lease_one(&f).await;
    f.clock.advance(Duration::from_secs(11));
    f.engine.sweep_timers(100).await.unwrap();
    let second = lease_one(&f).await;
    // The first runner wakes up late and tries to complete: refused.
    let late = f
        .engine
        .finish(finish(&first.task_ref, success("late")))
        .await
        .unwrap();
    assert!(
        matches!(late, RunnerWriteResult::Refused(ref why) if why.contains("stale fencing token")),
        "{late:?}"
    );
    let late_progress = f
        .engine
        .progress(first.task_ref.clone(), vec![Streamed::Output("x".into())])
        .await
        .unwrap();
    assert!(matches!(late_progress, RunnerWriteResult::Refused(_)));
    // The current runner completes.
    let ok = f
        .engine
        .finish(finish(&second.task_ref, success("fresh")))
        .await
        .unwrap();
    assert_eq!(ok, RunnerWriteResult::Accepted(TaskStatus::Succeeded));
    assert_eq!(
        f.engine
            .get("default", id)
            .await
            .unwrap()
            .result
            .unwrap()
            .output,
        "fresh"
    );
    let stats = f.engine.provider_stats("mock").await.unwrap();
    assert_eq!(
        (stats.completions_accepted, stats.completions_refused),
        (1, 1)
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_first_task() {
    let f = fixture().await;
    let mut req = new_task("p");
    req.idempotency_key = Some("deploy-42".into());
    let a = f.engine.submit("default", req.clone()).await.unwrap();
    let b = f.engine.submit("default", req.clone()).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.task.id, b.task.id);
    // Concurrent duplicates (same batch or not) still make one task.
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let engine = f.engine.clone();
            let mut r = req.clone();
            r.idempotency_key = Some("burst".into());
            tokio::spawn(async move { engine.submit("default", r).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for h in handles {
        let s = h.await.unwrap().unwrap();
        ids.insert(s.task.id);
        created += s.created as usize;
    }
    assert_eq!((ids.len(), created), (1, 1));
    assert_eq!(
        f.engine
            .status_counts()
            .await
            .unwrap()
            .get(TaskStatus::Queued),
        2
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let f = fixture().await;
    let mut req = new_task("deploy build 7");
    req.idempotency_key = Some("deploy-7".into());
    let first = f.engine.submit("default", req.clone()).await.unwrap();
    let mut other = req.clone();
    other.prompt = "deploy build 8".into();
    other.priority = Priority::High;
    let err = f.engine.submit("default", other.clone()).await.unwrap_err();
    let EngineError::AlreadyExists(message) = &err else {
        panic!("expected AlreadyExists, got {err}");
    };
    assert!(message.contains("\"deploy-7\""), "{message}");
    assert!(message.contains("differs in prompt, priority"), "{message}");
    assert!(message.contains(&first.task.id.to_string()), "{message}");
    // Asking explicitly for what the first request left to the default is another request
    // too, although the task would be the same.
    let mut explicit = req.clone();
    explicit.max_attempts = Some(f.engine.config().default_max_attempts);
    assert!(matches!(
        f.engine.submit("default", explicit).await,
        Err(EngineError::AlreadyExists(_))
    ));
    // Within one batch: the first of two concurrent requests wins, the other is refused.
    let mut a = new_task("a");
    a.idempotency_key = Some("race".into());
    let mut b = a.clone();
    b.prompt = "b".into();
    let (ra, rb) = tokio::join!(
        f.engine.submit("default", a.clone()),
        f.engine.submit("default", b.clone())
    );
    let refused = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Err(EngineError::AlreadyExists(_))))
        .count();
    assert_eq!(refused, 1, "{ra:?} {rb:?}");
    // The same request still returns the first task.
    let again = f.engine.submit("default", req).await.unwrap();
    assert_eq!((again.task.id, again.created), (first.task.id, false));
}

#[tokio::test]
async fn terminal_task_never_changes() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    f.engine
        .finish(finish(&leased.task_ref, success("out")))
        .await
        .unwrap();
    let before = f.engine.get("default", id).await.unwrap();
    let events_before = events_of(&f, id).await;
    // Another finish, progress, renewal, cancel, sweeps: none may change it.
    let again = f
        .engine
        .finish(finish(&leased.task_ref, failed("x", true)))
        .await
        .unwrap();
    assert!(matches!(again, RunnerWriteResult::Refused(_)));
    assert!(matches!(
        f.engine
            .progress(leased.task_ref.clone(), vec![Streamed::Output("y".into())])
            .await
            .unwrap(),
        RunnerWriteResult::Refused(_)
    ));
    assert!(!renew_one(&f, &leased.task_ref).await);
    let cancel = f.engine.cancel("default", id, "late").await.unwrap_err();
    assert!(
        matches!(cancel, EngineError::FailedPrecondition(ref m) if m.contains("already succeeded")),
        "{cancel}"
    );
    f.clock.advance(Duration::from_secs(3600));
    f.engine.sweep_timers(100).await.unwrap();
    assert!(f.engine.lease(&f.node, 10).await.unwrap().tasks.is_empty());
    assert_eq!(f.engine.get("default", id).await.unwrap(), before);
    assert_eq!(events_of(&f, id).await, events_before);
}

#[tokio::test]
async fn retry_vests_after_its_backoff() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    let res = f
        .engine
        .finish(finish(
            &leased.task_ref,
            failed("provider overloaded", true),
        ))
        .await
        .unwrap();
    assert_eq!(res, RunnerWriteResult::Accepted(TaskStatus::RetryWait));
    let task = f.engine.get("default", id).await.unwrap();
    let due = task.next_attempt_at.expect("retry time");
    // Equal jitter on a 2s initial backoff: between 1s and 2s from now.
    let delay = due - f.engine.now_micros();
    assert!((1_000_000..=2_000_000).contains(&delay), "delay {delay}us");
    assert!(
        f.engine.lease(&f.node, 10).await.unwrap().tasks.is_empty(),
        "not vested yet"
    );
    f.clock.advance(Duration::from_micros(delay as u64 - 1));
    assert_eq!(f.engine.sweep_timers(10).await.unwrap().retries_vested, 0);
    f.clock.advance(Duration::from_micros(1));
    let sweep = f.engine.sweep_timers(10).await.unwrap();
    assert_eq!(sweep.retries_vested, 1);
    let again = lease_one(&f).await;
    assert_eq!((again.task.id, again.task.attempt), (id, 2));
}

#[tokio::test]
async fn attempts_run_out_and_permanent_errors_fail_at_once() {
    let f = fixture().await;
    let mut req = new_task("p");
    req.max_attempts = Some(2);
    let id = f.engine.submit("default", req).await.unwrap().task.id;
    for attempt in 1..=2 {
        let leased = lease_one(&f).await;
        assert_eq!(leased.task.attempt, attempt);
        f.engine
            .finish(finish(&leased.task_ref, failed("boom", true)))
            .await
            .unwrap();
        f.clock.advance(Duration::from_secs(60));
        f.engine.sweep_timers(10).await.unwrap();
    }
    let task = f.engine.get("default", id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(task.error.unwrap().contains("boom"));

    let id = submit_one(&f, "q").await;
    let leased = lease_one(&f).await;
    f.engine
        .finish(finish(&leased.task_ref, failed("bad request", false)))
        .await
        .unwrap();
    assert_eq!(
        f.engine.get("default", id).await.unwrap().status,
        TaskStatus::Failed
    );
}

#[tokio::test]
async fn higher_priority_is_leased_first_then_oldest() {
    let f = fixture().await;
    let mut ids = Vec::new();
    for (prompt, priority) in [
        ("a", Priority::Low),
        ("b", Priority::Normal),
        ("c", Priority::Critical),
        ("d", Priority::Normal),
        ("e", Priority::Urgent),
    ] {
        let mut req = new_task(prompt);
        req.priority = priority;
        ids.push(f.engine.submit("default", req).await.unwrap().task.id);
    }
    let batch = f.engine.lease(&f.node, 10).await.unwrap();
    let order: Vec<_> = batch.tasks.iter().map(|t| t.task.prompt.as_str()).collect();
    assert_eq!(order, vec!["c", "e", "b", "d", "a"]);
}

#[tokio::test]
async fn cancel_running_task_notifies_its_node_and_fences_the_runner() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    let (empty, _) = f.engine.take_inbox(&f.node.id).await.unwrap();
    assert!(empty.is_empty());
    let task = f
        .engine
        .cancel("default", id, "user changed their mind")
        .await
        .unwrap();
    assert_eq!(task.status, TaskStatus::Cancelled);
    let (notices, _) = f.engine.take_inbox(&f.node.id).await.unwrap();
    assert_eq!(notices, vec![("default".to_string(), id)]);
    let late = f
        .engine
        .finish(finish(&leased.task_ref, success("x")))
        .await
        .unwrap();
    assert!(matches!(late, RunnerWriteResult::Refused(_)));
    // Cancelling again is a no-op.
    assert_eq!(
        f.engine.cancel("default", id, "").await.unwrap().status,
        TaskStatus::Cancelled
    );
    // A queued task leaves the queue when cancelled.
    let queued = submit_one(&f, "q").await;
    f.engine.cancel("default", queued, "").await.unwrap();
    assert!(f.engine.lease(&f.node, 10).await.unwrap().tasks.is_empty());
}

#[tokio::test]
async fn retry_creates_a_new_task_and_leaves_the_original() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let running = lease_one(&f).await;
    let err = f.engine.retry("default", id).await.unwrap_err();
    assert!(
        matches!(err, EngineError::FailedPrecondition(ref m) if m.contains("is running")),
        "{err}"
    );
    f.engine.cancel("default", id, "").await.unwrap();
    let original = f.engine.get("default", id).await.unwrap();
    let retried = f.engine.retry("default", id).await.unwrap();
    assert_ne!(retried.id, id);
    assert_eq!(retried.retry_of, Some(id));
    assert_eq!(retried.status, TaskStatus::Queued);
    assert_eq!(f.engine.get("default", id).await.unwrap(), original);
    drop(running);
}

#[tokio::test]
async fn orphaned_leases_of_an_earlier_epoch_are_reclaimed_at_once() {
    let f = fixture().await;
    for i in 0..3 {
        f.engine
            .submit("default", new_task(&format!("t{i}")))
            .await
            .unwrap();
    }
    let batch = f.engine.lease(&f.node, 10).await.unwrap();
    assert_eq!(batch.tasks.len(), 3);
    // The node restarts: new epoch, and nothing waits for the 10s lease.
    let restarted = f
        .engine
        .register_node(
            "node-a",
            &crate::NodeAnnouncement {
                address: "127.0.0.1:1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(restarted.epoch, f.node.epoch + 1);
    assert_eq!(
        f.engine.reclaim_orphaned_leases(&restarted).await.unwrap(),
        3
    );
    let again = f.engine.lease(&restarted, 10).await.unwrap();
    assert_eq!(again.tasks.len(), 3);
    // The attempts the dead incarnation abandoned do not count.
    assert!(
        again
            .tasks
            .iter()
            .all(|t| (t.task.attempt, t.task.abandoned_attempts) == (1, 1))
    );
    // Reclaiming twice finds nothing more.
    assert_eq!(
        f.engine.reclaim_orphaned_leases(&restarted).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn renewal_keeps_a_lease_alive() {
    let f = fixture().await;
    f.engine.submit("default", new_task("p")).await.unwrap();
    let leased = lease_one(&f).await;
    for _ in 0..5 {
        f.clock.advance(Duration::from_secs(6));
        assert!(renew_one(&f, &leased.task_ref).await);
        assert_eq!(f.engine.sweep_timers(10).await.unwrap().leases_reclaimed, 0);
    }
    f.clock.advance(Duration::from_secs(11));
    assert_eq!(f.engine.sweep_timers(10).await.unwrap().leases_reclaimed, 1);
}

#[tokio::test]
async fn renewal_leaves_the_task_record_alone_so_it_never_conflicts_with_a_finish() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    let before = f.engine.get("default", id).await.unwrap();
    // A writer of the task (as progress and finish are) reads the record, then a renewal
    // commits, then the writer commits: it must not conflict.
    let key = crate::keyspace::task("default", id);
    let mut writer = f.engine.db().begin().await.unwrap();
    let record = writer.get(&key).await.unwrap().expect("task record");
    writer.set(&key, &record);
    f.clock.advance(Duration::from_secs(6));
    assert!(renew_one(&f, &leased.task_ref).await);
    writer
        .commit()
        .await
        .expect("a renewal must not make a write of the task conflict");
    assert_eq!(f.engine.get("default", id).await.unwrap(), before);
    // The renewed expiry holds past the one the lease was taken with (10 s).
    f.clock.advance(Duration::from_secs(6));
    assert_eq!(f.engine.sweep_timers(10).await.unwrap().leases_reclaimed, 0);
    let done = f
        .engine
        .finish(finish(&leased.task_ref, success("out")))
        .await
        .unwrap();
    assert_eq!(done, RunnerWriteResult::Accepted(TaskStatus::Succeeded));
    // The renewal's timer comes due after the finish: it guards nothing any more, and
    // nothing of the lease is left behind.
    f.clock.advance(Duration::from_secs(60));
    let sweep = f.engine.sweep_timers(10).await.unwrap();
    assert_eq!((sweep.leases_reclaimed, sweep.next_due), (0, None));
    let task = f.engine.get("default", id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    let mut txn = f.engine.db().begin().await.unwrap();
    let left = txn
        .get(&crate::keyspace::lease_expiry(id, leased.task_ref.fence))
        .await
        .unwrap();
    assert_eq!(left, None);
}

#[tokio::test]
async fn event_log_is_resumable_and_the_stream_ends_at_terminal() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let stream = f.engine.watch_events("default", id, 0).await.unwrap();
    let engine = f.engine.clone();
    let node = f.node.clone();
    let runner = tokio::spawn(async move {
        let leased = engine.lease(&node, 1).await.unwrap().tasks.remove(0);
        engine
            .progress(
                leased.task_ref.clone(),
                vec![Streamed::Output("part one ".into())],
            )
            .await
            .unwrap();
        let mut fin = finish(&leased.task_ref, success("part one part two"));
        fin.trailing = vec![
            Streamed::Output("part two".into()),
            Streamed::Activity("done streaming".into()),
        ];
        engine.finish(fin).await.unwrap();
    });
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(30), stream.collect::<Vec<_>>())
        .await
        .expect("stream ends after the terminal event");
    runner.await.unwrap();
    let events: Vec<_> = events.into_iter().map(|e| e.unwrap()).collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().kind, EventKind::Succeeded);
    let outputs: String = events
        .iter()
        .filter(|e| e.kind == EventKind::Output)
        .map(|e| e.output.as_str())
        .collect();
    assert_eq!(outputs, "part one part two");
    // Resume after seq 2: exactly the rest.
    let rest: Vec<_> = f
        .engine
        .watch_events("default", id, 2)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(rest.len(), events.len() - 2);
    assert_eq!(rest[0].as_ref().unwrap().seq, 3);
}

#[tokio::test]
async fn unknown_task_is_not_found() {
    let f = fixture().await;
    let id = supervisor_model::TaskId::generate();
    assert!(matches!(
        f.engine.get("default", id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        f.engine.cancel("default", id, "").await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        f.engine.watch_events("default", id, 0).await,
        Err(EngineError::NotFound { .. })
    ));
    // Tenants are isolated.
    let own = submit_one(&f, "p").await;
    assert!(matches!(
        f.engine.get("other", own).await,
        Err(EngineError::NotFound { .. })
    ));
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let f = fixture().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let mut req = new_task(&format!("t{i}"));
        req.task_type = Some(if i % 2 == 0 {
            TaskType::BugFix
        } else {
            TaskType::Testing
        });
        if i % 5 == 0 {
            req.labels = vec!["team-a".into()];
        }
        ids.push(f.engine.submit("default", req).await.unwrap().task.id);
    }
    // Page through everything, 10 at a time.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = f
            .engine
            .list(
                "default",
                &ListQuery {
                    page_size: 10,
                    page_token: token,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        seen.extend(page.tasks.iter().map(|t| t.id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let label = f
        .engine
        .list(
            "default",
            &ListQuery {
                label: Some("team-a".into()),
                page_size: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(label.tasks.len(), 5);
    let testing_labelled = f
        .engine
        .list(
            "default",
            &ListQuery {
                label: Some("team-a".into()),
                task_type: Some(TaskType::Testing),
                page_size: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(testing_labelled.tasks.len(), 2); // i = 5, 15
    f.engine.lease(&f.node, 3).await.unwrap();
    let running = f
        .engine
        .list(
            "default",
            &ListQuery {
                status: Some(TaskStatus::Running),
                page_size: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(running.tasks.len(), 3);
}

#[tokio::test]
async fn large_output_is_chunked_and_read_back_whole() {
    let f = fixture_with(EngineConfig {
        output_chunk_bytes: 1024,
        ..EngineConfig::default()
    })
    .await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    let big: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    f.engine
        .finish(finish(&leased.task_ref, success(&big)))
        .await
        .unwrap();
    let task = f.engine.get("default", id).await.unwrap();
    assert_eq!(task.output_bytes, big.len() as u64);
    assert_eq!(task.result.unwrap().output, big);
}

#[tokio::test]
async fn concurrent_submits_share_transactions_and_all_land() {
    let f = fixture().await;
    let handles: Vec<_> = (0..500)
        .map(|i| {
            let engine = f.engine.clone();
            tokio::spawn(async move { engine.submit("default", new_task(&format!("t{i}"))).await })
        })
        .collect();
    for h in handles {
        assert!(h.await.unwrap().unwrap().created);
    }
    assert_eq!(
        f.engine
            .status_counts()
            .await
            .unwrap()
            .get(TaskStatus::Queued),
        500
    );
    let mut leased = 0;
    loop {
        let batch = f.engine.lease(&f.node, 128).await.unwrap();
        if batch.tasks.is_empty() {
            break;
        }
        leased += batch.tasks.len();
    }
    assert_eq!(leased, 500);
}

#[tokio::test]
async fn retry_after_from_the_provider_outlasts_a_shorter_backoff() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    let outcome = Outcome::Failed {
        error: "rate limited".into(),
        kind: "rate_limited".into(),
        retryable: true,
        retry_after: Some(Duration::from_secs(7)),
    };
    f.engine
        .finish(finish(&leased.task_ref, outcome))
        .await
        .unwrap();
    let task = f.engine.get("default", id).await.unwrap();
    let delay = task.next_attempt_at.unwrap() - f.engine.now_micros();
    assert_eq!(
        delay, 7_000_000,
        "the 2s backoff yields to the provider's 7s"
    );
    f.clock.advance(Duration::from_millis(6_999));
    assert_eq!(f.engine.sweep_timers(10).await.unwrap().retries_vested, 0);
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(f.engine.sweep_timers(10).await.unwrap().retries_vested, 1);
    let (events, _, _) = f.engine.read_events("default", id, 0, 100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("the provider asked for 7.0s")),
        "{events:?}"
    );
}

#[tokio::test]
async fn attempts_are_recorded_and_charged_to_the_ledger() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let first = lease_one(&f).await;
    let mut failing = finish(&first.task_ref, failed("overloaded", true));
    failing.provider = "anthropic".into();
    failing.usage = Usage {
        input_tokens: 100,
        ..Usage::default()
    };
    failing.cost_micros = 5;
    f.engine.finish(failing).await.unwrap();
    f.clock.advance(Duration::from_secs(60));
    f.engine.sweep_timers(10).await.unwrap();
    let second = lease_one(&f).await;
    f.engine
        .finish(finish(&second.task_ref, success("ok")))
        .await
        .unwrap();
    let task = f.engine.get("default", id).await.unwrap();
    let outcomes: Vec<(&str, &str)> = task
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![("anthropic", "unavailable"), ("mock", "succeeded")]
    );
    assert_eq!(task.cost_micros, 35);
    let day = utc_day(f.engine.now_micros());
    let rows = f.engine.ledger("default", &day, &day).await.unwrap();
    let by: Vec<(&str, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r.provider.as_str(),
                r.attempts,
                r.input_tokens,
                r.cost_micros,
            )
        })
        .collect();
    assert_eq!(by, vec![("anthropic", 1, 100, 5), ("mock", 1, 10, 30)]);
    assert!(
        f.engine
            .ledger("other", &day, &day)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn concurrent_completions_never_lose_a_ledger_update() {
    let f = fixture().await;
    for i in 0..40 {
        f.engine
            .submit("default", new_task(&format!("t{i}")))
            .await
            .unwrap();
    }
    let batch = f.engine.lease(&f.node, 40).await.unwrap();
    let handles: Vec<_> = batch
        .tasks
        .into_iter()
        .map(|t| {
            let engine = f.engine.clone();
            tokio::spawn(async move { engine.finish(finish(&t.task_ref, success("x"))).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let day = utc_day(f.engine.now_micros());
    let rows = f.engine.ledger("default", &day, &day).await.unwrap();
    assert_eq!((rows[0].attempts, rows[0].cost_micros), (40, 40 * 30));
}

#[tokio::test]
async fn artifacts_are_stored_in_chunks_and_read_back() {
    let f = fixture_with(EngineConfig {
        output_chunk_bytes: 1024,
        ..EngineConfig::default()
    })
    .await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    let diff: String = (0..5000).map(|i| format!("+line {i}\n")).collect();
    let mut outcome = success("done");
    if let Outcome::Succeeded(r) = &mut outcome {
        r.artifacts = vec![
            supervisor_model::Artifact {
                name: "changes.diff".into(),
                media_type: "text/x-diff".into(),
                size_bytes: 0,
                content: diff.clone(),
            },
            supervisor_model::Artifact {
                name: "changes.diff".into(),
                media_type: "text/x-diff".into(),
                size_bytes: 0,
                content: "dup".into(),
            },
            supervisor_model::Artifact {
                name: "report.md".into(),
                media_type: "text/markdown".into(),
                size_bytes: 0,
                content: "# ok".into(),
            },
        ];
    }
    f.engine
        .finish(finish(&leased.task_ref, outcome))
        .await
        .unwrap();
    let task = f.engine.get("default", id).await.unwrap();
    let arts = task.result.unwrap().artifacts;
    assert_eq!(arts.len(), 2, "names are unique within a task");
    assert_eq!(
        (arts[0].name.as_str(), arts[0].size_bytes),
        ("changes.diff", diff.len() as u64)
    );
    assert_eq!(arts[0].content, diff);
    assert_eq!(arts[1].content, "# ok");
    // Listings carry the sizes but not the content.
    let page = f
        .engine
        .list(
            "default",
            &ListQuery {
                page_size: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let listed = page.tasks[0].result.as_ref().unwrap();
    assert!(
        listed
            .artifacts
            .iter()
            .all(|a| a.content.is_empty() && a.size_bytes > 0)
    );
}

#[tokio::test]
async fn a_spend_query_covers_at_most_a_year() {
    let f = fixture().await;
    assert!(
        f.engine
            .ledger("default", "2025-01-01", "2026-01-01")
            .await
            .is_ok(),
        "366 days"
    );
    let err = f
        .engine
        .ledger("default", "2025-01-01", "2026-01-02")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidArgument(e) if e.field == "to_day" && e.message.contains("at most 366 days")),
        "{err}"
    );
    let err = f
        .engine
        .ledger("default", "2026-02-30", "2026-03-01")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidArgument(e) if e.field == "from_day"),
        "{err}"
    );
}

#[tokio::test]
async fn submits_past_the_backlog_bound_are_refused_with_a_retry_delay_until_it_drains() {
    let f = fixture_with(EngineConfig {
        admission: AdmissionConfig {
            max_queued: 3,
            retry_after: Duration::from_millis(700),
            ..AdmissionConfig::default()
        },
        ..EngineConfig::default()
    })
    .await;
    for i in 0..3 {
        f.engine
            .submit("default", new_task(&format!("task {i}")))
            .await
            .expect("under the bound");
    }
    // The backlog is read again once the last reading is a quarter second old.
    f.clock.advance(Duration::from_millis(300));
    match f.engine.submit("default", new_task("one too many")).await {
        Err(EngineError::Overloaded {
            reason,
            retry_after,
        }) => {
            assert_eq!(retry_after, Duration::from_millis(700));
            assert!(reason.contains("3 tasks are queued"), "{reason}");
            assert!(reason.contains("engine.admission.max_queued"), "{reason}");
        }
        other => panic!("the fourth submit must be refused for overload, got {other:?}"),
    }
    let counts = f.engine.status_counts().await.expect("counts");
    assert_eq!(
        counts.get(TaskStatus::Queued),
        3,
        "the refused task was not queued"
    );
    // Leasing one makes room.
    let leased = f.engine.lease(&f.node, 1).await.expect("lease");
    assert_eq!(leased.tasks.len(), 1);
    f.clock.advance(Duration::from_millis(300));
    f.engine
        .submit("default", new_task("room again"))
        .await
        .expect("the backlog drained below the bound");
}

#[tokio::test]
async fn a_retried_submit_gets_its_task_back_even_under_overload() {
    let f = fixture_with(EngineConfig {
        admission: AdmissionConfig {
            max_queued: 1,
            ..AdmissionConfig::default()
        },
        ..EngineConfig::default()
    })
    .await;
    let keyed = NewTask {
        idempotency_key: Some("retry-me".into()),
        ..new_task("first")
    };
    let first = f
        .engine
        .submit("default", keyed.clone())
        .await
        .expect("first");
    f.clock.advance(Duration::from_millis(300));
    assert!(matches!(
        f.engine.submit("default", new_task("new work")).await,
        Err(EngineError::Overloaded { .. })
    ));
    let again = f.engine.submit("default", keyed).await.expect("the retry");
    assert_eq!(again.task.id, first.task.id);
    assert!(!again.created);
}
