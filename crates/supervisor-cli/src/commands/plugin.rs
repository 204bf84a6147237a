//! `supervisor plugin check`: the conformance checks every provider plugin should pass,
//! against one at an address or one this command starts.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use supervisor_server::plugins::{Check, LISTEN_VAR, check};

/// `supervisor plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run the conformance checks against a provider plugin: capabilities, health, one
    /// execution streamed to a result, cancel, a cancel of nothing, an unknown task type
    /// refused, two executions at once. Exits 1 when one fails.
    Check {
        /// The plugin's address, when it is already running (http://127.0.0.1:7400).
        #[arg(
            long,
            value_name = "URL",
            conflicts_with = "command",
            required_unless_present = "command"
        )]
        address: Option<String>,
        /// Or the command that starts it (as `command` in its [providers.<name>] table):
        /// it gets the address to listen on in SUPERVISOR_PLUGIN_LISTEN.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
        /// How long a started plugin may take to listen.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        start_timeout: Duration,
    },
}

/// Runs a `plugin` command.
pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    let PluginCommand::Check {
        address,
        command,
        start_timeout,
    } = command;
    let (address, mut started) = match address {
        Some(a) => (a, None),
        None => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .context("finding a free loopback port for the plugin")?;
            let listen = listener.local_addr()?.to_string();
            drop(listener);
            let Some((program, args)) = command.split_first() else {
                bail!("give --address URL, or the command that starts the plugin after --");
            };
            let child = tokio::process::Command::new(program)
                .args(args)
                .env(LISTEN_VAR, &listen)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {program:?}"))?;
            (format!("http://{listen}"), Some(child))
        }
    };
    if started.is_some() {
        wait_until_listening(&address, start_timeout, started.as_mut()).await?;
    }
    let checks = check(&address).await.map_err(anyhow::Error::msg)?;
    if let Some(mut child) = started.take() {
        let _ = child.kill().await;
    }
    print_checks(&address, &checks);
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

async fn wait_until_listening(
    address: &str,
    limit: Duration,
    mut child: Option<&mut tokio::process::Child>,
) -> anyhow::Result<()> {
    let host = address.trim_start_matches("http://").to_string();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(&host).await.is_ok() {
            return Ok(());
        }
        if let Some(child) = child.as_deref_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("the plugin exited ({status}) before it listened on {host}");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the plugin did not listen on {host} (its {LISTEN_VAR}) within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_checks(address: &str, checks: &[Check]) {
    println!("plugin at {address}");
    for c in checks {
        let mark = if c.passed { "ok  " } else { "FAIL" };
        println!(
            "{mark} {:<32} {}",
            c.name,
            super::output::escape_line(&c.detail)
        );
    }
}
