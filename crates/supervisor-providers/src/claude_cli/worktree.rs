//! Where a run happens: a fresh git worktree of the task's repository, or an empty scratch
//! directory when the task has no repository.
//!
//! Why a worktree: the agent edits files and runs commands, and it must neither touch the
//! user's checkout nor see another attempt's half-done edits. A worktree on its own branch
//! (`supervisor/<task>-a<attempt>`) gives each attempt a private copy that shares the
//! repository's objects, and its changes come back as a diff against the commit it
//! started from. Why a scratch directory otherwise: the CLI must not work in whatever
//! directory the node happens to run in. Either is removed after the run, also when it
//! fails, times out or is abandoned.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::command::GIT_ENV;
use super::stream::last_chars;
use crate::ProviderError;

/// Largest diff returned whole; beyond it the artifact is cut and says so.
const MAX_DIFF: usize = 16 * 1024 * 1024;

/// A directory a run works in, removed by [`Workspace::remove`] (or, as a last resort,
/// on drop, blocking).
#[derive(Debug)]
pub(super) struct Workspace {
    path: PathBuf,
    git: Option<GitWorktree>,
    removed: bool,
}

#[derive(Debug)]
struct GitWorktree {
    repo: PathBuf,
    branch: String,
    base: String,
}

/// `task_id` made safe for a directory and a branch name.
pub(super) fn slug(task_id: &str, attempt: u32) -> String {
    let mut s: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    if s.is_empty() {
        s.push_str("task");
    }
    format!("{s}-a{attempt}")
}

fn bad_request(message: String) -> ProviderError {
    ProviderError::Permanent {
        kind: "bad_request",
        message,
    }
}

fn failed(message: String) -> ProviderError {
    ProviderError::Retryable {
        kind: "worktree_failed",
        message,
        retry_after: None,
    }
}

fn git_command(dir: &Path, args: &[&OsStr]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    for var in GIT_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs git in `dir`; a missing git is a permanent failure.
async fn git(dir: &Path, args: &[&OsStr]) -> Result<Output, ProviderError> {
    git_command(dir, args).output().await.map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ProviderError::Permanent {
                kind: "not_installed",
                message: "git was not found on PATH; it is needed for tasks with a repo".into(),
            }
        } else {
            failed(format!("could not run git: {e}"))
        }
    })
}

fn stderr_of(out: &Output) -> String {
    last_chars(String::from_utf8_lossy(&out.stderr).trim(), 1000)
}

impl Workspace {
    /// An empty directory `<root>/<name>` (replacing a stale one).
    pub(super) async fn scratch(root: &Path, name: &str) -> Result<Workspace, ProviderError> {
        let root = prepare_root(root).await?;
        let path = root.join(name);
        let ws = Workspace {
            path,
            git: None,
            removed: false,
        };
        if tokio::fs::try_exists(&ws.path).await.unwrap_or(false) {
            let _ = tokio::fs::remove_dir_all(&ws.path).await;
        }
        if let Err(e) = tokio::fs::create_dir(&ws.path).await {
            let message = format!("cannot create {}: {e}", ws.path.display());
            ws.remove().await;
            return Err(failed(message));
        }
        Ok(ws)
    }

    /// A new worktree `<root>/<name>` of `repo` at `git_ref`, on the new branch `branch`.
    /// A `repo` that is not a git repository or a `git_ref` that is not a commit there is
    /// a permanent `bad_request`.
    pub(super) async fn worktree(
        root: &Path,
        repo: &str,
        git_ref: &str,
        name: &str,
        branch: &str,
    ) -> Result<Workspace, ProviderError> {
        let repo_path = tokio::fs::canonicalize(repo)
            .await
            .map_err(|e| bad_request(format!("repo {repo} cannot be used: {e}")))?;
        let out = git(&repo_path, &["rev-parse".as_ref(), "--git-dir".as_ref()]).await?;
        if !out.status.success() {
            return Err(bad_request(format!(
                "repo {repo} is not a git repository: {}",
                stderr_of(&out)
            )));
        }
        if git_ref.is_empty() || git_ref.starts_with('-') {
            return Err(bad_request(format!(
                "ref {git_ref:?} is not a valid git ref (repo {repo})"
            )));
        }
        let spec = format!("{git_ref}^{{commit}}");
        let out = git(
            &repo_path,
            &[
                "rev-parse".as_ref(),
                "--verify".as_ref(),
                "--quiet".as_ref(),
                "--end-of-options".as_ref(),
                spec.as_ref(),
            ],
        )
        .await?;
        let base = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || base.is_empty() {
            return Err(bad_request(format!(
                "ref {git_ref} is not a commit in repo {repo}"
            )));
        }

        let root = prepare_root(root).await?;
        let ws = Workspace {
            path: root.join(name),
            git: Some(GitWorktree {
                repo: repo_path,
                branch: branch.to_string(),
                base,
            }),
            removed: false,
        };
        // A leftover of a run that could not clean up (the node died) would block the add.
        if tokio::fs::try_exists(&ws.path).await.unwrap_or(false) {
            ws.remove_files().await;
        }
        let Some(g) = ws.git.as_ref() else {
            return Err(failed("internal: worktree without git".into()));
        };
        let out = git(
            &g.repo,
            &[
                "-c".as_ref(),
                "core.hooksPath=/dev/null".as_ref(),
                "worktree".as_ref(),
                "add".as_ref(),
                "-B".as_ref(),
                g.branch.as_ref(),
                ws.path.as_os_str(),
                g.base.as_ref(),
            ],
        )
        .await;
        match out {
            Ok(out) if out.status.success() => Ok(ws),
            Ok(out) => {
                let message = format!(
                    "git worktree add {} in {repo} failed: {}",
                    ws.path.display(),
                    stderr_of(&out)
                );
                ws.remove().await;
                Err(failed(message))
            }
            Err(e) => {
                ws.remove().await;
                Err(e)
            }
        }
    }

