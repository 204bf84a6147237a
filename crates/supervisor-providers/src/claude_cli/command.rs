//! The CLI's command line, and the process group it runs in.
//!
//! Arguments are passed as separate argv entries, never through a shell, so nothing in a
//! prompt or a context value can be read as a command. The CLI runs in its own process
//! group because it starts tools (shells, test runners, servers) as its own children:
//! killing only the CLI on a timeout or a cancel would leave those running, so the whole
//! group is signalled, politely first.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::ProviderRequest;
use crate::config::ClaudeCliConfig;

/// Context keys that configure the run instead of being shown to the model.
pub(super) const RUN_KEYS: &[&str] = &["repo", "ref"];

/// Tools that change files or run commands: never allowed to a read-only specialty.
const WRITE_TOOLS: &[&str] = &["Edit", "MultiEdit", "Write", "NotebookEdit", "Bash"];

/// How long a signalled group gets to exit before it is killed.
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// How long to wait for a killed process to be reaped before giving up on it.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// The prompt with the task's context (except [`RUN_KEYS`]) appended as a `Context:` block.
pub(super) fn prompt_with_context(prompt: &str, context: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    // The CLI takes the prompt as a positional argument: one starting with `-` would be
    // read as an option, so it gets a leading newline, which the model does not mind.
    if prompt.starts_with('-') {
        out.push('\n');
    }
    out.push_str(prompt);
    let shown: Vec<_> = context
        .iter()
        .filter(|(k, _)| !RUN_KEYS.contains(&k.as_str()))
        .collect();
    if shown.is_empty() {
        return out;
    }
    out.push_str("\n\nContext:");
    for (key, value) in shown {
        let value = value.trim_end();
        if value.contains('\n') {
            out.push_str(&format!("\n- {key}:"));
            for line in value.lines() {
                out.push_str("\n    ");
                out.push_str(line);
            }
        } else {
            out.push_str(&format!("\n- {key}: {value}"));
        }
    }
    out
}

fn is_write_tool(tool: &str) -> bool {
    WRITE_TOOLS.iter().any(|w| {
        tool == *w
            || tool
                .strip_prefix(w)
                .is_some_and(|rest| rest.starts_with('('))
    })
}

/// The arguments after the binary, for one attempt of `request`.
///
/// A read-only request (`tools.can_write == false`) always runs in `plan` mode with the
/// write tools disallowed, whatever its policy lists.
pub(super) fn args(cfg: &ClaudeCliConfig, request: &ProviderRequest) -> Vec<OsString> {
    let policy = &request.tools;
    let mut allowed = policy.allowed_tools.clone();
    let mut disallowed = policy.disallowed_tools.clone();
    let mode = if policy.can_write {
        if policy.permission_mode.is_empty() {
            "acceptEdits".to_string()
        } else {
            policy.permission_mode.clone()
        }
    } else {
        allowed.retain(|t| !is_write_tool(t));
        for tool in WRITE_TOOLS {
            if !disallowed.iter().any(|t| t == tool) {
                disallowed.push((*tool).to_string());
            }
        }
        "plan".to_string()
    };

    let mut args: Vec<OsString> = vec![
        "-p".into(),
        prompt_with_context(&request.prompt, &request.context).into(),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
    ];
    if !request.system_prompt.is_empty() {
        args.push("--append-system-prompt".into());
        args.push(request.system_prompt.clone().into());
    }
    if !allowed.is_empty() {
        args.push("--allowedTools".into());
        args.push(allowed.join(",").into());
    }
    if !disallowed.is_empty() {
        args.push("--disallowedTools".into());
        args.push(disallowed.join(",").into());
    }
    args.push("--permission-mode".into());
    args.push(mode.into());
    args.push("--max-turns".into());
    args.push(cfg.max_turns.to_string().into());
    if let Some(model) = cfg.model.as_deref().filter(|m| !m.is_empty()) {
        args.push("--model".into());
        args.push(model.into());
    }
    args.extend(cfg.extra_args.iter().map(OsString::from));
    args
}

/// Git variables that would point a command at another repository than its cwd's.
pub(super) const GIT_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
];

