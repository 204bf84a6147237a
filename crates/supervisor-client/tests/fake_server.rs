//! The SDK against an in-process fake `TaskService` (no real Supervisor server): watch
//! resumption, waiting, paging and error mapping.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use supervisor_client::{Client, ClientError, ResumePolicy, v1};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};
use v1::task_service_server::{TaskService, TaskServiceServer};

/// Watch calls seen (`after_seq` of each) and tasks the fake knows.
#[derive(Default)]
struct Fake {
    watch_calls: Mutex<Vec<u64>>,
    list_calls: Mutex<Vec<(u32, String)>>,
}

fn event(seq: u64, kind: v1::TaskEventType, status: v1::TaskStatus) -> v1::TaskEvent {
    v1::TaskEvent {
        task_id: "t1".into(),
        seq,
        r#type: kind as i32,
        status: status as i32,
        attempt: 1,
        ..Default::default()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for Fake {
    async fn submit_task(
        &self,
        _: Request<v1::SubmitTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_task(
        &self,
        request: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let id = request.into_inner().id;
        match id.as_str() {
            "t1" | "done" => Ok(Response::new(v1::Task {
                id,
                status: v1::TaskStatus::Succeeded as i32,
                ..Default::default()
            })),
            "repeat" => Ok(Response::new(v1::Task {
                id,
                status: v1::TaskStatus::Queued as i32,
                ..Default::default()
            })),
            _ => Err(Status::not_found(format!("no task with id {id}"))),
        }
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let request = request.into_inner();
        self.list_calls
            .lock()
            .expect("lock")
            .push((request.page_size, request.page_token.clone()));
        // Five tasks "0".."4", pages of page_size (0: 2).
        let start: usize = request.page_token.parse().unwrap_or(0);
        let size = match request.page_size {
            0 => 2,
            n => n as usize,
        };
        let end = (start + size).min(5);
        let tasks = (start..end)
            .map(|n| v1::Task {
                id: n.to_string(),
                ..Default::default()
            })
            .collect();
        let next_page_token = if end < 5 {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListTasksResponse {
            tasks,
            next_page_token,
        }))
    }

    async fn cancel_task(
        &self,
        _: Request<v1::CancelTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        Err(Status::failed_precondition("task t1 has already finished"))
    }

    async fn retry_task(
        &self,
        _: Request<v1::RetryTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchTaskStream = EventStream;

    async fn watch_task(
        &self,
        request: Request<v1::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        use v1::{TaskEventType as E, TaskStatus as S};
        let request = request.into_inner();
        let calls = {
            let mut calls = self.watch_calls.lock().expect("lock");
            calls.push(request.after_seq);
            calls.len()
        };
        match request.id.as_str() {
            "t1" => {}
            // Finished long ago: nothing after the given seq.
            "done" => return Ok(Response::new(futures::stream::empty().boxed())),
            // A server repeating itself: event 1 again on every watch, then it closes.
            "repeat" => {
                let again = event(1, E::Submitted, S::Queued);
                return Ok(Response::new(futures::stream::iter([Ok(again)]).boxed()));
            }
            other => return Err(Status::not_found(format!("no task with id {other}"))),
        }
        let items: Vec<Result<v1::TaskEvent, Status>> = match calls {
            // First watch: two events, then the server "goes away".
            1 => vec![
                Ok(event(1, E::Submitted, S::Queued)),
                Ok(event(2, E::Started, S::Running)),
                Err(Status::unavailable("server shutting down")),
            ],
            // Second watch: refused outright while the server restarts.
            2 => return Err(Status::unavailable("restarting")),
            // Then the rest, from after_seq.
            _ => [
                event(1, E::Submitted, S::Queued),
                event(2, E::Started, S::Running),
                event(3, E::Output, S::Running),
                event(4, E::Succeeded, S::Succeeded),
            ]
            .into_iter()
            .filter(|e| e.seq > request.after_seq)
            .map(Ok)
            .collect(),
        };
        Ok(Response::new(futures::stream::iter(items).boxed()))
    }

    async fn get_task_stats(
        &self,
        _: Request<v1::GetTaskStatsRequest>,
    ) -> Result<Response<v1::TaskStats>, Status> {
        Ok(Response::new(v1::TaskStats {
            queued: 1,
            ..Default::default()
        }))
    }

    type WatchTaskStatsStream = futures::stream::BoxStream<'static, Result<v1::TaskStats, Status>>;

    async fn watch_task_stats(
        &self,
        _: Request<v1::WatchTaskStatsRequest>,
    ) -> Result<Response<Self::WatchTaskStatsStream>, Status> {
        Err(Status::unimplemented("the fake serves no stats stream"))
    }
}

async fn start() -> (Client, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let service = TaskServiceServer::from_arc(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
    });
    let client = Client::connect(&addr.to_string())
        .await
        .expect("connect to the fake")
        .with_resume_policy(ResumePolicy {
            max_consecutive_failures: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        });
    (client, fake)
}

#[tokio::test]
async fn follow_resumes_from_the_last_seq_after_unavailable() {
    let (client, fake) = start().await;
    let events: Vec<_> = client.follow("t1", 0).collect().await;
    let seqs: Vec<u64> = events
        .into_iter()
        .map(|e| e.expect("no error reaches the caller").seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(*fake.watch_calls.lock().expect("lock"), [0, 2, 2]);
}

#[tokio::test]
async fn follow_drops_events_it_has_seen_and_gives_up_on_a_server_repeating_itself() {
    let (client, fake) = start().await;
    let items: Vec<_> = client.follow("repeat", 0).collect().await;
    assert_eq!(items.len(), 2, "one event, then the error: {items:?}");
    assert_eq!(items[0].as_ref().expect("the first event").seq, 1);
    assert!(items[1].is_err(), "{items:?}");
    // The first watch and three resumes (the policy's budget), not one per repetition.
    assert_eq!(fake.watch_calls.lock().expect("lock").len(), 4);
}

#[tokio::test]
async fn watch_does_not_resume() {
    let (client, _) = start().await;
    let events: Vec<_> = client.watch("t1", 0).collect().await;
    assert_eq!(events.len(), 3);
    let err = events[2].as_ref().expect_err("the break is reported");
    assert_eq!(err.to_string(), "UNAVAILABLE: server shutting down");
}

#[tokio::test]
async fn wait_returns_the_finished_task() {
    let (client, _) = start().await;
    let task = client.wait("t1").await.expect("wait");
    assert_eq!(task.status(), v1::TaskStatus::Succeeded);
    // A stream that ends at once for a finished task is not an error either.
    let task = client.wait("done").await.expect("wait on a finished task");
    assert_eq!(task.id, "done");
}

#[tokio::test]
async fn errors_keep_code_and_message() {
    let (client, _) = start().await;
    let err = client.get("nope").await.expect_err("unknown id");
    assert!(matches!(
        err,
        ClientError::Status {
            code: tonic::Code::NotFound,
            ..
        }
    ));
    assert_eq!(err.to_string(), "NOT_FOUND: no task with id nope");
    let events: Vec<_> = client.watch("nope", 0).collect().await;
    assert_eq!(events.len(), 1);
    assert!(events[0].as_ref().is_err_and(|e| e.is_not_found()));
    let err = client.cancel("t1", "").await.expect_err("finished");
    assert_eq!(
        err.to_string(),
        "FAILED_PRECONDITION: task t1 has already finished"
    );
    let err = client.providers().await.expect_err("no provider service");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(client.stats().await.expect("stats").queued, 1);
}

#[tokio::test]
async fn list_all_follows_page_tokens_and_limits() {
    let (client, fake) = start().await;
    let all = client
        .list_all(v1::ListTasksRequest::default())
        .await
        .expect("list all");
    let ids: Vec<_> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);

    let (some, next) = client
        .list_up_to(v1::ListTasksRequest::default(), Some(3))
        .await
        .expect("list 3");
    assert_eq!(some.len(), 3);
    assert_eq!(next, "3");
    let calls = fake.list_calls.lock().expect("lock").clone();
    assert_eq!(
        calls,
        [
            (0, String::new()),
            (0, "2".into()),
            (0, "4".into()),
            (3, String::new()),
        ]
    );
}
