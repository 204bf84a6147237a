//! Following a task's or a workflow run's events, resuming when the stream breaks.

use std::{future::Future, time::Duration};

use futures::{StreamExt as _, stream::BoxStream};
use supervisor_proto::v1::{
    RunStatus, TaskEvent, WatchTaskRequest, WatchWorkflowRequest, WorkflowEvent,
};
use tonic::{Code, Status, Streaming};

use crate::{Client, ClientError};

/// A stream of a task's events, as returned by [`Client::watch`] and [`Client::follow`].
pub type EventStream = BoxStream<'static, Result<TaskEvent, ClientError>>;

/// A stream of a workflow run's events, as returned by [`Client::watch_workflow`] and
/// [`Client::follow_workflow`].
pub type WorkflowEventStream = BoxStream<'static, Result<WorkflowEvent, ClientError>>;

/// How [`Client::follow`], [`Client::wait`], [`Client::follow_workflow`] and
/// [`Client::wait_workflow`] resume a watch that broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePolicy {
    /// Failed attempts in a row (without receiving an event) before giving up.
    pub max_consecutive_failures: u32,
    /// Pause before the first new attempt; doubled after each failure.
    pub initial_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
}

impl Default for ResumePolicy {
    /// 10 attempts, from 100 ms to 2 s apart (about 15 s in all).
    fn default() -> Self {
        Self {
            max_consecutive_failures: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl ResumePolicy {
    /// Never resume: the first break ends the stream with its error.
    pub fn never() -> Self {
        Self {
            max_consecutive_failures: 0,
            ..Self::default()
        }
    }

    /// The pause before new attempt number `failures + 1`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Whether a watch that failed with `err` may be resumed: the server is unavailable, or
/// the HTTP/2 connection broke under the stream.
fn is_transient(err: &ClientError) -> bool {
    match err.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => {
            let message = err.message();
            [
                "h2 protocol error",
                "error reading a body from connection",
                "connection reset",
                "broken pipe",
            ]
            .iter()
            .any(|needle| message.contains(needle))
        }
        _ => false,
    }
}

/// Something whose event log can be watched from a sequence number: a task or a
/// workflow run.
trait Watched: Send + Sync + 'static {
    /// One event of the log.
    type Event: Send + 'static;

    /// Starts a watch of the events after `after_seq`.
    fn open(
        &self,
        client: &Client,
        after_seq: u64,
    ) -> impl Future<Output = Result<Streaming<Self::Event>, Status>> + Send;

    /// The event's sequence number.
    fn seq(event: &Self::Event) -> u64;

    /// Whether the event is the last of the log (the stream is not read further).
    fn is_last(event: &Self::Event) -> bool;

    /// Whether it has ended, read from the server (after the stream closed).
    fn has_ended(&self, client: &Client) -> impl Future<Output = Result<bool, ClientError>> + Send;

    /// Why a stream that closed while it had not ended is a protocol violation.
    fn early_end(&self) -> String;
}

/// A task: its log ends with its terminal event.
struct TaskLog(String);

impl Watched for TaskLog {
    type Event = TaskEvent;

    async fn open(&self, client: &Client, after_seq: u64) -> Result<Streaming<TaskEvent>, Status> {
        let request = WatchTaskRequest {
            id: self.0.clone(),
            after_seq,
        };
        Ok(client.tasks.clone().watch_task(request).await?.into_inner())
    }

    fn seq(event: &TaskEvent) -> u64 {
        event.seq
    }

    fn is_last(event: &TaskEvent) -> bool {
        event.r#type().is_terminal()
    }

    async fn has_ended(&self, client: &Client) -> Result<bool, ClientError> {
        Ok(client.get(&self.0).await?.status().is_terminal())
    }

    fn early_end(&self) -> String {
        format!(
            "the event stream of task {} ended before its terminal event",
            self.0
        )
    }
}

/// A workflow run. A retried run goes on after its terminal event, so its stream is
/// read until the server closes it (after the run ended), and the run is then read to
/// check that it ended.
struct RunLog(String);

impl Watched for RunLog {
    type Event = WorkflowEvent;

    async fn open(
        &self,
        client: &Client,
        after_seq: u64,
    ) -> Result<Streaming<WorkflowEvent>, Status> {
        let request = WatchWorkflowRequest {
            id: self.0.clone(),
            after_seq,
        };
        Ok(client
            .workflows
            .clone()
            .watch_workflow(request)
            .await?
            .into_inner())
    }

    fn seq(event: &WorkflowEvent) -> u64 {
        event.seq
    }

    fn is_last(_: &WorkflowEvent) -> bool {
        false
    }

    async fn has_ended(&self, client: &Client) -> Result<bool, ClientError> {
        let run = client.get_workflow(&self.0).await?;
        Ok(!matches!(
            run.status(),
            RunStatus::Running | RunStatus::Unspecified
        ))
    }

    fn early_end(&self) -> String {
        format!(
            "the event stream of workflow run {} ended while the run was still running",
            self.0
        )
    }
}

/// The state of a resuming watch.
struct Follow<W: Watched> {
    client: Client,
    target: W,
    last_seq: u64,
    policy: ResumePolicy,
    inner: Option<Streaming<W::Event>>,
    failures: u32,
    done: bool,
}

/// Follows task `id`'s events after `after_seq`, resuming after breaks.
pub(crate) fn follow(
    client: Client,
    id: String,
    after_seq: u64,
    policy: ResumePolicy,
) -> EventStream {
    follow_log(client, TaskLog(id), after_seq, policy)
}

/// Follows workflow run `id`'s events after `after_seq`, resuming after breaks.
pub(crate) fn follow_workflow(
    client: Client,
    id: String,
    after_seq: u64,
    policy: ResumePolicy,
) -> WorkflowEventStream {
    follow_log(client, RunLog(id), after_seq, policy)
}

fn follow_log<W: Watched>(
    client: Client,
    target: W,
    after_seq: u64,
    policy: ResumePolicy,
) -> BoxStream<'static, Result<W::Event, ClientError>> {
    let state = Follow {
        client,
        target,
        last_seq: after_seq,
        policy,
        inner: None,
        failures: 0,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    })
    .boxed()
}

