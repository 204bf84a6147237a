//! The tower layer in front of every service: authenticate, authorize, rate-limit, audit.
//!
//! A call to an open service (health, reflection) passes untouched. With authentication
//! off, every call passes as the anonymous admin of `default`. Otherwise, in order:
//! missing or bad credentials answer `UNAUTHENTICATED` saying which; a role without the
//! RPC's permission answers `PERMISSION_DENIED` naming it; naming another tenant
//! (`supervisor-tenant` metadata) needs the administer permission; a principal over its
//! rate limit gets `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo`. Every refused call
//! and every call that may change something is written to the audit log, with the ids
//! the request named (never its other fields).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt as _, Full};
use supervisor_engine::AuditEntry;
use supervisor_model::{Permission, Principal, Role, validate_tenant};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic_types::{ErrorDetails, StatusExt as _};
use tower::{Layer, Service};

use super::permissions::{self, method_name};
use super::{Authenticator, Targets};

/// Metadata an admin sends to act in another tenant.
pub const TENANT_HEADER: &str = "supervisor-tenant";

/// The auth layer; see the module docs.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    targets: Arc<Targets>,
}

impl AuthLayer {
    /// A layer checking calls with `auth`.
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer {
            auth,
            targets: Arc::new(Targets::from_descriptors()),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            auth: self.auth.clone(),
            targets: self.targets.clone(),
        }
    }
}

/// A service behind the auth layer.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: Arc<Authenticator>,
    targets: Arc<Targets>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let targets = self.targets.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let Some(need) = permissions::needed(&path) else {
                return inner.call(req).await;
            };
            if !auth.enabled() {
                req.extensions_mut().insert(Principal::anonymous());
                return inner.call(req).await;
            }
            let peer = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
                .map(|a| a.to_string())
                .unwrap_or_default();
            let record = |principal: &str, tenant: &str, outcome: String, body: &[u8]| AuditEntry {
                at: auth.engine().now_micros(),
                principal: principal.to_string(),
                tenant: tenant.to_string(),
                rpc: path.trim_start_matches('/').to_string(),
                targets: targets.of(&path, body),
                outcome,
                peer: peer.clone(),
            };
            // Credentials first: nothing of the request's body is read for a caller who
            // is not authenticated.
            let admitted = admit(&auth, req.headers(), need, &path).await;
            let principal = match admitted {
                Ok(principal) => principal,
                Err((None, status)) => {
                    let entry = record("unauthenticated", "", outcome_of(&status), &[]);
                    write(&auth, entry).await;
                    return Ok(status.into_http());
                }
                Err((Some(who), status)) => {
                    // The ids the refused call named, for the audit log.
                    let body = match read_body(req, &path).await {
                        Ok((_, body)) => body,
                        Err(refusal) => return Ok(refusal),
                    };
                    let entry = record(&who.id, &who.tenant, outcome_of(&status), &body);
                    write(&auth, entry).await;
                    return Ok(status.into_http());
                }
            };
            req.extensions_mut().insert(principal.clone());
            if need == Permission::Read {
                return inner.call(req).await;
            }
            // A call that may change something: the ids it names go to the audit log.
            let (req, body) = match read_body(req, &path).await {
                Ok(read) => read,
                Err(refusal) => return Ok(refusal),
            };
            let response = inner.call(req).await?;
            let outcome = match Status::from_header_map(response.headers()) {
                Some(status) if status.code() != tonic::Code::Ok => outcome_of(&status),
                _ => "ok".to_string(),
            };
            write(
                &auth,
                record(&principal.id, &principal.tenant, outcome, &body),
            )
            .await;
            Ok(response)
        })
    }
}

/// Reads the request's message (no further than the largest request a service reads,
/// plus its frame header) and gives back the request with the same body; on failure, the
/// response to send instead.
async fn read_body(
    req: http::Request<Body>,
    path: &str,
) -> Result<(http::Request<Body>, tonic::codegen::Bytes), http::Response<Body>> {
    let (parts, body) = req.into_parts();
    let limit = supervisor_model::MAX_REQUEST_BYTES + 5;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let req = http::Request::from_parts(parts, Body::new(Full::new(bytes.clone())));
            Ok((req, bytes))
        }
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(Status::resource_exhausted(crate::request_limit::message(path, None)).into_http())
        }
        Err(err) => {
            Err(Status::invalid_argument(format!("could not read the request: {err}")).into_http())
        }
    }
}

/// Who the caller is and whether it may make this call; on refusal, who it was (when
/// known) and the status to answer.
async fn admit(
    auth: &Authenticator,
    headers: &http::HeaderMap,
    need: Permission,
    path: &str,
) -> Result<Principal, (Option<Principal>, Status)> {
    let header = headers.get(http::header::AUTHORIZATION);
    let Some(header) = header else {
        return Err((
            None,
            Status::unauthenticated(
                "no credentials: send `authorization: Bearer <API key or JWT>` metadata (the CLI takes --token or SUPERVISOR_TOKEN)",
            ),
        ));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            (
                None,
                Status::unauthenticated(
                    "the authorization metadata is malformed: expected `Bearer <API key or JWT>`",
                ),
            )
        })?;
    let mut principal = auth.authenticate(token).await.map_err(|s| (None, s))?;
    if let Some(other) = headers.get(TENANT_HEADER) {
        let other = other.to_str().unwrap_or_default().to_string();
        if !principal.cluster_admin {
            return Err((
                Some(principal),
                Status::permission_denied(format!(
                    "acting in another tenant ({TENANT_HEADER} metadata) takes an admin of the default tenant"
                )),
            ));
        }
        if let Err(e) = validate_tenant(&other) {
            return Err((Some(principal), Status::invalid_argument(e.message)));
        }
        principal.tenant = other;
    }
    if !principal.role.allows(need) {
        let status = Status::permission_denied(format!(
            "{} needs the {need} permission (role {} or above); {} has role {}",
            method_name(path),
            Role::least_with(need),
            principal.id,
            principal.role
        ));
        return Err((Some(principal), status));
    }
    if permissions::CLUSTER_ADMIN_ONLY.contains(&path) && !principal.cluster_admin {
        let status = Status::permission_denied(format!(
            "{} concerns the whole cluster and takes an admin of the default tenant; {} administers tenant {} only",
            method_name(path),
            principal.id,
            principal.tenant
        ));
        return Err((Some(principal), status));
    }
    if let Err(wait) = auth.rate_limit(&principal) {
        let status = Status::with_error_details(
            tonic::Code::ResourceExhausted,
            format!(
                "{} is over its rate limit; retry in {:.1}s",
                principal.id,
                wait.as_secs_f64()
            ),
            ErrorDetails::with_retry_info(Some(wait)),
        );
        return Err((Some(principal), status));
    }
    Ok(principal)
}

/// How a refused or failed call appears in the audit log.
fn outcome_of(status: &Status) -> String {
    let message: String = status.message().chars().take(200).collect();
    format!("{:?}: {message}", status.code())
}

async fn write(auth: &Authenticator, entry: AuditEntry) {
    if let Err(err) = auth.engine().audit(entry).await {
        tracing::error!(error = %err, "could not write to the audit log");
    }
}
