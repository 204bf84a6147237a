//! The one table of which RPC needs which permission. The auth layer consults it before
//! any handler runs; a test walks every RPC of every service in the descriptor set, so
//! an RPC added without an entry fails the build's tests.

use supervisor_model::Permission;

/// RPCs that, beyond their permission, only administrators of the default tenant may
/// call: they concern the whole cluster. The auth layer refuses anyone else, and WhoAmI
/// leaves them out of what it lists for anyone else.
pub const CLUSTER_ADMIN_ONLY: &[&str] = &[
    "/supervisor.v1.AuthService/CreateTenant",
    "/supervisor.v1.AuthService/ListTenants",
    "/supervisor.v1.ClusterService/GetStoreStats",
    "/supervisor.v1.ClusterService/BackupStore",
    "/supervisor.v1.ResourceService/SetQuota",
];

/// The RPCs `principal` may call, as full method paths.
pub fn allowed(principal: &supervisor_model::Principal) -> Vec<String> {
    TABLE
        .iter()
        .filter(|(path, need)| {
            principal.role.allows(*need)
                && (principal.cluster_admin || !CLUSTER_ADMIN_ONLY.contains(path))
        })
        .map(|(path, _)| (*path).to_string())
        .collect()
}

/// `(full method path, permission)`, for every RPC of `supervisor.v1`.
pub const TABLE: &[(&str, Permission)] = &[
    // Tasks.
    ("/supervisor.v1.TaskService/SubmitTask", Permission::Write),
    ("/supervisor.v1.TaskService/GetTask", Permission::Read),
    ("/supervisor.v1.TaskService/ListTasks", Permission::Read),
    ("/supervisor.v1.TaskService/CancelTask", Permission::Write),
    ("/supervisor.v1.TaskService/RetryTask", Permission::Write),
    ("/supervisor.v1.TaskService/WatchTask", Permission::Read),
    ("/supervisor.v1.TaskService/GetTaskStats", Permission::Read),
    (
        "/supervisor.v1.TaskService/WatchTaskStats",
        Permission::Read,
    ),
    // Workflows and schedules.
    (
        "/supervisor.v1.WorkflowService/ValidateWorkflow",
        Permission::Read,
    ),
    (
        "/supervisor.v1.WorkflowService/SubmitWorkflow",
        Permission::Write,
    ),
    (
        "/supervisor.v1.WorkflowService/GetWorkflow",
        Permission::Read,
    ),
    (
        "/supervisor.v1.WorkflowService/ListWorkflows",
        Permission::Read,
    ),
    (
        "/supervisor.v1.WorkflowService/CancelWorkflow",
        Permission::Write,
    ),
    (
        "/supervisor.v1.WorkflowService/RetryWorkflow",
        Permission::Write,
    ),
    (
        "/supervisor.v1.WorkflowService/WatchWorkflow",
        Permission::Read,
    ),
    (
        "/supervisor.v1.WorkflowService/CreateSchedule",
        Permission::Operate,
    ),
    (
        "/supervisor.v1.WorkflowService/ListSchedules",
        Permission::Read,
    ),
    (
        "/supervisor.v1.WorkflowService/PauseSchedule",
        Permission::Operate,
    ),
    (
        "/supervisor.v1.WorkflowService/ResumeSchedule",
        Permission::Operate,
    ),
    (
        "/supervisor.v1.WorkflowService/TriggerSchedule",
        Permission::Operate,
    ),
    (
        "/supervisor.v1.WorkflowService/DeleteSchedule",
        Permission::Operate,
    ),
    // Providers.
    (
        "/supervisor.v1.ProviderService/ListProviders",
        Permission::Read,
    ),
    (
        "/supervisor.v1.ProviderService/WatchProviders",
        Permission::Read,
    ),
    ("/supervisor.v1.ProviderService/GetSpend", Permission::Read),
    // Cluster.
    (
        "/supervisor.v1.ClusterService/GetClusterStatus",
        Permission::Read,
    ),
    (
        "/supervisor.v1.ClusterService/DrainNode",
        Permission::Operate,
    ),
    (
        "/supervisor.v1.ClusterService/GetStoreStats",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.ClusterService/BackupStore",
        Permission::Administer,
    ),
    // Resources.
    (
        "/supervisor.v1.ResourceService/SetBudget",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.ResourceService/DeleteBudget",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.ResourceService/ListBudgets",
        Permission::Read,
    ),
    (
        "/supervisor.v1.ResourceService/SetQuota",
        Permission::Administer,
    ),
    ("/supervisor.v1.ResourceService/GetQuota", Permission::Read),
    (
        "/supervisor.v1.ResourceService/ListAllocations",
        Permission::Read,
    ),
    (
        "/supervisor.v1.ResourceService/ListWaiting",
        Permission::Read,
    ),
    (
        "/supervisor.v1.ResourceService/ListNodeResources",
        Permission::Read,
    ),
    // Analytics.
    (
        "/supervisor.v1.AnalyticsService/GetSummary",
        Permission::Read,
    ),
    ("/supervisor.v1.AnalyticsService/GetTrend", Permission::Read),
    (
        "/supervisor.v1.AnalyticsService/GetPrediction",
        Permission::Read,
    ),
    // Identity.
    ("/supervisor.v1.ChatService/CreateThread", Permission::Write),
    ("/supervisor.v1.ChatService/GetThread", Permission::Read),
    ("/supervisor.v1.ChatService/ListThreads", Permission::Read),
    ("/supervisor.v1.ChatService/PostMessage", Permission::Write),
    ("/supervisor.v1.ChatService/WatchThread", Permission::Read),
    ("/supervisor.v1.ChatService/SearchThreads", Permission::Read),
    (
        "/supervisor.v1.ChatService/ConvertThread",
        Permission::Write,
    ),
    ("/supervisor.v1.ChatService/DeleteThread", Permission::Write),
    ("/supervisor.v1.AuthService/WhoAmI", Permission::Read),
    (
        "/supervisor.v1.AuthService/CreateTenant",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.AuthService/ListTenants",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.AuthService/CreateKey",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.AuthService/ListKeys",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.AuthService/RevokeKey",
        Permission::Administer,
    ),
    (
        "/supervisor.v1.AuthService/ListAudit",
        Permission::Administer,
    ),
];

