//! Identity on a real node with `[auth] enabled = true`: credentials are required, roles
//! bound what a principal may do, tenants never see each other's tasks, runs or
//! schedules through any RPC, revoked keys stop working, and the audit log records the
//! refusals.

mod common;

use std::time::Duration;

use common::{NodeProcess, as_token, supervisor};
use supervisor_client::{Client, ConnectOptions, v1};
use tonic::Code;

/// Bound on waits (a guard only; no assertion depends on how long anything took).
const PATIENCE: Duration = Duration::from_secs(60);

fn code<T: std::fmt::Debug>(result: Result<T, supervisor_client::ClientError>) -> (Code, String) {
    let err = result.expect_err("the call must be refused");
    (err.code(), err.message().to_string())
}

async fn key(admin: &Client, tenant: &str, role: &str) -> String {
    admin
        .create_key(v1::CreateKeyRequest {
            tenant: tenant.into(),
            role: role.into(),
            name: format!("{tenant} {role}"),
            expires_in_seconds: 0,
        })
        .await
        .expect("create key")
        .key
}

/// The error a watch stream answers with first.
async fn first_item<T: std::fmt::Debug>(
    mut stream: futures::stream::BoxStream<'static, Result<T, supervisor_client::ClientError>>,
) -> (Code, String) {
    use futures::StreamExt as _;
    let item = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the watch answers")
        .expect("the watch yields an item");
    code(item)
}

const WORKFLOW: &str =
    "name: pair\nsteps:\n  - id: a\n    task: { type: testing, prompt: \"write tests\" }\n";

