//! `supervisor up`: runs a node in the foreground on the embedded store with the mock
//! provider, until Ctrl-C or SIGTERM, then drains: running attempts finish or are handed
//! back, never lost.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use supervisor_engine::{Engine, SystemClock};
use supervisor_node::{Node, ProviderSpec};
use supervisor_providers::factory::BuildContext;
use supervisor_store::embedded::{Durability, EmbeddedOptions, open_db};

use crate::config::{Config, DurabilityMode, LogFormat};

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
        cfg.validate()?;
    }
    init_logging(&cfg);

    let data_dir = &cfg.data_dir.0;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("could not create the data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| {
        format!(
            "could not resolve the data directory {}",
            data_dir.display()
        )
    })?;
    let db_path = data_dir.join("supervisor.redb");
    let options = EmbeddedOptions {
        durability: match cfg.store.durability {
            DurabilityMode::Immediate => Durability::Immediate,
            DurabilityMode::Relaxed => Durability::Relaxed,
        },
        max_batch: cfg.store.max_batch,
        cache_bytes: cfg.store.cache_mb.saturating_mul(1024 * 1024),
    };
    let db = open_db(&db_path, options)
        .with_context(|| format!("could not open the store at {}", db_path.display()))?;
    let engine = Engine::new(db, cfg.engine.clone(), Arc::new(SystemClock));

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
        Node::start(
            engine,
            cfg.node.clone(),
            cfg.routing.clone(),
            &addr.to_string(),
            providers,
        )
        .await
        .context("could not start the node")?,
    );
    println!(
        "supervisor node {} (epoch {}) listening on {addr}",
        node.identity().id,
        node.identity().epoch
    );
    println!(
        "data: {} (durability: {:?})",
        db_path.display(),
        cfg.store.durability
    );
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
            shutdown_signal().await;
            eprintln!("shutting down: draining running tasks (up to {drain_timeout:?})");
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
