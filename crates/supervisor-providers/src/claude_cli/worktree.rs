//! Where a run happens: an attempt directory holding a fresh git worktree of the task's
//! repository (or an empty scratch directory when the task has no repository), and the
//! agent's own HOME and TMPDIR beside it.
//!
//! ```text
//! <worktree_dir>/<task>-a<attempt>/
//!     run.json   who made it, for recovery after a crash (see `recovery`)
//!     work/      the worktree (or scratch directory): the CLI's working directory
//!     home/      HOME
//!     tmp/       TMPDIR
//! ```
//!
//! Why a worktree: the agent edits files and runs commands, and it must neither touch the
//! user's checkout nor see another attempt's half-done edits. A worktree on its own branch
//! (`supervisor/<task>-a<attempt>`) gives each attempt a private copy that shares the
//! repository's objects, and its changes come back as a diff against the commit it
//! started from. HOME and TMPDIR are outside the worktree, so what the agent keeps there
//! never reaches the diff. After a successful run with changes, the changes are committed
//! on the branch, which is kept (`keep_branch`); the attempt directory is always removed,
//! also when the run fails, times out or is abandoned, and the branch of an attempt that
//! did not succeed is deleted.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::environment;
use super::recovery::{Owner, RunRecord};
use super::stream::last_chars;
use crate::ProviderError;

/// Largest diff returned whole; beyond it the artifact is cut and says so.
const MAX_DIFF: usize = 16 * 1024 * 1024;

/// Settings given to every git command run in a repository or worktree the agent had
/// access to: no hooks and no file-system monitor, which the agent could have installed
/// to run its own code outside its sandbox.
const SAFE_CONFIG: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
];

/// An attempt's directory, removed by [`Workspace::remove`] (or, as a last resort, on
/// drop, blocking).
#[derive(Debug)]
pub(super) struct Workspace {
    dir: PathBuf,
    work: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    git: Option<GitWorktree>,
    record: RunRecord,
    removed: bool,
}

#[derive(Debug)]
struct GitWorktree {
    repo: PathBuf,
    branch: String,
    base: String,
}

/// Who commits an attempt's changes: `Name <email>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    /// Parses `Name <email>`.
    pub(super) fn parse(text: &str) -> Result<Author, String> {
        let text = text.trim();
        let parsed = text.strip_suffix('>').and_then(|t| t.split_once('<'));
        match parsed {
            Some((name, email))
                if !name.trim().is_empty()
                    && !email.trim().is_empty()
                    && !email.contains(['<', '>', '\n'])
                    && !name.contains(['<', '>', '\n']) =>
            {
                Ok(Author {
                    name: name.trim().to_string(),
                    email: email.trim().to_string(),
                })
            }
            _ => Err(format!(
                "commit_author {text:?} is not of the form `Name <email>`"
            )),
        }
    }
}

/// A commit made on an attempt's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kept {
    pub repo: PathBuf,
    pub branch: String,
    pub commit: String,
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

/// A failure to set up or clean an attempt's directories: retryable.
pub(super) fn failed(message: String) -> ProviderError {
    ProviderError::Retryable {
        kind: "worktree_failed",
        message,
        retry_after: None,
    }
}