fn start() -> (tempfile::TempDir, NodeProcess) {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            ("SUPERVISOR_AUTH__ENABLED", "true"),
            ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "30s"),
        ],
    );
    (dir, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_roles_revocation_and_the_audit_log() {
    let (dir, node) = start();
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the admin key is readable by its owner only"
    );
    let admin = as_token(&node, admin_key.trim()).await;

    // No credentials, then bad ones: refused, saying which, never echoing the token.
    let anonymous = Client::connect(&node.url()).await.unwrap();
    let (c, m) = code(anonymous.stats().await);
    assert_eq!(c, Code::Unauthenticated);
    assert!(m.contains("authorization"), "{m}");
    for (token, says) in [
        ("svk_nonsense", "malformed"),
        (
            "svk_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
            "unknown API key",
        ),
        ("a.b.c", "JWTs are not accepted"),
    ] {
        let (c, m) = code(as_token(&node, token).await.stats().await);
        assert_eq!(c, Code::Unauthenticated, "{token}");
        assert!(m.contains(says), "{token}: {m}");
        assert!(!m.contains(token), "the message echoes the token: {m}");
    }

    admin.create_tenant("team-a").await.unwrap();
    let viewer = as_token(&node, &key(&admin, "team-a", "viewer").await).await;
    let me = viewer.whoami().await.unwrap();
    assert_eq!((me.tenant.as_str(), me.role.as_str()), ("team-a", "viewer"));
    let (c, m) = code(
        viewer
            .submit(v1::SubmitTaskRequest {
                r#type: v1::TaskType::Testing as i32,
                prompt: "x".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(c, Code::PermissionDenied);
    assert!(
        m.contains("write permission") && m.contains("SubmitTask"),
        "{m}"
    );
    let (c, _) = code(viewer.create_tenant("sneaky").await);
    assert_eq!(c, Code::PermissionDenied);

    // A developer's key works until revoked; revocation reaches this node within a
    // second (the key cache), after which every call is refused.
    let dev_key = key(&admin, "team-a", "developer").await;
    let dev = as_token(&node, &dev_key).await;
    dev.stats().await.expect("a fresh key works");
    let id = dev_key.split('_').nth(1).unwrap().to_string();
    let revoked = admin.revoke_key(&id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (c, m) = code(dev.stats().await);
    assert_eq!(c, Code::Unauthenticated);
    assert!(m.contains("revoked"), "{m}");

    // The audit log has the refusals: the anonymous call, the viewer's submit.
    let entries = admin
        .audit_up_to(
            v1::ListAuditRequest {
                all_tenants: true,
                ..Default::default()
            },
            200,
        )
        .await
        .unwrap();
    // A page over the limit is refused, as every list call does, not clamped.
    let (c, m) = code(
        admin
            .audit_up_to(
                v1::ListAuditRequest {
                    page_size: 1001,
                    ..Default::default()
                },
                10,
            )
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("page_size") && m.contains("1000"), "{m}");
    let refused = |principal: &str, rpc: &str, code: &str| {
        entries.iter().any(|e| {
            e.principal.starts_with(principal)
                && e.rpc.ends_with(rpc)
                && e.outcome.starts_with(code)
        })
    };
    assert!(
        refused("unauthenticated", "GetTaskStats", "Unauthenticated"),
        "{entries:#?}"
    );
    assert!(
        refused("key:", "SubmitTask", "PermissionDenied"),
        "{entries:#?}"
    );
    assert!(
        entries.iter().any(|e| e.rpc.ends_with("RevokeKey")
            && e.targets == [id.clone()]
            && e.outcome == "ok"),
        "{entries:#?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| format!("{e:?}").contains(&admin_key.trim()[21..])),
        "no secret in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_sees_nothing_of_a_tenants_tasks_runs_and_schedules() {
    let (dir, node) = start();
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin.key");
    let admin = as_token(&node, admin_key.trim()).await;
    for t in ["team-a", "team-b"] {
        admin.create_tenant(t).await.unwrap();
    }
    let a = as_token(&node, &key(&admin, "team-a", "operator").await).await;
    let b = as_token(&node, &key(&admin, "team-b", "operator").await).await;

    // Tenant A's task, run and schedule.
    let task = a
        .submit(v1::SubmitTaskRequest {
            r#type: v1::TaskType::Testing as i32,
            prompt: "a's secret work".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let source = supervisor_client::workflow_source(
        WORKFLOW.to_string(),
        supervisor_client::SourceFormat::Yaml,
    );
    let run = a
        .submit_workflow(source.clone(), Default::default())
        .await
        .unwrap();
    a.create_schedule(v1::CreateScheduleRequest {
        name: "nightly".into(),
        cron: "0 3 * * *".into(),
        source: Some(source),
        ..Default::default()
    })
    .await
    .unwrap();

    // Every RPC from B with A's ids: NOT_FOUND, saying nothing of A.
    let not_found = |r: (Code, String)| {
        assert_eq!(r.0, Code::NotFound, "{}", r.1);
        assert!(!r.1.contains("team-a"), "{}", r.1);
    };
    not_found(code(b.get(&task.id).await));
    not_found(code(b.cancel(&task.id, "").await));
    not_found(code(b.retry(&task.id).await));
    not_found(first_item(b.watch(&task.id, 0)).await);
    not_found(code(b.get_workflow(&run.id).await));
    not_found(code(b.cancel_workflow(&run.id, "").await));
    not_found(code(b.retry_workflow(&run.id).await));
    not_found(first_item(b.watch_workflow(&run.id, 0)).await);
    not_found(code(b.pause_schedule("nightly").await));
    not_found(code(b.resume_schedule("nightly").await));
    not_found(code(b.trigger_schedule("nightly").await));
    not_found(code(b.delete_schedule("nightly").await));

    // And nothing of A in B's lists, stats or spend.
    assert!(
        b.list(v1::ListTasksRequest::default())
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
    assert!(
        b.list_workflows_up_to(v1::ListWorkflowsRequest::default(), Some(100))
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert!(b.list_schedules().await.unwrap().is_empty());
    let stats = b.stats().await.unwrap();
    assert_eq!(
        stats.queued + stats.running + stats.succeeded,
        0,
        "{stats:?}"
    );
    let spend = b.spend(None, None).await.unwrap();
    assert_eq!(spend.total_cost_micros, 0);
    // A still sees its own.
    assert_eq!(a.get(&task.id).await.unwrap().id, task.id);
    let stats = a.stats().await.unwrap();
    assert!(stats.queued + stats.running >= 1, "{stats:?}");
    // An admin may name the tenant it acts in; nobody else may.
    let admin_in_a = Client::connect_with(
        &node.url(),
        &ConnectOptions {
            token: Some(admin_key.trim().to_string()),
            tenant: Some("team-a".into()),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(admin_in_a.get(&task.id).await.unwrap().id, task.id);
    let b_into_a = Client::connect_with(
        &node.url(),
        &ConnectOptions {
            token: Some(key(&admin, "team-b", "operator").await),
            tenant: Some("team-a".into()),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let (c, _) = code(b_into_a.get(&task.id).await);
    assert_eq!(c, Code::PermissionDenied);
    // Not even B's own admin: tenants are made, listed and crossed by the cluster's admins
    // (admins of the default tenant) only.
    let b_admin_key = key(&admin, "team-b", "admin").await;
    let b_admin = as_token(&node, &b_admin_key).await;
    assert_eq!(
        code(b_admin.create_tenant("team-c").await).0,
        Code::PermissionDenied
    );
    assert_eq!(
        code(b_admin.list_keys(true).await).0,
        Code::PermissionDenied
    );
    let b_keys = b_admin.list_keys(false).await.unwrap();
    assert!(b_keys.iter().all(|k| k.tenant == "team-b"), "{b_keys:?}");
    let a_key_id = a
        .whoami()
        .await
        .unwrap()
        .principal
        .trim_start_matches("key:")
        .to_string();
    assert_eq!(code(b_admin.revoke_key(&a_key_id).await).0, Code::NotFound);
    let b_admin_into_a = Client::connect_with(
        &node.url(),
        &ConnectOptions {
            token: Some(b_admin_key),
            tenant: Some("team-a".into()),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(b_admin_into_a.get(&task.id).await).0,
        Code::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_tenants_and_keys_and_reads_the_audit_log() {
    let (dir, node) = start();
    let admin_file = dir.path().join("admin.key");
    let admin_file = admin_file.to_str().unwrap();
    let cli = |args: &[&str], token: (&str, &str)| {
        let mut env = vec![("SUPERVISOR_SERVER", node.addr.as_str())];
        env.push(token);
        supervisor(args, &env)
    };
    let admin = ("SUPERVISOR_TOKEN_FILE", admin_file);
    let (code, out, err) = cli(&["whoami"], admin);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admin") && out.contains("default"), "{out}");
    let (code, _, err) = cli(&["tenant", "create", "team-a"], admin);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(
        &[
            "key",
            "create",
            "--tenant",
            "team-a",
            "--role",
            "developer",
            "--name",
            "ci",
            "--expires",
            "30d",
            "--output",
            "json",
        ],
        admin,
    );
    assert_eq!(code, 0, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).expect("json");
    let key = made["key"].as_str().expect("key").to_string();
    let id = made["id"].as_str().expect("id").to_string();
    assert!(key.starts_with("svk_") && key.contains(&id), "{out}");
    assert_eq!(made["info"]["tenant"], "team-a");
    // As text, standard output holds the key alone (`> ci.key` keeps a usable file); the
    // reminder goes to standard error.
    let (code, out, err) = cli(
        &["key", "create", "--tenant", "team-a", "--role", "viewer"],
        admin,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("svk_") && out.trim_end().lines().count() == 1,
        "{out}"
    );
    assert!(err.contains("store it now"), "{err}");

    // The new key, through --token: its tenant and role.
    let (code, out, err) = supervisor(
        &[
            "whoami", "--server", &node.addr, "--token", &key, "--output", "json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let me: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (me["tenant"].as_str(), me["role"].as_str()),
        (Some("team-a"), Some("developer"))
    );
    // A developer is no admin.
    let (code, _, err) = cli(&["key", "list"], ("SUPERVISOR_TOKEN", &key));
    assert_eq!(code, 1);
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("administer"),
        "{err}"
    );

    let (code, out, err) = cli(&["key", "list", "--all-tenants"], admin);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains("active"), "{out}");
    assert!(!out.contains(&key[21..]), "a secret was listed: {out}");
    let (code, out, err) = cli(&["key", "revoke", &id], admin);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked key"), "{out}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, _, err) = cli(&["task", "stats"], ("SUPERVISOR_TOKEN", &key));
    assert_eq!(code, 1);
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("revoked"),
        "{err}"
    );

    let (code, out, err) = cli(&["audit", "list", "--all-tenants", "--since", "1h"], admin);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("AuthService/RevokeKey") && out.contains(&id),
        "{out}"
    );
    assert!(out.contains("PermissionDenied"), "{out}");
}

/// Calls `path` with an empty request as `token`; the status it ends with (`Ok` for a
/// success, or for a stream that is still open after its first message).
async fn raw_call(
    channel: tonic::transport::Channel,
    path: &str,
    streaming: bool,
    token: &str,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    let path = http::uri::PathAndQuery::try_from(path.to_string()).expect("path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    if streaming {
        match grpc.server_streaming(request, path, codec).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                    Ok(Err(status)) => status.code(),
                    _ => Code::Ok,
                }
            }
            Err(status) => status.code(),
        }
    } else {
        match grpc.unary(request, path, codec).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_of_every_service_against_every_role() {
    use prost::Message as _;
    let (dir, node) = start();
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin.key");
    let admin = as_token(&node, admin_key.trim()).await;
    let mut keys = Vec::new();
    for role in ["viewer", "developer", "operator", "admin"] {
        keys.push((role, key(&admin, "default", role).await));
    }
    let channel = tonic::transport::Endpoint::from_shared(node.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let fds = prost_types::FileDescriptorSet::decode(supervisor_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let mut walked = 0;
    for file in fds.file.iter().filter(|f| f.package() == "supervisor.v1") {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/supervisor.v1.{}/{}", service.name(), method.name());
                let need = supervisor_server::auth::permissions::needed(&path)
                    .expect("every RPC of the API needs a permission");
                for (role, token) in &keys {
                    let allowed = role
                        .parse::<supervisor_model::Role>()
                        .expect("role")
                        .allows(need);
                    let code =
                        raw_call(channel.clone(), &path, method.server_streaming(), token).await;
                    if allowed {
                        assert!(
                            !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                            "{role} calling {path} got {code:?}"
                        );
                    } else {
                        assert_eq!(code, Code::PermissionDenied, "{role} calling {path}");
                    }
                }
                let code = raw_call(channel.clone(), &path, method.server_streaming(), "").await;
                assert_eq!(code, Code::Unauthenticated, "no credentials calling {path}");
                walked += 1;
            }
        }
    }
    assert!(walked >= 30, "{walked} RPCs walked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_limit_is_told_when_to_retry() {
    use tonic_types::StatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            ("SUPERVISOR_AUTH__ENABLED", "true"),
            ("SUPERVISOR_AUTH__RATE_LIMITS__VIEWER", "3"),
        ],
    );
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin.key");
    let admin = as_token(&node, admin_key.trim()).await;
    let viewer = as_token(&node, &key(&admin, "default", "viewer").await).await;
    let mut tasks = viewer.task_service();
    for _ in 0..3 {
        tasks
            .get_task_stats(v1::GetTaskStatsRequest {})
            .await
            .expect("within the limit");
    }
    let status = tasks
        .get_task_stats(v1::GetTaskStatsRequest {})
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().expect("a RetryInfo detail");
    let wait = retry.retry_delay.expect("a delay");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    // Other principals have buckets of their own: the admin's role has no limit.
    admin.stats().await.expect("the admin is not limited");
}
