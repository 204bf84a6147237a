//! Identity calls: who am I, tenants, API keys, the audit log (`AuthService`).

use supervisor_proto::v1::{
    ApiKey, AuditEntry, CreateKeyRequest, CreateKeyResponse, CreateTenantRequest, ListAuditRequest,
    ListAuditResponse, ListKeysRequest, ListTenantsRequest, RevokeKeyRequest, Tenant,
    WhoAmIRequest, WhoAmIResponse,
};

use crate::{Client, ClientError};

impl Client {
    /// The principal this client's credentials stand for.
    pub async fn whoami(&self) -> Result<WhoAmIResponse, ClientError> {
        Ok(self
            .auth
            .clone()
            .who_am_i(WhoAmIRequest {})
            .await?
            .into_inner())
    }

    /// Makes a tenant (admin).
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, ClientError> {
        let request = CreateTenantRequest { name: name.into() };
        Ok(self.auth.clone().create_tenant(request).await?.into_inner())
    }

    /// Every tenant (admin).
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, ClientError> {
        let response = self
            .auth
            .clone()
            .list_tenants(ListTenantsRequest {})
            .await?;
        Ok(response.into_inner().tenants)
    }

    /// Makes an API key (admin); the response holds the key, shown this once.
    pub async fn create_key(
        &self,
        request: CreateKeyRequest,
    ) -> Result<CreateKeyResponse, ClientError> {
        Ok(self.auth.clone().create_key(request).await?.into_inner())
    }

    /// The keys of the caller's tenant, or of every tenant (admin).
    pub async fn list_keys(&self, all_tenants: bool) -> Result<Vec<ApiKey>, ClientError> {
        let response = self
            .auth
            .clone()
            .list_keys(ListKeysRequest { all_tenants })
            .await?;
        Ok(response.into_inner().keys)
    }

    /// Revokes a key (admin); every node refuses it within a second.
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey, ClientError> {
        let request = RevokeKeyRequest { id: id.into() };
        Ok(self.auth.clone().revoke_key(request).await?.into_inner())
    }

    /// One page of the audit log, newest first (admin).
    pub async fn list_audit(
        &self,
        request: ListAuditRequest,
    ) -> Result<ListAuditResponse, ClientError> {
        Ok(self.auth.clone().list_audit(request).await?.into_inner())
    }

    /// Up to `limit` entries of the audit log, newest first, following pages (admin).
    pub async fn audit_up_to(
        &self,
        mut request: ListAuditRequest,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, ClientError> {
        let mut entries = Vec::new();
        loop {
            let page = self.list_audit(request.clone()).await?;
            entries.extend(page.entries);
            if entries.len() >= limit || page.next_page_token.is_empty() {
                entries.truncate(limit);
                return Ok(entries);
            }
            request.page_token = page.next_page_token;
        }
    }
}