fn git_command(dir: &Path, args: &[&OsStr]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(SAFE_CONFIG)
        .args(args)
        .env_clear()
        .envs(environment::git())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs git in `dir`; a missing git is a permanent failure.
async fn git(dir: &Path, args: &[&OsStr]) -> Result<Output, ProviderError> {
    run_git(git_command(dir, args)).await
}

async fn run_git(mut cmd: tokio::process::Command) -> Result<Output, ProviderError> {
    cmd.output().await.map_err(|e| {
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

/// Checks that `repo` is a git repository and `git_ref` a commit in it; returns the
/// repository's canonical path and the commit.
async fn resolve(repo: &str, git_ref: &str) -> Result<(PathBuf, String), ProviderError> {
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
    Ok((repo_path, base))
}

/// Whether `branch` exists in `repo` (a repository that cannot be read has none).
pub(super) async fn branch_exists(repo: &str, branch: &str) -> bool {
    let spec = format!("refs/heads/{branch}");
    git(
        Path::new(repo),
        &[
            "rev-parse".as_ref(),
            "--verify".as_ref(),
            "--quiet".as_ref(),
            "--end-of-options".as_ref(),
            spec.as_ref(),
        ],
    )
    .await
    .is_ok_and(|out| out.status.success())
}

impl Workspace {
    /// A new attempt directory `<root>/<name>` whose `work/` is a worktree of `repo` at
    /// `git_ref` on the new branch `branch` when a repository is given, an empty
    /// directory otherwise. A `repo` that is not a git repository or a `git_ref` that is
    /// not a commit there is a permanent `bad_request`, found before anything is made.
    pub(super) async fn create(
        root: &Path,
        name: &str,
        repo: Option<(&str, &str)>,
        branch: &str,
        thread_branch: bool,
    ) -> Result<Workspace, ProviderError> {
        let resolved = match repo {
            Some((repo, git_ref)) => Some(resolve(repo, git_ref).await?),
            None => None,
        };
        let root = prepare_root(root).await?;
        let dir = root.join(name);
        // A leftover of the same attempt whose node died would be in the way.
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            let stale = dir.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let record = RunRecord::read(&stale);
                super::recovery::clean_attempt_dir(
                    &stale,
                    record.as_ref(),
                    &mut crate::Recovery::default(),
                );
            })
            .await;
        }
        tokio::fs::create_dir(&dir)
            .await
            .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let linked = resolved.map(|(repo, base)| GitWorktree {
            repo,
            branch: branch.to_string(),
            base,
        });
        let ws = Workspace {
            work: dir.join("work"),
            home: dir.join("home"),
            tmp: dir.join("tmp"),
            record: RunRecord {
                owner: Owner::current(),
                repo: linked.as_ref().map(|g| g.repo.clone()),
                branch: linked.as_ref().map(|g| g.branch.clone()),
                cgroup: None,
                keep_branch: false,
                // A thread's branch (it existed: the base is its tip) is never deleted, by
                // this attempt or by recovery after a crash: only put back.
                reset_to: linked
                    .as_ref()
                    .filter(|_| thread_branch)
                    .map(|g| g.base.clone()),
            },
            dir,
            git: linked,
            removed: false,
        };
        // From here on the workspace owns the directory: an early return removes it.
        if let Err(e) = ws.record.write(&ws.dir) {
            let message = format!("cannot write {}: {e}", ws.dir.display());
            ws.remove(false).await;
            return Err(failed(message));
        }
        for private in [ws.home.clone(), ws.tmp.clone()] {
            if let Err(e) = create_private_dir(&private).await {
                let message = format!("cannot create {}: {e}", private.display());
                ws.remove(false).await;
                return Err(failed(message));
            }
        }
        let Some(g) = ws.git.as_ref() else {
            if let Err(e) = tokio::fs::create_dir(&ws.work).await {
                let message = format!("cannot create {}: {e}", ws.work.display());
                ws.remove(false).await;
                return Err(failed(message));
            }
            return Ok(ws);
        };
        let out = git(
            &g.repo,
            &[
                "worktree".as_ref(),
                "add".as_ref(),
                "-B".as_ref(),
                g.branch.as_ref(),
                ws.work.as_os_str(),
                g.base.as_ref(),
            ],
        )
        .await;
        match out {
            Ok(out) if out.status.success() => Ok(ws),
            Ok(out) => {
                let message = format!(
                    "git worktree add {} in {} failed: {}",
                    ws.work.display(),
                    g.repo.display(),
                    stderr_of(&out)
                );
                ws.remove(false).await;
                Err(failed(message))
            }
            Err(e) => {
                ws.remove(false).await;
                Err(e)
            }
        }
    }

    /// The directory the CLI works in.
    pub(super) fn path(&self) -> &Path {
        &self.work
    }

    /// The attempt's HOME.
    pub(super) fn home(&self) -> &Path {
        &self.home
    }

    /// The attempt's TMPDIR.
    pub(super) fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Records the attempt's cgroup, so recovery can kill it if the node dies.
    pub(super) fn set_cgroup(&mut self, cgroup: Option<PathBuf>) -> Result<(), ProviderError> {
        self.record.cgroup = cgroup;
        self.record
            .write(&self.dir)
            .map_err(|e| failed(format!("cannot write {}: {e}", self.dir.display())))
    }

    /// Everything that changed in a worktree since its base commit, untracked files
    /// included (ignored files excepted), staged for a commit; `None` for a scratch
    /// directory or no change.
    pub(super) async fn diff(&self) -> Result<Option<String>, ProviderError> {
        let Some(g) = &self.git else {
            return Ok(None);
        };
        let out = git(&self.work, &["add".as_ref(), "-A".as_ref()]).await?;
        if !out.status.success() {
            return Err(failed(format!(
                "git add -A in {} failed: {}",
                self.work.display(),
                stderr_of(&out)
            )));
        }
        let out = git(
            &self.work,
            &[
                "diff".as_ref(),
                "--cached".as_ref(),
                "--no-color".as_ref(),
                "--no-ext-diff".as_ref(),
                "--no-textconv".as_ref(),
                g.base.as_ref(),
                "--".as_ref(),
            ],
        )
        .await?;
        if !out.status.success() {
            return Err(failed(format!(
                "git diff in {} failed: {}",
                self.work.display(),
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
                "\n[diff cut at {MAX_DIFF} of {total} bytes; the whole change is on the attempt's branch if it was kept]\n"
            ));
        }
        Ok(Some(diff))
    }

    /// Commits what [`Workspace::diff`] staged (if anything) on the attempt's branch as
    /// `author`, and marks the branch to be kept when it moved from its base commit (the
    /// agent may have committed itself). `None` when there is nothing to keep.
    pub(super) async fn commit(
        &mut self,
        author: &Author,
        message: &str,
    ) -> Result<Option<Kept>, ProviderError> {
        let Some(g) = &self.git else {
            return Ok(None);
        };
        let staged = git(
            &self.work,
            &[
                "diff".as_ref(),
                "--cached".as_ref(),
                "--quiet".as_ref(),
                "HEAD".as_ref(),
                "--".as_ref(),
            ],
        )
        .await?;
        if staged.status.code() == Some(1) {
            let mut cmd = git_command(
                &self.work,
                &[
                    "-c".as_ref(),
                    "commit.gpgsign=false".as_ref(),
                    "commit".as_ref(),
                    "--quiet".as_ref(),
                    "--no-verify".as_ref(),
                    "--file=-".as_ref(),
                ],
            );
            for (var, value) in [
                ("GIT_AUTHOR_NAME", &author.name),
                ("GIT_AUTHOR_EMAIL", &author.email),
                ("GIT_COMMITTER_NAME", &author.name),
                ("GIT_COMMITTER_EMAIL", &author.email),
            ] {
                cmd.env(var, value);
            }
            let out = run_git_with_input(cmd, message.as_bytes()).await?;
            if !out.status.success() {
                return Err(failed(format!(
                    "git commit in {} failed: {}",
                    self.work.display(),
                    stderr_of(&out)
                )));
            }
        }
        let out = git(
            &self.work,
            &["rev-parse".as_ref(), "--verify".as_ref(), "HEAD".as_ref()],
        )
        .await?;
        let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || head.is_empty() || head == g.base {
            return Ok(None);
        }
        let kept = Kept {
            repo: g.repo.clone(),
            branch: g.branch.clone(),
            commit: head,
        };
        self.record.keep_branch = true;
        if let Err(e) = self.record.write(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "claude_cli: could not record the kept branch");
        }
        Ok(Some(kept))
    }

    /// Removes the attempt directory and the worktree's registration, and the branch
    /// unless `keep_branch` and [`Workspace::commit`] kept it.
    pub(super) async fn remove(mut self, keep_branch: bool) {
        if let Some(g) = &self.git {
            let _ = git(
                &g.repo,
                &[
                    "worktree".as_ref(),
                    "remove".as_ref(),
                    "--force".as_ref(),
                    "--force".as_ref(),
                    self.work.as_os_str(),
                ],
            )
            .await;
        }
        if tokio::fs::try_exists(&self.dir).await.unwrap_or(false)
            && let Err(e) = tokio::fs::remove_dir_all(&self.dir).await
        {
            tracing::warn!(path = %self.dir.display(), error = %e, "claude_cli: could not remove a workspace");
        }
        if let Some(g) = &self.git {
            let _ = git(&g.repo, &["worktree".as_ref(), "prune".as_ref()]).await;
            if self.is_thread_branch() {
                // A thread's branch stays after a success, with or without a commit, and
                // is put back otherwise.
                if !keep_branch {
                    let branch = format!("refs/heads/{}", g.branch);
                    let _ = git(
                        &g.repo,
                        &["update-ref".as_ref(), branch.as_ref(), g.base.as_ref()],
                    )
                    .await;
                }
            } else if !(keep_branch && self.record.keep_branch) {
                let out = git(
                    &g.repo,
                    &[
                        "branch".as_ref(),
                        "-D".as_ref(),
                        "--end-of-options".as_ref(),
                        g.branch.as_ref(),
                    ],
                )
                .await;
                if let Ok(out) = out
                    && !out.status.success()
                {
                    tracing::debug!(branch = g.branch, stderr = %stderr_of(&out), "claude_cli: branch not deleted");
                }
            }
        }
        self.removed = true;
    }

    /// Whether the attempt works on a thread's branch, which is put back to `base`
    /// unless the attempt succeeded (never deleted).
    fn is_thread_branch(&self) -> bool {
        self.record.reset_to.is_some()
    }

    fn remove_blocking(&mut self) {
        let run = |dir: &Path, args: &[&OsStr]| {
            let _ = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(SAFE_CONFIG)
                .args(args)
                .env_clear()
                .envs(environment::git())
                .stdin(std::process::Stdio::null())
                .output();
        };
        if let Some(g) = &self.git {
            let path: OsString = self.work.clone().into();
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
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if let Some(g) = &self.git {
            run(&g.repo, &["worktree".as_ref(), "prune".as_ref()]);
            if self.is_thread_branch() {
                // Dropped without `remove`: the attempt did not succeed.
                let branch: OsString = format!("refs/heads/{}", g.branch).into();
                let base: OsString = g.base.clone().into();
                run(&g.repo, &["update-ref".as_ref(), &branch, &base]);
            } else if !self.record.keep_branch {
                run(
                    &g.repo,
                    &[
                        "branch".as_ref(),
                        "-D".as_ref(),
                        "--end-of-options".as_ref(),
                        g.branch.as_ref(),
                    ],
                );
            }
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

/// Runs `cmd` with `input` on its stdin.
async fn run_git_with_input(
    mut cmd: tokio::process::Command,
    input: &[u8],
) -> Result<Output, ProviderError> {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("could not run git: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input).await;
    }
    child
        .wait_with_output()
        .await
        .map_err(|e| failed(format!("could not run git: {e}")))
}

/// Creates a directory, with any missing parents, only its owner can read.
pub(super) async fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(path)
    })
    .await
    .map_err(io::Error::other)?
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

    #[test]
    fn authors_are_name_and_email() {
        assert_eq!(
            Author::parse("Supervisor <supervisor@localhost>"),
            Ok(Author {
                name: "Supervisor".into(),
                email: "supervisor@localhost".into()
            })
        );
        assert!(Author::parse("supervisor@localhost").is_err());
        assert!(Author::parse("<a@b>").is_err());
        assert!(Author::parse("A <>").is_err());
    }
}
