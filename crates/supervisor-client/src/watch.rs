//! Following a task's or a workflow run's events: watching once, following with resume
//! when the stream breaks, and waiting for the end.
//!
//! Tasks and runs differ only in what [`Watched`] says about them (how to open a watch,
//! how to read the owner, when the log has ended); [`watch`], [`follow`] and [`wait`] are
//! written once over it, and the [`Client`] methods are thin wrappers.

use std::{future::Future, time::Duration};

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use futures::{StreamExt as _, stream::BoxStream};
use supervisor_proto::v1::{
    RunStatus, Task, TaskEvent, WatchTaskRequest, WatchWorkflowRequest, WorkflowEvent, WorkflowRun,
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
    /// 10 attempts, from 100 ms to 2 s apart (about 13 s of pauses in all).
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

    /// The pause before new attempt number `failures + 1`: the initial backoff doubled
    /// `failures` times, at most the longest pause.
    pub fn backoff(&self, failures: u32) -> Duration {
        // From 1ns, doubling passes `Duration::MAX` (about 2^94 ns) within 128 steps, so
        // every later pause is the cap.
        let step = usize::try_from(failures.min(128)).unwrap_or(128);
        self.pauses(None).nth(step).unwrap_or(self.max_backoff)
    }

    /// The pauses between attempts: the initial backoff (at most the longest pause), then
    /// doubling up to the longest; at most `max_times` of them, or without end.
    fn pauses(&self, max_times: Option<u32>) -> Pauses {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff.min(self.max_backoff))
            .with_factor(2.0)
            .with_max_delay(self.max_backoff);
        let builder = match max_times {
            Some(n) => builder.with_max_times(usize::try_from(n).unwrap_or(usize::MAX)),
            None => builder.without_max_times(),
        };
        Pauses(builder.build())
    }

    /// The pauses of one run of consecutive failures: one per allowed failure.
    fn resume_pauses(&self) -> Pauses {
        self.pauses(Some(self.max_consecutive_failures))
    }
}

/// Pauses from `backon`, rounded to whole microseconds: it doubles in `f32`, a few
/// nanoseconds off, and rounding gives back the exact doubles (100ms, 200ms, ...).
struct Pauses(ExponentialBackoff);

impl Iterator for Pauses {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let pause = self.0.next()?;
        let micros = (pause.as_secs_f64() * 1e6).round();
        Some(if micros >= u64::MAX as f64 {
            Duration::MAX
        } else {
            Duration::from_micros(micros as u64)
        })
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
pub(crate) trait Watched: Send + Sync + 'static {
    /// One event of the log.
    type Event: Send + 'static;
    /// The record the log belongs to, as the server returns it.
    type Owner: Send + 'static;

    /// Starts a watch of the events after `after_seq`.
    fn open(
        &self,
        client: &Client,
        after_seq: u64,
    ) -> impl Future<Output = Result<Streaming<Self::Event>, Status>> + Send;

    /// Reads the owner.
    fn get(&self, client: &Client)
    -> impl Future<Output = Result<Self::Owner, ClientError>> + Send;

    /// The event's sequence number.
    fn seq(event: &Self::Event) -> u64;

    /// Whether the event is the last of the log (the stream is not read further).
    fn is_last(event: &Self::Event) -> bool;

    /// Whether the owner has ended, so that its log is complete.
    fn has_ended(owner: &Self::Owner) -> bool;

    /// Why a stream that closed while the owner had not ended is a protocol violation.
    fn early_end(&self) -> String;
}

/// A task: its log ends with its terminal event.
#[derive(Clone)]
pub(crate) struct TaskLog(pub String);

impl Watched for TaskLog {
    type Event = TaskEvent;
    type Owner = Task;

    async fn open(&self, client: &Client, after_seq: u64) -> Result<Streaming<TaskEvent>, Status> {
        let request = WatchTaskRequest {
            id: self.0.clone(),
            after_seq,
        };
        Ok(client.tasks.clone().watch_task(request).await?.into_inner())
    }

    async fn get(&self, client: &Client) -> Result<Task, ClientError> {
        client.get(&self.0).await
    }

    fn seq(event: &TaskEvent) -> u64 {
        event.seq
    }

    fn is_last(event: &TaskEvent) -> bool {
        event.r#type().is_terminal()
    }

