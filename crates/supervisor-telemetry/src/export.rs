//! Span export off the hot path: a finished span goes into a bounded queue with a
//! non-blocking send, and one task drains it to the collector in batches. A slow or dead
//! collector costs the node nothing but the spans that did not fit or did not arrive,
//! and `supervisor_telemetry_spans_dropped_total` counts each of them.
//!
//! (The SDK's batch processor drops silently when its queue is full; this one counts.)

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::metrics;

/// Spans per export call.
const MAX_BATCH: usize = 512;
/// Longest a finished span waits before its batch is sent.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Longest one export may take before its spans count as dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) enum Message {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// The span processor: a handle on the queue.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    queue: mpsc::Sender<Message>,
}

impl QueueProcessor {
    /// A processor whose queue holds `capacity` spans, drained into `exporter` by a task
    /// on the current tokio runtime. Also returns the queue, for flushes.
    pub(crate) fn start<E: SpanExporter + 'static>(
        exporter: E,
        capacity: usize,
    ) -> (QueueProcessor, mpsc::Sender<Message>) {
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(drain(rx, exporter));
        (QueueProcessor { queue: tx.clone() }, tx)
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            metrics().spans_dropped.add(1, &[]);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn drain<E: SpanExporter>(mut rx: mpsc::Receiver<Message>, exporter: E) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut deadline: Option<Instant> = None;
    loop {
        let next = match deadline {
            Some(at) => tokio::select! {
                m = rx.recv() => m.map(Some),
                _ = tokio::time::sleep_until(at) => Some(None),
            },
            None => rx.recv().await.map(Some),
        };
        match next {
            Some(Some(Message::Span(span))) => {
                batch.push(*span);
                deadline.get_or_insert_with(|| Instant::now() + MAX_DELAY);
                if batch.len() >= MAX_BATCH {
                    send(&exporter, &mut batch).await;
                    deadline = None;
                }
            }
            Some(Some(Message::Flush(done))) => {
                send(&exporter, &mut batch).await;
                deadline = None;
                let _ = done.send(());
            }
            Some(None) => {
                send(&exporter, &mut batch).await;
                deadline = None;
            }
            None => {
                send(&exporter, &mut batch).await;
                return;
            }
        }
    }
}

async fn send<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let n = spans.len() as u64;
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics().spans_dropped.add(n, &[]);
            tracing::debug!("span export failed, {n} spans dropped: {e}");
        }
        Err(_) => {
            metrics().spans_dropped.add(n, &[]);
            tracing::debug!("span export timed out, {n} spans dropped");
        }
    }
}
