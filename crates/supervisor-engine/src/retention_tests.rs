//! Retention: what the sweeper deletes, what it leaves, and the archive it writes first.

use std::time::Duration;

use supervisor_model::{Artifact, NewTask, TaskResult, TaskStatus, Usage};
use supervisor_store::RangeOptions;

use crate::archive::Archiver;
use crate::tests::{fixture, lease_one, new_task, submit_one, success};
use crate::*;

fn keep(secs: u64) -> RetentionConfig {
    RetentionConfig {
        keep: Duration::from_secs(secs),
        ..RetentionConfig::default()
    }
}

/// Every key of the store that mentions `id`.
async fn keys_mentioning(engine: &Engine, id: TaskId) -> Vec<String> {
    let mut txn = engine.inner.db.begin().await.unwrap();
    let all = txn
        .get_range(&[], &[0xff], RangeOptions::new())
        .await
        .unwrap();
    let needle = id.to_string();
    all.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .filter(|k| k.contains(&needle))
        .collect()
}

#[tokio::test]
async fn a_finished_task_goes_with_everything_beside_it_and_its_spend_stays() {
    let f = fixture().await;
    let nightly = || NewTask {
        labels: vec!["nightly".into()],
        idempotency_key: Some("build-1".into()),
        ..new_task("finishes")
    };
    let done = f.engine.submit("default", nightly()).await.unwrap().task.id;
    let leased = lease_one(&f).await;
    assert_eq!(leased.task.id, done);
    let mut result = success(&"x".repeat(200_000));
    if let Outcome::Succeeded(r) = &mut result {
        r.artifacts = vec![Artifact {
            name: "changes.diff".into(),
            media_type: "text/x-diff".into(),
            size_bytes: 0,
            content: "+fix".into(),
        }];
    }
    f.engine
        .finish(crate::tests::finish(&leased.task_ref, result))
        .await
        .unwrap();
    let running = submit_one(&f, "keeps running").await;
    let lease = lease_one(&f).await;
    assert_eq!(lease.task.id, running);
    let day = utc_day(f.engine.now_micros());

    // Not yet: the period has not passed.
    f.clock.advance(Duration::from_secs(2));
    let sweep = sweep_with(&f, &keep(3)).await;
    assert_eq!(sweep.tasks_deleted, 0);
    assert!(f.engine.get("default", done).await.is_ok());

    f.clock.advance(Duration::from_secs(2));
    let sweep = sweep_with(&f, &keep(3)).await;
    assert_eq!(sweep.tasks_deleted, 1);
    assert!(matches!(
        f.engine.get("default", done).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        f.engine.read_events("default", done, 0, 10).await,
        Err(EngineError::NotFound { .. })
    ));
    assert_eq!(
        keys_mentioning(&f.engine, done).await,
        Vec::<String>::new(),
        "nothing of the task is left"
    );
    // The running task is untouched, and still finishes.
    assert_eq!(
        f.engine.get("default", running).await.unwrap().status,
        TaskStatus::Running
    );
    let counts = f.engine.status_counts().await.unwrap();
    assert_eq!(counts.get(TaskStatus::Succeeded), 0);
    assert_eq!(counts.get(TaskStatus::Running), 1);
    // The spend stays in the ledger.
    let rows = f.engine.ledger("default", &day, &day).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].attempts, rows[0].cost_micros), (1, 30));
    // The idempotency key went with its task: the same submit makes a new one.
    let again = f.engine.submit("default", nightly()).await.unwrap();
    assert!(again.created);
    assert_ne!(again.task.id, done);
    f.engine
        .finish(crate::tests::finish(&lease.task_ref, success("ok")))
        .await
        .unwrap();
    assert_eq!(
        f.engine.get("default", running).await.unwrap().status,
        TaskStatus::Succeeded
    );
}

/// One sweep with `cfg`, on behalf of anyone.
async fn sweep_with(f: &crate::tests::Fixture, cfg: &RetentionConfig) -> RetentionSweep {
    f.engine.sweep_retention(cfg, None, None).await.unwrap()
}

