//! A whole node in the foreground, as `supervisor up` runs it: the store its URL names,
//! the providers its configuration lists, the node's actors and the gRPC services, until
//! Ctrl-C, SIGTERM or an operator's drain request; then a drain, in which running
//! attempts finish or are handed back, never lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use supervisor_engine::{Engine, EngineError, NodeInfo, NodeState, SystemClock};
use supervisor_node::{Node, NodeError, NodeSetup, ProviderSpec};
use supervisor_providers::factory::BuildContext;

use crate::ServeError;
use crate::config::{Config, ConfigError};
use crate::store::{self, OpenError, StoreUrl, StoreUrlError};

/// How [`run`] starts the node, beyond its configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Run as one member of a cluster sharing the store. A shared store (PostgreSQL,
    /// FoundationDB) requires it and the embedded store refuses it, so that a node never
    /// joins a cluster by accident; with it, a node id that a live node uses is refused.
    pub join: bool,
    /// Serve the API without authentication on an address other hosts can reach (by
    /// default refused: anyone reaching the port could run agents).
    pub insecure: bool,
}

/// Why a node could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration does not hold together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `store.url` names no known store.
    #[error(transparent)]
    StoreUrl(#[from] StoreUrlError),
    /// `join` with the embedded store, which only one process can open.
    #[error(
        "--join needs a store that nodes can share: pass --store postgres://user@host:port/db or --store fdb:///etc/foundationdb/fdb.cluster"
    )]
    JoinNeedsSharedStore,
    /// A shared store without `join`.
    #[error(
        "the store {store} can be shared by a cluster: pass --join to run this node as one of its members (give every node its own --node-id)"
    )]
    SharedStoreNeedsJoin {
        /// The store, its password hidden.
        store: String,
    },
    /// The data directory could not be made absolute.
    #[error("could not resolve the data directory {}", path.display())]
    ResolveDataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] OpenError),
    /// Reading the cluster's members failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `join` under a node id that a live node uses.
    #[error(
        "node id {id:?} is in use by a live node at {address}: give every node its own --node-id (or node.id)"
    )]
    NodeIdInUse {
        /// The node id.
        id: String,
        /// The gRPC address of the live node.
        address: String,
    },
    /// `[telemetry]` or an `OTEL_*` variable is wrong.
    #[error(transparent)]
    Telemetry(#[from] supervisor_telemetry::TelemetryError),
    /// The HTTP listener (metrics) could not bind.
    #[error(
        "could not listen on {addr} for metrics; is another node running there? Use --http-listen to pick another address (\"\" for none)"
    )]
    HttpListen {
        /// `server.http_listen`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC listener could not bind.
    #[error(
        "could not listen on {addr}; is another node running there? Use --listen to pick another address"
    )]
    Listen {
        /// `server.listen`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bound listener has no address.
    #[error("reading the listen address")]
    ListenAddress(#[source] std::io::Error),
    /// A provider's configuration is wrong (a missing API key variable, an unreadable
    /// key file...).
    #[error("invalid configuration: {0}")]
    Provider(String),
    /// The node's actors could not start.
    #[error("could not start the node")]
    Node(#[source] NodeError),
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The API would listen beyond this host without authentication.
    #[error(
        "{setting} {addr} can be reached from other hosts, and authentication is off: anyone reaching it could run agents. Turn it on ([auth] enabled = true, or SUPERVISOR_AUTH__ENABLED=true; the first start writes an admin key to <data_dir>/admin.key), {remedy}, or pass --insecure to run open anyway"
    )]
    Insecure {
        /// The setting: `server.listen`, or `server.http_listen` (the console's API).
        setting: &'static str,
        /// Its address.
        addr: String,
        /// What else would close it.
        remedy: &'static str,
    },
    /// `[auth]` does not hold together (an unreadable JWT file...).
    #[error("invalid configuration: {0}")]
    Auth(String),
    /// The first admin key could not be written.
    #[error("could not write the admin key to {}: {source}", path.display())]
    AdminKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Refuses an open API that other hosts can reach, unless asked to: on the gRPC
/// listener, and on the HTTP side when it serves the console's API.
fn refuse_open_network(cfg: &Config, options: RunOptions) -> Result<(), RunError> {
    if cfg.auth.enabled || options.insecure {
        return Ok(());
    }
    let loopback = |addr: &str| {
        addr.parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
    };
    if !loopback(&cfg.server.listen) {
        return Err(RunError::Insecure {
            setting: "server.listen",
            addr: cfg.server.listen.clone(),
            remedy: "listen on 127.0.0.1",
        });
    }
    let http = &cfg.server.http_listen;
    if cfg.server.console && !http.is_empty() && !loopback(http) {
        return Err(RunError::Insecure {
            setting: "server.http_listen (the web console and its API)",
            addr: http.clone(),
            remedy: "bind http_listen to 127.0.0.1, set server.console = false (metrics and health stay)",
        });
    }
    Ok(())
}

/// With authentication on and no admin key in the store, makes one and writes it to
/// `path` (mode 0600), so the operator can make the others. Prints the path, never the
/// key.
async fn first_admin_key(engine: &Engine, path: &std::path::Path) -> Result<(), RunError> {
    if engine.has_admin_key().await? {
        return Ok(());
    }
    let made = engine
        .create_key(
            supervisor_model::DEFAULT_TENANT,
            supervisor_model::Role::Admin,
            "first admin (made at start)",
            None,
            "supervisor up",
        )
        .await?;
    let written = (|| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        // The data directory is created when first used, and this may be its first use
        // (a node on a shared store).
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(format!("{}\n", made.key).as_bytes())
    })();
    if let Err(source) = written {
        // A key nobody holds must not stay valid.
        let _ = engine.revoke_key(&made.info.id, None).await;
        return Err(RunError::AdminKey {
            path: path.to_path_buf(),
            source,
        });
    }
    println!(
        "auth: made the first admin key (id {}) and wrote it to {} (mode 0600); use it with --token-file or SUPERVISOR_TOKEN to make others",
        made.info.id,
        path.display()
    );
    Ok(())
}

