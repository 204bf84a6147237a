//! `supervisor.v1.ResourceService`: budgets, tenant quotas, repository locks held and
//! tasks waiting, and what each node measured of its machine. The auth layer checked the
//! permission each RPC needs; these handlers scope what they read or change to the
//! caller's tenant (a cluster admin sees every tenant's locks and waiting tasks).

use supervisor_engine::{BudgetStatus, Engine, TenantQuotaInfo, parse_scope};
use supervisor_model::{
    Budget, BudgetLimit, DEFAULT_RESERVE_MICROS, ExceedPolicy, LockPolicy, Metric, Period,
    TenantQuota, quote,
};
use supervisor_proto::convert::timestamp_from_micros;
use supervisor_proto::v1;
use supervisor_proto::v1::resource_service_server::ResourceService;
use tonic::{Request, Response, Status};

use crate::auth::principal_in;
use crate::convert::{invalid, status_from};

/// `supervisor.v1.ResourceService` over an engine.
#[derive(Clone)]
pub struct ResourceApi {
    engine: Engine,
}

impl ResourceApi {
    /// The service over `engine`.
    pub fn new(engine: Engine) -> ResourceApi {
        ResourceApi { engine }
    }
}

/// Soft share of a budget when the request leaves it at 0.
const DEFAULT_SOFT_PERCENT: u8 = 80;

fn metric_in(text: &str) -> Result<Metric, Status> {
    match text {
        "usd" => Ok(Metric::CostMicros),
        "tokens" => Ok(Metric::Tokens),
        other => Err(invalid(
            "budget.limits.metric",
            format!("{} is not a metric (usd or tokens)", quote(other)),
        )),
    }
}

fn metric_out(m: Metric) -> &'static str {
    match m {
        Metric::CostMicros => "usd",
        Metric::Tokens => "tokens",
    }
}

fn period_in(text: &str) -> Result<Period, Status> {
    match text {
        "day" => Ok(Period::Day),
        "month" => Ok(Period::Month),
        other => Err(invalid(
            "budget.limits.period",
            format!("{} is not a period (day or month)", quote(other)),
        )),
    }
}

fn limit_out(l: &BudgetLimit) -> v1::BudgetLimit {
    v1::BudgetLimit {
        metric: metric_out(l.metric).into(),
        period: l.period.as_str().into(),
        hard: l.hard,
    }
}

