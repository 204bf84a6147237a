//! The `supervisor` command: `up` runs a node; `task` and `providers` talk to one over
//! gRPC; `config default` prints the annotated default configuration.

mod commands;
mod config;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{GlobalArgs, ProviderCommand, TaskCommand};

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
    #[command(flatten)]
    Workflows(commands::WorkflowGroup),
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
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
            let cfg = config::Config::load(config.as_deref())?;
            print!("{}", toml::to_string_pretty(&cfg)?);
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
        Command::Task { command } => commands::task::run(command, &cli.global).await,
        Command::Providers { command } => commands::providers::run(command, &cli.global).await,
        Command::Workflows(group) => group.run(&cli.global).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => commands::report_error(&err),
    }
}