/// Runs a node in the foreground until Ctrl-C, SIGTERM or a drain request, then drains
/// it, and returns once it has left.
///
/// Prints on stdout, once the node serves, the lines `supervisor node <id> (epoch <n>)
/// listening on <addr>`, the store, and the providers; on stderr, the drain's progress.
/// `cfg` is validated first. Errors say what to change (a flag, a key of the
/// configuration) and come before the node serves, except a failure of the gRPC server.
///
/// The listener is bound before anything is written, so that a taken port costs nothing
/// (no store file, no directory). The data directory is only resolved, not created: the
/// embedded store creates it when it opens its file there, the Claude CLI provider when
/// it makes its first worktree under it, and the first start with authentication on when
/// it writes the admin key there; a node on PostgreSQL or FoundationDB with none of these
/// leaves no trace in the working directory.
pub async fn run(cfg: Config, options: RunOptions) -> Result<(), RunError> {
    cfg.validate()?;
    refuse_open_network(&cfg, options)?;
    let telemetry = Arc::new(supervisor_telemetry::install(
        &cfg.telemetry,
        &supervisor_telemetry::LogSetup {
            filter: cfg.log.level.clone(),
            json: matches!(cfg.log.format, crate::config::LogFormat::Json),
        },
        &cfg.node.id,
        !cfg.server.http_listen.is_empty(),
    )?);
    let url = StoreUrl::parse(&cfg.store.url)?;
    match (url.is_shared(), options.join) {
        (false, true) => return Err(RunError::JoinNeedsSharedStore),
        (true, false) => {
            return Err(RunError::SharedStoreNeedsJoin {
                store: url.display(&cfg.data_dir.0),
            });
        }
        _ => {}
    }

    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: cfg.server.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::ListenAddress)?;
    let http_listener = match cfg.server.http_listen.as_str() {
        "" => None,
        http => Some(
            tokio::net::TcpListener::bind(http)
                .await
                .map_err(|source| RunError::HttpListen {
                    addr: http.to_string(),
                    source,
                })?,
        ),
    };

    // Absolute, so that it means the same wherever it is used; not created (see above).
    let data_dir =
        std::path::absolute(&cfg.data_dir.0).map_err(|source| RunError::ResolveDataDir {
            path: cfg.data_dir.0.clone(),
            source,
        })?;
    let db = store::open(&url, &cfg.store, &data_dir).await?;
    let engine = Engine::new(db, cfg.engine.clone(), Arc::new(SystemClock));
    if options.join {
        refuse_a_live_namesake(&engine, &cfg).await?;
    }

    let prices = Arc::new(cfg.prices.clone());
    let build_ctx = BuildContext {
        data_dir: data_dir.clone(),
        hooks: supervisor_providers::hooks::Hooks::new(cfg.hooks.clone())
            .map_err(|e| RunError::Config(ConfigError::Invalid(e)))?,
    };
    let enabled: Vec<_> = cfg
        .providers
        .0
        .iter()
        .filter(|(_, p)| p.enabled())
        .collect();
    let mut providers = Vec::new();
    let mut described = Vec::new();
    for &(name, provider_cfg) in &enabled {
        let provider =
            supervisor_providers::factory::build(name, provider_cfg, prices.clone(), &build_ctx)
                .map_err(RunError::Provider)?;
        // What an earlier run of this node left behind (its attempts' processes and
        // workspaces) goes before this one leases anything.
        let recovered = provider.recover().await;
        if !recovered.is_empty() {
            tracing::warn!(provider = %name, "cleaned up after an earlier run: {recovered}");
        }
        let origin = cfg
            .provider_origins
            .get(name)
            .map_or("the configuration", String::as_str);
        let mut line = format!("  {name} ({}) from {origin}", provider.kind());
        if let Some(sandbox) = provider.sandbox() {
            line.push_str(&format!("; sandbox: {sandbox}"));
        }
        described.push(line);
        providers.push(ProviderSpec {
            provider,
            max_concurrency: provider_cfg.max_concurrency(),
            limits: provider_cfg.limits().clone(),
        });
    }
    let node = Arc::new(
        Node::start_with(NodeSetup {
            cluster: cfg.cluster.clone(),
            data_dir: Some(data_dir.clone()),
            shared_store: !matches!(url, store::StoreUrl::Embedded(_)),
            retention: cfg.retention.clone(),
            ..NodeSetup::new(
                engine,
                cfg.node.clone(),
                cfg.routing.clone(),
                &addr.to_string(),
                providers,
            )
        })
        .await
        .map_err(RunError::Node)?,
    );
    let auth = Arc::new(
        crate::auth::Authenticator::new(node.engine().clone(), cfg.auth.clone())
            .map_err(RunError::Auth)?,
    );
    if cfg.auth.enabled {
        let path = cfg
            .auth
            .admin_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("admin.key"));
        first_admin_key(node.engine(), &path).await?;
        println!("auth: on; every call needs `authorization: Bearer <key or JWT>`");
    }
    let identity = node.identity();
    println!(
        "supervisor node {} (epoch {}) listening on {addr}",
        identity.id, identity.epoch
    );
    match &url {
        StoreUrl::Embedded(_) => println!(
            "store: {} (durability: {:?})",
            url.display(&data_dir),
            cfg.store.durability
        ),
        _ => println!("store: {} (cluster member)", url.display(&data_dir)),
    }
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let http = match http_listener {
        Some(listener) => {
            let http_addr = listener.local_addr().map_err(RunError::ListenAddress)?;
            if cfg.server.console {
                println!("console: http://{http_addr}/");
            }
            println!(
                "metrics: http://{http_addr}/metrics (Prometheus), health: http://{http_addr}/healthz"
            );
            Some(tokio::spawn(crate::http::serve(
                listener,
                crate::http::HttpState {
                    telemetry: telemetry.clone(),
                    node: node.clone(),
                    web: cfg
                        .server
                        .console
                        .then(|| crate::web_api(node.clone(), auth.clone())),
                    literal_hosts_only: !auth.enabled(),
                },
                async move {
                    let _ = stop_http_rx.await;
                },
            )))
        }
        None => None,
    };
    println!("telemetry: {}", telemetry.describe());
    let gauges = supervisor_telemetry::metrics_on().then(|| crate::gauges::spawn(node.clone()));
    let names: Vec<&str> = enabled.iter().map(|(name, _)| name.as_str()).collect();
    println!("providers: {}; press Ctrl-C to stop", names.join(", "));
    for line in &described {
        println!("{line}");
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_timeout = cfg.node.drain_timeout;
    let drainer = {
        let node = node.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown_signal() => {
                    eprintln!("shutting down: draining running tasks (up to {drain_timeout:?})");
                }
                _ = node.drain_requested() => {
                    eprintln!("drain requested: finishing or handing back running tasks (up to {drain_timeout:?}), then leaving");
                }
            }
            let report = node.shutdown().await;
            eprintln!(
                "drained: {} finished, {} handed back to the queue",
                report.finished, report.handed_back
            );
            let _ = stop_tx.send(());
        })
    };
    crate::serve(
        listener,
        node.clone(),
        auth,
        cfg.server.tls.as_ref(),
        async move {
            let _ = stop_rx.await;
        },
    )
    .await?;
    drainer.abort();
    if let Some(gauges) = gauges {
        gauges.abort();
    }
    let _ = stop_http_tx.send(());
    if let Some(http) = http {
        let _ = http.await;
    }
    telemetry.flush(Duration::from_secs(5)).await;
    Ok(())
}

/// Resolves at the first Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Refuses to start when a live node already uses this node's id: two processes under one
/// id would fence each other's work. A record left by a crashed run is not live: its
/// revision stops moving, which this waits two heartbeats to see.
async fn refuse_a_live_namesake(engine: &Engine, cfg: &Config) -> Result<(), RunError> {
    let id = &cfg.node.id;
    let revision_of = |nodes: &[NodeInfo]| {
        nodes
            .iter()
            .find(|n| &n.id == id && matches!(n.state, NodeState::Active | NodeState::Draining))
            .map(|n| (n.epoch, n.revision, n.address.clone()))
    };
    let Some(before) = revision_of(&engine.list_nodes().await?) else {
        return Ok(());
    };
    tokio::time::sleep(cfg.cluster.heartbeat_interval * 2 + Duration::from_millis(200)).await;
    match revision_of(&engine.list_nodes().await?) {
        Some(after) if after != before => Err(RunError::NodeIdInUse {
            id: id.clone(),
            address: after.2,
        }),
        _ => Ok(()),
    }
}
