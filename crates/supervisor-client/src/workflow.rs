//! Workflow runs and schedules: the [`Client`] methods wrapping `WorkflowService`.

use std::collections::HashMap;

use supervisor_proto::v1::{
    CancelWorkflowRequest, CreateScheduleRequest, GetWorkflowRequest, ListSchedulesRequest,
    ListWorkflowsRequest, ListWorkflowsResponse, RetryWorkflowRequest, Schedule, ScheduleRef,
    SubmitWorkflowRequest, ValidateWorkflowRequest, ValidateWorkflowResponse, WorkflowRun,
    WorkflowSource,
};

use crate::{Client, ClientError, pages, watch, watch::WorkflowEventStream};

impl Client {
    /// Checks a workflow definition without running it. Every error and warning comes
    /// back at once, each with a stable code (such as `cycle`), the step concerned and
    /// a message; `valid` is false when there is an error.
    ///
    /// A definition the server cannot parse at all is reported as an error of the
    /// response too (or, by some servers, refused with `INVALID_ARGUMENT`).
    pub async fn validate_workflow(
        &self,
        source: WorkflowSource,
    ) -> Result<ValidateWorkflowResponse, ClientError> {
        let request = ValidateWorkflowRequest {
            source: Some(source),
        };
        Ok(self
            .workflows
            .clone()
            .validate_workflow(request)
            .await?
            .into_inner())
    }

    /// Validates a workflow and starts a run of it, with `vars` overriding the
    /// definition's variables; returns the run as started (its root steps' tasks are
    /// queued). An invalid definition is refused with `INVALID_ARGUMENT`.
    ///
    /// Read a definition file with [`read_workflow_source`](crate::read_workflow_source).
    pub async fn submit_workflow(
        &self,
        source: WorkflowSource,
        vars: HashMap<String, String>,
    ) -> Result<WorkflowRun, ClientError> {
        let request = SubmitWorkflowRequest {
            source: Some(source),
            vars,
        };
        Ok(self
            .workflows
            .clone()
            .submit_workflow(request)
            .await?
            .into_inner())
    }

    /// Reads one workflow run: its status and each step's state, task id and output
    /// summary.
    pub async fn get_workflow(&self, id: &str) -> Result<WorkflowRun, ClientError> {
        let request = GetWorkflowRequest { id: id.to_owned() };
        Ok(self
            .workflows
            .clone()
            .get_workflow(request)
            .await?
            .into_inner())
    }

    /// Reads one page of workflow runs, newest first.
    pub async fn list_workflows(
        &self,
        request: ListWorkflowsRequest,
    ) -> Result<ListWorkflowsResponse, ClientError> {
        Ok(self
            .workflows
            .clone()
            .list_workflows(request)
            .await?
            .into_inner())
    }

    /// Reads workflow runs matching `filter`, following page tokens, until `limit` runs
    /// (all when `None`). Also returns the token of the next page, empty when there is
    /// none. `filter.page_size` is the page size (0: the server's default), lowered to
    /// fetch no more than `limit`.
    pub async fn list_workflows_up_to(
        &self,
        filter: ListWorkflowsRequest,
        limit: Option<usize>,
    ) -> Result<(Vec<WorkflowRun>, String), ClientError> {
        let pages = pages::Pages {
            call: "ListWorkflows",
            page_size: filter.page_size,
            page_token: filter.page_token.clone(),
            limit,
        };
        pages
            .collect(|page_size, page_token| {
                let request = ListWorkflowsRequest {
                    page_size,
                    page_token,
                    ..filter.clone()
                };
                async move {
                    let page = self.list_workflows(request).await?;
                    Ok((page.runs, page.next_page_token))
                }
            })
            .await
    }

