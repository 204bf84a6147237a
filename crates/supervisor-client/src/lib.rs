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
//! The [`Client`] is cheap to clone: clones share one HTTP/2 connection.

#![warn(missing_docs)]

mod error;
mod watch;

use std::time::Duration;

use futures::StreamExt as _;
use supervisor_proto::v1::{
    CancelTaskRequest, GetTaskRequest, GetTaskStatsRequest, ListProvidersRequest, ListTasksRequest,
    ListTasksResponse, ProviderInfo, RetryTaskRequest, SubmitTaskRequest, Task, TaskStats,
    WatchTaskRequest, provider_service_client::ProviderServiceClient,
    task_service_client::TaskServiceClient,
};
use tonic::transport::{Channel, Endpoint};

pub use error::{ClientError, code_name};
pub use supervisor_proto::{convert, v1};
pub use watch::{EventStream, ResumePolicy};

/// The server address used when none is given (`supervisor up` listens there by default).
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

/// Largest response the client accepts (task outputs can be large).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long [`Client::connect`] waits for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive pings, so that a watch notices a vanished server.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a Supervisor server: tasks and providers.
///
/// Clones share the same connection (a tonic [`Channel`]), which reconnects by itself
/// after the server restarts.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    tasks: TaskServiceClient<Channel>,
    providers: ProviderServiceClient<Channel>,
    resume: ResumePolicy,
}

/// Turns `host:port` or `http://host:port` into the URI the client dials
/// (`http://host:port`). Surrounding whitespace and a trailing `/` are ignored.
///
/// Fails on an empty address, on `https://` (TLS is not supported) and on other schemes.
pub fn normalize_addr(addr: &str) -> Result<String, ClientError> {
    let trimmed = addr.trim();
    let invalid = |reason: &str| ClientError::InvalidAddress {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, trimmed),
    };
    let host_port = rest.trim_end_matches('/');
    match scheme {
        None | Some("http") => {}
        Some("https") => return Err(invalid("TLS (https://) is not supported; use http://")),
        Some(scheme) => {
            return Err(invalid(&format!(
                "unsupported scheme {scheme:?}; expected host:port or http://host:port"
            )));
        }
    }
    if host_port.is_empty() {
        return Err(invalid("no host; expected host:port or http://host:port"));
    }
    let uri = format!("http://{host_port}");
    // Let the URI parser catch spaces, bad ports and the like.
    Endpoint::from_shared(uri.clone()).map_err(|e| invalid(&error::chain(&e)))?;
    Ok(uri)
}

