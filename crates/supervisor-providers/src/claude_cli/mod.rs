//! The `claude_cli` provider: runs the Claude Code CLI headless
//! (`claude -p <prompt> --output-format stream-json ...`) for one attempt.
//!
//! Why a CLI and not the API: Claude Code brings its own agent loop and tools (read, edit,
//! run commands), so a task that has to change a repository is done by the CLI itself.
//! Supervisor's part is to start it with the specialty's tool policy, follow its stream as
//! events, bound it in time, collect what it changed, and treat it as untrusted: it gets
//! no secret of the node (an allowlisted environment with its own HOME and TMPDIR), and
//! nothing it starts outlives the attempt or the node (a PID namespace, cgroup or
//! subreaper per attempt). Its changes come back as a diff and, on success, as a commit
//! on the attempt's branch, which is kept; the worktree itself is removed.
//!
//! The parts: `command` (argv), `environment` (what the CLI's environment holds),
//! `sandbox` and `shim` (confining and ending the CLI's processes), `stream` (stream-json
//! lines into events and an outcome), `worktree` (the attempt directory: worktree or
//! scratch directory, HOME, TMPDIR; the commit) and `recovery` (cleaning up after a node
//! that died).

mod command;
pub(crate) mod environment;
mod hooks;
mod recovery;
pub(crate) mod sandbox;
mod shim;
mod stream;
mod thread;
mod worktree;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use supervisor_model::TaskType;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::time::Instant;

use crate::config::{BuildContext, ClaudeCliConfig};
use crate::pricing::PriceTable;
use crate::secret::ApiKey;
use crate::{
    Artifact, Capabilities, EventSink, Health, Provider, ProviderError, ProviderEvent,
    ProviderOutput, ProviderRequest, Recovery,
};
use environment::AttemptDirs;
use sandbox::{AgentProcess, Sandbox};
use stream::{Exit, LineReader, StreamParser, Tail};
use worktree::{Author, Workspace};

pub use recovery::recover;

/// Bytes of stderr kept (the end of it).
const STDERR_CAP: usize = 64 * 1024;
/// After the CLI exits, how long its output pipes may stay open (held by a child it left
/// behind) before the rest of its processes are killed.
const DRAIN: Duration = Duration::from_secs(2);
/// Time limit of the `--version` health probe.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Model priced by `estimate_cost` when none is configured.
const ESTIMATE_MODEL: &str = "claude-sonnet-4-5";
/// Output tokens `estimate_cost` assumes.
const ESTIMATE_OUTPUT_TOKENS: u64 = 2000;
/// Longest first line of a prompt quoted in a commit message.
const COMMIT_PROMPT_CHARS: usize = 200;

/// Builds the claude_cli provider named `name` from its config. Worktrees go under
/// `worktree_dir`, or `<data_dir>/worktrees` when it is unset. The key (if configured) is
/// loaded now, and how agent processes will be confined is detected now: an error names
/// what to fix (an unset key variable, an isolation this machine cannot give...).
pub fn build(
    name: &str,
    cfg: &ClaudeCliConfig,
    prices: Arc<PriceTable>,
    ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    Ok(Arc::new(ClaudeCliProvider::new(name, cfg, prices, ctx)?))
}

/// The Claude Code CLI as a provider. Build it with [`build`].
#[derive(Debug)]
pub struct ClaudeCliProvider {
    name: String,
    cfg: ClaudeCliConfig,
    prices: Arc<PriceTable>,
    worktree_root: PathBuf,
    key: Option<ApiKey>,
    author: Author,
    sandbox: Sandbox,
    hooks: crate::hooks::Hooks,
    /// Where conversation threads keep their HOME and session between turns.
    thread_root: PathBuf,
}

