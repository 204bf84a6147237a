//! A plugin the node starts: run under the same confinement as agent processes (one
//! decision ends it and everything it started, also when the node dies), restarted with
//! backoff when it exits, stopped with its children when the provider is dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisor_proto::plugin::v1 as wire;
use supervisor_proto::plugin::v1::provider_plugin_client::ProviderPluginClient;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

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
    stop: Option<oneshot::Sender<()>>,
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
            format!("provider {name}: a plugin's process is started from within the node's Tokio runtime (an internal error: report it)")
        })?;
        let sandbox = Arc::new(
            Sandbox::detect(IsolationMode::Auto).map_err(|e| format!("provider {name}: {e}"))?,
        );
        let env = environment_of(name, cfg)?;
        findable(name, cfg, &env)?;
        let (state_tx, state) = watch::channel(Running::default());
        let (stop, stopped) = oneshot::channel();
        let supervise = Supervise {
            name: name.to_string(),
            command: cfg.command.clone(),
            working_dir: cfg.working_dir.clone(),
            env,
            max_backoff: cfg.max_restart_backoff.max(FIRST_BACKOFF),
            start_timeout: cfg.start_timeout,
            sandbox: sandbox.clone(),
            state: state_tx,
        };
        runtime.spawn(supervise.run(stopped));
        Ok(PluginProcess {
            state,
            stop: Some(stop),
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
        // The plugin gets the shim but no cgroup of its own: a PID namespace when the
        // machine offers one, else the shim as subreaper.
        if self.sandbox.summary().starts_with("pid namespace") {
            format!(
                "{}: the plugin is PID 1's child in a PID namespace of its own; when the node stops or dies, the kernel kills every process in it",
                self.sandbox.summary()
            )
        } else {
            "subreaper: a supervising process adopts every orphan of the plugin's processes and kills them all when the node stops or dies; they survive only if that supervisor is itself killed from outside".to_string()
        }
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
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
        if !crate::valid_env_name(key) {
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
        if !crate::valid_env_name(key) || key == LISTEN_VAR {
            return Err(format!(
                "providers.{name}.env: {key:?} is not a variable name the plugin may be given"
            ));
        }
        vars.insert(key.into(), value.into());
    }
    Ok(vars.into_iter().collect())
}

/// Refuses a `command` whose program cannot be found (a typo would otherwise restart
/// forever), looking it up as the plugin's `PATH` would.
fn findable(name: &str, cfg: &PluginConfig, env: &[(OsString, OsString)]) -> Result<(), String> {
    let Some(program) = cfg.command.first() else {
        return Err(format!("providers.{name}.command is empty"));
    };
    let is_file = |p: &std::path::Path| p.is_file();
    let found = if program.contains('/') {
        let path = PathBuf::from(program);
        let path = match (&cfg.working_dir, path.is_relative()) {
            (Some(dir), true) => dir.join(path),
            _ => path,
        };
        is_file(&path)
    } else {
        env.iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| std::env::split_paths(v).any(|dir| is_file(&dir.join(program))))
            .unwrap_or(false)
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "providers.{name}.command: {program:?} is not a file{}: give its path, or install it",
            if program.contains('/') {
                ""
            } else {
                " on the plugin's PATH"
            }
        ))
    }
}

struct Supervise {
    name: String,
    command: Vec<String>,
    working_dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    max_backoff: Duration,
    start_timeout: Duration,
    sandbox: Arc<Sandbox>,
    state: watch::Sender<Running>,
}

impl Supervise {
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let began = Instant::now();
            let ended = match self.start_once() {
                Ok((mut process, address, channel)) => {
                    // Calls go to it only once it answers: until then they wait (up to
                    // call_timeout) for the channel instead of failing an attempt.
                    let ready = ready(channel.clone(), self.start_timeout);
                    tokio::pin!(ready);
                    let mut waiting = true;
                    let mut never_answered = false;
                    let outcome = loop {
                        tokio::select! {
                            status = process.wait() => break Some(status),
                            _ = &mut stop => break None,
                            answered = &mut ready, if waiting => {
                                waiting = false;
                                if answered {
                                    self.state.send_modify(|r| r.channel = Some(channel.clone()));
                                } else {
                                    never_answered = true;
                                    process.kill_now();
                                }
                            }
                        }
                    };
                    match outcome {
                        Some(status) => {
                            // Reap what it left and mark it gone.
                            process.finish().await;
                            if never_answered {
                                format!(
                                    "did not answer Health within start_timeout ({:?}), so it was killed",
                                    self.start_timeout
                                )
                            } else {
                                exit_text(status)
                            }
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

    /// Starts one process on a fresh loopback port; its channel is published once it
    /// answers.
    fn start_once(&self) -> Result<(AgentProcess, String, Channel), String> {
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
        let channel = super::endpoint(&format!("http://{address}"), Duration::from_secs(2))
            .map_err(|e| format!("bad plugin address {address}: {e}"))?
            .connect_lazy();
        let pid = process.pid();
        tracing::info!(provider = %self.name, %address, pid, "started the plugin");
        self.state.send_modify(|r| {
            r.channel = None;
            r.address = address.clone();
            r.pid = Some(pid);
            r.starts += 1;
        });
        Ok((process, address, channel))
    }
}

/// Whether the plugin at `channel` answers Health within `limit`.
async fn ready(channel: Channel, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut client = ProviderPluginClient::new(channel);
    loop {
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            client.health(wire::HealthRequest {}),
        )
        .await;
        if matches!(answer, Ok(Ok(_))) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
