//! Crash safety as a real process test: `kill -9` a node mid-run, start it again on the
//! same data directory, and check that every task reached exactly one terminal state and
//! that the provider's count of accepted completions equals the number of tasks.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use supervisor_client::Client;
use supervisor_proto::v1;

use common::NodeProcess;

const TASKS: usize = 300;

const ENV: &[(&str, &str)] = &[
    ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "300ms"),
    ("SUPERVISOR_PROVIDERS__MOCK__LATENCY_JITTER", "400ms"),
    ("SUPERVISOR_ENGINE__LEASE_DURATION", "3s"),
];

async fn stats(client: &Client) -> v1::TaskStats {
    client.stats().await.expect("stats")
}

fn terminal(s: &v1::TaskStats) -> u64 {
    s.succeeded + s.failed + s.cancelled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_nothing_and_completes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), ENV);
    let client = Client::connect(&node.url()).await.unwrap();

    let mut ids = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let task = client
            .submit(v1::SubmitTaskRequest {
                r#type: v1::TaskType::Testing as i32,
                prompt: format!("write tests for module {i}"),
                max_attempts: 5,
                ..Default::default()
            })
            .await
            .expect("submit");
        ids.push(task.id);
    }

    // Kill it while work is in flight: some done, most not.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats(&client).await;
        if s.succeeded >= 20 {
            assert!(
                terminal(&s) < TASKS as u64,
                "everything finished before the kill; the test proves nothing"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no task finished within 60s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.kill9();
    drop(client);

    let node = NodeProcess::start(dir.path(), ENV);
    let client = Client::connect(&node.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = stats(&client).await;
        if terminal(&s) == TASKS as u64 && s.running == 0 && s.queued == 0 && s.retry_wait == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks did not all finish after the restart: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut rerun = 0;
    for id in &ids {
        let task = client.get(id).await.expect("get");
        assert_eq!(
            task.status,
            v1::TaskStatus::Succeeded as i32,
            "task {id}: {}",
            task.error
        );
        // An attempt the kill interrupted does not count against the task's attempts.
        if task.abandoned_attempts > 0 {
            rerun += 1;
        }
        let events: Vec<v1::TaskEvent> = client
            .watch(id, 0)
            .map(|e| e.expect("event"))
            .collect()
            .await;
        let terminal_events = events
            .iter()
            .filter(|e| {
                [
                    v1::TaskEventType::Succeeded,
                    v1::TaskEventType::Failed,
                    v1::TaskEventType::Cancelled,
                ]
                .iter()
                .any(|t| *t as i32 == e.r#type)
            })
            .count();
        assert_eq!(
            terminal_events, 1,
            "task {id} has {terminal_events} terminal events"
        );
    }
    assert!(
        rerun > 0,
        "no task was interrupted by the kill; the test proves nothing"
    );

    let providers = client.providers().await.expect("providers");
    let mock = providers
        .iter()
        .find(|p| p.name == "mock")
        .expect("mock provider");
    assert_eq!(
        mock.completions_accepted, TASKS as u64,
        "completions accepted must equal tasks"
    );
    let s = stats(&client).await;
    assert_eq!(s.succeeded, TASKS as u64);
}