/// What one execution holds that must not outlive it. Dropping it (the execute future was
/// dropped) kills every process of the attempt at once, then removes the workspace in the
/// background.
#[derive(Default)]
struct Run {
    process: Option<AgentProcess>,
    workspace: Option<Workspace>,
    /// Whether a kept branch may stay (the run succeeded).
    keep_branch: bool,
    /// A thread's turn: the thread's directory on this node (see `thread`).
    thread: Option<thread::ThreadState>,
    /// A thread's lock: held until the workspace is gone.
    lock: Option<std::fs::File>,
}

impl Run {
    async fn cleanup(&mut self) {
        if let Some(p) = self.process.take() {
            p.terminate().await;
        }
        if let Some(w) = self.workspace.take() {
            w.remove(self.keep_branch).await;
        }
        self.lock = None;
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let mut process = self.process.take();
        let workspace = self.workspace.take();
        let keep_branch = self.keep_branch;
        let lock = self.lock.take();
        if let Some(p) = process.as_mut() {
            // Synchronously: the shim kills the attempt's processes as soon as its
            // lifeline closes, whether or not the task below ever runs.
            p.kill_now();
        }
        if process.is_none() && workspace.is_none() {
            return;
        }
        // Without a runtime (or if the task is dropped at shutdown) the parts' own Drop
        // removes the workspace, blocking; recovery at the next start removes the rest.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Some(mut p) = process {
                    p.finish().await;
                }
                if let Some(w) = workspace {
                    w.remove(keep_branch).await;
                }
                drop(lock);
            });
        } else {
            // The workspace's own Drop cleans up (blocking) before the thread's lock goes.
            drop(process);
            drop(workspace);
            drop(lock);
        }
    }
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// The commit message of an attempt's changes: what the task was, then the first line of
/// its prompt.
fn commit_message(request: &ProviderRequest) -> String {
    let first_line = request
        .prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty());
    let mut message = format!(
        "supervisor: {} task {} attempt {}\n",
        request.task_type.as_str(),
        request.task_id,
        request.attempt
    );
    if let Some(line) = first_line {
        message.push('\n');
        message.push_str(&stream::first_chars(line, COMMIT_PROMPT_CHARS));
        message.push('\n');
    }
    message
}

impl ClaudeCliProvider {
    fn new(
        name: &str,
        cfg: &ClaudeCliConfig,
        prices: Arc<PriceTable>,
        ctx: &BuildContext,
    ) -> Result<Self, String> {
        if cfg.binary.as_os_str().is_empty() {
            return Err(format!("provider {name}: binary must not be empty"));
        }
        if cfg.max_turns == 0 {
            return Err(format!("provider {name}: max_turns must be at least 1"));
        }
        environment::validate(name, cfg)?;
        if let Some(url) = &cfg.base_url {
            reqwest::Url::parse(url)
                .map_err(|e| format!("provider {name}: base_url {url:?} is not a URL: {e}"))?;
        }
        let author =
            Author::parse(&cfg.commit_author).map_err(|e| format!("provider {name}: {e}"))?;
        let key = cfg.key_source().load(name, false)?;
        let root = cfg
            .worktree_dir
            .clone()
            .unwrap_or_else(|| ctx.data_dir.join("worktrees"));
        let root = std::path::absolute(&root).map_err(|e| {
            format!(
                "provider {name}: worktree_dir {} cannot be made absolute: {e}",
                root.display()
            )
        })?;
        let sandbox =
            Sandbox::detect(cfg.isolation).map_err(|e| format!("provider {name}: {e}"))?;
        tracing::info!(provider = name, sandbox = %sandbox.describe(), "claude_cli: agent processes are confined");
        Ok(ClaudeCliProvider {
            name: name.to_string(),
            cfg: cfg.clone(),
            prices,
            worktree_root: root,
            key,
            author,
            sandbox,
            hooks: ctx.hooks.clone(),
            thread_root: std::path::absolute(ctx.data_dir.join("claude-threads").join(name))
                .map_err(|e| {
                    format!("provider {name}: the data directory cannot be made absolute: {e}")
                })?,
        })
    }

    fn binary_name(&self) -> String {
        self.cfg.binary.display().to_string()
    }

