//! Group commit at the engine level: concurrent callers hand their requests to a batcher,
//! which runs them together in one store transaction and answers each caller.
//!
//! Why: every transaction costs a commit (an fsync on the embedded store, a round trip on
//! PostgreSQL or FoundationDB). Batching turns N commits into one, so throughput is bounded
//! by the commit rate times the batch size. A batch forms naturally: while one batch
//! commits, new requests queue up and become the next batch; a lone request goes at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::EngineError;

type Reply<R> = oneshot::Sender<Result<R, EngineError>>;

/// The function a batcher runs: a whole batch in, one result per request out, in order.
pub(crate) type BatchFn<Q, R> = Arc<
    dyn Fn(
            Vec<Q>,
        )
            -> Pin<Box<dyn Future<Output = Result<Vec<Result<R, EngineError>>, EngineError>> + Send>>
        + Send
        + Sync,
>;

/// A handle to a running batcher task.
pub(crate) struct Batcher<Q, R> {
    tx: mpsc::UnboundedSender<(Q, Reply<R>)>,
}

impl<Q: Send + 'static, R: Send + 'static> Batcher<Q, R> {
    /// Starts a batcher that runs at most `in_flight` batches of at most `max_batch`
    /// requests at once. With `drop_abandoned`, a request whose caller stopped waiting
    /// before its batch formed is dropped instead of run (for requests whose effect only
    /// the caller needs, such as a submit whose client timed out and went elsewhere).
    pub(crate) fn spawn(
        name: &'static str,
        (max_batch, in_flight): (usize, usize),
        drop_abandoned: bool,
        run: BatchFn<Q, R>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Q, Reply<R>)>();
        let max_batch = max_batch.max(1);
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Wait for a free slot first: requests that arrive meanwhile join this batch.
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = Vec::with_capacity(max_batch.min(64));
                let abandoned = |item: &(Q, Reply<R>)| drop_abandoned && item.1.is_closed();
                if !abandoned(&first) {
                    batch.push(first);
                }
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) if abandoned(&item) => {}
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (requests, replies): (Vec<Q>, Vec<Reply<R>>) = batch.into_iter().unzip();
                    let n = requests.len();
                    tracing::trace!(batcher = name, size = n, "running batch");
                    match run(requests).await {
                        Ok(results) if results.len() == n => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result);
                            }
                        }
                        Ok(results) => {
                            let err = EngineError::Internal(format!(
                                "batcher {name} got {} results for {n} requests",
                                results.len()
                            ));
                            for reply in replies {
                                let _ = reply.send(Err(err.clone()));
                            }
                        }
                        Err(err) => {
                            for reply in replies {
                                let _ = reply.send(Err(err.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Batcher { tx }
    }

    /// Queues one request and waits for its result.
    pub(crate) async fn call(&self, request: Q) -> Result<R, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((request, reply))
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }
}