/// A budget from its message, with the defaults the message documents.
fn budget_in(b: v1::Budget, by: &str, now: i64) -> Result<Budget, Status> {
    let scope = parse_scope(&b.scope).map_err(|e| invalid("budget.scope", e.message))?;
    let limits = b
        .limits
        .iter()
        .map(|l| {
            Ok(BudgetLimit {
                metric: metric_in(&l.metric)?,
                period: period_in(&l.period)?,
                hard: l.hard,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let soft_percent = match b.soft_percent {
        0 => DEFAULT_SOFT_PERCENT,
        n => u8::try_from(n).unwrap_or(u8::MAX),
    };
    let on_exceed = match b.on_exceed.as_str() {
        "" => ExceedPolicy::Wait,
        text => text
            .parse()
            .map_err(|e: String| invalid("budget.on_exceed", e))?,
    };
    Ok(Budget {
        scope,
        limits,
        soft_percent,
        on_exceed,
        time_zone: if b.time_zone.is_empty() {
            "UTC".into()
        } else {
            b.time_zone
        },
        default_reserve_micros: match b.default_reserve_micros {
            0 => DEFAULT_RESERVE_MICROS,
            n => n,
        },
        updated_at: now,
        updated_by: by.to_string(),
    })
}

fn budget_out(s: BudgetStatus) -> v1::BudgetStatus {
    let b = &s.budget;
    v1::BudgetStatus {
        tenant: s.tenant.clone(),
        budget: Some(v1::Budget {
            scope: b.scope.describe(),
            limits: b.limits.iter().map(limit_out).collect(),
            soft_percent: u32::from(b.soft_percent),
            on_exceed: b.on_exceed.as_str().into(),
            time_zone: b.time_zone.clone(),
            default_reserve_micros: b.default_reserve_micros,
        }),
        limits: s
            .limits
            .iter()
            .map(|l| v1::LimitUse {
                limit: Some(v1::BudgetLimit {
                    metric: metric_out(l.metric).into(),
                    period: l.period.as_str().into(),
                    hard: l.hard,
                }),
                period_id: l.period_id.clone(),
                period_ends_at: Some(timestamp_from_micros(l.period_ends_at)),
                soft: l.soft,
                spent: l.spent,
                reserved: l.reserved,
            })
            .collect(),
        soft_exceeded: s.soft_exceeded,
        updated_at: Some(timestamp_from_micros(b.updated_at)),
        updated_by: b.updated_by.clone(),
    }
}

fn quota_out(q: TenantQuotaInfo) -> v1::TenantQuota {
    v1::TenantQuota {
        tenant: q.tenant,
        weight: q.quota.weight,
        max_running: q.quota.max_running,
        lock_policy: q.quota.lock_policy.as_str().into(),
        running: q.running,
        starts_per_minute: q.quota.starts_per_minute,
    }
}

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn set_budget(
        &self,
        req: Request<v1::SetBudgetRequest>,
    ) -> Result<Response<v1::BudgetStatus>, Status> {
        let p = principal_in(req.extensions());
        let budget = req
            .into_inner()
            .budget
            .ok_or_else(|| invalid("budget", "a budget is needed"))?;
        let budget = budget_in(budget, &p.id, self.engine.now_micros())?;
        let scope = budget.scope.clone();
        self.engine
            .set_budget(&p.tenant, budget)
            .await
            .map_err(status_from)?;
        let status = self
            .engine
            .budgets(&p.tenant)
            .await
            .map_err(status_from)?
            .into_iter()
            .find(|s| s.budget.scope == scope)
            .ok_or_else(|| Status::internal("the budget just set could not be read back"))?;
        Ok(Response::new(budget_out(status)))
    }

    async fn delete_budget(
        &self,
        req: Request<v1::DeleteBudgetRequest>,
    ) -> Result<Response<v1::DeleteBudgetResponse>, Status> {
        let p = principal_in(req.extensions());
        let scope = parse_scope(&req.get_ref().scope).map_err(|e| invalid("scope", e.message))?;
        self.engine
            .delete_budget(&p.tenant, &scope)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::DeleteBudgetResponse {}))
    }

    async fn list_budgets(
        &self,
        req: Request<v1::ListBudgetsRequest>,
    ) -> Result<Response<v1::ListBudgetsResponse>, Status> {
        let p = principal_in(req.extensions());
        let budgets = self.engine.budgets(&p.tenant).await.map_err(status_from)?;
        Ok(Response::new(v1::ListBudgetsResponse {
            budgets: budgets.into_iter().map(budget_out).collect(),
        }))
    }

    async fn set_quota(
        &self,
        req: Request<v1::SetQuotaRequest>,
    ) -> Result<Response<v1::TenantQuota>, Status> {
        // Administrators of the whole cluster only (a weight is a share of the whole
        // cluster): the auth layer's `permissions::CLUSTER_ADMIN_ONLY` refuses anyone else.
        let p = principal_in(req.extensions());
        let q = req
            .into_inner()
            .quota
            .ok_or_else(|| invalid("quota", "a quota is needed"))?;
        let tenant = if q.tenant.is_empty() {
            p.tenant.clone()
        } else {
            q.tenant
        };
        let lock_policy = match q.lock_policy.as_str() {
            "" => LockPolicy::Queue,
            text => text
                .parse()
                .map_err(|e: String| invalid("quota.lock_policy", e))?,
        };
        let quota = TenantQuota {
            weight: q.weight.max(1),
            max_running: q.max_running,
            lock_policy,
            starts_per_minute: q.starts_per_minute,
        };
        let info = self
            .engine
            .set_quota(&tenant, quota)
            .await
            .map_err(status_from)?;
        Ok(Response::new(quota_out(info)))
    }

    async fn get_quota(
        &self,
        req: Request<v1::GetQuotaRequest>,
    ) -> Result<Response<v1::TenantQuota>, Status> {
        let p = principal_in(req.extensions());
        let info = self.engine.quota(&p.tenant).await.map_err(status_from)?;
        Ok(Response::new(quota_out(info)))
    }

    async fn list_allocations(
        &self,
        req: Request<v1::ListAllocationsRequest>,
    ) -> Result<Response<v1::ListAllocationsResponse>, Status> {
        let p = principal_in(req.extensions());
        let scope = (!p.cluster_admin).then_some(p.tenant.as_str());
        let allocations = self.engine.allocations(scope).await.map_err(status_from)?;
        Ok(Response::new(v1::ListAllocationsResponse {
            allocations: allocations
                .into_iter()
                .map(|a| v1::Allocation {
                    repo: a.repo,
                    r#ref: a.git_ref,
                    mode: a.mode.as_str().into(),
                    tenant: a.tenant,
                    task_id: a.task.to_string(),
                    fence: a.fence,
                    node: a.node,
                    since: Some(timestamp_from_micros(a.since)),
                })
                .collect(),
        }))
    }

    async fn list_waiting(
        &self,
        req: Request<v1::ListWaitingRequest>,
    ) -> Result<Response<v1::ListWaitingResponse>, Status> {
        let p = principal_in(req.extensions());
        let scope = (!p.cluster_admin).then_some(p.tenant.as_str());
        let waiting = self.engine.waiting(scope).await.map_err(status_from)?;
        Ok(Response::new(v1::ListWaitingResponse {
            tasks: waiting
                .into_iter()
                .map(|w| v1::WaitingTask {
                    tenant: w.tenant,
                    task_id: w.task.to_string(),
                    resource: w.resource,
                    reason: w.reason,
                })
                .collect(),
        }))
    }

    async fn list_node_resources(
        &self,
        req: Request<v1::ListNodeResourcesRequest>,
    ) -> Result<Response<v1::ListNodeResourcesResponse>, Status> {
        let p = principal_in(req.extensions());
        let mut nodes = self.engine.list_nodes().await.map_err(status_from)?;
        // Attempts of other tenants' tasks (their work directories name the task) are
        // for administrators of the whole cluster only. What a node measured that is not
        // an attempt (a process's command) goes too, as does every attempt when the
        // tasks cannot be read.
        if !p.cluster_admin {
            let tasks: Vec<_> = nodes
                .iter()
                .flat_map(|n| &n.load.resources.attempts)
                .filter_map(|a| supervisor_model::attempt_of_dir(&a.attempt).map(|(id, _)| id))
                .collect();
            let exist = self
                .engine
                .tasks_exist(&p.tenant, &tasks)
                .await
                .unwrap_or_default();
            let mine: std::collections::HashSet<_> = tasks
                .iter()
                .zip(exist)
                .filter_map(|(id, exists)| exists.then_some(*id))
                .collect();
            for n in &mut nodes {
                n.load.resources.attempts.retain(|a| {
                    supervisor_model::attempt_of_dir(&a.attempt)
                        .is_some_and(|(id, _)| mine.contains(&id))
                });
            }
        }
        Ok(Response::new(v1::ListNodeResourcesResponse {
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let r = n.load.resources;
                    v1::NodeResources {
                        node: n.id,
                        state: n.state.as_str().into(),
                        measured_at: (r.measured_at > 0)
                            .then(|| timestamp_from_micros(r.measured_at)),
                        cpu_cores: r.cpu_cores,
                        cpu_busy_permille: r.cpu_busy_permille,
                        memory_total_bytes: r.memory_total_bytes,
                        memory_available_bytes: r.memory_available_bytes,
                        process_rss_bytes: r.process_rss_bytes,
                        process_cpu_ms: r.process_cpu_ms,
                        disks: r
                            .disks
                            .into_iter()
                            .map(|d| v1::DiskUsage {
                                purpose: d.purpose,
                                path: d.path,
                                total_bytes: d.total_bytes,
                                free_bytes: d.free_bytes,
                            })
                            .collect(),
                        attempts: r
                            .attempts
                            .into_iter()
                            .map(|a| v1::AttemptUsage {
                                attempt: a.attempt,
                                processes: a.processes,
                                rss_bytes: a.rss_bytes,
                                cpu_ms: a.cpu_ms,
                            })
                            .collect(),
                        low_on_disk: r.low_on_disk,
                        in_flight: n.load.in_flight,
                    }
                })
                .collect(),
        }))
    }
}