    fn not_installed(&self) -> String {
        let bin = self.binary_name();
        if self.cfg.binary.components().count() > 1 {
            format!(
                "the Claude Code CLI was not found at {bin}; install it there or set `binary` in [providers.{}] to its path",
                self.name
            )
        } else {
            format!(
                "the Claude Code CLI `{bin}` was not found on PATH; install it (npm install -g @anthropic-ai/claude-code) or set `binary` in [providers.{}] to its full path",
                self.name
            )
        }
    }

    fn spawn_error(&self, e: std::io::Error) -> ProviderError {
        match e.kind() {
            std::io::ErrorKind::NotFound => ProviderError::Permanent {
                kind: "not_installed",
                message: self.not_installed(),
            },
            std::io::ErrorKind::PermissionDenied => ProviderError::Permanent {
                kind: "not_installed",
                message: format!(
                    "{} cannot be executed ({e}); set `binary` in [providers.{}] to the Claude Code CLI",
                    self.binary_name(),
                    self.name
                ),
            },
            std::io::ErrorKind::ArgumentListTooLong => ProviderError::Permanent {
                kind: "context_too_long",
                message: format!("the prompt is too long for a command line: {e}"),
            },
            _ => ProviderError::Retryable {
                kind: "cli_failed",
                message: format!(
                    "could not start {} ({} sandbox): {e}",
                    self.binary_name(),
                    self.sandbox.summary()
                ),
                retry_after: None,
            },
        }
    }

    /// Makes the attempt directory: a worktree of the context's `repo` at `ref`, or a
    /// scratch dir, with the agent's HOME and TMPDIR. A thread's turn works in the
    /// thread's directory, on the thread's branch from its tip once an earlier turn made
    /// it (see `thread`): that branch is then never deleted, only put back when the
    /// attempt fails.
    async fn workspace(&self, request: &ProviderRequest) -> Result<Workspace, ProviderError> {
        let (name, branch) = match &request.thread {
            Some(turn) => (thread::workspace_name(&turn.id), thread::branch(&turn.id)),
            None => {
                let name = worktree::slug(&request.task_id, request.attempt);
                let branch = format!("supervisor/{name}");
                (name, branch)
            }
        };
        let mut existing = false;
        let repo = match request.context.get("repo") {
            Some(repo) => {
                let mut git_ref = request
                    .context
                    .get("ref")
                    .map(|r| r.trim())
                    .filter(|r| !r.is_empty())
                    .unwrap_or("HEAD");
                if request.thread.is_some() && worktree::branch_exists(repo, &branch).await {
                    existing = true;
                    git_ref = &branch;
                }
                Some((repo.as_str(), git_ref))
            }
            None => None,
        };
        Workspace::create(&self.worktree_root, &name, repo, &branch, existing).await
    }

    /// `text` without the provider's key, which the agent has in its environment and
    /// could print or write into a file.
    fn redact(&self, text: String) -> String {
        match &self.key {
            Some(key) if text.contains(key.expose()) => key.redact(&text),
            _ => text,
        }
    }

    fn redact_error(&self, e: ProviderError) -> ProviderError {
        crate::http::redact_error(e, self.key.as_ref())
    }

    /// A hint for a failed run that may be the CLI refusing to bypass permissions as root.
    fn root_bypass_hint(&self, args: &[std::ffi::OsString]) -> Option<String> {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        (root && environment::bypasses_permissions(args) && !self.cfg.env.contains_key("IS_SANDBOX"))
            .then(|| {
                format!(
                    "note: as root the Claude CLI refuses bypassPermissions unless IS_SANDBOX=1; if this node is a disposable sandbox, set it in [providers.{}.env]",
                    self.name
                )
            })
    }