impl Client {
    /// Connects to the server at `addr` (`host:port` or `http://host:port`).
    ///
    /// Fails with [`ClientError::Connect`] when nothing answers there, naming the
    /// address and suggesting `supervisor up`.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let uri = normalize_addr(addr)?;
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| ClientError::InvalidAddress {
                addr: addr.to_owned(),
                reason: error::chain(&e),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            addr: uri.clone(),
            detail: error::chain(&e),
        })?;
        Ok(Self::from_channel(channel, uri))
    }

    /// Wraps an existing channel (for example one connected lazily, or to an
    /// in-process server in tests). `addr` is only used in messages.
    pub fn from_channel(channel: Channel, addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            tasks: TaskServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            providers: ProviderServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            resume: ResumePolicy::default(),
        }
    }

    /// Replaces how [`Client::follow`] and [`Client::wait`] resume broken watches.
    pub fn with_resume_policy(mut self, policy: ResumePolicy) -> Self {
        self.resume = policy;
        self
    }

    /// The server's URI (`http://host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The generated task client, for calls this SDK does not wrap.
    pub fn task_service(&self) -> TaskServiceClient<Channel> {
        self.tasks.clone()
    }

    /// The generated provider client, for calls this SDK does not wrap.
    pub fn provider_service(&self) -> ProviderServiceClient<Channel> {
        self.providers.clone()
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
        let mut request = filter;
        let page_size = request.page_size;
        let mut tasks = Vec::new();
        loop {
            if let Some(limit) = limit {
                let remaining = limit.saturating_sub(tasks.len());
                if remaining == 0 {
                    return Ok((tasks, request.page_token));
                }
                let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
                request.page_size = match page_size {
                    0 => remaining.min(1000),
                    size => size.min(remaining),
                };
            }
            let previous_token = request.page_token.clone();
            let page = self.list(request.clone()).await?;
            tasks.extend(page.tasks);
            if page.next_page_token.is_empty() {
                return Ok((tasks, String::new()));
            }
            if page.next_page_token == previous_token {
                return Err(ClientError::Protocol(format!(
                    "ListTasks returned the page token it was given ({previous_token:?})"
                )));
            }
            request.page_token = page.next_page_token;
        }
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

    /// Counts tasks by status, cluster-wide.
    pub async fn stats(&self) -> Result<TaskStats, ClientError> {
        let request = GetTaskStatsRequest {};
        Ok(self
            .tasks
            .clone()
            .get_task_stats(request)
            .await?
            .into_inner())
    }

    /// The providers of the node the client is connected to, with their counters.
    pub async fn providers(&self) -> Result<Vec<ProviderInfo>, ClientError> {
        let request = ListProvidersRequest {};
        let response = self.providers.clone().list_providers(request).await?;
        Ok(response.into_inner().providers)
    }

    /// Streams a task's events with a sequence number above `after_seq` (0: all), live,
    /// until its terminal event. The call starts when the stream is first polled; a
    /// failure (such as `NOT_FOUND`) is the stream's only item. The stream is not
    /// resumed when it breaks: see [`Client::follow`] for that.
    pub fn watch(&self, id: &str, after_seq: u64) -> EventStream {
        let mut tasks = self.tasks.clone();
        let request = WatchTaskRequest {
            id: id.to_owned(),
            after_seq,
        };
        futures::stream::once(async move { tasks.watch_task(request).await })
            .flat_map(|started| match started {
                Ok(response) => response
                    .into_inner()
                    .map(|item| item.map_err(ClientError::from))
                    .boxed(),
                Err(status) => futures::stream::iter([Err(ClientError::from(status))]).boxed(),
            })
            .boxed()
    }

    /// Like [`Client::watch`], but when the stream breaks with `UNAVAILABLE` (server
    /// restarting, connection lost) it watches again from the last sequence number seen,
    /// following the client's [`ResumePolicy`]. Ends after the terminal event, or when
    /// the server closes the stream and the task has finished (for example when
    /// `after_seq` was already past the terminal event).
    pub fn follow(&self, id: &str, after_seq: u64) -> EventStream {
        watch::follow(self.clone(), id.to_owned(), after_seq, self.resume)
    }

    /// Waits until the task finishes (following its events, resuming on `UNAVAILABLE`)
    /// and returns it as it ended, with its result.
    pub async fn wait(&self, id: &str) -> Result<Task, ClientError> {
        let mut events = self.follow(id, 0);
        while let Some(event) = events.next().await {
            event?;
        }
        self.get(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized() {
        assert_eq!(
            normalize_addr("127.0.0.1:50051").ok().as_deref(),
            Some("http://127.0.0.1:50051")
        );
        assert_eq!(
            normalize_addr(" http://localhost:50051/ ").ok().as_deref(),
            Some("http://localhost:50051")
        );
        assert_eq!(
            normalize_addr("[::1]:7000").ok().as_deref(),
            Some("http://[::1]:7000")
        );
    }

    #[test]
    fn bad_addresses_are_refused_with_the_address() {
        for bad in ["", "https://x:1", "grpc://x:1", "http://", "a b:1"] {
            let err = normalize_addr(bad).expect_err(bad);
            assert!(
                matches!(&err, ClientError::InvalidAddress { addr, .. } if addr == bad),
                "{err:?}"
            );
        }
        let text = normalize_addr("https://x:1").expect_err("tls").to_string();
        assert!(
            text.contains("https://x:1") && text.contains("TLS"),
            "{text}"
        );
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