/// Services anyone may call without a credential: health checks and reflection (the
/// API's schema, which is public in the repository anyway).
pub const OPEN_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What calling `path` needs: `Some(permission)` for an RPC of the API, `None` for an
/// open service. An unknown method of the API needs `Administer`, so an RPC someone
/// forgot to list is closed rather than open.
pub fn needed(path: &str) -> Option<Permission> {
    if OPEN_SERVICES.iter().any(|s| path.starts_with(s)) {
        return None;
    }
    Some(
        TABLE
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(Permission::Administer, |(_, perm)| *perm),
    )
}

/// The method's short name (`SubmitTask`) for messages.
pub fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use supervisor_model::Role;

    #[test]
    fn what_a_principal_is_told_it_may_call() {
        for path in CLUSTER_ADMIN_ONLY {
            assert!(TABLE.iter().any(|(p, _)| p == path), "{path} is not an RPC");
        }
        let of = |tenant: &str, role| {
            supervisor_model::Principal::new(tenant.into(), role, "key:k".into(), "k".into())
        };
        let viewer = allowed(&of("default", Role::Viewer));
        assert!(
            viewer
                .iter()
                .any(|m| m == "/supervisor.v1.TaskService/GetTask")
        );
        assert!(
            !viewer
                .iter()
                .any(|m| m == "/supervisor.v1.TaskService/CancelTask")
        );
        let tenant_admin = allowed(&of("acme", Role::Admin));
        assert!(
            tenant_admin
                .iter()
                .any(|m| m == "/supervisor.v1.AuthService/CreateKey")
        );
        assert!(
            !tenant_admin
                .iter()
                .any(|m| m == "/supervisor.v1.ClusterService/GetStoreStats")
        );
        assert_eq!(allowed(&of("default", Role::Admin)).len(), TABLE.len());
    }

    /// Every RPC the descriptor set declares, as a full path.
    fn declared_rpcs() -> Vec<String> {
        let fds = prost_types::FileDescriptorSet::decode(supervisor_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let mut paths = Vec::new();
        for file in fds.file {
            let package = file.package.clone().unwrap_or_default();
            // The node serves supervisor.v1; supervisor.plugin.v1 is served by plugins.
            if package != "supervisor.v1" {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        paths
    }

    #[test]
    fn every_rpc_of_every_service_has_exactly_one_entry() {
        let declared = declared_rpcs();
        assert!(declared.len() >= 30, "{declared:?}");
        for path in &declared {
            let entries = TABLE.iter().filter(|(p, _)| p == path).count();
            assert_eq!(
                entries, 1,
                "{path} needs exactly one entry in the permission table"
            );
        }
        for (path, _) in TABLE {
            assert!(
                declared.iter().any(|d| d == path),
                "{path} is not an RPC of the API"
            );
        }
    }

    #[test]
    fn every_role_against_every_rpc() {
        for path in declared_rpcs() {
            let need = needed(&path).expect("an API RPC needs a permission");
            for role in Role::ALL {
                let expected = match need {
                    Permission::Read => true,
                    Permission::Write => role >= Role::Developer,
                    Permission::Operate => role >= Role::Operator,
                    Permission::Administer => role == Role::Admin,
                };
                assert_eq!(role.allows(need), expected, "{role} calling {path}");
            }
            // The few a viewer may not call are exactly the mutating ones.
            let mutating = [
                "Submit", "Cancel", "Retry", "Create", "Pause", "Resume", "Trigger", "Delete",
                "Drain", "Revoke", "Post", "Convert",
            ];
            let is_mutating = mutating.iter().any(|m| method_name(&path).starts_with(m));
            assert_eq!(
                Role::Viewer.allows(need),
                !is_mutating && need != Permission::Administer,
                "{path}"
            );
        }
        assert_eq!(needed("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            needed("/supervisor.v1.TaskService/NotYetListed"),
            Some(Permission::Administer)
        );
    }
}
