//! The client side of the `supervisor` command: `task ...`, `providers ...`,
//! `workflow ...`, `schedule ...`, `cluster ...` and `node ...`.
//!
//! Each subject is a folder that owns its clap subcommand enum, an async `run` function,
//! its text rendering (`text.rs`: tables, summaries) and its JSON shapes (`json.rs`):
//! [`task::run`] for [`TaskCommand`], [`providers::run`] for [`ProviderCommand`],
//! [`workflow::run`] for [`WorkflowCommand`], [`schedule::run`] for [`ScheduleCommand`],
//! [`cluster::run_cluster`] and [`cluster::run_node`] for [`ClusterCommand`] and
//! [`NodeCommand`]. What they share: [`output`] (the `--output` format, tables, times,
//! money), [`parse`] (values of flags), [`follow`] (the loop of `task watch` and
//! `workflow watch`); their tests share `harness` (parsing a command line, fixed
//! instants). Each subject takes [`ClientArgs`]; its command runs with them resolved
//! as [`GlobalArgs`] (server address, output format). Errors are
//! returned as [`anyhow::Error`]; [`report_error`] prints them as one line and picks the
//! exit code.

pub mod access;
pub mod analytics;
pub mod chat;
pub mod cluster;
mod follow;
#[cfg(test)]
mod harness;
mod output;
mod parse;
pub mod plugin;
pub mod providers;
pub mod resources;
pub mod schedule;
pub mod store;
pub mod task;
mod terminal;
pub mod workflow;

use std::{fmt, io, process::ExitCode};

use supervisor_client::{Client, ClientError, ConnectOptions};

use output::print_stderr_line;

pub use output::OutputFormat;

pub use cluster::{ClusterCommand, NodeCommand};
pub use providers::ProviderCommand;
pub use schedule::ScheduleCommand;
pub use task::TaskCommand;
pub use workflow::WorkflowCommand;

/// Exit code of a command that failed (bad input, server error, server unreachable).
/// (clap itself exits 2 on invalid arguments.)
pub const EXIT_ERROR: u8 = 1;
/// Exit code when the task or workflow run waited for or watched ended `failed`.
pub const EXIT_TASK_FAILED: u8 = 3;
/// Exit code when the task or workflow run waited for or watched ended `cancelled`.
pub const EXIT_TASK_CANCELLED: u8 = 4;
/// Exit code after Ctrl-C stopped a watch (the task or run itself keeps running).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The variable that names the server when `--server` does not.
pub const SERVER_ENV: &str = "SUPERVISOR_SERVER";

/// `--server` and `--output` of a command that talks to a node, as its subject takes
/// them: after the subject's name or anywhere after it (`supervisor task list --server
/// ADDR`). Only the subjects that talk to a node (`task`, `providers`, `workflow`,
/// `schedule`, `cluster`, `node`) have them: `up`, `config` and `store` do not.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Address of the Supervisor server, host:port, http://host:port or https://host:port
    /// [env: SUPERVISOR_SERVER] [default: 127.0.0.1:50051]. Credentials come from
    /// SUPERVISOR_TOKEN (or SUPERVISOR_TOKEN_FILE) and SUPERVISOR_CA_FILE.
    #[arg(long = "server", value_name = "ADDR", global = true)]
    pub server: Option<String>,
    /// How the command prints its results [default: text].
    #[arg(long, value_enum, value_name = "FORMAT", global = true)]
    pub output: Option<OutputFormat>,
    /// The API key (svk_...) or JWT every call carries [env: SUPERVISOR_TOKEN].
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// A file holding the token [env: SUPERVISOR_TOKEN_FILE].
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// The authority of an https:// server's certificate [env: SUPERVISOR_CA_FILE].
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Act in this tenant (an admin of the default tenant only).
    #[arg(long, value_name = "TENANT", global = true)]
    pub tenant: Option<String>,
}

/// The options of every client command, resolved: the server to talk to and the output
/// format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalArgs {
    /// Address of the Supervisor server (host:port or http://host:port).
    pub server: String,
    /// How commands print their results.
    pub output: OutputFormat,
    /// The flags that override the environment's credentials.
    pub credentials: Credentials,
}

/// Credentials given as flags; each one given wins over its environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `--token`.
    pub token: Option<String>,
    /// `--token-file`.
    pub token_file: Option<std::path::PathBuf>,
    /// `--ca-file`.
    pub ca_file: Option<std::path::PathBuf>,
    /// `--tenant`.
    pub tenant: Option<String>,
}

