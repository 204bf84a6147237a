//! A plugin the node starts: run under the same confinement as agent processes (one
//! decision ends it and everything it started, also when the node dies), restarted with
//! backoff when it exits, stopped with its children when the provider is dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::sync::{oneshot, watch};
use tonic::transport::{Channel, Endpoint};

use crate::claude_cli::environment;
use crate::claude_cli::sandbox::{AgentProcess, Sandbox};
use crate::config::{IsolationMode, PluginConfig};

/// The variable the plugin reads the address to listen on from.
pub const LISTEN_VAR: &str = "SUPERVISOR_PLUGIN_LISTEN";

/// A run of the plugin that lasted this long resets the restart backoff.
const STEADY: Duration = Duration::from_secs(60);

/// First pause before a restart.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest line of the plugin's stdout/stderr logged (the rest is cut).
const MAX_LOG_LINE: usize = 4096;

/// What the plugin's process is doing now.
#[derive(Debug, Clone, Default)]
pub(crate) struct Running {
    /// A channel to the current process, while one runs.
    pub channel: Option<Channel>,
    /// Its address.
    pub address: String,
    /// Its pid (the confining process's).
    pub pid: Option<u32>,
    /// Starts so far (1 after the first).
    pub starts: u64,
    /// How the last process ended, for people.
    pub last_exit: Option<String>,
}

/// The supervised process; dropping it stops the process and everything it started.
pub(crate) struct PluginProcess {
    state: watch::Receiver<Running>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    sandbox: Arc<Sandbox>,
}

impl std::fmt::Debug for PluginProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginProcess")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl PluginProcess {
    /// Starts `cfg.command` for provider `name` and keeps it running. Needs a Tokio
    /// runtime.
    pub(crate) fn start(name: &str, cfg: &PluginConfig) -> Result<PluginProcess, String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            format!("provider {name}: a plugin's process is started from within the node's runtime")
        })?;
        let sandbox = Arc::new(
            Sandbox::detect(IsolationMode::Auto).map_err(|e| format!("provider {name}: {e}"))?,
        );
        let env = environment_of(name, cfg)?;
        let (state_tx, state) = watch::channel(Running::default());
        let (stop, stopped) = oneshot::channel();
        let supervise = Supervise {
            name: name.to_string(),
            command: cfg.command.clone(),
            working_dir: cfg.working_dir.clone(),
            env,
            max_backoff: cfg.max_restart_backoff.max(FIRST_BACKOFF),
            sandbox: sandbox.clone(),
            state: state_tx,
        };
        runtime.spawn(supervise.run(stopped));
        Ok(PluginProcess {
            state,
            stop: Mutex::new(Some(stop)),
            sandbox,
        })
    }

    /// What the process is doing now.
    pub(crate) fn running(&self) -> Running {
        self.state.borrow().clone()
    }

    /// Waits until a process runs (or `limit` passes), returning its channel.
    pub(crate) async fn channel(&self, limit: Duration) -> Option<Channel> {
        let mut state = self.state.clone();
        let found = tokio::time::timeout(limit, state.wait_for(|r| r.channel.is_some())).await;
        match found {
            Ok(Ok(r)) => r.channel.clone(),
            _ => None,
        }
    }

    /// How the plugin's processes are confined, in one sentence.
    pub(crate) fn describe(&self) -> String {
        self.sandbox.describe()
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.stop.lock()
            && let Some(stop) = stop.take()
        {
            let _ = stop.send(());
        }
    }
}

/// The environment the plugin starts with: the basics every child of the node gets, the
/// named variables of the node, the literal `env` table.
fn environment_of(name: &str, cfg: &PluginConfig) -> Result<Vec<(OsString, OsString)>, String> {
    let mut vars: BTreeMap<OsString, OsString> = environment::basics().into_iter().collect();
    for key in ["HOME", "TZ"] {
        if let Some(v) = std::env::var_os(key) {
            vars.insert(key.into(), v);
        }
    }
    for key in &cfg.pass_env {
        if !environment::valid_name(key) {
            return Err(format!(
                "providers.{name}.pass_env: {key:?} is not a variable name"
            ));
        }
        match std::env::var_os(key) {
            Some(v) => {
                vars.insert(key.into(), v);
            }
            None => {
                return Err(format!(
                    "providers.{name}.pass_env names {key}, which the node's environment does not have: export it, or remove it from pass_env"
                ));
            }
        }
    }
    for (key, value) in &cfg.env {
        if !environment::valid_name(key) || key == LISTEN_VAR {
            return Err(format!(
                "providers.{name}.env: {key:?} is not a variable name the plugin may be given"
            ));
        }
        vars.insert(key.into(), value.into());
    }
    Ok(vars.into_iter().collect())
}

struct Supervise {
    name: String,
    command: Vec<String>,
    working_dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    max_backoff: Duration,
    sandbox: Arc<Sandbox>,
    state: watch::Sender<Running>,
}

impl Supervise {
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let began = Instant::now();
            let ended = match self.start_once() {
                Ok((mut process, address)) => {
                    let outcome = tokio::select! {
                        status = process.wait() => Some(status),
                        _ = &mut stop => None,
                    };
                    match outcome {
                        Some(status) => {
                            // Reap what it left and mark it gone.
                            process.finish().await;
                            exit_text(status)
                        }
                        None => {
                            tracing::info!(provider = %self.name, %address, "stopping the plugin");
                            process.terminate().await;
                            self.state.send_modify(|r| {
                                r.channel = None;
                                r.pid = None;
                                r.last_exit = Some("stopped by the node".into());
                            });
                            return;
                        }
                    }
                }
                Err(e) => e,
            };
            tracing::warn!(provider = %self.name, exit = %ended, restart_in = ?backoff, "the plugin's process ended; restarting it");
            self.state.send_modify(|r| {
                r.channel = None;
                r.pid = None;
                r.last_exit = Some(ended);
            });
            if began.elapsed() >= STEADY {
                backoff = FIRST_BACKOFF;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = &mut stop => return,
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    /// Starts one process on a fresh loopback port.
    fn start_once(&self) -> Result<(AgentProcess, String), String> {
        let address = free_loopback_address()
            .map_err(|e| format!("could not find a free loopback port: {e}"))?;
        let Some((program, args)) = self.command.split_first() else {
            return Err("no command".into());
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env_clear().envs(self.env.iter().cloned());
        cmd.env(LISTEN_VAR, &address);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        let (process, stdout, stderr) = self
            .sandbox
            .spawn(cmd, None)
            .map_err(|e| format!("could not start {program:?}: {e}"))?;
        forward(self.name.clone(), "stdout", stdout);
        forward(self.name.clone(), "stderr", stderr);
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad plugin address {address}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let pid = process.pid();
        tracing::info!(provider = %self.name, %address, pid, "started the plugin");
        self.state.send_modify(|r| {
            r.channel = Some(channel);
            r.address = address.clone();
            r.pid = Some(pid);
            r.starts += 1;
        });
        Ok((process, address))
    }
}

fn exit_text(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => format!("exited ({s})"),
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// A loopback address no one listens on now (the plugin binds it right after).
fn free_loopback_address() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Logs the plugin's output lines (cut to [`MAX_LOG_LINE`]) at info.
fn forward(name: String, stream: &'static str, pipe: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            // A line longer than the cap is logged in pieces, never held whole.
            match (&mut lines)
                .take(MAX_LOG_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    tracing::info!(provider = %name, stream, "plugin: {}", text.trim_end());
                }
            }
        }
    });
}
