//! The `supervisor` command: `up` runs a node; `task`, `workflow`, `schedule`,
//! `providers`, `cluster` and `node` talk to one over gRPC; `config default` prints the
//! annotated default configuration, `config show` the one a node started here would
//! run with; `store` prepares, measures, backs up, restores and compacts a store, and
//! `archive read` prints what retention archived.
//!
//! Only the subjects that talk to a node take `--server` and `--output` (after their
//! name, or before it: `supervisor --server ADDR task list`); `up`, `config`, `archive`
//! and the `store` commands that work on this machine refuse them (`store backup` and
//! `store stats` ask a node and take them after their name).

mod commands;
mod up;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use supervisor_server::config::{self, Config};

use commands::{
    ClientArgs, ClusterCommand, GlobalArgs, NodeCommand, OutputFormat, ProviderCommand,
    ScheduleCommand, TaskCommand, WorkflowCommand,
};

/// Supervisor: a durable queue of coding tasks run by AI providers.
#[derive(Debug, Parser)]
#[command(name = "supervisor", version, about)]
struct Cli {
    #[command(flatten)]
    client: LeadingClientArgs,
    #[command(subcommand)]
    command: Command,
}

/// `--server` and `--output` given before the subject (`supervisor --server ADDR task
/// list`). Not global: `up`, `config` and `store` neither list nor take them.
#[derive(Debug, Clone, Default, clap::Args)]
struct LeadingClientArgs {
    /// For task, providers, workflow, schedule, cluster and node: address of the
    /// Supervisor server, host:port or http://host:port [env: SUPERVISOR_SERVER]
    /// [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    server: Option<String>,
    /// For task, providers, workflow, schedule, cluster and node: how the command
    /// prints its results [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    output: Option<OutputFormat>,
}

