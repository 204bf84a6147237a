//! `supervisor up`: runs a node in the foreground (by default on the embedded store with
//! the mock provider; with `--store postgres://... --join` as one node of a cluster),
//! until Ctrl-C, SIGTERM or an operator's drain request, then drains: running attempts
//! finish or are handed back, never lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use supervisor_engine::NodeState;
use supervisor_engine::{Engine, SystemClock};
use supervisor_node::{Node, ProviderSpec};
use supervisor_providers::factory::BuildContext;

use supervisor_server::config::{Config, LogFormat};
use supervisor_server::store::StoreUrl;

/// Flags of `supervisor up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory of the embedded store (default: `supervisor-data`, or `data_dir` in the
    /// config file).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:50051).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// A TOML config file (see `supervisor config default`).
    #[arg(long, value_name = "FILE", env = "SUPERVISOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// The store's URL: `embedded:///` (default), `postgres://user@host:port/db` or
    /// `fdb:///etc/foundationdb/fdb.cluster` (`store.url` in the config).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Run as one node of a cluster sharing the store: needs a shared store and a node
    /// id no live node uses.
    #[arg(long)]
    pub join: bool,
    /// This node's id (default: the host name; `node.id` in the config).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Address of this node's cluster listener, e.g. 0.0.0.0:4697 (`cluster.listen`).
    #[arg(long, value_name = "ADDR")]
    pub cluster_listen: Option<String>,
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

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

/// Runs the node until a shutdown signal.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        cfg.data_dir.0 = dir;
    }
    if let Some(listen) = args.listen {
        cfg.server.listen = listen;
    }
    if let Some(store) = args.store {
        cfg.store.url = store;
    }
    if let Some(id) = args.node_id {
        cfg.node.id = id;
    }
    if let Some(listen) = args.cluster_listen {
        cfg.cluster.listen = listen;
    }
    cfg.validate()?;
    init_logging(&cfg);
    let url = StoreUrl::parse(&cfg.store.url)?;
    match (url.is_shared(), args.join) {
        (false, true) => anyhow::bail!(
            "--join needs a store that nodes can share: pass --store postgres://user@host:port/db or --store fdb:///etc/foundationdb/fdb.cluster"
        ),
        (true, false) => anyhow::bail!(
            "the store {} can be shared by a cluster: pass --join to run this node as one of its members (give every node its own --node-id)",
            url.display(&cfg.data_dir.0)
        ),
        _ => {}
    }

    let data_dir = &cfg.data_dir.0;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("could not create the data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| {
        format!(
            "could not resolve the data directory {}",
            data_dir.display()
        )
    })?;
    let db = supervisor_server::store::open(&url, &cfg.store, &data_dir).await?;
    let engine = Engine::new(db, cfg.engine.clone(), Arc::new(SystemClock));
    if args.join {
        refuse_a_live_namesake(&engine, &cfg).await?;
    }

    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| {
            format!(
                "could not listen on {}; is another node running there? Use --listen to pick another address",
                cfg.server.listen
            )
        })?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;

    let prices = Arc::new(cfg.prices.clone());
    let build_ctx = BuildContext {
        data_dir: data_dir.clone(),
    };
    let mut providers = Vec::new();
    for (name, provider_cfg) in &cfg.providers.0 {
        if !provider_cfg.enabled() {
            continue;
        }
        let provider =
            supervisor_providers::factory::build(name, provider_cfg, prices.clone(), &build_ctx)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        providers.push(ProviderSpec {
            provider,
            max_concurrency: provider_cfg.max_concurrency(),
            limits: provider_cfg.limits().clone(),
        });
    }
    let node = Arc::new(
        Node::start_in_cluster(
            engine,
            cfg.node.clone(),
            cfg.cluster.clone(),
            cfg.routing.clone(),
            &addr.to_string(),
            providers,
        )
        .await
        .context("could not start the node")?,
    );
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
    let names: Vec<&str> = cfg
        .providers
        .0
        .iter()
        .filter(|(_, p)| p.enabled())
        .map(|(n, _)| n.as_str())
        .collect();
    println!("providers: {}; press Ctrl-C to stop", names.join(", "));

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
    supervisor_server::serve(listener, node.clone(), async move {
        let _ = stop_rx.await;
    })
    .await?;
    drainer.abort();
    Ok(())
}

/// Refuses to start when a live node already uses this node's id: two processes under one
/// id would fence each other's work. A record left by a crashed run is not live: its
/// revision stops moving, which this waits two heartbeats to see.
async fn refuse_a_live_namesake(engine: &Engine, cfg: &Config) -> anyhow::Result<()> {
    let id = &cfg.node.id;
    let revision_of = |nodes: &[supervisor_engine::NodeInfo]| {
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
        Some(after) if after != before => anyhow::bail!(
            "node id {id:?} is in use by a live node at {}: give every node its own --node-id (or node.id)",
            after.2
        ),
        _ => Ok(()),
    }
}