    /// Runs the CLI in `run`'s workspace; leaves the process and workspace in `run` for the
    /// caller to clean up.
    async fn attempt(
        &self,
        request: &ProviderRequest,
        sink: &EventSink,
        run: &mut Run,
    ) -> Result<ProviderOutput, ProviderError> {
        let deadline = Instant::now() + request.timeout;
        // Before the agent runs: a hook this node does not have fails the task now.
        let hooks = self.hooks.select(request.task_type, &request.context)?;
        let Some(ws) = run.workspace.as_mut() else {
            return Err(ProviderError::Retryable {
                kind: "worktree_failed",
                message: "internal: the attempt has no workspace".into(),
                retry_after: None,
            });
        };
        let cgroup = self.sandbox.cgroup_for(
            &worktree::slug(&request.task_id, request.attempt),
            &recovery::Owner::current(),
        );
        if cgroup.is_some() {
            ws.set_cgroup(cgroup.clone())?;
        }
        // A thread's turn: its own HOME, and its CLI session resumed when this node ran
        // the turn before.
        let thread = request.thread.as_ref().zip(run.thread.as_ref());
        let mut resume = None;
        if let Some((turn, state)) = &thread {
            resume = state.resumable(turn.previous.as_deref()).await;
            let activity = match &resume {
                Some(session) => {
                    // Taken, under the thread's lock: only this attempt's success saves a
                    // session again, so one that failed half-way is never resumed.
                    state.forget().await;
                    format!("resuming the thread's session {session} with the new message")
                }
                None => {
                    "a new session for the thread, the conversation so far in the prompt".into()
                }
            };
            sink.send(ProviderEvent::Activity(activity));
        }
        let home = thread.as_ref().map_or(ws.home(), |(_, state)| state.home());
        let args = command::args(&self.cfg, request, resume.as_deref());
        let env = environment::agent(
            &self.cfg,
            self.key.as_ref(),
            AttemptDirs {
                home,
                tmp: ws.tmp(),
            },
        );
        let mut cmd = tokio::process::Command::new(&self.cfg.binary);
        cmd.args(&args).current_dir(ws.path()).env_clear().envs(env);
        let (process, stdout, mut stderr) = self
            .sandbox
            .spawn(cmd, cgroup.as_deref())
            .map_err(|e| self.spawn_error(e))?;
        let process = run.process.insert(process);

        let mut lines = LineReader::new(BufReader::new(stdout), stream::MAX_LINE);
        let mut tail = Tail::new(STDERR_CAP);
        let mut parser = StreamParser::new(
            self.prices.clone(),
            self.cfg.model.as_deref(),
            self.key.clone(),
        );
        let mut chunk = vec![0u8; 8192];
        let mut status: Option<ExitStatus> = None;
        let (mut out_eof, mut err_eof) = (false, false);
        let mut drain_until: Option<Instant> = None;

        let failure: Option<ProviderError> = loop {
            if status.is_some() && out_eof && err_eof {
                break None;
            }
            let limit = drain_until.map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                line = lines.next_line(), if !out_eof => match line {
                    Ok(Some(line)) => {
                        if let Err(e) = parser.line(&line, sink) {
                            break Some(e);
                        }
                    }
                    Ok(None) => out_eof = true,
                    Err(e) => break Some(ProviderError::Retryable {
                        kind: "bad_stream",
                        message: format!("reading claude's output failed: {e}"),
                        retry_after: None,
                    }),
                },
                n = stderr.read(&mut chunk), if !err_eof => match n {
                    Ok(0) | Err(_) => err_eof = true,
                    Ok(n) => tail.push(&chunk[..n]),
                },
                st = process.wait(), if status.is_none() => match st {
                    Ok(st) => {
                        status = Some(st);
                        drain_until = Some(Instant::now() + DRAIN);
                    }
                    Err(e) => break Some(ProviderError::Retryable {
                        kind: "cli_failed",
                        message: format!("waiting for claude failed: {e}"),
                        retry_after: None,
                    }),
                },
                _ = tokio::time::sleep_until(limit) => {
                    if Instant::now() >= deadline {
                        let excerpt = tail.excerpt();
                        break Some(ProviderError::Retryable {
                            kind: "timeout",
                            message: if excerpt.is_empty() {
                                format!("claude did not finish within {:?}", request.timeout)
                            } else {
                                format!("claude did not finish within {:?}; stderr: {excerpt}", request.timeout)
                            },
                            retry_after: None,
                        });
                    }
                    // The CLI exited but something it started holds its output open.
                    break None;
                }
            }
        };