impl LeadingClientArgs {
    fn client_args(&self) -> ClientArgs {
        ClientArgs {
            server: self.server.clone(),
            output: self.output,
            ..ClientArgs::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground (embedded store, mock provider) until Ctrl-C.
    Up(up::UpArgs),
    /// Submit, inspect, follow, cancel and retry tasks.
    Task {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Inspect the node's providers.
    Providers {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// Validate, submit, inspect, follow, cancel and retry workflow runs (DAGs of tasks).
    Workflow {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Create, list, pause, resume, trigger and delete schedules of workflow runs.
    Schedule {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// The cluster's nodes as the store records them.
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Operate on one node of the cluster.
    Node {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Talk with an agent in a thread: each message's reply is a task, streamed as it is
    /// written; threads are kept and can be turned into tasks.
    Chat {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: commands::chat::ChatArgs,
    },
    /// Who the credentials stand for (tenant, role, principal).
    Whoami {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make and list tenants (admins of the default tenant).
    Tenant {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::access::TenantCommand,
    },
    /// Make, list and revoke API keys (admins).
    Key {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::access::KeyCommand,
    },
    /// Read the audit log: every call that may change something, every refused call
    /// (admins).
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::access::AuditCommand,
    },
    /// Set and read budgets: hard limits on what a tenant, key or label spends per day
    /// and month.
    Budget {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::resources::BudgetCommand,
    },
    /// Set and read a tenant's share of the cluster: weight, running limit, lock policy.
    Quota {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::resources::QuotaCommand,
    },
    /// Repository locks held now, and the tasks waiting for a resource.
    Resources {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::resources::ResourcesCommand,
    },
    /// What the nodes measured of their machines and their attempts' processes.
    Nodes {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::resources::NodesCommand,
    },
    /// What finished tasks add up to: summaries, trends, comparisons of providers and
    /// specialties, predictions (from durable rollups in the store).
    Analytics {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: commands::analytics::AnalyticsCommand,
    },
    /// Today's summary of finished tasks (since midnight UTC): `analytics summary` for
    /// today.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: commands::analytics::StatsArgs,
    },
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Prepare a store, read its size and free space, back it up, restore it, compact it.
    Store {
        #[command(subcommand)]
        command: commands::store::StoreCommand,
    },
    /// Read what the retention sweeper archived before deleting it.
    Archive {
        #[command(subcommand)]
        command: commands::store::ArchiveCommand,
    },
    /// Check a provider plugin against the plugin contract (proto/supervisor/plugin/v1).
    Plugin {
        #[command(subcommand)]
        command: commands::plugin::PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the configuration file with every default, annotated.
    Default,
    /// Print the configuration a node started here would run with: the defaults, then
    /// the file, then this environment's SUPERVISOR_* variables (not a running node's).
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
            print!(
                "{}{}",
                show_header(config.as_deref()),
                cfg.to_redacted_toml()?
            );
        }
    }
    Ok(())
}

/// The TOML comment `config show` starts with: what it shows, and that it comes from
/// this machine's file and environment, not from a running node.
fn show_header(file: Option<&std::path::Path>) -> String {
    let file = match file {
        Some(path) => format!("the file {}", path.display()),
        None => "no file (neither --config nor SUPERVISOR_CONFIG names one)".to_owned(),
    };
    format!(
        "# The configuration a node started here with `supervisor up` would run with,\n\
         # before the flags of `up`. It is read on this machine (a running node may have\n\
         # been started with another), from:\n\
         #   the defaults\n\
         #   {file}\n\
         #   the SUPERVISOR_* variables of this environment\n\n"
    )
}

/// The subjects that work on this machine, which take no client option.
fn local_subject(command: &Command) -> Option<&'static str> {
    match command {
        Command::Up(_) => Some("up"),
        Command::Config { .. } => Some("config"),
        Command::Store { command } if command.is_local() => Some("store"),
        Command::Archive { .. } => Some("archive"),
        Command::Plugin { .. } => Some("plugin"),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(subject) = local_subject(&cli.command) {
        let given = [
            cli.client.server.as_ref().map(|_| "--server"),
            cli.client.output.map(|_| "--output"),
        ];
        if let Some(flag) = given.into_iter().flatten().next() {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "{flag} is for the commands that talk to a node (task, providers, \
                         workflow, schedule, cluster, node); `supervisor {subject}` works on \
                         this machine and takes no {flag}"
                    ),
                )
                .exit();
        }
    }
    let outer = cli.client.client_args();
    let global = |inner: &ClientArgs| GlobalArgs::resolve(&outer, inner);
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Config { command } => config_command(command),
        Command::Store { command } => commands::store::run(command, global).await,
        Command::Archive { command } => commands::store::run_archive(command),
        Command::Plugin { command } => commands::plugin::run(command).await,
        Command::Task { client, command } => commands::task::run(command, &global(&client)).await,
        Command::Providers { client, command } => {
            commands::providers::run(command, &global(&client)).await
        }
        Command::Workflow { client, command } => {
            commands::workflow::run(command, &global(&client)).await
        }
        Command::Schedule { client, command } => {
            commands::schedule::run(command, &global(&client)).await
        }
        Command::Cluster { client, command } => {
            commands::cluster::run_cluster(command, &global(&client)).await
        }
        Command::Node { client, command } => {
            commands::cluster::run_node(command, &global(&client)).await
        }
        Command::Chat { client, args } => commands::chat::run(args, &global(&client)).await,
        Command::Whoami { client } => commands::access::run_whoami(&global(&client)).await,
        Command::Tenant { client, command } => {
            commands::access::run_tenant(command, &global(&client)).await
        }
        Command::Key { client, command } => {
            commands::access::run_key(command, &global(&client)).await
        }
        Command::Audit { client, command } => {
            commands::access::run_audit(command, &global(&client)).await
        }
        Command::Budget { client, command } => {
            commands::resources::run_budget(command, &global(&client)).await
        }
        Command::Quota { client, command } => {
            commands::resources::run_quota(command, &global(&client)).await
        }
        Command::Resources { client, command } => {
            commands::resources::run_resources(command, &global(&client)).await
        }
        Command::Nodes { client, command } => {
            commands::resources::run_nodes(command, &global(&client)).await
        }
        Command::Analytics { client, command } => {
            commands::analytics::run(command, &global(&client)).await
        }
        Command::Stats { client, args } => {
            commands::analytics::run_stats(args, &global(&client)).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => commands::report_error(&err),
    }
}
