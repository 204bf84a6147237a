//! Resource calls: budgets, tenant quotas, repository locks, waiting tasks and what the
//! nodes measured (`ResourceService`).

use supervisor_proto::v1::{
    Allocation, Budget, BudgetStatus, DeleteBudgetRequest, GetQuotaRequest, ListAllocationsRequest,
    ListBudgetsRequest, ListNodeResourcesRequest, ListWaitingRequest, NodeResources,
    SetBudgetRequest, SetQuotaRequest, TenantQuota, WaitingTask,
};

use crate::{Client, ClientError};

impl Client {
    /// Sets (creates or replaces) a budget of the caller's tenant (admin).
    pub async fn set_budget(&self, budget: Budget) -> Result<BudgetStatus, ClientError> {
        let request = SetBudgetRequest {
            budget: Some(budget),
        };
        Ok(self
            .resources
            .clone()
            .set_budget(request)
            .await?
            .into_inner())
    }

    /// Deletes the budget of `scope` (`tenant`, `key:<id>`, `label:<name>`) (admin).
    pub async fn delete_budget(&self, scope: &str) -> Result<(), ClientError> {
        let request = DeleteBudgetRequest {
            scope: scope.into(),
        };
        self.resources.clone().delete_budget(request).await?;
        Ok(())
    }

    /// The caller's tenant's budgets with what is spent and reserved now.
    pub async fn list_budgets(&self) -> Result<Vec<BudgetStatus>, ClientError> {
        let response = self
            .resources
            .clone()
            .list_budgets(ListBudgetsRequest {})
            .await?;
        Ok(response.into_inner().budgets)
    }

    /// Sets a tenant's quota (an admin of the default tenant).
    pub async fn set_quota(&self, quota: TenantQuota) -> Result<TenantQuota, ClientError> {
        let request = SetQuotaRequest { quota: Some(quota) };
        Ok(self
            .resources
            .clone()
            .set_quota(request)
            .await?
            .into_inner())
    }

    /// The caller's tenant's quota and running attempts.
    pub async fn get_quota(&self) -> Result<TenantQuota, ClientError> {
        let response = self.resources.clone().get_quota(GetQuotaRequest {}).await?;
        Ok(response.into_inner())
    }

    /// Repository locks held now.
    pub async fn list_allocations(&self) -> Result<Vec<Allocation>, ClientError> {
        let response = self
            .resources
            .clone()
            .list_allocations(ListAllocationsRequest {})
            .await?;
        Ok(response.into_inner().allocations)
    }

    /// Queued tasks a resource manager holds back, and why.
    pub async fn list_waiting(&self) -> Result<Vec<WaitingTask>, ClientError> {
        let response = self
            .resources
            .clone()
            .list_waiting(ListWaitingRequest {})
            .await?;
        Ok(response.into_inner().tasks)
    }

    /// What every node measured at its last heartbeat.
    pub async fn list_node_resources(&self) -> Result<Vec<NodeResources>, ClientError> {
        let response = self
            .resources
            .clone()
            .list_node_resources(ListNodeResourcesRequest {})
            .await?;
        Ok(response.into_inner().nodes)
    }
}