    /// The directory the CLI works in.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Everything that changed in a worktree since its base commit, untracked files
    /// included (ignored files excepted); `None` for a scratch directory or no change.
    pub(super) async fn diff(&self) -> Result<Option<String>, ProviderError> {
        let Some(g) = &self.git else {
            return Ok(None);
        };
        let out = git(&self.path, &["add".as_ref(), "-A".as_ref()]).await?;
        if !out.status.success() {
            return Err(failed(format!(
                "git add -A in {} failed: {}",
                self.path.display(),
                stderr_of(&out)
            )));
        }
        let out = git(
            &self.path,
            &[
                "diff".as_ref(),
                "--cached".as_ref(),
                "--no-color".as_ref(),
                "--no-ext-diff".as_ref(),
                g.base.as_ref(),
                "--".as_ref(),
            ],
        )
        .await?;
        if !out.status.success() {
            return Err(failed(format!(
                "git diff in {} failed: {}",
                self.path.display(),
                stderr_of(&out)
            )));
        }
        if out.stdout.is_empty() {
            return Ok(None);
        }
        let total = out.stdout.len();
        let mut diff = String::from_utf8_lossy(&out.stdout[..total.min(MAX_DIFF)]).into_owned();
        if total > MAX_DIFF {
            diff.push_str(&format!(
                "\n[diff cut at {MAX_DIFF} of {total} bytes; the worktree was removed]\n"
            ));
        }
        Ok(Some(diff))
    }

    /// Removes the directory (and the worktree's registration and branch).
    pub(super) async fn remove(mut self) {
        self.remove_files().await;
        if let Some(g) = &self.git {
            let out = git(
                &g.repo,
                &["branch".as_ref(), "-D".as_ref(), g.branch.as_ref()],
            )
            .await;
            if let Ok(out) = out
                && !out.status.success()
            {
                tracing::debug!(branch = g.branch, stderr = %stderr_of(&out), "claude_cli: branch not deleted");
            }
        }
        self.removed = true;
    }

    async fn remove_files(&self) {
        if let Some(g) = &self.git {
            let _ = git(
                &g.repo,
                &[
                    "worktree".as_ref(),
                    "remove".as_ref(),
                    "--force".as_ref(),
                    "--force".as_ref(),
                    self.path.as_os_str(),
                ],
            )
            .await;
        }
        if tokio::fs::try_exists(&self.path).await.unwrap_or(false)
            && let Err(e) = tokio::fs::remove_dir_all(&self.path).await
        {
            tracing::warn!(path = %self.path.display(), error = %e, "claude_cli: could not remove a workspace");
        }
        if let Some(g) = &self.git {
            let _ = git(&g.repo, &["worktree".as_ref(), "prune".as_ref()]).await;
        }
    }

    fn remove_blocking(&mut self) {
        let run = |dir: &Path, args: &[&OsStr]| {
            let mut cmd = std::process::Command::new("git");
            cmd.arg("-C").arg(dir).args(args);
            for var in GIT_ENV {
                cmd.env_remove(var);
            }
            let _ = cmd.stdin(std::process::Stdio::null()).output();
        };
        if let Some(g) = &self.git {
            let path: OsString = self.path.clone().into();
            run(
                &g.repo,
                &[
                    "worktree".as_ref(),
                    "remove".as_ref(),
                    "--force".as_ref(),
                    "--force".as_ref(),
                    &path,
                ],
            );
        }
        if self.path.exists() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
        if let Some(g) = &self.git {
            run(&g.repo, &["worktree".as_ref(), "prune".as_ref()]);
            run(
                &g.repo,
                &["branch".as_ref(), "-D".as_ref(), g.branch.as_ref()],
            );
        }
        self.removed = true;
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !self.removed {
            self.remove_blocking();
        }
    }
}

/// Creates the worktree root and returns it absolute and canonical (so the CLI's cwd can
/// be compared with it, and git does not read it relative to the repository).
async fn prepare_root(root: &Path) -> Result<PathBuf, ProviderError> {
    tokio::fs::create_dir_all(root).await.map_err(|e| {
        failed(format!(
            "cannot create worktree_dir {}: {e}",
            root.display()
        ))
    })?;
    tokio::fs::canonicalize(root).await.map_err(|e| {
        failed(format!(
            "cannot resolve worktree_dir {}: {e}",
            root.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe_for_paths_and_branches() {
        assert_eq!(slug("0197-abc", 2), "0197-abc-a2");
        assert_eq!(slug("../x y", 1), "---x-y-a1");
        assert_eq!(slug("", 1), "task-a1");
    }
}
