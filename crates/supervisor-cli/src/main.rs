//! The `supervisor` command: `up` runs a node; `task`, `workflow`, `schedule`,
//! `providers`, `cluster` and `node` talk to one over gRPC; `config default` prints the
//! annotated default configuration and `store init` prepares a store.

mod commands;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use supervisor_server::config::{self, Config};
use supervisor_server::store::{self, StoreUrl};

use commands::{
    ClusterCommand, GlobalArgs, NodeCommand, ProviderCommand, ScheduleCommand, TaskCommand,
    WorkflowCommand,
};

/// Supervisor: a durable queue of coding tasks run by AI providers.
#[derive(Debug, Parser)]
#[command(name = "supervisor", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground (embedded store, mock provider) until Ctrl-C.
    Up(up::UpArgs),
    /// Submit, inspect, follow, cancel and retry tasks.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Inspect the node's providers.
    Providers {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// Validate, submit, inspect, follow, cancel and retry workflow runs (DAGs of tasks).
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Create, list, pause, resume, trigger and delete schedules of workflow runs.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// The cluster's nodes as the store records them.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Operate on one node of the cluster.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Prepare a store for nodes.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create the store's schema (PostgreSQL; harmless to repeat) or check that the store
    /// is reachable.
    Init {
        /// The store's URL (default: `store.url` from the config).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// A TOML config file.
        #[arg(long, value_name = "FILE", env = "SUPERVISOR_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
}

async fn store_command(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Init { store, config } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(url) = store {
                cfg.store.url = url;
            }
            let url = StoreUrl::parse(&cfg.store.url)?;
            println!("{}", store::init(&url, &cfg.store, &cfg.data_dir.0).await?);
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the configuration file with every default, annotated.
    Default,
    /// Load the configuration (file, then SUPERVISOR_* variables) and print what is in force.
    Show {
        /// A TOML config file.
        #[arg(long, value_name = "FILE", env = "SUPERVISOR_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
}

fn config_command(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Default => print!("{}", config::EXAMPLE),
        ConfigCommand::Show { config } => {
            let cfg = Config::load(config.as_deref())?;
            print!("{}", cfg.to_redacted_toml()?);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Config { command } => config_command(command),
        Command::Store { command } => store_command(command).await,
        Command::Task { command } => commands::task::run(command, &cli.global).await,
        Command::Providers { command } => commands::providers::run(command, &cli.global).await,
        Command::Workflow { command } => commands::workflow::run(command, &cli.global).await,
        Command::Schedule { command } => commands::schedule::run(command, &cli.global).await,
        Command::Cluster { command } => commands::cluster::run_cluster(command, &cli.global).await,
        Command::Node { command } => commands::cluster::run_node(command, &cli.global).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => commands::report_error(&err),
    }
}