        // Ends whatever is left of the attempt's processes before anything else, also on
        // success: the CLI may have left background processes.
        if let Some(p) = run.process.take() {
            p.terminate().await;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let exit = match &status {
            Some(st) => Exit {
                success: st.success(),
                description: describe(st),
            },
            None => Exit {
                success: false,
                description: "exit status unknown".into(),
            },
        };
        let session = parser.session().map(str::to_string);
        let outcome = match parser.finish(&exit, &tail.excerpt(), self.cfg.max_turns) {
            Ok(outcome) => outcome,
            Err(e) => {
                return Err(match (e, self.root_bypass_hint(&args)) {
                    (
                        ProviderError::Retryable {
                            kind,
                            message,
                            retry_after,
                        },
                        Some(hint),
                    ) => ProviderError::Retryable {
                        kind,
                        message: format!("{message}; {hint}"),
                        retry_after,
                    },
                    (ProviderError::Permanent { kind, message }, Some(hint)) => {
                        ProviderError::Permanent {
                            kind,
                            message: format!("{message}; {hint}"),
                        }
                    }
                    (e, None) => e,
                });
            }
        };
        if !hooks.is_empty()
            && let Some(ws) = run.workspace.as_ref()
        {
            let checks = hooks::HookRun {
                sandbox: &self.sandbox,
                cgroup: cgroup.as_deref(),
                dir: ws.path(),
                env: environment::agent(
                    &self.cfg,
                    None,
                    AttemptDirs {
                        home: ws.home(),
                        tmp: ws.tmp(),
                    },
                ),
                deadline,
                redact: &|text| self.redact(text),
            };
            checks
                .run_all(&hooks, request, sink)
                .await
                .map_err(|e| self.redact_error(e))?;
        }
        let artifacts = self.collect_changes(request, sink, run).await?;
        run.keep_branch = true;
        if let (Some(state), Some(session)) = (&run.thread, &session) {
            state.save(session, &request.task_id).await;
        }
        Ok(ProviderOutput {
            output: self.redact(outcome.output),
            usage: outcome.usage,
            cost_micros: outcome.cost_micros,
            model: outcome.model,
            artifacts,
        })
    }

    /// After a successful run: the diff of the worktree as an artifact and, with
    /// `keep_branch`, a commit of it on the attempt's branch (and an artifact naming it).
    async fn collect_changes(
        &self,
        request: &ProviderRequest,
        sink: &EventSink,
        run: &mut Run,
    ) -> Result<Vec<Artifact>, ProviderError> {
        let Some(ws) = run.workspace.as_mut() else {
            return Ok(Vec::new());
        };
        let Some(diff) = ws.diff().await? else {
            return Ok(Vec::new());
        };
        let leaks_key = self.key.as_ref().is_some_and(|k| diff.contains(k.expose()));
        let mut artifacts = vec![Artifact {
            name: "changes.diff".into(),
            media_type: "text/x-diff".into(),
            content: self.redact(diff),
        }];
        if !self.cfg.keep_branch {
            return Ok(artifacts);
        }
        if leaks_key {
            // A commit would put the key into the repository's history.
            sink.send(ProviderEvent::Activity(
                "the changes contain this provider's API key: not committed (the diff shows it redacted)".into(),
            ));
            return Ok(artifacts);
        }
        if let Some(kept) = ws.commit(&self.author, &commit_message(request)).await? {
            sink.send(ProviderEvent::Activity(format!(
                "changes committed as {} on branch {} in {}",
                &kept.commit[..kept.commit.len().min(12)],
                kept.branch,
                kept.repo.display()
            )));
            artifacts.push(Artifact {
                name: "branch".into(),
                media_type: "text/plain".into(),
                content: format!(
                    "repo {}\nbranch {}\ncommit {}\n",
                    kept.repo.display(),
                    kept.branch,
                    kept.commit
                ),
            });
        }
        Ok(artifacts)
    }
}