    fn has_ended(task: &Task) -> bool {
        task.status().is_terminal()
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
#[derive(Clone)]
pub(crate) struct RunLog(pub String);

impl Watched for RunLog {
    type Event = WorkflowEvent;
    type Owner = WorkflowRun;

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

    async fn get(&self, client: &Client) -> Result<WorkflowRun, ClientError> {
        client.get_workflow(&self.0).await
    }

    fn seq(event: &WorkflowEvent) -> u64 {
        event.seq
    }

    fn is_last(_: &WorkflowEvent) -> bool {
        false
    }

    fn has_ended(run: &WorkflowRun) -> bool {
        !matches!(run.status(), RunStatus::Running | RunStatus::Unspecified)
    }

    fn early_end(&self) -> String {
        format!(
            "the event stream of workflow run {} ended while the run was still running",
            self.0
        )
    }
}

/// Watches `target`'s events after `after_seq` once, without resuming. The call starts
/// when the stream is first polled; a failure to start it is the stream's only item, and
/// a break is its last.
pub(crate) fn watch<W: Watched>(
    client: Client,
    target: W,
    after_seq: u64,
) -> BoxStream<'static, Result<W::Event, ClientError>> {
    futures::stream::once(async move { target.open(&client, after_seq).await })
        .flat_map(|started| match started {
            Ok(events) => events.map(|item| item.map_err(ClientError::from)).boxed(),
            Err(status) => futures::stream::iter([Err(ClientError::from(status))]).boxed(),
        })
        .boxed()
}

/// Follows `target`'s events after `after_seq`, resuming after breaks as `policy` says.
pub(crate) fn follow<W: Watched>(
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
        pauses: policy.resume_pauses(),
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    })
    .boxed()
}

/// Follows `target`'s events to the end (resuming as `policy` says), then reads it as it
/// ended. Fails with the first error that was not resumed.
pub(crate) async fn wait<W: Watched + Clone>(
    client: Client,
    target: W,
    policy: ResumePolicy,
) -> Result<W::Owner, ClientError> {
    let mut events = follow(client.clone(), target.clone(), 0, policy);
    while let Some(event) = events.next().await {
        event?;
    }
    target.get(&client).await
}

/// The state of a resuming watch.
struct Follow<W: Watched> {
    client: Client,
    target: W,
    last_seq: u64,
    policy: ResumePolicy,
    inner: Option<Streaming<W::Event>>,
    /// The pauses left before giving up; started afresh by every event received.
    pauses: Pauses,
    done: bool,
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
                // An event at or before the last one seen (a server repeating itself)
                // is dropped, and does not renew the budget of failures.
                Ok(Some(event)) if W::seq(&event) <= self.last_seq => {
                    self.inner = Some(stream);
                    continue;
                }
                Ok(Some(event)) => {
                    self.pauses = self.policy.resume_pauses();
                    self.last_seq = W::seq(&event);
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
                Ok(None) => match self
                    .target
                    .get(&self.client)
                    .await
                    .map(|owner| W::has_ended(&owner))
                {
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
        let pause = if always || is_transient(&err) {
            self.pauses.next()
        } else {
            None
        };
        let Some(pause) = pause else {
            self.done = true;
            return Err(err);
        };
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
        let ms = Duration::from_millis;
        assert_eq!(
            policy.backoff(1),
            ms(200),
            "exactly, not a few nanoseconds off"
        );
        assert_eq!(policy.backoff(4), ms(1600));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn a_run_of_failures_pauses_as_backoff_says_then_gives_up() {
        let millis = |pauses: Pauses| -> Vec<u128> { pauses.map(|d| d.as_millis()).collect() };
        let policy = ResumePolicy::default();
        let expected: Vec<u128> = (0..10).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(millis(policy.resume_pauses()), expected);
        assert_eq!(ResumePolicy::never().resume_pauses().count(), 0);

        // An initial backoff above the cap is capped from the first pause on.
        let odd = ResumePolicy {
            max_consecutive_failures: 3,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(2),
        };
        assert_eq!(odd.backoff(0), Duration::from_secs(2));
        assert_eq!(millis(odd.resume_pauses()), [2000, 2000, 2000]);
        // No pause at all stays no pause.
        let eager = ResumePolicy {
            initial_backoff: Duration::ZERO,
            ..ResumePolicy::default()
        };
        assert_eq!(eager.backoff(u32::MAX), Duration::ZERO);
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
