//! `supervisor up`: runs a node in the foreground (by default on the embedded store with
//! the mock provider; with `--store postgres://... --join` as one node of a cluster),
//! until Ctrl-C, SIGTERM or an operator's drain request. The flags override the loaded
//! configuration; [`supervisor_server::run`] does the rest.

use std::path::PathBuf;

use supervisor_server::RunOptions;
use supervisor_server::config::Config;

/// Flags of `supervisor up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory of the embedded store and of the Claude CLI's worktrees (default:
    /// `supervisor-data`, or `data_dir` in the config file); created only when one of
    /// them needs it.
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
    /// Serve the API without authentication even on an address other hosts can reach
    /// (refused otherwise; turn on [auth] instead).
    #[arg(long)]
    pub insecure: bool,
    /// This node's id (default: the host name; `node.id` in the config).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Address of this node's cluster listener, e.g. 0.0.0.0:4697 (`cluster.listen`).
    #[arg(long, value_name = "ADDR")]
    pub cluster_listen: Option<String>,
    /// Address of the HTTP side: `/metrics` for Prometheus and `/healthz` (default
    /// 127.0.0.1:50052; `server.http_listen`; "" for none).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,
}

impl UpArgs {
    /// Puts the flags given over `cfg`.
    fn override_config(self, cfg: &mut Config) {
        if let Some(dir) = self.data_dir {
            cfg.data_dir.0 = dir;
        }
        if let Some(listen) = self.listen {
            cfg.server.listen = listen;
        }
        if let Some(store) = self.store {
            cfg.store.url = store;
        }
        if let Some(id) = self.node_id {
            cfg.node.id = id;
        }
        if let Some(listen) = self.cluster_listen {
            cfg.cluster.listen = listen;
        }
        if let Some(listen) = self.http_listen {
            cfg.server.http_listen = listen;
        }
    }
}

/// Runs the node until a shutdown signal.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(args.config.as_deref())?;
    let options = RunOptions {
        join: args.join,
        insecure: args.insecure,
    };
    args.override_config(&mut cfg);
    Ok(supervisor_server::run(cfg, options).await?)
}
