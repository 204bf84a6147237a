//! Following a task's events, resuming when the stream breaks.

use std::time::Duration;

use futures::{StreamExt as _, stream::BoxStream};
use supervisor_proto::v1::{TaskEvent, WatchTaskRequest};
use tonic::{Code, Streaming};

use crate::{Client, ClientError};

/// A stream of a task's events, as returned by [`Client::watch`] and [`Client::follow`].
pub type EventStream = BoxStream<'static, Result<TaskEvent, ClientError>>;

/// How [`Client::follow`] and [`Client::wait`] resume a watch that broke.
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

struct Follow {
    client: Client,
    id: String,
    last_seq: u64,
    policy: ResumePolicy,
    inner: Option<Streaming<TaskEvent>>,
    failures: u32,
    done: bool,
}

pub(crate) fn follow(
    client: Client,
    id: String,
    after_seq: u64,
    policy: ResumePolicy,
) -> EventStream {
    let state = Follow {
        client,
        id,
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

impl Follow {
    async fn next_item(&mut self) -> Option<Result<TaskEvent, ClientError>> {
        if self.done {
            return None;
        }
        loop {
            let mut stream = match self.inner.take() {
                Some(stream) => stream,
                None => {
                    let request = WatchTaskRequest {
                        id: self.id.clone(),
                        after_seq: self.last_seq,
                    };
                    match self.client.tasks.clone().watch_task(request).await {
                        Ok(response) => response.into_inner(),
                        Err(status) => match self.pause_or_fail(status.into(), false).await {
                            Ok(()) => continue,
                            Err(err) => return Some(Err(err)),
                        },
                    }
                }
            };
            let failure = match stream.message().await {
                Ok(Some(event)) => {
                    self.failures = 0;
                    self.last_seq = self.last_seq.max(event.seq);
                    if event.r#type().is_terminal() {
                        self.done = true;
                    } else {
                        self.inner = Some(stream);
                    }
                    return Some(Ok(event));
                }
                // Closed without a terminal event: fine if the task has finished (we
                // started past its end), otherwise the server went away cleanly.
                Ok(None) => match self.client.get(&self.id).await {
                    Ok(task) if task.status().is_terminal() => {
                        self.done = true;
                        return None;
                    }
                    Ok(_) => ClientError::Protocol(format!(
                        "the event stream of task {} ended before its terminal event",
                        self.id
                    )),
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
