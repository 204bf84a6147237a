//! Tenants, keys, the caller and audit entries as `--output json` prints them.

use serde::Serialize;
use supervisor_proto::v1::{ApiKey, AuditEntry, Tenant, WhoAmIResponse};

use crate::commands::output::optional_rfc3339;

/// The caller, as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct WhoAmIJson {
    tenant: String,
    role: String,
    principal: String,
    name: String,
    auth_enabled: bool,
}

impl From<&WhoAmIResponse> for WhoAmIJson {
    fn from(w: &WhoAmIResponse) -> Self {
        WhoAmIJson {
            tenant: w.tenant.clone(),
            role: w.role.clone(),
            principal: w.principal.clone(),
            name: w.name.clone(),
            auth_enabled: w.auth_enabled,
        }
    }
}

/// A tenant, as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct TenantJson {
    name: String,
    created_at: Option<String>,
    created_by: String,
}

impl From<&Tenant> for TenantJson {
    fn from(t: &Tenant) -> Self {
        TenantJson {
            name: t.name.clone(),
            created_at: optional_rfc3339(t.created_at.as_ref()),
            created_by: t.created_by.clone(),
        }
    }
}

/// An API key (never its secret), as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct KeyJson {
    id: String,
    tenant: String,
    role: String,
    name: String,
    created_at: Option<String>,
    created_by: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

impl From<&ApiKey> for KeyJson {
    fn from(k: &ApiKey) -> Self {
        KeyJson {
            id: k.id.clone(),
            tenant: k.tenant.clone(),
            role: k.role.clone(),
            name: k.name.clone(),
            created_at: optional_rfc3339(k.created_at.as_ref()),
            created_by: k.created_by.clone(),
            expires_at: optional_rfc3339(k.expires_at.as_ref()),
            revoked_at: optional_rfc3339(k.revoked_at.as_ref()),
            last_used_at: optional_rfc3339(k.last_used_at.as_ref()),
        }
    }
}

/// An audit entry, as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct AuditJson {
    at: Option<String>,
    principal: String,
    tenant: String,
    rpc: String,
    targets: Vec<String>,
    outcome: String,
    peer: String,
}

impl From<&AuditEntry> for AuditJson {
    fn from(e: &AuditEntry) -> Self {
        AuditJson {
            at: optional_rfc3339(e.at.as_ref()),
            principal: e.principal.clone(),
            tenant: e.tenant.clone(),
            rpc: e.rpc.clone(),
            targets: e.targets.clone(),
            outcome: e.outcome.clone(),
            peer: e.peer.clone(),
        }
    }
}