#[async_trait::async_trait]
impl Provider for ClaudeCliProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "claude_cli"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            task_types: TaskType::ALL.to_vec(),
            models: vec![self.cfg.model.clone().unwrap_or_else(|| "default".into())],
            max_context_tokens: 200_000,
            streaming: true,
            tools: true,
            repository: true,
        }
    }

    async fn execute(
        &self,
        request: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let mut run = Run::default();
        if let Some(turn) = &request.thread {
            let state = thread::ThreadState::open(&self.thread_root, &turn.id).await?;
            run.lock = Some(state.lock(request.timeout).await?);
            run.thread = Some(state);
        }
        run.workspace = Some(self.workspace(&request).await?);
        let result = self.attempt(&request, &sink, &mut run).await;
        run.cleanup().await;
        result.map_err(|e| self.redact_error(e))
    }

    async fn health(&self) -> Health {
        let mut cmd = tokio::process::Command::new(&self.cfg.binary);
        cmd.arg("--version")
            .env_clear()
            .envs(environment::probe())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(HEALTH_TIMEOUT, cmd.output()).await {
            Err(_) => Health {
                healthy: false,
                detail: format!(
                    "{} --version did not answer within {HEALTH_TIMEOUT:?}",
                    self.binary_name()
                ),
            },
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Health {
                healthy: false,
                detail: format!("not installed: {}", self.not_installed()),
            },
            Ok(Err(e)) => Health {
                healthy: false,
                detail: format!("cannot run {}: {e}", self.binary_name()),
            },
            Ok(Ok(out)) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let version = if version.is_empty() {
                    "version unknown (empty --version output)".into()
                } else {
                    stream::one_line(&version, 200)
                };
                Health {
                    healthy: true,
                    detail: format!("{version}; sandbox: {}", self.sandbox.summary()),
                }
            }
            Ok(Ok(out)) => Health {
                healthy: false,
                detail: format!(
                    "{} --version failed ({}): {}",
                    self.binary_name(),
                    describe(&out.status),
                    stream::last_chars(String::from_utf8_lossy(&out.stderr).trim(), 1000)
                ),
            },
        }
    }

    fn sandbox(&self) -> Option<String> {
        Some(self.sandbox.describe())
    }

    async fn recover(&self) -> Recovery {
        let root = self.worktree_root.clone();
        let threads = self.thread_root.clone();
        let swept = move || {
            let removed = thread::sweep(&threads);
            if removed > 0 {
                tracing::info!(
                    removed,
                    "claude_cli: removed thread directories unused for 30 days"
                );
            }
            recover(&root)
        };
        match tokio::task::spawn_blocking(swept).await {
            Ok(report) => report,
            Err(e) => Recovery {
                problems: vec![format!(
                    "recovery of {} failed: {e}",
                    self.worktree_root.display()
                )],
                ..Recovery::default()
            },
        }
    }

    fn work_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.worktree_root.clone())
    }

    fn estimate_cost(&self, request: &ProviderRequest) -> u64 {
        let model = self.cfg.model.as_deref().unwrap_or(ESTIMATE_MODEL);
        let Some(price) = self
            .prices
            .price(model)
            .or_else(|| self.prices.price(ESTIMATE_MODEL))
        else {
            return 0;
        };
        let bytes = request.prompt.len()
            + request.system_prompt.len()
            + request
                .context
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let usage = supervisor_model::Usage {
            input_tokens: (bytes / 4) as u64,
            output_tokens: ESTIMATE_OUTPUT_TOKENS,
            ..Default::default()
        };
        price.cost_micros(&usage)
    }
}
