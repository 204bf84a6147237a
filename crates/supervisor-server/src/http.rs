//! The node's HTTP side, next to the gRPC listener:
//!
//! - `/metrics` (Prometheus text format) and `/healthz` (200 while the node serves: its
//!   supervision tree whole and not draining; 503 otherwise). They take no token
//!   (Prometheus scrapes them) and show counts and names, no task content.
//! - The web console ([`crate::console`]): its page at every path without a file
//!   extension (the console routes in the browser), its assets under `/assets/`.
//! - The API as gRPC-Web (`POST /supervisor.v1.<Service>/<Method>` with a
//!   `application/grpc-web*` content type), for the console: the same services and the
//!   same authentication, permissions, tenants and audit as the gRPC listener.
//!
//! Plain HTTP/1.1 and no CORS: only pages this node serves may call the API from a
//! browser. It binds to loopback unless told otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use supervisor_node::Node;
use supervisor_telemetry::Telemetry;
use tonic::body::Body;
use tower::ServiceExt as _;

/// The API as gRPC-Web, built by [`crate::web_api`].
pub type WebApi = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// What the HTTP side serves from.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics registry.
    pub telemetry: Arc<Telemetry>,
    /// The node, for `/healthz`.
    pub node: Arc<Node>,
    /// The API for the console; `None` serves neither the API nor the console.
    pub web: Option<WebApi>,
    /// Whether API calls must name this machine by address (`Host` an IP address or
    /// `localhost`): on when authentication is off, so that no web page can reach the
    /// API through a name it points at this machine (DNS rebinding).
    pub literal_hosts_only: bool,
}

/// Serves `listener` until `shutdown` resolves. A connection that fails is dropped and
/// logged at debug; the listener goes on.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let local = listener.local_addr().ok();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::debug!(error = %err, "http accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        // Small gRPC-Web frames must not wait for delayed ACKs.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, req, peer, local).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "http connection ended with an error");
            }
        });
    }
}

const PLAIN: &str = "text/plain; charset=utf-8";

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Whether `req` is a gRPC-Web call of the API.
fn is_api_call<B>(req: &Request<B>) -> bool {
    req.uri().path().starts_with("/supervisor.v1.")
}

async fn respond(
    state: &HttpState,
    req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<Body> {
    if is_api_call(&req) {
        return api_call(state, req, peer, local).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            format!(
                "{} is not served at {}; use GET (API calls are POST /supervisor.v1.<Service>/<Method> as gRPC-Web)\n",
                req.method(),
                req.uri().path()
            ),
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
        path if state.web.is_some() => console_file(path),
        other => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!(
                "nothing at {other}; this node serves /metrics and /healthz, and its console is off (set [server] console = true to serve it)\n"
            ),
        ),
    }
}

async fn api_call(
    state: &HttpState,
    req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<Body> {
    let Some(web) = state.web.clone() else {
        return text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "the API is not served on this port while the console is off (set [server] console = true to serve it); gRPC clients call the node's gRPC listener\n".into(),
        );
    };
    let grpc_web = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"));
    if req.method() != Method::POST || !grpc_web {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PLAIN,
            format!(
                "{} is an API method: this port serves it as gRPC-Web only (POST with content-type application/grpc-web+proto); gRPC clients call the node's gRPC listener\n",
                req.uri().path()
            ),
        );
    }
    if let Err(why) = same_origin(&req, state.literal_hosts_only) {
        return text(StatusCode::FORBIDDEN, PLAIN, format!("{why}\n"));
    }
    let mut req = req.map(Body::new);
    // The audit log records the caller's address, as for gRPC calls.
    req.extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: local,
            remote_addr: Some(peer),
        });
    match web.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Refuses an API call a page of another origin made: its `Origin`, when sent, must be
/// this `Host`; and with `literal_hosts_only`, the `Host` must be an IP address or
/// `localhost` (a name someone points at this machine is how a web page would reach a
/// node without authentication).
fn same_origin<B>(req: &Request<B>, literal_hosts_only: bool) -> Result<(), String> {
    let header = |name| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    let host = header(header::HOST).unwrap_or_default();
    if let Some(origin) = header(header::ORIGIN) {
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or_default();
        if origin_host != host {
            return Err(format!(
                "refused: a page of {origin} called the API of {host}; the API answers only the console this node serves"
            ));
        }
    }
    if literal_hosts_only {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h),
        };
        let literal = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok();
        if !literal {
            return Err(format!(
                "refused: authentication is off, so the API answers only requests addressed to this machine by IP address or as localhost, not by the name {name:?}; open the console at http://127.0.0.1:<port>/, or turn authentication on"
            ));
        }
    }
    Ok(())
}

/// A file of the console, or its page for any path that is not one of its files (the
/// console's own routes: `/tasks/<id>`, `/cluster/nodes/<id.with.dots>`...); 404 only
/// under `/assets/`, where every name is a file's.
fn console_file(path: &str) -> Response<Body> {
    let (file, page) = match crate::console::file(path) {
        Some(found) => (found, false),
        None if !path.starts_with("/assets/") => match crate::console::file("/index.html") {
            Some(index) => (index, true),
            None => {
                return text(
                    StatusCode::NOT_FOUND,
                    PLAIN,
                    "this binary was built without the console (console/dist was missing): run scripts/build-console, then build again\n".into(),
                );
            }
        },
        None => {
            return text(StatusCode::NOT_FOUND, PLAIN, format!("nothing at {path}\n"));
        }
    };
    let mut response = Response::new(Body::new(Full::new(Bytes::from_static(file.content))));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    // Hashed asset names change with their content; the page itself is always re-read.
    let cache = if file.immutable && !page {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