/// Submits a task and runs it to success; its id.
async fn run_one(f: &crate::tests::Fixture, prompt: &str) -> TaskId {
    let id = submit_one(f, prompt).await;
    let leased = lease_one(f).await;
    f.engine
        .finish(crate::tests::finish(&leased.task_ref, success("ok")))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn keep_zero_and_tenant_periods_are_honoured() {
    let f = fixture().await;
    let id = run_one(&f, "p").await;
    f.clock.advance(Duration::from_secs(3600));
    let forever = keep(0);
    let sweep = sweep_with(&f, &forever).await;
    assert_eq!(sweep.tasks_deleted, 0);
    let mut longer = keep(1);
    longer
        .tenants
        .insert("default".into(), Duration::from_secs(7200));
    let sweep = sweep_with(&f, &longer).await;
    assert_eq!(sweep.tasks_deleted, 0);
    assert!(f.engine.get("default", id).await.is_ok());
    f.clock.advance(Duration::from_secs(3601));
    let sweep = sweep_with(&f, &longer).await;
    assert_eq!(sweep.tasks_deleted, 1);
}

#[tokio::test]
async fn sweeps_go_in_batches_and_tasks_finished_before_entries_existed_are_found() {
    let f = fixture().await;
    for i in 0..5 {
        run_one(&f, &format!("t{i}")).await;
    }
    // As an earlier version left them: no retention entries.
    let mut txn = f.engine.inner.db.begin().await.unwrap();
    let (begin, end) = crate::keyspace::expiries(crate::keyspace::Expiring::Task);
    txn.clear_range(&begin, &end);
    txn.commit().await.unwrap();
    f.clock.advance(Duration::from_secs(10));
    let cfg = RetentionConfig {
        batch: 2,
        ..keep(3)
    };
    let mut deleted = 0;
    let mut backfilled = 0;
    for _ in 0..10 {
        let sweep = sweep_with(&f, &cfg).await;
        assert!(sweep.tasks_deleted <= 2, "at most a batch at a time");
        deleted += sweep.tasks_deleted;
        backfilled += sweep.backfilled;
        if !sweep.more && deleted == 5 {
            break;
        }
    }
    assert_eq!((backfilled, deleted), (5, 5));
    let counts = f.engine.status_counts().await.unwrap();
    assert_eq!(counts.get(TaskStatus::Succeeded), 0);
}

#[tokio::test]
async fn the_archive_holds_what_was_deleted_and_reads_back() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let archiver = Archiver::new(dir.path());
    let id = submit_one(&f, "archive me").await;
    let leased = lease_one(&f).await;
    f.engine
        .finish(crate::tests::finish(
            &leased.task_ref,
            Outcome::Succeeded(TaskResult {
                output: "the output".into(),
                usage: Usage::default(),
                cost_micros: 7,
                provider: "mock".into(),
                model: "mock-1".into(),
                artifacts: vec![],
            }),
        ))
        .await
        .unwrap();
    let ended = f
        .engine
        .get("default", id)
        .await
        .unwrap()
        .finished_at
        .unwrap();
    f.clock.advance(Duration::from_secs(5));
    let sweep = f
        .engine
        .sweep_retention(&keep(3), Some(&archiver), None)
        .await
        .unwrap();
    assert_eq!((sweep.tasks_deleted, sweep.archived), (1, 1));
    let file = archiver.file_for("default", ended);
    let (records, error) = crate::archive::read(&file);
    assert_eq!(error, None);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!((record.kind.as_str(), record.id), ("task", id));
    assert_eq!(record.record["result"]["output"], "the output");
    let kinds: Vec<&str> = record
        .events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.len() >= 2, "the event log is archived: {kinds:?}");

    // A torn last frame: every complete record before it still reads.
    let mut bytes = std::fs::read(&file).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&zstd::encode_all(&b"{\"partial\": "[..], 3).unwrap()[..10]);
    std::fs::write(&file, &bytes).unwrap();
    let (records, error) = crate::archive::read(&file);
    assert_eq!(records.len(), 1);
    assert!(
        error.is_some(),
        "the torn frame is reported ({good} good bytes)"
    );
}

#[tokio::test]
async fn after_a_restore_no_node_of_the_old_incarnation_completes_anything() {
    let f = fixture().await;
    let id = submit_one(&f, "p").await;
    let leased = lease_one(&f).await;
    let reaper = f
        .engine
        .acquire_singleton(REAPER_DUTY, &f.node, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the node takes the duty");
    let fenced = f
        .engine
        .fence_all_after_restore("restored from a backup")
        .await
        .unwrap();
    assert_eq!(fenced, 1);
    // The running attempt's completion is refused, and so is the old duty token.
    let late = f
        .engine
        .finish(crate::tests::finish(&leased.task_ref, success("late")))
        .await
        .unwrap();
    assert!(matches!(late, RunnerWriteResult::Refused(_)), "{late:?}");
    let sweep = f.engine.sweep_timers_as_reaper(10, reaper).await.unwrap();
    assert!(sweep.lost_duty);
    assert!(matches!(
        f.engine.heartbeat(&f.node, Default::default()).await,
        Err(EngineError::Fenced { .. })
    ));
    // A new start runs the task once more, and only that run counts.
    let node = f
        .engine
        .register_node("node-a", &NodeAnnouncement::default())
        .await
        .unwrap();
    assert!(node.epoch > f.node.epoch + 1);
    f.clock.advance(Duration::from_secs(11));
    f.engine.sweep_timers(10).await.unwrap();
    let mut batch = f.engine.lease(&node, 1).await.unwrap();
    let again = batch.tasks.remove(0);
    assert_eq!(again.task.id, id);
    let done = f
        .engine
        .finish(crate::tests::finish(&again.task_ref, success("once")))
        .await
        .unwrap();
    assert_eq!(done, RunnerWriteResult::Accepted(TaskStatus::Succeeded));
}
