//! The largest request a service reads, and what a caller learns when it sends a larger
//! one.
//!
//! Every service decodes requests of up to [`MAX_REQUEST_BYTES`] (8 MiB), well above the
//! largest field any call accepts, so an oversized field is decoded and refused by
//! validation with `INVALID_ARGUMENT` naming the field and its limit. A request larger
//! than that is refused by tonic before its body is read, with
//! `OUT_OF_RANGE: Error, decoded message length too large`, which names neither the field
//! nor its limit: [`RequestLimit`] wraps a service and rewrites that answer into
//! `RESOURCE_EXHAUSTED` saying how large the request was, what the server reads, and the
//! limits of the fields of the call (a 20 MB prompt learns the 64 KiB prompt limit).

use std::convert::Infallible;

use supervisor_model::{MAX_CONTEXT_BYTES, MAX_PROMPT_BYTES, MAX_REQUEST_BYTES};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

/// A service whose "message too large" answers name the limits of the call.
#[derive(Debug, Clone)]
pub(crate) struct RequestLimit<S> {
    inner: S,
}

impl<S> RequestLimit<S> {
    /// Wraps `inner`, whose decoding limit must be [`MAX_REQUEST_BYTES`].
    pub(crate) fn new(inner: S) -> Self {
        RequestLimit { inner }
    }
}

impl<S: NamedService> NamedService for RequestLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for RequestLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(status) = Status::from_header_map(response.headers())
                && let Some(found) = too_large(&status)
            {
                let status = Status::resource_exhausted(message(&method, Some(found)));
                // Only the status headers change: a refusal has no body.
                if status.add_header(response.headers_mut()).is_err() {
                    tracing::warn!(method, "could not rewrite a message-too-large status");
                }
            }
            Ok(response)
        })
    }
}

/// The size of the refused request, when `status` is tonic's "message too large".
fn too_large(status: &Status) -> Option<usize> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let rest = status
        .message()
        .strip_prefix("Error, decoded message length too large: found ")?;
    rest.split(' ').next()?.parse().ok()
}

/// What the caller of `method` (`/supervisor.v1.TaskService/SubmitTask`) is told about a
/// request over the limit, of `found` bytes when known.
pub(crate) fn message(method: &str, found: Option<usize>) -> String {
    let fields = match method.rsplit('/').next().unwrap_or_default() {
        "SubmitTask" => format!(
            "; a prompt may be at most {MAX_PROMPT_BYTES} bytes and the context {MAX_CONTEXT_BYTES} bytes"
        ),
        "SubmitWorkflow" | "ValidateWorkflow" | "CreateSchedule" => format!(
            "; a workflow definition may be at most {} bytes",
            supervisor_engine::workflow::definition::MAX_DEFINITION_BYTES
        ),
        _ => String::new(),
    };
    let size = match found {
        Some(n) => format!("the request is {n} bytes"),
        None => "the request is too large".to_string(),
    };
    format!(
        "{size}, over the {MAX_REQUEST_BYTES} bytes (8 MiB) the server reads in one request{fields} (docs/limits.md lists every limit)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_message_too_large_status_is_rewritten() {
        let tonic_says = Status::out_of_range(
            "Error, decoded message length too large: found 20000006 bytes, the limit is: 8388608 bytes",
        );
        assert_eq!(too_large(&tonic_says), Some(20_000_006));
        assert_eq!(too_large(&Status::out_of_range("page 9 of 3")), None);
        assert_eq!(
            too_large(&Status::invalid_argument(tonic_says.message())),
            None
        );
        let m = message("/supervisor.v1.TaskService/SubmitTask", Some(20_000_006));
        assert!(
            m.starts_with("the request is 20000006 bytes, over the 8388608 bytes"),
            "{m}"
        );
        assert!(m.contains("a prompt may be at most 65536 bytes"), "{m}");
        let m = message("/supervisor.v1.WorkflowService/SubmitWorkflow", None);
        assert!(m.starts_with("the request is too large, over"), "{m}");
        assert!(m.contains("workflow definition may be at most"), "{m}");
    }
}
