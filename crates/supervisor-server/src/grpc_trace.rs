//! The tower layer that opens a server span for every gRPC call when tracing is on,
//! continuing the caller's trace from its W3C `traceparent` metadata. Handlers run
//! inside it, so a submit's span (and the trace context stored in the task) descends
//! from the caller's. With tracing off, and for the standard health and reflection
//! services (`/grpc.*`), calls pass through untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;

/// The layer; see the module docs. `node` names this node on every span.
#[derive(Clone)]
pub struct TraceLayer {
    node: std::sync::Arc<str>,
}

impl TraceLayer {
    /// A layer for the node `node`.
    pub fn new(node: &str) -> TraceLayer {
        TraceLayer { node: node.into() }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            node: self.node.clone(),
        }
    }
}

/// A service behind the trace layer.
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
    node: std::sync::Arc<str>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Traced<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // Health probes and reflection would fill a trace store with noise.
        let quiet = req.uri().path().starts_with("/grpc.");
        if quiet || !supervisor_telemetry::context::tracing_on() {
            return Box::pin(self.inner.call(req));
        }
        let path = req.uri().path().to_string();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path.as_str(), ""));
        let span = tracing::info_span!(
            target: "supervisor_server",
            "grpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            supervisor.node.id = &*self.node,
        );
        supervisor_telemetry::context::continue_from_headers(&span, req.headers());
        let call = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let response = call.await;
                if let Ok(r) = &response
                    && let Some(code) = r.headers().get("grpc-status").and_then(|v| v.to_str().ok())
                {
                    let span = tracing::Span::current();
                    let code: i64 = code.parse().unwrap_or(2);
                    supervisor_telemetry::context::set_attribute(
                        &span,
                        "rpc.grpc.status_code",
                        code,
                    );
                    if code != 0 {
                        supervisor_telemetry::context::set_error(
                            &span,
                            format!("grpc status {code}"),
                        );
                    }
                }
                response
            }
            .instrument(span),
        )
    }
}
