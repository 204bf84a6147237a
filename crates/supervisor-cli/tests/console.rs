//! The console's side of a real node: its files from the binary, its page at the
//! console's own paths, the API as gRPC-Web with exactly the authentication, roles,
//! tenants and audit of the gRPC listener, the task counts as a stream, and the settings
//! that turn it off or refuse it.

mod common;

use std::time::Duration;

use common::receivers::{HttpAnswer, http_exchange};
use common::{NodeProcess, as_token, supervisor};
use futures::StreamExt as _;
use prost::Message;
use supervisor_client::{Client, v1};

/// Bound on waits (a guard only; no assertion depends on how long anything took).
const PATIENCE: Duration = Duration::from_secs(60);

fn get(node: &NodeProcess, path: &str) -> HttpAnswer {
    let http = node.http_addr.as_deref().expect("the node serves HTTP");
    http_exchange("GET", http, path, &[], None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A unary gRPC-Web call: the status code (from the headers of a trailers-only answer or
/// from the trailer frame) and the answer's message, if any.
fn grpc_web<M: Message, R: Message + Default>(
    node: &NodeProcess,
    method: &str,
    token: Option<&str>,
    request: &M,
) -> (i32, String, Option<R>) {
    let http = node.http_addr.as_deref().expect("the node serves HTTP");
    let message = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-grpc-web", "1")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let answer = http_exchange(
        "POST",
        http,
        &format!("/supervisor.v1.{method}"),
        &headers,
        Some(("application/grpc-web+proto", &frame)),
    )
    .unwrap_or_else(|e| panic!("POST {method}: {e}"));
    assert_eq!(answer.status, 200, "{method}: {answer:?}");
    if let Some(code) = answer.header("grpc-status") {
        let message = answer
            .header("grpc-message")
            .unwrap_or_default()
            .to_string();
        return (code.parse().expect("a status code"), message, None);
    }
    // Frames: 0x00 = a message, 0x80 = the trailers as text.
    let mut rest = answer.body.as_slice();
    let mut reply = None;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let (flag, body) = (rest[0], &rest[5..5 + len]);
        if flag & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(body).to_ascii_lowercase();
            let field = |name: &str| {
                trailers
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let code = field("grpc-status:").expect("a grpc-status trailer");
            let message = field("grpc-message:").unwrap_or_default();
            return (code.parse().expect("a status code"), message, reply);
        }
        reply = Some(R::decode(body).expect("a message of the method's type"));
        rest = &rest[5 + len..];
    }
    panic!("{method}: no trailers in {answer:?}");
}

#[test]
fn the_console_is_served_from_the_binary_at_its_own_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &[]);
    let page = get(&node, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(html.contains(r#"<div id="app">"#), "{html}");
    // A shared link to a task opens the same page; the console routes it.
    let deep = get(&node, "/tasks/0193a9f0-0000-7000-8000-000000000000");
    assert_eq!(deep.status, 200);
    assert_eq!(deep.body, page.body);
    // Its script, named by its content, may be kept for good.
    let script = html
        .split(r#"src=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page names its script");
    assert!(script.starts_with("/assets/"), "{script}");
    let js = get(&node, script);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(
        js.header("cache-control")
            .unwrap_or_default()
            .contains("immutable")
    );
    // A missing file is missing, not the page.
    let missing = get(&node, "/assets/nothing-here.js");
    assert_eq!(missing.status, 404);
    assert!(String::from_utf8_lossy(&missing.body).contains("nothing at /assets/nothing-here.js"));
    // Metrics and health are where they were.
    assert_eq!(get(&node, "/metrics").status, 200);
    assert_eq!(get(&node, "/healthz").status, 200);
    // The API answers gRPC-Web only, and says so.
    let http = node.http_addr.as_deref().expect("http");
    let json = http_exchange(
        "POST",
        http,
        "/supervisor.v1.TaskService/GetTaskStats",
        &[],
        Some(("application/json", b"{}")),
    )
    .expect("POST");
    assert_eq!(json.status, 415);
    assert!(String::from_utf8_lossy(&json.body).contains("gRPC-Web only"));
    let post =
        http_exchange("POST", http, "/tasks", &[], Some(("text/plain", b"x"))).expect("POST");
    assert_eq!(post.status, 405);
    // A node's id is often a dotted host name: its page is the console's, not a file.
    let dotted = get(&node, "/cluster/nodes/ip-10-0-0-5.ec2.internal");
    assert_eq!(dotted.status, 200);
    assert_eq!(dotted.body, page.body);
}

/// With authentication off, only the console's own pages may call the API: not a page
/// of another origin, and not one that reached this machine through a name of its own
/// (DNS rebinding).
#[test]
fn other_origins_cannot_call_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &[]);
    let http = node.http_addr.as_deref().expect("http");
    let port = http.rsplit(':').next().expect("port");
    let frame = [0u8, 0, 0, 0, 0];
    let call = |headers: &[(&str, &str)]| {
        http_exchange(
            "POST",
            http,
            "/supervisor.v1.TaskService/GetTaskStats",
            headers,
            Some(("application/grpc-web+proto", &frame)),
        )
        .expect("POST")
    };
    let evil_host = format!("evil.example:{port}");
    let rebound = call(&[("Host", evil_host.as_str())]);
    assert_eq!(rebound.status, 403, "{rebound:?}");
    assert!(String::from_utf8_lossy(&rebound.body).contains("by IP address or as localhost"));
    let localhost = format!("localhost:{port}");
    let origin = "http://evil.example";
    let foreign = call(&[("Host", localhost.as_str()), ("Origin", origin)]);
    assert_eq!(foreign.status, 403, "{foreign:?}");
    let own_origin = format!("http://{localhost}");
    let own = call(&[
        ("Host", localhost.as_str()),
        ("Origin", own_origin.as_str()),
    ]);
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.header("grpc-status"), None, "{own:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_pass_the_same_authentication_roles_tenants_and_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(
        dir.path(),
        &[
            ("SUPERVISOR_AUTH__ENABLED", "true"),
            ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "30s"),
        ],
    );
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin.key");
    let admin = as_token(&node, admin_key.trim()).await;
    let key = |tenant: &str, role: &str| {
        let admin = admin.clone();
        let (tenant, role) = (tenant.to_string(), role.to_string());
        async move {
            admin
                .create_key(v1::CreateKeyRequest {
                    name: format!("{tenant} {role}"),
                    tenant,
                    role,
                    expires_in_seconds: 0,
                })
                .await
                .expect("create key")
                .key
        }
    };
    admin.create_tenant("elsewhere").await.expect("tenant");
    let viewer = key("default", "viewer").await;
    let developer = key("default", "developer").await;
    let stranger = key("elsewhere", "admin").await;

    // No credentials: refused, as over gRPC.
    let (code, message, _) = grpc_web::<_, v1::TaskStats>(
        &node,
        "TaskService/GetTaskStats",
        None,
        &v1::GetTaskStatsRequest {},
    );
    assert_eq!(code, tonic::Code::Unauthenticated as i32, "{message}");

    // WhoAmI lists what the role may call, and nothing more.
    let (code, _, me) = grpc_web::<_, v1::WhoAmIResponse>(
        &node,
        "AuthService/WhoAmI",
        Some(&viewer),
        &v1::WhoAmIRequest {},
    );
    assert_eq!(code, 0);
    let me = me.expect("an answer");
    assert_eq!(me.role, "viewer");
    assert!(
        me.methods
            .iter()
            .any(|m| m == "/supervisor.v1.TaskService/GetTask")
    );
    assert!(
        !me.methods
            .iter()
            .any(|m| m == "/supervisor.v1.TaskService/CancelTask")
    );
    assert!(
        !me.methods
            .iter()
            .any(|m| m == "/supervisor.v1.TaskService/SubmitTask")
    );

    // A developer submits through the browser's path; the task is the same over gRPC.
    let (code, message, task) = grpc_web::<_, v1::Task>(
        &node,
        "TaskService/SubmitTask",
        Some(&developer),
        &v1::SubmitTaskRequest {
            r#type: v1::TaskType::Testing as i32,
            prompt: "submitted as gRPC-Web".into(),
            ..Default::default()
        },
    );
    assert_eq!(code, 0, "{message}");
    let task = task.expect("the task");
    assert_eq!(
        admin.get(&task.id).await.expect("get").prompt,
        "submitted as gRPC-Web"
    );

    // A viewer's cancel is refused and changes nothing.
    let (code, message, _) = grpc_web::<_, v1::Task>(
        &node,
        "TaskService/CancelTask",
        Some(&viewer),
        &v1::CancelTaskRequest {
            id: task.id.clone(),
            reason: "forged".into(),
        },
    );
    assert_eq!(code, tonic::Code::PermissionDenied as i32, "{message}");
    let still = admin.get(&task.id).await.expect("get");
    assert_ne!(still.status, v1::TaskStatus::Cancelled as i32);

    // Another tenant's administrator does not see the task at all.
    let (code, _, _) = grpc_web::<_, v1::Task>(
        &node,
        "TaskService/GetTask",
        Some(&stranger),
        &v1::GetTaskRequest {
            id: task.id.clone(),
        },
    );
    assert_eq!(code, tonic::Code::NotFound as i32);

    // The refusal is in the audit log with the caller's address, as a gRPC one would be.
    let audit = admin
        .list_audit(v1::ListAuditRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("audit");
    let refused = audit
        .entries
        .iter()
        .find(|e| e.rpc.ends_with("TaskService/CancelTask"))
        .expect("the refused cancel is audited");
    assert!(
        refused.outcome.starts_with("PermissionDenied"),
        "{refused:?}"
    );
    assert!(refused.peer.starts_with("127.0.0.1:"), "{refused:?}");
    assert!(
        refused.targets.iter().any(|t| t.contains(&task.id)),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_counts_stream_their_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(
        dir.path(),
        &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "30s")],
    );
    let client = Client::connect(&node.url()).await.expect("connect");
    let mut stats = client.watch_stats(Duration::from_millis(200));
    let first = tokio::time::timeout(PATIENCE, stats.next())
        .await
        .expect("the first counts")
        .expect("an item")
        .expect("counts");
    assert_eq!(first, client.stats().await.expect("stats"));
    assert_eq!(first.queued + first.running, 0);
    // Without authentication the caller sees the whole cluster, queue by priority too.
    assert_eq!(first.queued_by_priority.values().sum::<u64>(), 0);
    assert!(first.queued_by_priority.contains_key("normal"), "{first:?}");
    let task = client
        .submit(v1::SubmitTaskRequest {
            r#type: v1::TaskType::Testing as i32,
            prompt: "count me".into(),
            ..Default::default()
        })
        .await
        .expect("submit");
    let next = tokio::time::timeout(PATIENCE, stats.next())
        .await
        .expect("the counts change")
        .expect("an item")
        .expect("counts");
    assert_eq!(next.queued + next.running, 1, "{next:?}");
    client
        .cancel(&task.id, "done looking")
        .await
        .expect("cancel");
    // Other changes (queued to running) may come first; the cancel's comes.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let after = tokio::time::timeout_at(deadline, stats.next())
            .await
            .expect("the counts show the cancel")
            .expect("an item")
            .expect("counts");
        if after.cancelled == 1 {
            assert_eq!(after.queued + after.running, 0, "{after:?}");
            break;
        }
    }
}

#[test]
fn the_console_can_be_turned_off_and_is_refused_where_it_would_be_unsafe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_SERVER__CONSOLE", "false")]);
    let page = get(&node, "/");
    assert_eq!(page.status, 404);
    assert!(String::from_utf8_lossy(&page.body).contains("console is off"));
    assert_eq!(get(&node, "/metrics").status, 200);
    drop(node);

    // Open to the network without authentication: refused, naming the setting.
    let open = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = supervisor(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "0.0.0.0:0",
            "--data-dir",
            open.path().to_str().expect("utf-8 path"),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("server.http_listen (the web console and its API)"),
        "{err}"
    );
    assert!(err.contains("server.console = false"), "{err}");
}