impl GlobalArgs {
    /// The options in force: those given after the subject (`inner`), else those given
    /// before it (`outer`, as in `supervisor --server ADDR task list`), else
    /// `$SUPERVISOR_SERVER` for the server, else the defaults (127.0.0.1:50051, text).
    pub fn resolve(outer: &ClientArgs, inner: &ClientArgs) -> Self {
        let server = inner
            .server
            .clone()
            .or_else(|| outer.server.clone())
            .or_else(|| {
                std::env::var(SERVER_ENV)
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            })
            .unwrap_or_else(|| supervisor_client::DEFAULT_ADDR.to_owned());
        let output = inner.output.or(outer.output).unwrap_or(OutputFormat::Text);
        let credentials = Credentials {
            token: inner.token.clone(),
            token_file: inner.token_file.clone(),
            ca_file: inner.ca_file.clone(),
            tenant: inner.tenant.clone(),
        };
        GlobalArgs {
            server,
            output,
            credentials,
        }
    }
}

/// An error that asks for a given exit code; its message (if any) was not printed yet.
///
/// Commands return it when the task they followed ended failed or cancelled: the
/// outcome was already printed, so there is no message.
#[derive(Debug)]
pub struct Exit {
    /// The process exit code.
    pub code: u8,
    /// Printed as `error: <message>` by [`report_error`], when present.
    pub message: Option<String>,
}

impl Exit {
    /// Success, or the exit code of a task or workflow run that ended failed (3) or
    /// cancelled (4); the outcome itself was already printed.
    pub fn for_ending(failed: bool, cancelled: bool) -> anyhow::Result<()> {
        let code = if failed {
            EXIT_TASK_FAILED
        } else if cancelled {
            EXIT_TASK_CANCELLED
        } else {
            return Ok(());
        };
        Err(Exit {
            code,
            message: None,
        }
        .into())
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(f, "exit code {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// Prints `err` to stderr as one escaped line (`error: NOT_FOUND: no task with id x`;
/// the server's message may quote anything a client sent) and returns the exit code to
/// end with: the code of an [`Exit`], otherwise
/// [`EXIT_ERROR`]. Writing to a closed pipe (`supervisor task list | head`) ends
/// quietly with success.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    if let Some(exit) = err.downcast_ref::<Exit>() {
        if let Some(message) = &exit.message {
            print_stderr_line(&format!("error: {message}"));
        }
        return ExitCode::from(exit.code);
    }
    let broken_pipe = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io_err| io_err.kind() == io::ErrorKind::BrokenPipe);
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    print_stderr_line(&format!("error: {}", error_line(err)));
    ExitCode::from(EXIT_ERROR)
}

/// The one-line text of an error, with a hint for an unreachable server.
fn error_line(err: &anyhow::Error) -> String {
    let client_error = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<ClientError>());
    let mut line = format!("{err:#}");
    if let Some(ClientError::Status { code, .. }) = client_error
        && *code == tonic::Code::Unavailable
    {
        line.push_str(" — is `supervisor up` running?");
    }
    line
}

/// Connects to the server named by the global options, with the credentials the flags
/// give, else those the environment gives: the key or JWT in `SUPERVISOR_TOKEN` (or the
/// file `SUPERVISOR_TOKEN_FILE` names) and the CA of an `https://` server in
/// `SUPERVISOR_CA_FILE`.
async fn connect(global: &GlobalArgs) -> anyhow::Result<Client> {
    let flags = &global.credentials;
    let mut options = ConnectOptions::from_env()?;
    if let Some(path) = &flags.token_file {
        options.token = Some(supervisor_client::read_token_file(path)?);
    }
    if let Some(token) = &flags.token {
        options.token = Some(token.clone());
    }
    if let Some(ca) = &flags.ca_file {
        options.ca_file = Some(ca.clone());
    }
    options.tenant = flags.tenant.clone();
    Ok(Client::connect_with(&global.server, &options).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_statuses_get_the_hint() {
        let err = anyhow::Error::from(ClientError::from(tonic::Status::unavailable(
            "tcp connect error",
        )));
        assert_eq!(
            error_line(&err),
            "UNAVAILABLE: tcp connect error — is `supervisor up` running?"
        );
        let err = anyhow::Error::from(ClientError::from(tonic::Status::not_found(
            "no task with id t1",
        )));
        assert_eq!(error_line(&err), "NOT_FOUND: no task with id t1");
        let err = anyhow::Error::from(ClientError::Connect {
            addr: "http://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        });
        assert_eq!(
            error_line(&err),
            "could not connect to Supervisor at http://127.0.0.1:1: connection refused — is `supervisor up` running?"
        );
    }
}