/// A running CLI and its process group. Dropping it kills the group (SIGKILL, at once);
/// [`ProcessGroup::terminate`] is the polite way.
#[derive(Debug)]
pub(super) struct ProcessGroup {
    pgid: libc::pid_t,
    child: Option<Child>,
    done: bool,
}

impl ProcessGroup {
    /// Starts `cmd` as the leader of a new process group, stdin closed, stdout and stderr
    /// piped.
    pub(super) fn spawn(mut cmd: Command) -> io::Result<(ProcessGroup, ChildStdout, ChildStderr)> {
        cmd.process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let pgid = child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
            .unwrap_or(0);
        // From here on the group is owned: an early return drops and kills it.
        let mut group = ProcessGroup {
            pgid,
            child: None,
            done: false,
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        group.child = Some(child);
        match (pgid > 1, stdout, stderr) {
            (true, Some(out), Some(err)) => Ok((group, out, err)),
            _ => Err(io::Error::other(
                "the started process has no pid or no pipes",
            )),
        }
    }

    /// Waits for the leader (the CLI itself) to exit. Cancel safe.
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.wait().await,
            None => Err(io::Error::other("the process was already released")),
        }
    }

    /// Sends `signal` to every process of the group.
    pub(super) fn signal(&self, signal: libc::c_int) {
        // Never 0 or 1: killpg(0) would signal our own group.
        if self.pgid > 1 {
            // SAFETY: killpg has no memory-safety preconditions; a stale group only
            // yields ESRCH, which is ignored.
            unsafe {
                libc::killpg(self.pgid, signal);
            }
        }
    }

    /// Ends the group: SIGTERM, up to [`GRACE`] for the leader to exit, then SIGKILL to
    /// whatever is left (including children of a leader that already exited), and reaps
    /// the leader.
    pub(super) async fn terminate(mut self) {
        self.signal(libc::SIGTERM);
        if let Some(child) = self.child.as_mut() {
            let _ = tokio::time::timeout(GRACE, child.wait()).await;
        }
        // The group id stays reserved while any member lives, so this reaches only what the
        // CLI left behind (or nobody: ESRCH).
        self.signal(libc::SIGKILL);
        if let Some(child) = self.child.as_mut()
            && tokio::time::timeout(REAP_LIMIT, child.wait())
                .await
                .is_err()
        {
            tracing::warn!(
                pgid = self.pgid,
                "claude_cli: the CLI did not exit after SIGKILL"
            );
        }
        self.done = true;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.done {
            // The last resort (no runtime to wait on): kill now; the child handle kills
            // the leader again on drop and tokio reaps it.
            self.signal(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor_model::{Specialty, TaskType};

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn context_is_appended_except_run_keys() {
        let mut ctx = BTreeMap::new();
        ctx.insert("repo".to_string(), "/src/x".to_string());
        ctx.insert("ref".to_string(), "main".to_string());
        ctx.insert("issue".to_string(), "42".to_string());
        ctx.insert("log".to_string(), "a\nb\n".to_string());
        assert_eq!(
            prompt_with_context("Fix it", &ctx),
            "Fix it\n\nContext:\n- issue: 42\n- log:\n    a\n    b"
        );
        assert_eq!(prompt_with_context("--help", &BTreeMap::new()), "\n--help");
    }

    #[test]
    fn read_only_requests_run_in_plan_mode_without_write_tools() {
        let mut req = crate::ProviderRequest::simple(
            "t",
            TaskType::SecurityAudit,
            "audit",
            Duration::from_secs(1),
        );
        assert_eq!(req.specialty, Specialty::SecurityAnalyst);
        // Even a policy that lists write tools loses them when it cannot write.
        req.tools.allowed_tools.push("Bash(rm:*)".into());
        req.tools.permission_mode = "acceptEdits".into();
        let a = strings(&args(&ClaudeCliConfig::default(), &req));
        let at = |flag: &str| {
            a.iter()
                .position(|x| x == flag)
                .and_then(|i| a.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(at("--permission-mode"), "plan");
        assert_eq!(at("--allowedTools"), "Read,Grep,Glob,LS");
        assert_eq!(
            at("--disallowedTools"),
            "Edit,MultiEdit,Write,NotebookEdit,Bash"
        );
        assert!(!a.contains(&"--model".to_string()));
    }
}
