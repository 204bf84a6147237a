//! Running the attempt's hooks (see [`crate::hooks`]) in its worktree, after the CLI
//! finished and before its changes are collected.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::sandbox::Sandbox;
use super::stream::Tail;
use crate::hooks::{ChosenHook, OnFailure};
use crate::{EventSink, ProviderError, ProviderEvent, ProviderRequest};

/// Bytes of a hook's output kept (the end of it; its event and error quote the last
/// 2,000 characters).
const OUTPUT_CAP: usize = 16 * 1024;

/// Where and how the hooks of one attempt run.
pub(super) struct HookRun<'a> {
    /// The sandbox the agent ran in.
    pub sandbox: &'a Sandbox,
    /// The attempt's cgroup, when there is one (free again once the CLI's processes ended).
    pub cgroup: Option<&'a Path>,
    /// The attempt's worktree (or scratch directory).
    pub dir: &'a Path,
    /// The agent's environment without the provider's key.
    pub env: BTreeMap<OsString, OsString>,
    /// When the attempt's time runs out.
    pub deadline: Instant,
    /// Takes the provider's key out of what a hook printed (the agent may have written
    /// it into a file a test prints).
    pub redact: &'a (dyn Fn(String) -> String + Sync),
}

impl HookRun<'_> {
    /// Runs `hooks` in order; the first that fails ends the attempt with an error that
    /// names it and quotes the end of its output.
    pub(super) async fn run_all(
        &self,
        hooks: &[ChosenHook<'_>],
        request: &ProviderRequest,
        sink: &EventSink,
    ) -> Result<(), ProviderError> {
        for hook in hooks {
            sink.send(ProviderEvent::Activity(format!(
                "hook {}: running {}",
                hook.name,
                describe_command(&hook.config.command)
            )));
            let started = Instant::now();
            let failure = self.run_one(hook, request).await?;
            let took = started.elapsed();
            match failure {
                None => sink.send(ProviderEvent::Activity(format!(
                    "hook {} passed in {}",
                    hook.name,
                    seconds(took)
                ))),
                Some((why, output)) => {
                    let mut message = format!("hook {} failed: {why}", hook.name);
                    if !output.is_empty() {
                        message.push_str(&format!("; its output ends:\n{output}"));
                    }
                    let message = (self.redact)(message);
                    sink.send(ProviderEvent::Activity(message.clone()));
                    return Err(match hook.config.on_failure {
                        OnFailure::Retry => ProviderError::Retryable {
                            kind: "hook_failed",
                            message,
                            retry_after: None,
                        },
                        OnFailure::Fail => ProviderError::Permanent {
                            kind: "hook_failed",
                            message,
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs one hook: `Ok(None)` when it passed, `Ok(Some((why, output)))` when it failed,
    /// `Err` when it could not be started (or the attempt's time ran out).
    async fn run_one(
        &self,
        hook: &ChosenHook<'_>,
        request: &ProviderRequest,
    ) -> Result<Option<(String, String)>, ProviderError> {
        let mut env = self.env.clone();
        for (name, value) in &hook.config.env {
            env.insert(name.into(), value.into());
        }
        env.insert("SUPERVISOR_TASK_ID".into(), request.task_id.clone().into());
        env.insert(
            "SUPERVISOR_TASK_TYPE".into(),
            request.task_type.as_str().into(),
        );
        env.insert(
            "SUPERVISOR_ATTEMPT".into(),
            request.attempt.to_string().into(),
        );
        env.insert("SUPERVISOR_HOOK".into(), hook.name.into());
        let (program, args) = match hook.config.command.split_first() {
            Some(split) => split,
            None => {
                return Err(ProviderError::Permanent {
                    kind: "bad_request",
                    message: format!("hook {}: command is empty", hook.name),
                });
            }
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).current_dir(self.dir).env_clear().envs(env);
        let (mut process, mut stdout, mut stderr) =
            self.sandbox.spawn(cmd, self.cgroup).map_err(|e| {
                let message = format!(
                    "hook {}: could not start {program:?} in {}: {e}",
                    hook.name,
                    self.dir.display()
                );
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.kind() == std::io::ErrorKind::PermissionDenied
                {
                    ProviderError::Permanent {
                        kind: "hook_failed",
                        message: format!("{message}; fix `command` in [hooks.{}]", hook.name),
                    }
                } else {
                    ProviderError::Retryable {
                        kind: "hook_failed",
                        message,
                        retry_after: None,
                    }
                }
            })?;
        let mut limit = (Instant::now() + hook.config.timeout).min(self.deadline);
        let mut tail = Tail::new(OUTPUT_CAP);
        let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
        let (mut out_eof, mut err_eof) = (false, false);
        let mut status = None;
        // Its exit status once it ended and its output was read (or its drain time
        // passed); `None` when its time ran out first.
        let ended = loop {
            if status.is_some() && out_eof && err_eof {
                break status;
            }
            tokio::select! {
                n = stdout.read(&mut out_buf), if !out_eof => match n {
                    Ok(0) | Err(_) => out_eof = true,
                    Ok(n) => tail.push(&out_buf[..n]),
                },
                n = stderr.read(&mut err_buf), if !err_eof => match n {
                    Ok(0) | Err(_) => err_eof = true,
                    Ok(n) => tail.push(&err_buf[..n]),
                },
                st = process.wait(), if status.is_none() => match st {
                    Ok(st) => {
                        status = Some(st);
                        // Something it started may hold its output open: a moment to
                        // drain, then the rest is killed below.
                        limit = limit.min(Instant::now() + super::DRAIN);
                    }
                    Err(e) => {
                        process.terminate().await;
                        return Err(ProviderError::Retryable {
                            kind: "hook_failed",
                            message: format!("hook {}: waiting for it failed: {e}", hook.name),
                            retry_after: None,
                        });
                    }
                },
                _ = tokio::time::sleep_until(limit) => break status,
            }
        };
        // Whatever it left behind ends with it, as the agent's processes do.
        process.terminate().await;
        let output = tail.excerpt();
        let Some(status) = ended else {
            if Instant::now() >= self.deadline {
                return Err(ProviderError::Retryable {
                    kind: "hook_failed",
                    message: format!(
                        "hook {} did not finish within the attempt's time limit of {:?}",
                        hook.name, request.timeout
                    ),
                    retry_after: None,
                });
            }
            return Ok(Some((
                format!(
                    "it did not finish within its timeout of {}",
                    seconds(hook.config.timeout)
                ),
                output,
            )));
        };
        Ok((!status.success()).then(|| (super::describe(&status), output)))
    }
}

fn describe_command(command: &[String]) -> String {
    let line = command.join(" ");
    super::stream::first_chars(&line, 200)
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
