//! The node's HTTP side, next to the gRPC listener: `/metrics` (Prometheus text format)
//! and `/healthz` (200 while the node serves: its supervision tree whole and not draining;
//! 503 otherwise). Plain HTTP/1.1; what it shows is counts and names, no task content,
//! and it takes no token (Prometheus scrapes it), so it binds to loopback unless told
//! otherwise.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use supervisor_node::Node;
use supervisor_telemetry::Telemetry;

/// What the HTTP side serves from.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics registry.
    pub telemetry: Arc<Telemetry>,
    /// The node, for `/healthz`.
    pub node: Arc<Node>,
}

/// Serves `listener` until `shutdown` resolves. A connection that fails is dropped and
/// logged at debug; the listener goes on.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::debug!(error = %err, "http accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req)) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "http connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn respond(state: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            format!("{} is not served here; use GET\n", req.method()),
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.telemetry.prometheus_text(),
        ),
        "/healthz" => match state.node.serving() {
            Ok(()) => text(StatusCode::OK, PLAIN, "serving\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not serving: {why}\n"),
            ),
        },
        other => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!("nothing at {other}; this node serves /metrics and /healthz\n"),
        ),
    }
}