    /// Cancels a running workflow run and returns it: its running steps are cancelled
    /// and its pending ones skipped. `reason` (may be empty) is recorded in its events.
    pub async fn cancel_workflow(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<WorkflowRun, ClientError> {
        let request = CancelWorkflowRequest {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        Ok(self
            .workflows
            .clone()
            .cancel_workflow(request)
            .await?
            .into_inner())
    }

    /// Resumes a failed or cancelled workflow run from its unfinished steps (the same
    /// run, with `retries` one higher); steps that succeeded keep their outputs.
    pub async fn retry_workflow(&self, id: &str) -> Result<WorkflowRun, ClientError> {
        let request = RetryWorkflowRequest { id: id.to_owned() };
        Ok(self
            .workflows
            .clone()
            .retry_workflow(request)
            .await?
            .into_inner())
    }

    /// Streams a workflow run's events with a sequence number above `after_seq` (0:
    /// all), live; the server ends the stream after the run ends. The call starts when
    /// the stream is first polled; a failure (such as `NOT_FOUND`) is the stream's only
    /// item. The stream is not resumed when it breaks: see [`Client::follow_workflow`]
    /// for that.
    pub fn watch_workflow(&self, id: &str, after_seq: u64) -> WorkflowEventStream {
        watch::watch(self.clone(), watch::RunLog(id.to_owned()), after_seq)
    }

    /// Like [`Client::watch_workflow`], but when the stream breaks with `UNAVAILABLE`
    /// (server restarting, connection lost) or closes while the run is still running, it
    /// watches again from the last sequence number seen, following the client's
    /// [`ResumePolicy`](crate::ResumePolicy). Ends when the server closes the stream and
    /// the run has ended.
    ///
    /// A retried run goes on after a `run_failed` or `run_cancelled` event, so the end
    /// of the stream, not a terminal event, tells that the run ended.
    pub fn follow_workflow(&self, id: &str, after_seq: u64) -> WorkflowEventStream {
        watch::follow(
            self.clone(),
            watch::RunLog(id.to_owned()),
            after_seq,
            self.resume,
        )
    }

    /// Waits until the workflow run ends (following its events, resuming on
    /// `UNAVAILABLE`) and returns it as it ended: `succeeded`, `failed` or `cancelled`.
    pub async fn wait_workflow(&self, id: &str) -> Result<WorkflowRun, ClientError> {
        watch::wait(self.clone(), watch::RunLog(id.to_owned()), self.resume).await
    }

    /// Creates a schedule that starts runs of a workflow on a cron (5 or 6 fields) in a
    /// time zone (empty: UTC), or replaces the schedule of the same name.
    pub async fn create_schedule(
        &self,
        request: CreateScheduleRequest,
    ) -> Result<Schedule, ClientError> {
        Ok(self
            .workflows
            .clone()
            .create_schedule(request)
            .await?
            .into_inner())
    }

    /// Every schedule, with its next and last firing, following pages.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>, ClientError> {
        let pages = pages::Pages {
            call: "ListSchedules",
            page_size: 0,
            page_token: String::new(),
            limit: None,
        };
        let (schedules, _) = pages
            .collect(|page_size, page_token| {
                let request = ListSchedulesRequest {
                    page_size,
                    page_token,
                };
                async move {
                    let page = self
                        .workflows
                        .clone()
                        .list_schedules(request)
                        .await?
                        .into_inner();
                    Ok((page.schedules, page.next_page_token))
                }
            })
            .await?;
        Ok(schedules)
    }

    /// Pauses a schedule: its ticks start no run until it is resumed. Returns it.
    pub async fn pause_schedule(&self, name: &str) -> Result<Schedule, ClientError> {
        let request = schedule_ref(name);
        Ok(self
            .workflows
            .clone()
            .pause_schedule(request)
            .await?
            .into_inner())
    }

    /// Resumes a paused schedule from its next tick. Returns it.
    pub async fn resume_schedule(&self, name: &str) -> Result<Schedule, ClientError> {
        let request = schedule_ref(name);
        Ok(self
            .workflows
            .clone()
            .resume_schedule(request)
            .await?
            .into_inner())
    }

    /// Starts a run of the schedule's workflow now, outside its ticks, and returns it.
    pub async fn trigger_schedule(&self, name: &str) -> Result<WorkflowRun, ClientError> {
        let request = schedule_ref(name);
        Ok(self
            .workflows
            .clone()
            .trigger_schedule(request)
            .await?
            .into_inner())
    }

    /// Deletes a schedule and returns it as it was. Runs it started are kept.
    pub async fn delete_schedule(&self, name: &str) -> Result<Schedule, ClientError> {
        let request = schedule_ref(name);
        Ok(self
            .workflows
            .clone()
            .delete_schedule(request)
            .await?
            .into_inner())
    }
}

fn schedule_ref(name: &str) -> ScheduleRef {
    ScheduleRef {
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use futures::{StreamExt as _, stream::BoxStream};
    use supervisor_proto::v1::{
        self, RunStatus, WatchWorkflowRequest, WorkflowEvent,
        workflow_service_server::{WorkflowService, WorkflowServiceServer},
    };
    use tonic::{Request, Response, Status, transport::server::TcpIncoming};

    use super::*;
    use crate::{ResumePolicy, SourceFormat, workflow_source};

    /// A `WorkflowService` answering from fixed data; remembers what it was asked.
    #[derive(Default)]
    struct Fake {
        /// `after_seq` of each watch of run `r1`.
        watch_calls: Mutex<Vec<u64>>,
        /// The sources and vars submitted.
        submitted: Mutex<Vec<SubmitWorkflowRequest>>,
        /// `(page_size, page_token)` of each list call.
        list_calls: Mutex<Vec<(u32, String)>>,
        /// `(rpc, name)` of each schedule call.
        schedule_calls: Mutex<Vec<(&'static str, String)>>,
    }

    fn run(id: &str, status: RunStatus) -> WorkflowRun {
        WorkflowRun {
            id: id.into(),
            name: "flow".into(),
            status: status as i32,
            ..Default::default()
        }
    }

    fn event(seq: u64, kind: &str) -> WorkflowEvent {
        WorkflowEvent {
            run_id: "r1".into(),
            seq,
            kind: kind.into(),
            ..Default::default()
        }
    }

    fn schedule(name: &str, paused: bool) -> Schedule {
        Schedule {
            name: name.into(),
            cron: "0 3 * * *".into(),
            paused,
            ..Default::default()
        }
    }

    impl Fake {
        fn record(&self, rpc: &'static str, request: Request<ScheduleRef>) -> String {
            let name = request.into_inner().name;
            self.schedule_calls
                .lock()
                .expect("lock")
                .push((rpc, name.clone()));
            name
        }
    }

    #[tonic::async_trait]
    impl WorkflowService for Fake {
        async fn validate_workflow(
            &self,
            request: Request<ValidateWorkflowRequest>,
        ) -> Result<Response<ValidateWorkflowResponse>, Status> {
            let source = request.into_inner().source.and_then(|s| s.source);
            let valid = matches!(source, Some(v1::workflow_source::Source::Json(_)));
            let errors = if valid {
                vec![]
            } else {
                vec![v1::ValidationIssue {
                    code: "cycle".into(),
                    step: "a".into(),
                    message: "a needs itself".into(),
                }]
            };
            Ok(Response::new(ValidateWorkflowResponse {
                valid,
                errors,
                warnings: vec![],
            }))
        }

        async fn submit_workflow(
            &self,
            request: Request<SubmitWorkflowRequest>,
        ) -> Result<Response<WorkflowRun>, Status> {
            self.submitted
                .lock()
                .expect("lock")
                .push(request.into_inner());
            Ok(Response::new(run("r1", RunStatus::Running)))
        }

        async fn get_workflow(
            &self,
            request: Request<GetWorkflowRequest>,
        ) -> Result<Response<WorkflowRun>, Status> {
            let id = request.into_inner().id;
            match id.as_str() {
                // r1 ends (succeeded) once it has been watched three times.
                "r1" if self.watch_calls.lock().expect("lock").len() >= 3 => {
                    Ok(Response::new(run("r1", RunStatus::Succeeded)))
                }
                "r1" => Ok(Response::new(run("r1", RunStatus::Running))),
                "done" => Ok(Response::new(run("done", RunStatus::Failed))),
                _ => Err(Status::not_found(format!("no workflow run with id {id}"))),
            }
        }

        async fn list_workflows(
            &self,
            request: Request<ListWorkflowsRequest>,
        ) -> Result<Response<ListWorkflowsResponse>, Status> {
            let request = request.into_inner();
            self.list_calls
                .lock()
                .expect("lock")
                .push((request.page_size, request.page_token.clone()));
            // Five runs "0".."4", pages of page_size (0: 2).
            let start: usize = request.page_token.parse().unwrap_or(0);
            let size = match request.page_size {
                0 => 2,
                n => n as usize,
            };
            let end = (start + size).min(5);
            let runs = (start..end)
                .map(|n| run(&n.to_string(), RunStatus::Succeeded))
                .collect();
            let next_page_token = if end < 5 {
                end.to_string()
            } else {
                String::new()
            };
            Ok(Response::new(ListWorkflowsResponse {
                runs,
                next_page_token,
            }))
        }

        async fn cancel_workflow(
            &self,
            request: Request<CancelWorkflowRequest>,
        ) -> Result<Response<WorkflowRun>, Status> {
            let request = request.into_inner();
            Err(Status::failed_precondition(format!(
                "workflow run {} has already ended ({})",
                request.id, request.reason
            )))
        }

        async fn retry_workflow(
            &self,
            request: Request<RetryWorkflowRequest>,
        ) -> Result<Response<WorkflowRun>, Status> {
            let mut retried = run(&request.into_inner().id, RunStatus::Running);
            retried.retries = 1;
            Ok(Response::new(retried))
        }

        type WatchWorkflowStream = BoxStream<'static, Result<WorkflowEvent, Status>>;

        async fn watch_workflow(
            &self,
            request: Request<WatchWorkflowRequest>,
        ) -> Result<Response<Self::WatchWorkflowStream>, Status> {
            let request = request.into_inner();
            match request.id.as_str() {
                "r1" => {}
                // Ended long ago: nothing after the given seq.
                "done" => return Ok(Response::new(futures::stream::empty().boxed())),
                other => {
                    return Err(Status::not_found(format!(
                        "no workflow run with id {other}"
                    )));
                }
            }
            let calls = {
                let mut calls = self.watch_calls.lock().expect("lock");
                calls.push(request.after_seq);
                calls.len()
            };
            let items: Vec<Result<WorkflowEvent, Status>> = match calls {
                // First watch: an attempt that failed, then the server goes away.
                1 => vec![
                    Ok(event(1, "run_started")),
                    Ok(event(2, "step_failed")),
                    Ok(event(3, "run_failed")),
                    Err(Status::unavailable("server shutting down")),
                ],
                // Second watch: the retry, then the stream closes while the run still
                // runs (the server stopped cleanly).
                2 => vec![Ok(event(4, "run_retried")), Ok(event(5, "step_started"))],
                // Then the end, from after_seq.
                _ => [
                    event(4, "run_retried"),
                    event(5, "step_started"),
                    event(6, "step_succeeded"),
                    event(7, "run_succeeded"),
                ]
                .into_iter()
                .filter(|e| e.seq > request.after_seq)
                .map(Ok)
                .collect(),
            };
            Ok(Response::new(futures::stream::iter(items).boxed()))
        }

        async fn create_schedule(
            &self,
            request: Request<CreateScheduleRequest>,
        ) -> Result<Response<Schedule>, Status> {
            let request = request.into_inner();
            self.schedule_calls
                .lock()
                .expect("lock")
                .push(("create", request.name.clone()));
            Ok(Response::new(Schedule {
                name: request.name,
                cron: request.cron,
                timezone: request.timezone,
                missed: request.missed,
                ..Default::default()
            }))
        }

        async fn list_schedules(
            &self,
            request: Request<ListSchedulesRequest>,
        ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
            // One schedule per page, as a page cut by size may hold.
            let page = match request.into_inner().page_token.as_str() {
                "" => v1::ListSchedulesResponse {
                    schedules: vec![schedule("nightly", false)],
                    next_page_token: "nightly".into(),
                },
                _ => v1::ListSchedulesResponse {
                    schedules: vec![schedule("weekly", true)],
                    next_page_token: String::new(),
                },
            };
            Ok(Response::new(page))
        }

        async fn pause_schedule(
            &self,
            request: Request<ScheduleRef>,
        ) -> Result<Response<Schedule>, Status> {
            let name = self.record("pause", request);
            Ok(Response::new(schedule(&name, true)))
        }

        async fn resume_schedule(
            &self,
            request: Request<ScheduleRef>,
        ) -> Result<Response<Schedule>, Status> {
            let name = self.record("resume", request);
            Ok(Response::new(schedule(&name, false)))
        }

        async fn trigger_schedule(
            &self,
            request: Request<ScheduleRef>,
        ) -> Result<Response<WorkflowRun>, Status> {
            let name = self.record("trigger", request);
            Ok(Response::new(run(
                &format!("run-of-{name}"),
                RunStatus::Running,
            )))
        }

        async fn delete_schedule(
            &self,
            request: Request<ScheduleRef>,
        ) -> Result<Response<Schedule>, Status> {
            let name = self.record("delete", request);
            if name == "missing" {
                return Err(Status::not_found("no schedule named missing"));
            }
            Ok(Response::new(schedule(&name, false)))
        }
    }

    async fn start() -> (Client, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let service = WorkflowServiceServer::from_arc(fake.clone());
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
    async fn follow_workflow_reads_past_a_retried_failure_and_resumes() {
        let (client, fake) = start().await;
        let events: Vec<_> = client.follow_workflow("r1", 0).collect().await;
        let seqs: Vec<u64> = events
            .into_iter()
            .map(|e| e.expect("no error reaches the caller").seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(*fake.watch_calls.lock().expect("lock"), [0, 3, 5]);
    }

    #[tokio::test]
    async fn watch_workflow_does_not_resume() {
        let (client, _) = start().await;
        let events: Vec<_> = client.watch_workflow("r1", 0).collect().await;
        assert_eq!(events.len(), 4);
        let err = events[3].as_ref().expect_err("the break is reported");
        assert!(err.is_unavailable(), "{err}");

        let events: Vec<_> = client.watch_workflow("nope", 0).collect().await;
        assert_eq!(events.len(), 1);
        let err = events[0].as_ref().expect_err("refused");
        assert!(err.is_not_found(), "{err}");
    }

    #[tokio::test]
    async fn wait_workflow_returns_the_ended_run() {
        let (client, _) = start().await;
        let run = client.wait_workflow("r1").await.expect("wait");
        assert_eq!(run.status(), RunStatus::Succeeded);
        // A run that ended before the watch: the empty stream is its end.
        let run = client.wait_workflow("done").await.expect("wait");
        assert_eq!(run.status(), RunStatus::Failed);
        let err = client.wait_workflow("nope").await.expect_err("unknown");
        assert_eq!(err.to_string(), "NOT_FOUND: no workflow run with id nope");
    }

    #[tokio::test]
    async fn validate_and_submit_send_the_source_and_vars() {
        let (client, fake) = start().await;
        let yaml = workflow_source("name: x\n".into(), SourceFormat::Yaml);
        let report = client.validate_workflow(yaml.clone()).await.expect("valid");
        assert!(!report.valid);
        assert_eq!(report.errors[0].code, "cycle");
        let json = workflow_source("{}".into(), SourceFormat::Json);
        assert!(client.validate_workflow(json).await.expect("valid").valid);

        let vars = HashMap::from([("repo".to_owned(), "/src".to_owned())]);
        let run = client
            .submit_workflow(yaml.clone(), vars.clone())
            .await
            .expect("submit");
        assert_eq!(run.id, "r1");
        let submitted = fake.submitted.lock().expect("lock");
        assert_eq!(submitted.len(), 1);
        assert_eq!(submitted[0].source, Some(yaml));
        assert_eq!(submitted[0].vars, vars);
    }

    #[tokio::test]
    async fn runs_are_read_listed_cancelled_and_retried() {
        let (client, fake) = start().await;
        assert_eq!(client.get_workflow("done").await.expect("get").id, "done");
        let err = client
            .cancel_workflow("done", "too late")
            .await
            .expect_err("ended");
        assert_eq!(
            err.to_string(),
            "FAILED_PRECONDITION: workflow run done has already ended (too late)"
        );
        assert_eq!(
            client.retry_workflow("done").await.expect("retry").retries,
            1
        );

        let filter = ListWorkflowsRequest {
            status: RunStatus::Succeeded as i32,
            ..Default::default()
        };
        let (runs, next) = client
            .list_workflows_up_to(filter.clone(), Some(3))
            .await
            .expect("list");
        let ids: Vec<_> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["0", "1", "2"]);
        assert_eq!(next, "3");
        let (runs, next) = client
            .list_workflows_up_to(filter, None)
            .await
            .expect("list");
        assert_eq!(runs.len(), 5);
        assert!(next.is_empty());
        assert_eq!(
            *fake.list_calls.lock().expect("lock"),
            [
                (3, String::new()),
                (0, String::new()),
                (0, "2".into()),
                (0, "4".into()),
            ]
        );
    }

    #[tokio::test]
    async fn schedules_are_named_in_every_call() {
        let (client, fake) = start().await;
        let created = client
            .create_schedule(CreateScheduleRequest {
                name: "nightly".into(),
                cron: "0 3 * * *".into(),
                timezone: "Europe/Paris".into(),
                missed: "catch_up_one".into(),
                source: Some(workflow_source("name: x".into(), SourceFormat::Yaml)),
                vars: HashMap::new(),
            })
            .await
            .expect("create");
        assert_eq!(created.timezone, "Europe/Paris");
        assert_eq!(client.list_schedules().await.expect("list").len(), 2);
        assert!(
            client
                .pause_schedule("nightly")
                .await
                .expect("pause")
                .paused
        );
        assert!(
            !client
                .resume_schedule("nightly")
                .await
                .expect("resume")
                .paused
        );
        let run = client.trigger_schedule("nightly").await.expect("trigger");
        assert_eq!(run.id, "run-of-nightly");
        client.delete_schedule("nightly").await.expect("delete");
        let err = client
            .delete_schedule("missing")
            .await
            .expect_err("missing");
        assert!(err.is_not_found(), "{err}");
        assert_eq!(
            *fake.schedule_calls.lock().expect("lock"),
            [
                ("create", "nightly".to_owned()),
                ("pause", "nightly".to_owned()),
                ("resume", "nightly".to_owned()),
                ("trigger", "nightly".to_owned()),
                ("delete", "nightly".to_owned()),
                ("delete", "missing".to_owned()),
            ]
        );
    }
}