impl<W: Watched> Follow<W> {
    async fn next_item(&mut self) -> Option<Result<W::Event, ClientError>> {
        if self.done {
            return None;
        }
        loop {
            let mut stream = match self.inner.take() {
                Some(stream) => stream,
                None => match self.target.open(&self.client, self.last_seq).await {
                    Ok(stream) => stream,
                    Err(status) => match self.pause_or_fail(status.into(), false).await {
                        Ok(()) => continue,
                        Err(err) => return Some(Err(err)),
                    },
                },
            };
            let failure = match stream.message().await {
                Ok(Some(event)) => {
                    self.failures = 0;
                    self.last_seq = self.last_seq.max(W::seq(&event));
                    if W::is_last(&event) {
                        self.done = true;
                    } else {
                        self.inner = Some(stream);
                    }
                    return Some(Ok(event));
                }
                // Closed without a last event: fine if it has ended (we started past
                // its end, or a run's stream closed after the run ended), otherwise the
                // server went away cleanly.
                Ok(None) => match self.target.has_ended(&self.client).await {
                    Ok(true) => {
                        self.done = true;
                        return None;
                    }
                    Ok(false) => ClientError::Protocol(self.target.early_end()),
                    Err(err) => err,
                },
                Err(status) => status.into(),
            };
            let always = matches!(failure, ClientError::Protocol(_));
            if let Err(err) = self.pause_or_fail(failure, always).await {
                return Some(Err(err));
            }
        }
    }

    /// Sleeps before the next attempt, or ends the stream with `err` when it is not
    /// transient (unless `always`) or the attempts are used up.
    async fn pause_or_fail(&mut self, err: ClientError, always: bool) -> Result<(), ClientError> {
        if !(always || is_transient(&err)) || self.failures >= self.policy.max_consecutive_failures
        {
            self.done = true;
            return Err(err);
        }
        let pause = self.policy.backoff(self.failures);
        self.failures += 1;
        tokio::time::sleep(pause).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = ResumePolicy::default();
        let pauses: Vec<_> = (0..7).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn transient_errors() {
        let status = |code, msg: &str| ClientError::from(tonic::Status::new(code, msg));
        assert!(is_transient(&status(
            Code::Unavailable,
            "server shutting down"
        )));
        assert!(is_transient(&status(
            Code::Unknown,
            "h2 protocol error: error reading a body from connection"
        )));
        assert!(!is_transient(&status(Code::NotFound, "no task with id x")));
        assert!(!is_transient(&status(Code::Internal, "store failed")));
    }
}
