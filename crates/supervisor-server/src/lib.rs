//! A node as a process runs it: its configuration ([`config`]), its store ([`store`]),
//! and [`run`], which assembles the store, the providers and the node's actors and serves
//! them over gRPC: `TaskService`, `ProviderService`, `WorkflowService`, `ClusterService`,
//! `AnalyticsService`, the standard health service and server reflection (`v1` and
//! `v1alpha`, so every grpcurl release works).
//!
//! Services are thin adapters: decode and check the wire format, call the engine or the
//! node, encode. Domain logic never sees a `tonic::Request`.

#![warn(missing_docs)]

mod analytics;
pub mod auth;
mod chat;
pub mod cluster;
pub mod config;
mod console;
mod convert;
mod fit;
mod gauges;
mod grpc_trace;
pub mod http;
mod identity;
pub mod maintenance;
mod request_limit;
mod resources;
mod run;
pub mod store;
pub mod tls;
mod workflows;

pub use analytics::AnalyticsApi;
pub use identity::IdentityApi;
pub use resources::ResourceApi;
pub use run::{RunError, RunOptions, run};
pub use workflows::WorkflowApi;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use supervisor_engine::{Engine, ListQuery};
use supervisor_model::{MAX_REQUEST_BYTES, Permission, TaskStatus};
use supervisor_node::Node;
use supervisor_proto::v1;
use supervisor_proto::v1::analytics_service_server::AnalyticsServiceServer;
use supervisor_proto::v1::auth_service_server::AuthServiceServer;
use supervisor_proto::v1::chat_service_server::ChatServiceServer;
use supervisor_proto::v1::cluster_service_server::ClusterServiceServer;
use supervisor_proto::v1::provider_service_server::{ProviderService, ProviderServiceServer};
use supervisor_proto::v1::resource_service_server::ResourceServiceServer;
use supervisor_proto::v1::task_service_server::{TaskService, TaskServiceServer};
use supervisor_proto::v1::workflow_service_server::WorkflowServiceServer;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use request_limit::RequestLimit;

use convert::{
    event_out, invalid, new_task_in, paging_in, status_from, status_in, task_id_in, task_out,
    task_type_in,
};

/// Largest page a list call returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// The tenant a request acts in: its principal's (set by the auth layer; `default` when
/// authentication is off). Never taken from the request's fields.
fn tenant<T>(req: &Request<T>) -> String {
    auth::principal_in(req.extensions()).tenant
}

/// The span of one submit (a child of the call's), or a disabled span with tracing off.
fn submit_span(task_type: Option<supervisor_model::TaskType>) -> tracing::Span {
    if !supervisor_telemetry::context::tracing_on() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: "supervisor_server",
        "supervisor.submit",
        otel.name = "supervisor.submit",
        supervisor.task.type = task_type.map_or("", |t| t.as_str()),
    )
}

/// `supervisor.v1.TaskService` over a running node.
#[derive(Clone)]
pub struct TaskApi {
    engine: Engine,
    node: Arc<Node>,
}

impl TaskApi {
    /// A task service over `node`'s engine; the providers `node` knows (its own and
    /// those of other nodes) are the names a task may prefer or exclude.
    pub fn new(node: Arc<Node>) -> Self {
        TaskApi {
            engine: node.engine().clone(),
            node,
        }
    }
}

