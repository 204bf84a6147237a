//! Rust client SDK for Supervisor's gRPC API (`supervisor.v1`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), supervisor_client::ClientError> {
//! use supervisor_client::{Client, v1};
//!
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let task = client
//!     .submit(v1::SubmitTaskRequest {
//!         r#type: v1::TaskType::BugFix as i32,
//!         prompt: "fix the flaky test".into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! let done = client.wait(&task.id).await?;
//! println!("{} ended {}", done.id, done.status().as_str_name());
//! # Ok(())
//! # }
//! ```
//!
//! Workflows (DAGs of tasks) are submitted from a YAML or JSON definition file:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use supervisor_client::{Client, read_workflow_source};
//!
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let source = read_workflow_source("fix-and-review.yaml".as_ref())?;
//! let vars = [("repo".to_owned(), "/src/app".to_owned())].into();
//! let run = client.submit_workflow(source, vars).await?;
//! let done = client.wait_workflow(&run.id).await?;
//! println!("{} ended {}", done.id, done.status().as_str_name());
//! # Ok(())
//! # }
//! ```
//!
//! The [`Client`] is cheap to clone: clones share one HTTP/2 connection.
//!
//! # Examples
//!
//! The crate's `examples/` directory holds complete programs, each run against a real
//! node by the test `crates/supervisor-cli/tests/sdk_examples.rs`. Each takes the server
//! from `SUPERVISOR_SERVER`, else [`DEFAULT_ADDR`], and a token from the environment
//! ([`ConnectOptions::from_env`]):
//!
//! - `examples/submit_and_wait.rs`: submits a task with [`Client::submit`], waits for it
//!   with [`Client::wait`], prints its status and output
//!   (`cargo run -p supervisor-client --example submit_and_wait -- "fix the pager"`);
//! - `examples/watch.rs`: submits a task and prints each of its events as
//!   [`Client::follow`] delivers them (resuming after a broken connection, as the
//!   [`ResumePolicy`] says) until the terminal event
//!   (`cargo run -p supervisor-client --example watch`);
//! - `examples/workflow.rs`: submits a workflow from a YAML or JSON file
//!   ([`read_workflow_source`]) or an inline definition ([`workflow_source`]), waits for
//!   the run with [`Client::wait_workflow`], prints each step's state
//!   (`cargo run -p supervisor-client --example workflow -- examples/review-pr.yaml`,
//!   from the repository's root).

#![warn(missing_docs)]

mod analytics;
mod connect;
mod error;
mod identity;
mod pages;
mod resources;
mod source;
mod watch;
mod workflow;

use std::time::Duration;

use futures::{StreamExt as _, stream::BoxStream};
use supervisor_proto::v1::{
    CancelTaskRequest, DrainNodeRequest, GetClusterStatusRequest, GetClusterStatusResponse,
    GetSpendRequest, GetSpendResponse, GetTaskRequest, GetTaskStatsRequest, ListProvidersRequest,
    ListTasksRequest, ListTasksResponse, NodeStatus, ProviderInfo, RetryTaskRequest,
    SubmitTaskRequest, Task, TaskStats, WatchProvidersRequest,
    analytics_service_client::AnalyticsServiceClient, auth_service_client::AuthServiceClient,
    chat_service_client::ChatServiceClient, cluster_service_client::ClusterServiceClient,
    provider_service_client::ProviderServiceClient, resource_service_client::ResourceServiceClient,
    task_service_client::TaskServiceClient, workflow_service_client::WorkflowServiceClient,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use connect::{
    CA_FILE_ENV, ConnectOptions, Credentials, TOKEN_ENV, TOKEN_FILE_ENV, normalize_addr,
    read_token_file,
};
pub use error::{ClientError, code_name};
pub use source::{
    ScheduleBlock, SourceError, SourceFormat, read_workflow_source, schedule_block, workflow_source,
};
pub use supervisor_proto::{convert, v1};
pub use watch::{EventStream, ResumePolicy, WorkflowEventStream};

/// The server address used when none is given (`supervisor up` listens there by default).
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

/// Largest response the client accepts (task outputs can be large).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long [`Client::connect`] waits for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive pings, so that a watch notices a vanished server.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream of provider lists, as returned by [`Client::watch_providers`].
pub type ProviderStream = BoxStream<'static, Result<Vec<ProviderInfo>, ClientError>>;

/// A connection to a Supervisor server: tasks, providers, workflow runs and schedules.
///
/// Clones share the same connection (a tonic [`Channel`]), which reconnects by itself
/// after the server restarts.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    tasks: TaskServiceClient<Transport>,
    providers: ProviderServiceClient<Transport>,
    workflows: WorkflowServiceClient<Transport>,
    cluster: ClusterServiceClient<Transport>,
    auth: AuthServiceClient<Transport>,
    resources: ResourceServiceClient<Transport>,
    analytics: AnalyticsServiceClient<Transport>,
    chat: ChatServiceClient<Transport>,
    resume: ResumePolicy,
}

