//! `supervisor.v1.AuthService`: who the caller is, tenants, API keys and the audit log.
//! The auth layer already checked the permission each RPC needs; these handlers scope
//! what they touch to the caller's tenant unless the request asks for every tenant (an
//! admin's call, by the table).

use std::sync::Arc;
use std::time::Duration;

use supervisor_engine::{ApiKeyInfo, AuditQuery, Engine};
use supervisor_model::{Principal, Role};
use supervisor_proto::convert::timestamp_from_micros;
use supervisor_proto::v1;
use supervisor_proto::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, principal_in};
use crate::convert::{invalid, page_size_in, status_from};

/// Refuses what only an admin of the whole cluster (of the `default` tenant) may do.
pub(crate) fn cluster_admin_only(p: &Principal, what: &str) -> Result<(), Status> {
    if p.cluster_admin {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{what} takes an admin of the default tenant; {} administers tenant {} only",
            p.id, p.tenant
        )))
    }
}

/// Longest lifetime a key may be given: ten years.
const MAX_KEY_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `supervisor.v1.AuthService` over an engine.
#[derive(Clone)]
pub struct IdentityApi {
    engine: Engine,
    auth: Arc<Authenticator>,
}

impl IdentityApi {
    /// The service over `auth`'s engine.
    pub fn new(auth: Arc<Authenticator>) -> IdentityApi {
        IdentityApi {
            engine: auth.engine().clone(),
            auth,
        }
    }
}

fn key_out(k: ApiKeyInfo) -> v1::ApiKey {
    v1::ApiKey {
        id: k.id,
        tenant: k.tenant,
        role: k.role.as_str().into(),
        name: k.name,
        created_at: Some(timestamp_from_micros(k.created_at)),
        created_by: k.created_by,
        expires_at: k.expires_at.map(timestamp_from_micros),
        revoked_at: k.revoked_at.map(timestamp_from_micros),
        last_used_at: k.last_used_at.map(timestamp_from_micros),
    }
}

fn micros_of(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos) / 1000)
}

#[tonic::async_trait]
impl AuthService for IdentityApi {
    async fn who_am_i(
        &self,
        req: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let p = principal_in(req.extensions());
        let methods = crate::auth::permissions::allowed(&p);
        Ok(Response::new(v1::WhoAmIResponse {
            tenant: p.tenant,
            role: p.role.as_str().into(),
            principal: p.id,
            name: p.name,
            auth_enabled: self.auth.enabled(),
            methods,
        }))
    }

    async fn create_tenant(
        &self,
        req: Request<v1::CreateTenantRequest>,
    ) -> Result<Response<v1::Tenant>, Status> {
        // Administrators of the whole cluster only (`permissions::CLUSTER_ADMIN_ONLY`).
        let p = principal_in(req.extensions());
        let t = self
            .engine
            .create_tenant(&req.get_ref().name, &p.id)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::Tenant {
            name: t.name,
            created_at: Some(timestamp_from_micros(t.created_at)),
            created_by: t.created_by,
        }))
    }

    async fn list_tenants(
        &self,
        _req: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        // Administrators of the whole cluster only (`permissions::CLUSTER_ADMIN_ONLY`).
        let tenants = self.engine.list_tenants().await.map_err(status_from)?;
        Ok(Response::new(v1::ListTenantsResponse {
            tenants: tenants
                .into_iter()
                .map(|t| v1::Tenant {
                    name: t.name,
                    created_at: (t.created_at > 0).then(|| timestamp_from_micros(t.created_at)),
                    created_by: t.created_by,
                })
                .collect(),
        }))
    }

    async fn create_key(
        &self,
        req: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::CreateKeyResponse>, Status> {
        let p = principal_in(req.extensions());
        let r = req.into_inner();
        let tenant = if r.tenant.is_empty() {
            p.tenant.clone()
        } else {
            r.tenant
        };
        let role: Role = r
            .role
            .parse()
            .map_err(|e: supervisor_model::FieldError| invalid("role", &e.message))?;
        let lifetime = Duration::from_secs(r.expires_in_seconds);
        if lifetime > MAX_KEY_LIFETIME {
            return Err(invalid(
                "expires_in_seconds",
                format!(
                    "{} is over the longest lifetime of a key, {} (ten years)",
                    r.expires_in_seconds,
                    MAX_KEY_LIFETIME.as_secs()
                ),
            ));
        }
        let expires_at = (r.expires_in_seconds > 0)
            .then(|| self.engine.now_micros() + lifetime.as_micros() as i64);
        let made = self
            .engine
            .create_key(&tenant, role, &r.name, expires_at, &p.id)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::CreateKeyResponse {
            info: Some(key_out(made.info)),
            key: made.key,
        }))
    }

    async fn list_keys(
        &self,
        req: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let p = principal_in(req.extensions());
        if req.get_ref().all_tenants {
            cluster_admin_only(&p, "listing every tenant's keys")?;
        }
        let scope = (!req.get_ref().all_tenants).then_some(p.tenant.as_str());
        let keys = self.engine.list_keys(scope).await.map_err(status_from)?;
        Ok(Response::new(v1::ListKeysResponse {
            keys: keys.into_iter().map(key_out).collect(),
        }))
    }

    async fn revoke_key(
        &self,
        req: Request<v1::RevokeKeyRequest>,
    ) -> Result<Response<v1::ApiKey>, Status> {
        let p = principal_in(req.extensions());
        let id = req.get_ref().id.trim();
        if id.is_empty() {
            return Err(invalid(
                "id",
                "is empty; `supervisor key list` lists the keys",
            ));
        }
        // A cluster admin revokes any key; a tenant's admin, its tenant's.
        let scope = (!p.cluster_admin).then_some(p.tenant.as_str());
        let key = self
            .engine
            .revoke_key(id, scope)
            .await
            .map_err(status_from)?;
        Ok(Response::new(key_out(key)))
    }

    async fn list_audit(
        &self,
        req: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let p = principal_in(req.extensions());
        let r = req.into_inner();
        if r.all_tenants {
            cluster_admin_only(&p, "reading every tenant's audit log")?;
        }
        page_size_in(r.page_size)?;
        let query = AuditQuery {
            since: r.since.as_ref().map(micros_of),
            principal: Some(r.principal).filter(|s| !s.is_empty()),
            tenant: (!r.all_tenants).then_some(p.tenant),
            page_size: if r.page_size == 0 {
                50
            } else {
                r.page_size as usize
            },
            page_token: Some(r.page_token).filter(|s| !s.is_empty()),
        };
        let page = self.engine.list_audit(&query).await.map_err(status_from)?;
        Ok(Response::new(v1::ListAuditResponse {
            entries: page
                .entries
                .into_iter()
                .map(|e| v1::AuditEntry {
                    at: Some(timestamp_from_micros(e.at)),
                    principal: e.principal,
                    tenant: e.tenant,
                    rpc: e.rpc,
                    targets: e.targets,
                    outcome: e.outcome,
                    peer: e.peer,
                })
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }
}