/// Refuses a task that names a repository (or hooks, which run in an attempt's own
/// directory) when no provider of the cluster can work in one: it would otherwise wait or
/// fail only when it runs.
fn repository_servable(
    context: &std::collections::BTreeMap<String, String>,
    node: &Node,
) -> Result<(), Status> {
    let what = match context.get(supervisor_providers::REPO_KEY) {
        Some(repo) => format!(
            "names repository {} (context {}=)",
            supervisor_model::quote(repo),
            supervisor_providers::REPO_KEY
        ),
        None if supervisor_providers::hooks::names_any(context) => format!(
            "names hooks (context {}=), which run in an attempt's worktree",
            supervisor_providers::hooks::HOOKS_KEY
        ),
        None => return Ok(()),
    };
    if node.repository_providers().is_empty() {
        return Err(Status::failed_precondition(format!(
            "the task {what}, but no provider in the cluster can work in a repository: configure a provider of kind claude_cli on a node, or submit without it"
        )));
    }
    Ok(())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn submit_task(
        &self,
        req: Request<v1::SubmitTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let principal = auth::principal_in(req.extensions());
        let tenant = &principal.tenant;
        let request = req.into_inner();
        let names =
            if request.preferred_providers.is_empty() && request.excluded_providers.is_empty() {
                Vec::new()
            } else {
                self.node.known_provider_names()
            };
        let mut new = new_task_in(request, &names)?;
        new.submitted_by = Some(principal.id.clone());
        repository_servable(&new.context, &self.node)?;
        // The submit's span: the task stores its context, and the node that leases it
        // continues from there.
        let span = submit_span(new.task_type);
        new.trace = supervisor_telemetry::context::traceparent_of(&span);
        let submitted = self
            .engine
            .submit(tenant, new)
            .instrument(span.clone())
            .await
            .map_err(status_from)?;
        supervisor_telemetry::context::set_attribute(
            &span,
            "supervisor.task.id",
            submitted.task.id.to_string(),
        );
        Ok(Response::new(task_out(submitted.task)))
    }

    async fn get_task(
        &self,
        req: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let tenant = &tenant(&req);
        let id = task_id_in("id", &req.get_ref().id)?;
        let task = self.engine.get(tenant, id).await.map_err(status_from)?;
        // A prediction is a bonus: the task is answered without one when it fails.
        let prediction = self.engine.predict_task(&task).await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "could not predict task {id}");
            None
        });
        let mut task = task_out(task);
        task.prediction = prediction.as_ref().map(analytics::prediction_out);
        Ok(Response::new(task))
    }

    async fn list_tasks(
        &self,
        req: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let (page_size, page_token) = paging_in(r.page_size, &r.page_token, "ListTasks")?;
        let query = ListQuery {
            status: status_in("status", r.status)?,
            task_type: task_type_in("type", r.r#type)?,
            label: Some(r.label).filter(|l| !l.is_empty()),
            page_size,
            page_token,
        };
        let page = self
            .engine
            .list(tenant, &query)
            .await
            .map_err(status_from)?;
        let mut tasks: Vec<v1::Task> = page.tasks.into_iter().map(task_out).collect();
        let next_page_token = if fit::page(&mut tasks) {
            // Cut by size: continue after the last task this page holds.
            tasks.last().map(|t| t.id.clone()).unwrap_or_default()
        } else {
            page.next_page_token
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        Ok(Response::new(v1::ListTasksResponse {
            tasks,
            next_page_token,
        }))
    }

    async fn cancel_task(
        &self,
        req: Request<v1::CancelTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let id = task_id_in("id", &r.id)?;
        let task = self
            .engine
            .cancel(tenant, id, &r.reason)
            .await
            .map_err(status_from)?;
        Ok(Response::new(task_out(task)))
    }

    async fn retry_task(
        &self,
        req: Request<v1::RetryTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let tenant = &tenant(&req);
        let id = task_id_in("id", &req.get_ref().id)?;
        let task = self.engine.retry(tenant, id).await.map_err(status_from)?;
        Ok(Response::new(task_out(task)))
    }

    type WatchTaskStream = EventStream;

    async fn watch_task(
        &self,
        req: Request<v1::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let id = task_id_in("id", &r.id)?;
        let events = self
            .engine
            .watch_events(tenant, id, r.after_seq)
            .await
            .map_err(status_from)?;
        let stream = events.map(move |item| item.map(|e| event_out(id, e)).map_err(status_from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_task_stats(
        &self,
        req: Request<v1::GetTaskStatsRequest>,
    ) -> Result<Response<v1::TaskStats>, Status> {
        let principal = auth::principal_in(req.extensions());
        Ok(Response::new(task_stats(&self.engine, &principal).await?))
    }

    type WatchTaskStatsStream = Pin<Box<dyn Stream<Item = Result<v1::TaskStats, Status>> + Send>>;

    async fn watch_task_stats(
        &self,
        req: Request<v1::WatchTaskStatsRequest>,
    ) -> Result<Response<Self::WatchTaskStatsStream>, Status> {
        let principal = auth::principal_in(req.extensions());
        let interval = match req.get_ref().min_interval_ms {
            0 => std::time::Duration::from_millis(1000),
            ms => std::time::Duration::from_millis(u64::from(ms).max(200)),
        };
        let first = task_stats(&self.engine, &principal).await?;
        let engine = self.engine.clone();
        let leaving = until_leaving(&self.node);
        // The counters are a few keys: re-reading them each interval is cheaper than a
        // change feed, and only a change is sent.
        let stream =
            futures::stream::unfold((Some(first.clone()), first), move |(pending, last)| {
                let engine = engine.clone();
                let principal = principal.clone();
                async move {
                    if let Some(p) = pending {
                        return Some((Ok(p), (None, last)));
                    }
                    loop {
                        tokio::time::sleep(interval).await;
                        match task_stats(&engine, &principal).await {
                            Ok(now) if now == last => continue,
                            Ok(now) => return Some((Ok(now.clone()), (None, now))),
                            Err(e) => return Some((Err(e), (None, last))),
                        }
                    }
                }
            })
            .take_until(leaving);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Resolves when `node` begins to leave: streams that never end by themselves end then,
/// so that they do not hold the server's graceful shutdown open.
fn until_leaving(node: &Node) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut leaving = node.leaving();
    async move {
        let _ = leaving.wait_for(|l| *l).await;
    }
}

/// The task counts `principal` may see: the whole cluster's without authentication (as
/// before tenants), else its tenant's; and, for administrators of the whole cluster
/// (everyone without authentication, else admins of the default tenant), the queued tasks
/// of every tenant by priority.
async fn task_stats(
    engine: &Engine,
    principal: &supervisor_model::Principal,
) -> Result<v1::TaskStats, Status> {
    let anonymous = *principal == supervisor_model::Principal::anonymous();
    let counts = if anonymous {
        engine.status_counts().await
    } else {
        engine.tenant_status_counts(&principal.tenant).await
    }
    .map_err(status_from)?;
    let queued_by_priority = if principal.cluster_admin {
        engine
            .queued_by_priority()
            .await
            .map_err(status_from)?
            .into_iter()
            .map(|(p, n)| (p.as_str().to_string(), n))
            .collect()
    } else {
        Default::default()
    };
    Ok(v1::TaskStats {
        queued: counts.get(TaskStatus::Queued),
        running: counts.get(TaskStatus::Running),
        retry_wait: counts.get(TaskStatus::RetryWait),
        succeeded: counts.get(TaskStatus::Succeeded),
        failed: counts.get(TaskStatus::Failed),
        cancelled: counts.get(TaskStatus::Cancelled),
        queued_by_priority,
    })
}

/// `supervisor.v1.ProviderService` over a running node.
#[derive(Clone)]
pub struct ProviderApi {
    node: Arc<Node>,
}

impl ProviderApi {
    /// A provider service over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ProviderApi { node }
    }
}

impl ProviderApi {
    /// The providers and their numbers. The durable totals (completions, tokens, cost)
    /// add up every tenant's work, so only callers with the operate permission see them;
    /// for others they are 0 (a tenant's own spend is `GetSpend`).
    async fn list(&self, cluster_totals: bool) -> Result<v1::ListProvidersResponse, Status> {
        let mut providers = Vec::new();
        for snap in self.node.provider_snapshots() {
            let durable = if cluster_totals {
                self.node
                    .engine()
                    .provider_stats(&snap.name)
                    .await
                    .map_err(status_from)?
            } else {
                supervisor_engine::ProviderStats::default()
            };
            let ms = |d: Option<std::time::Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
            providers.push(v1::ProviderInfo {
                name: snap.name,
                kind: snap.kind,
                healthy: snap.healthy,
                health_detail: snap.health_detail,
                in_flight: snap.in_flight,
                max_concurrency: snap.max_concurrency,
                executions_started: snap.executions_started,
                executions_failed: snap.executions_failed,
                executions_succeeded: snap.executions_succeeded,
                completions_accepted: durable.completions_accepted,
                input_tokens: durable.input_tokens,
                output_tokens: durable.output_tokens,
                cost_micros: durable.cost_micros,
                cost_usd: durable.cost_micros as f64 / 1e6,
                completions_refused: durable.completions_refused,
                models: snap.models,
                circuit: snap.circuit,
                requests_per_minute: snap.requests_per_minute.unwrap_or(0),
                tokens_per_minute: snap.tokens_per_minute.unwrap_or(0),
                throttled_for_ms: snap.throttled_for.map_or(0, |d| d.as_millis() as u64),
                success_rate: snap.success_rate.unwrap_or(-1.0),
                latency_p50_ms: ms(snap.latency_p50),
                latency_p95_ms: ms(snap.latency_p95),
            });
        }
        Ok(v1::ListProvidersResponse { providers })
    }
}

/// Whether the caller may see totals across tenants.
fn cluster_totals<T>(req: &Request<T>) -> bool {
    auth::principal_in(req.extensions())
        .role
        .allows(Permission::Operate)
}

type ProvidersStream =
    Pin<Box<dyn Stream<Item = Result<v1::ListProvidersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ProviderService for ProviderApi {
    async fn list_providers(
        &self,
        req: Request<v1::ListProvidersRequest>,
    ) -> Result<Response<v1::ListProvidersResponse>, Status> {
        let totals = cluster_totals(&req);
        Ok(Response::new(self.list(totals).await?))
    }

    type WatchProvidersStream = ProvidersStream;

    async fn watch_providers(
        &self,
        req: Request<v1::WatchProvidersRequest>,
    ) -> Result<Response<Self::WatchProvidersStream>, Status> {
        let interval = match req.get_ref().min_interval_ms {
            0 => std::time::Duration::from_millis(500),
            ms => std::time::Duration::from_millis(u64::from(ms).max(50)),
        };
        let api = self.clone();
        let totals = cluster_totals(&req);
        let mut changes = self.node.provider_changes();
        changes.borrow_and_update();
        let first = api.list(totals).await?;
        let leaving = until_leaving(&self.node);
        // State: the service, the list still to send, the last list sent, the change feed.
        let stream = futures::stream::unfold(
            (api, Some(first), None::<v1::ListProvidersResponse>, changes),
            move |(api, pending, last, mut changes)| async move {
                if let Some(p) = pending {
                    return Some((Ok(p.clone()), (api, None, Some(p), changes)));
                }
                loop {
                    // At most one update per interval; health and breaker changes notify,
                    // load changes are caught by re-reading now and then.
                    tokio::time::sleep(interval).await;
                    let _ = tokio::time::timeout(interval * 20, changes.changed()).await;
                    match api.list(totals).await {
                        Ok(now) if Some(&now) == last.as_ref() => continue,
                        Ok(now) => return Some((Ok(now.clone()), (api, None, Some(now), changes))),
                        Err(e) => return Some((Err(e), (api, None, last, changes))),
                    }
                }
            },
        )
        .take_until(leaving);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_spend(
        &self,
        req: Request<v1::GetSpendRequest>,
    ) -> Result<Response<v1::GetSpendResponse>, Status> {
        let tenant = &tenant(&req);
        let r = req.into_inner();
        let today = supervisor_engine::utc_day(self.node.engine().now_micros());
        let day = |field: &str, v: String| -> Result<String, Status> {
            if v.is_empty() {
                return Ok(today.clone());
            }
            let ok = v.len() == 10
                && v.chars().enumerate().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        c == '-'
                    } else {
                        c.is_ascii_digit()
                    }
                });
            if ok {
                Ok(v)
            } else {
                Err(invalid(
                    field,
                    format!(
                        "{} is not a day like 2026-11-24",
                        supervisor_model::quote(&v)
                    ),
                ))
            }
        };
        let from = day("from_day", r.from_day)?;
        let to = day("to_day", r.to_day)?;
        if from > to {
            return Err(invalid("from_day", format!("{from} is after to_day {to}")));
        }
        let rows = self
            .node
            .engine()
            .ledger(tenant, &from, &to)
            .await
            .map_err(status_from)?;
        let total = rows.iter().map(|r| r.cost_micros).sum();
        Ok(Response::new(v1::GetSpendResponse {
            rows: rows
                .into_iter()
                .map(|r| v1::SpendRow {
                    cost_usd: r.cost_micros as f64 / 1e6,
                    day: r.day,
                    provider: r.provider,
                    attempts: r.attempts,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost_micros: r.cost_micros,
                })
                .collect(),
            total_cost_micros: total,
        }))
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `[server.tls]` could not be loaded.
    #[error("invalid configuration: {0}")]
    Tls(String),
    /// Reflection could not be built from the descriptor set (a build problem).
    #[error("could not build server reflection: {0}")]
    Reflection(String),
    /// The listener failed.
    #[error("gRPC server on {addr} failed: {source}")]
    Transport {
        /// The address it served on.
        addr: SocketAddr,
        /// What failed.
        source: tonic::transport::Error,
    },
}

/// The API's own services (tasks, workflows, clusters, providers, resources, analytics,
/// identity), each behind its request-size limit: served over gRPC by [`serve`] and over
/// gRPC-Web by the HTTP side ([`web_api`]), behind the same trace and auth layers.
fn api_routes(node: Arc<Node>, auth: Arc<auth::Authenticator>) -> tonic::service::Routes {
    tonic::service::Routes::new(RequestLimit::new(
        TaskServiceServer::new(TaskApi::new(node.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
    .add_service(RequestLimit::new(
        WorkflowServiceServer::new(WorkflowApi::new(node.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
    .add_service(RequestLimit::new(
        ClusterServiceServer::new(cluster::ClusterApi::new(node.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
    .add_service(RequestLimit::new(
        ProviderServiceServer::new(ProviderApi::new(node.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
    .add_service(RequestLimit::new(
        ResourceServiceServer::new(ResourceApi::new(auth.engine().clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
    .add_service(RequestLimit::new(
        AnalyticsServiceServer::new(AnalyticsApi::new(auth.engine().clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
    .add_service(RequestLimit::new(
        ChatServiceServer::new(chat::ChatApi::new(node))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
    .add_service(RequestLimit::new(
        AuthServiceServer::new(IdentityApi::new(auth)).max_decoding_message_size(MAX_REQUEST_BYTES),
    ))
}

/// The API as the HTTP side serves it to the console: gRPC-Web (binary or base64 text)
/// translated to gRPC, then the same trace and auth layers and services as the gRPC
/// listener, so a browser can do exactly what its credentials allow over gRPC.
pub(crate) fn web_api(node: Arc<Node>, auth: Arc<auth::Authenticator>) -> http::WebApi {
    let trace = grpc_trace::TraceLayer::new(&node.identity().id);
    let layers = auth::AuthLayer::new(auth.clone());
    tower::util::BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(trace)
            .layer(layers)
            .service(api_routes(node, auth)),
    )
}

/// Service names the health service reports on (besides the empty "whole server" name).
pub const HEALTH_SERVICES: &[&str] = &[
    "supervisor.v1.TaskService",
    "supervisor.v1.ProviderService",
    "supervisor.v1.WorkflowService",
    "supervisor.v1.ClusterService",
    "supervisor.v1.AuthService",
    "supervisor.v1.AnalyticsService",
];

/// Serves every service on `listener` until `shutdown` resolves, every call going through
/// the auth layer of `auth`. Health follows [`Node::serving`]: SERVING while the node's
/// supervision tree is whole, NOT_SERVING while a child restarts, after it gave up, and
/// from the moment the node begins to drain (its calls are still answered meanwhile).
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    auth: Arc<auth::Authenticator>,
    tls: Option<&tls::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let mut tree = node.health();
    let mut leaving = node.leaving();
    let follow = {
        let reporter = reporter.clone();
        let node = node.clone();
        tokio::spawn(async move {
            loop {
                tree.borrow_and_update();
                leaving.borrow_and_update();
                let status = if node.serving().is_ok() {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("", status).await;
                for name in HEALTH_SERVICES {
                    reporter.set_service_status(*name, status).await;
                }
                let gone = tokio::select! {
                    changed = tree.changed() => changed.is_err(),
                    changed = leaving.changed() => changed.is_err(),
                };
                if gone {
                    reporter
                        .set_service_status("", tonic_health::ServingStatus::NotServing)
                        .await;
                    return;
                }
            }
        })
    };
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(supervisor_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(supervisor_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let acceptor = tls
        .map(tls::acceptor)
        .transpose()
        .map_err(ServeError::Tls)?;
    let drain_reporter = reporter.clone();
    let routes = api_routes(node.clone(), auth.clone())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let router = tonic::transport::Server::builder()
        .layer(grpc_trace::TraceLayer::new(&node.identity().id))
        .layer(auth::AuthLayer::new(auth))
        .add_routes(routes);
    let stop = async move {
        shutdown.await;
        follow.abort();
        drain_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    let result = match acceptor {
        Some(acceptor) => {
            router
                .serve_with_incoming_shutdown(tls::incoming(listener, acceptor), stop)
                .await
        }
        None => {
            // Small request/response frames must not wait for delayed ACKs (Nagle).
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
    };
    result.map_err(|source| ServeError::Transport { addr, source })
}

/// Provider plugins (`[providers.<name>] kind = "plugin"`): the conformance checks the
/// CLI's `supervisor plugin check` runs, and the variable a started plugin reads the
/// address to listen on from.
pub mod plugins {
    pub use supervisor_providers::plugin::LISTEN_VAR;
    pub use supervisor_providers::plugin::conformance::{Check, run as check};
}