/// The channel every generated client of a [`Client`] uses: the connection, with the
/// credentials added to each call.
pub type Transport = InterceptedService<Channel, Credentials>;

impl Client {
    /// Connects to the server at `addr` (`host:port` or `http://host:port`) without
    /// credentials (a node with authentication off).
    ///
    /// Fails with [`ClientError::Connect`] when nothing answers there, naming the
    /// address and suggesting `supervisor up`.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects to the server at `addr` (`host:port`, `http://host:port` or
    /// `https://host:port`) with `options`: the token every call carries, the CA file of
    /// an `https://` server, the tenant an admin acts in.
    pub async fn connect_with(addr: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        let uri = normalize_addr(addr)?;
        let credentials = Credentials::new(options)?;
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| ClientError::InvalidAddress {
                addr: addr.to_owned(),
                reason: error::chain(&e),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = connect::tls_for(&uri, options)? {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::Credentials {
                    reason: format!("TLS settings for {uri}: {}", error::chain(&e)),
                })?;
        }
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            addr: uri.clone(),
            detail: error::chain(&e),
        })?;
        Ok(Self::from_channel_with(channel, uri, credentials))
    }

    /// Wraps an existing channel (for example one connected lazily, or to an
    /// in-process server in tests), without credentials. `addr` is only used in
    /// messages.
    pub fn from_channel(channel: Channel, addr: impl Into<String>) -> Self {
        Self::from_channel_with(channel, addr, Credentials::default())
    }

    /// Wraps an existing channel; every call carries `credentials`.
    pub fn from_channel_with(
        channel: Channel,
        addr: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        let transport = InterceptedService::new(channel, credentials);
        Self {
            addr: addr.into(),
            tasks: TaskServiceClient::new(transport.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            providers: ProviderServiceClient::new(transport.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            workflows: WorkflowServiceClient::new(transport.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            cluster: ClusterServiceClient::new(transport.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            auth: AuthServiceClient::new(transport.clone()),
            resources: ResourceServiceClient::new(transport.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            analytics: AnalyticsServiceClient::new(transport.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            chat: ChatServiceClient::new(transport).max_decoding_message_size(MAX_MESSAGE_BYTES),
            resume: ResumePolicy::default(),
        }
    }

    /// Replaces how [`Client::follow`], [`Client::wait`], [`Client::follow_workflow`] and
    /// [`Client::wait_workflow`] resume broken watches.
    pub fn with_resume_policy(mut self, policy: ResumePolicy) -> Self {
        self.resume = policy;
        self
    }

    /// The server's URI (`http://host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The generated task client, for calls this SDK does not wrap.
    pub fn task_service(&self) -> TaskServiceClient<Transport> {
        self.tasks.clone()
    }

    /// The generated provider client, for calls this SDK does not wrap.
    pub fn provider_service(&self) -> ProviderServiceClient<Transport> {
        self.providers.clone()
    }

    /// The generated chat client: conversation threads (`ChatService`).
    pub fn chat_service(&self) -> ChatServiceClient<Transport> {
        self.chat.clone()
    }

    /// The generated workflow client, for calls this SDK does not wrap.
    pub fn workflow_service(&self) -> WorkflowServiceClient<Transport> {
        self.workflows.clone()
    }

    /// Submits a task and returns it as stored (queued). With an idempotency key that
    /// was already used, returns the first task instead.
    pub async fn submit(&self, request: SubmitTaskRequest) -> Result<Task, ClientError> {
        Ok(self.tasks.clone().submit_task(request).await?.into_inner())
    }

    /// Reads one task, with its result once it has one.
    pub async fn get(&self, id: &str) -> Result<Task, ClientError> {
        let request = GetTaskRequest { id: id.to_owned() };
        Ok(self.tasks.clone().get_task(request).await?.into_inner())
    }

    /// Reads one page of tasks, newest first.
    pub async fn list(&self, request: ListTasksRequest) -> Result<ListTasksResponse, ClientError> {
        Ok(self.tasks.clone().list_tasks(request).await?.into_inner())
    }

    /// Reads every task matching `filter`, following page tokens from
    /// `filter.page_token` until the last page.
    pub async fn list_all(&self, filter: ListTasksRequest) -> Result<Vec<Task>, ClientError> {
        self.list_up_to(filter, None).await.map(|(tasks, _)| tasks)
    }

    /// Reads tasks matching `filter`, following page tokens, until `limit` tasks
    /// (all when `None`). Also returns the token of the next page, empty when there is
    /// none. `filter.page_size` is the page size (0: the server's default), lowered to
    /// fetch no more than `limit`.
    pub async fn list_up_to(
        &self,
        filter: ListTasksRequest,
        limit: Option<usize>,
    ) -> Result<(Vec<Task>, String), ClientError> {
        let pages = pages::Pages {
            call: "ListTasks",
            page_size: filter.page_size,
            page_token: filter.page_token.clone(),
            limit,
        };
        pages
            .collect(|page_size, page_token| {
                let request = ListTasksRequest {
                    page_size,
                    page_token,
                    ..filter.clone()
                };
                async move {
                    let page = self.list(request).await?;
                    Ok((page.tasks, page.next_page_token))
                }
            })
            .await
    }

    /// Cancels a task that has not finished and returns it. `reason` (may be empty) is
    /// recorded in the task's error and events.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Task, ClientError> {
        let request = CancelTaskRequest {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        Ok(self.tasks.clone().cancel_task(request).await?.into_inner())
    }

    /// Re-runs a failed or cancelled task as a new task, returned (its `retry_of` names
    /// the original).
    pub async fn retry(&self, id: &str) -> Result<Task, ClientError> {
        let request = RetryTaskRequest { id: id.to_owned() };
        Ok(self.tasks.clone().retry_task(request).await?.into_inner())
    }

    /// Counts tasks by status: the whole cluster's, or the caller's tenant's when the
    /// node checks credentials.
    pub async fn stats(&self) -> Result<TaskStats, ClientError> {
        let request = GetTaskStatsRequest {};
        Ok(self
            .tasks
            .clone()
            .get_task_stats(request)
            .await?
            .into_inner())
    }

    /// Streams the task counts of [`Client::stats`]: at once, then each time they change,
    /// at most every `min_interval` ([`Duration::ZERO`]: the server's default, 1 s; the
    /// server raises intervals under 200 ms). Never ends by itself while the server runs;
    /// not resumed when it breaks (its last item is then the error).
    pub fn watch_stats(
        &self,
        min_interval: Duration,
    ) -> BoxStream<'static, Result<TaskStats, ClientError>> {
        let mut tasks = self.tasks.clone();
        let request = v1::WatchTaskStatsRequest {
            min_interval_ms: interval_millis(min_interval),
        };
        futures::stream::once(async move { tasks.watch_task_stats(request).await })
            .flat_map(|started| match started {
                Ok(response) => response
                    .into_inner()
                    .map(|item| item.map_err(ClientError::from))
                    .boxed(),
                Err(status) => futures::stream::iter([Err(ClientError::from(status))]).boxed(),
            })
            .boxed()
    }

    /// Every node of the cluster as the store records it, judged by the node the client
    /// is connected to.
    pub async fn cluster_status(&self) -> Result<GetClusterStatusResponse, ClientError> {
        let response = self
            .cluster
            .clone()
            .get_cluster_status(GetClusterStatusRequest {})
            .await?;
        Ok(response.into_inner())
    }

    /// Asks node `node_id` to drain (stop leasing, finish or hand back its work, leave).
    /// Returns the node's record as the request left it.
    pub async fn drain_node(&self, node_id: &str) -> Result<NodeStatus, ClientError> {
        let request = DrainNodeRequest {
            node_id: node_id.to_owned(),
        };
        let response = self.cluster.clone().drain_node(request).await?.into_inner();
        response.node.ok_or_else(|| {
            ClientError::from(tonic::Status::internal(
                "the server answered DrainNode without the node's record",
            ))
        })
    }

    /// The store of the node the client is connected to: its backend, its file's size
    /// and free space (embedded store), what it keeps (admins of the default tenant).
    pub async fn store_stats(&self) -> Result<v1::StoreStats, ClientError> {
        let request = v1::GetStoreStatsRequest {};
        Ok(self
            .cluster
            .clone()
            .get_store_stats(request)
            .await?
            .into_inner())
    }

    /// A consistent backup of the embedded store of the node the client is connected
    /// to, as a stream of chunks ending in a trailer (admins of the default tenant);
    /// `FAILED_PRECONDITION` on a shared store.
    pub async fn backup_store(&self) -> Result<tonic::Streaming<v1::BackupChunk>, ClientError> {
        let request = v1::BackupStoreRequest {};
        Ok(self
            .cluster
            .clone()
            .backup_store(request)
            .await?
            .into_inner())
    }

    /// The providers of the node the client is connected to, with their counters.
    pub async fn providers(&self) -> Result<Vec<ProviderInfo>, ClientError> {
        let request = ListProvidersRequest {};
        let response = self.providers.clone().list_providers(request).await?;
        Ok(response.into_inner().providers)
    }

    /// Streams the providers of the node the client is connected to: the full list at
    /// once, then again whenever a provider's state changes, at most every
    /// `min_interval` ([`Duration::ZERO`]: the server's default, 500 ms; the server may
    /// raise very short intervals). Never ends by itself while the server runs.
    ///
    /// The call starts when the stream is first polled; a failure (such as
    /// `UNIMPLEMENTED` from an older server) is the stream's only item. The stream is
    /// not resumed when it breaks: its last item is then the error.
    pub fn watch_providers(&self, min_interval: Duration) -> ProviderStream {
        let mut providers = self.providers.clone();
        let request = WatchProvidersRequest {
            min_interval_ms: interval_millis(min_interval),
        };
        futures::stream::once(async move { providers.watch_providers(request).await })
            .flat_map(|started| match started {
                Ok(response) => response
                    .into_inner()
                    .map(|item| item.map(|list| list.providers).map_err(ClientError::from))
                    .boxed(),
                Err(status) => futures::stream::iter([Err(ClientError::from(status))]).boxed(),
            })
            .boxed()
    }

    /// Spend per day and provider from the durable ledger, from `from_day` to `to_day`
    /// inclusive (`YYYY-MM-DD`, UTC; `None`: today), with the total. The server refuses
    /// malformed days and a range that ends before it starts with `INVALID_ARGUMENT`.
    pub async fn spend(
        &self,
        from_day: Option<&str>,
        to_day: Option<&str>,
    ) -> Result<GetSpendResponse, ClientError> {
        let request = GetSpendRequest {
            from_day: from_day.unwrap_or_default().to_owned(),
            to_day: to_day.unwrap_or_default().to_owned(),
        };
        Ok(self
            .providers
            .clone()
            .get_spend(request)
            .await?
            .into_inner())
    }

    /// Streams a task's events with a sequence number above `after_seq` (0: all), live,
    /// until its terminal event. The call starts when the stream is first polled; a
    /// failure (such as `NOT_FOUND`) is the stream's only item. The stream is not
    /// resumed when it breaks: see [`Client::follow`] for that.
    pub fn watch(&self, id: &str, after_seq: u64) -> EventStream {
        watch::watch(self.clone(), watch::TaskLog(id.to_owned()), after_seq)
    }

    /// Like [`Client::watch`], but when the stream breaks with `UNAVAILABLE` (server
    /// restarting, connection lost) it watches again from the last sequence number seen,
    /// following the client's [`ResumePolicy`]. Ends after the terminal event, or when
    /// the server closes the stream and the task has finished (for example when
    /// `after_seq` was already past the terminal event).
    pub fn follow(&self, id: &str, after_seq: u64) -> EventStream {
        watch::follow(
            self.clone(),
            watch::TaskLog(id.to_owned()),
            after_seq,
            self.resume,
        )
    }

    /// Waits until the task finishes (following its events, resuming on `UNAVAILABLE`)
    /// and returns it as it ended, with its result.
    pub async fn wait(&self, id: &str) -> Result<Task, ClientError> {
        watch::wait(self.clone(), watch::TaskLog(id.to_owned()), self.resume).await
    }
}

/// `min_interval_ms` of a watch: whole milliseconds, at least 1 unless the interval is
/// zero (which asks for the server's default), saturating at `u32::MAX`.
fn interval_millis(interval: Duration) -> u32 {
    if interval.is_zero() {
        return 0;
    }
    u32::try_from(interval.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_intervals_become_whole_milliseconds() {
        assert_eq!(interval_millis(Duration::ZERO), 0);
        assert_eq!(interval_millis(Duration::from_micros(10)), 1);
        assert_eq!(interval_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(interval_millis(Duration::MAX), u32::MAX);
    }

    /// A `ProviderService` answering from fixed data, to check the SDK's mapping.
    mod fake {
        use std::sync::Mutex;

        use futures::stream::BoxStream;
        use tonic::{Request, Response, Status};

        use crate::v1::{self, provider_service_server::ProviderService};

        /// Remembers the requests it got.
        #[derive(Default)]
        pub struct Providers {
            pub watch_intervals: Mutex<Vec<u32>>,
            pub spend_requests: Mutex<Vec<(String, String)>>,
        }

        pub fn provider(name: &str, in_flight: u32) -> v1::ProviderInfo {
            v1::ProviderInfo {
                name: name.into(),
                in_flight,
                ..Default::default()
            }
        }

        #[tonic::async_trait]
        impl ProviderService for Providers {
            async fn list_providers(
                &self,
                _: Request<v1::ListProvidersRequest>,
            ) -> Result<Response<v1::ListProvidersResponse>, Status> {
                Ok(Response::new(v1::ListProvidersResponse {
                    providers: vec![provider("mock", 0)],
                }))
            }

            type WatchProvidersStream =
                BoxStream<'static, Result<v1::ListProvidersResponse, Status>>;

            async fn watch_providers(
                &self,
                request: Request<v1::WatchProvidersRequest>,
            ) -> Result<Response<Self::WatchProvidersStream>, Status> {
                let interval = request.into_inner().min_interval_ms;
                self.watch_intervals.lock().expect("lock").push(interval);
                if interval == 7 {
                    return Err(Status::invalid_argument("seven is unlucky"));
                }
                let lists = [0, 1].map(|n| {
                    Ok(v1::ListProvidersResponse {
                        providers: vec![provider("mock", n)],
                    })
                });
                let items = lists
                    .into_iter()
                    .chain([Err(Status::unavailable("server shutting down"))]);
                Ok(Response::new(Box::pin(futures::stream::iter(items))))
            }

            async fn get_spend(
                &self,
                request: Request<v1::GetSpendRequest>,
            ) -> Result<Response<v1::GetSpendResponse>, Status> {
                let request = request.into_inner();
                self.spend_requests
                    .lock()
                    .expect("lock")
                    .push((request.from_day.clone(), request.to_day.clone()));
                Ok(Response::new(v1::GetSpendResponse {
                    rows: vec![v1::SpendRow {
                        day: request.from_day,
                        provider: "mock".into(),
                        attempts: 2,
                        cost_micros: 1500,
                        cost_usd: 0.0015,
                        ..Default::default()
                    }],
                    total_cost_micros: 1500,
                }))
            }
        }
    }

    async fn fake_providers() -> (Client, std::sync::Arc<fake::Providers>) {
        use v1::provider_service_server::ProviderServiceServer;
        let fake = std::sync::Arc::new(fake::Providers::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let service = ProviderServiceServer::from_arc(fake.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        });
        let client = Client::connect(&addr.to_string())
            .await
            .expect("connect to the fake");
        (client, fake)
    }

    #[tokio::test]
    async fn watch_providers_yields_lists_then_the_break() {
        let (client, fake) = fake_providers().await;
        let items: Vec<_> = client
            .watch_providers(Duration::from_millis(250))
            .collect()
            .await;
        assert_eq!(items.len(), 3);
        let in_flight: Vec<u32> = items[..2]
            .iter()
            .map(|item| {
                let list = item.as_ref().expect("a list");
                assert_eq!(list.len(), 1);
                list[0].in_flight
            })
            .collect();
        assert_eq!(in_flight, [0, 1]);
        let err = items[2].as_ref().expect_err("the break is reported");
        assert!(err.is_unavailable(), "{err}");

        // A refused call is the stream's only item.
        let items: Vec<_> = client
            .watch_providers(Duration::from_millis(7))
            .collect()
            .await;
        assert_eq!(items.len(), 1);
        let err = items[0].as_ref().expect_err("refused");
        assert_eq!(err.to_string(), "INVALID_ARGUMENT: seven is unlucky");
        assert_eq!(*fake.watch_intervals.lock().expect("lock"), [250, 7]);
    }

    #[tokio::test]
    async fn spend_sends_the_days_or_empty_for_today() {
        let (client, fake) = fake_providers().await;
        let spend = client
            .spend(Some("2026-01-01"), Some("2026-01-31"))
            .await
            .expect("spend");
        assert_eq!(spend.total_cost_micros, 1500);
        assert_eq!(spend.rows.len(), 1);
        assert_eq!(spend.rows[0].day, "2026-01-01");
        client.spend(None, None).await.expect("spend today");
        assert_eq!(
            *fake.spend_requests.lock().expect("lock"),
            [
                ("2026-01-01".to_owned(), "2026-01-31".to_owned()),
                (String::new(), String::new()),
            ]
        );
        assert_eq!(client.providers().await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn connect_failure_names_the_address_and_the_fix() {
        // Port 1 on loopback: nothing listens there in the test environment.
        let err = Client::connect("127.0.0.1:1")
            .await
            .expect_err("nothing listens on port 1");
        let text = err.to_string();
        assert!(
            text.starts_with("could not connect to Supervisor at http://127.0.0.1:1: "),
            "{text}"
        );
        assert!(text.ends_with("is `supervisor up` running?"), "{text}");
        assert!(err.is_unavailable());
    }
}
