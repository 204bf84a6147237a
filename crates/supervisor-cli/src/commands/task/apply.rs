//! `supervisor task apply`: puts a finished repository task's changes into a checkout.
//!
//! The agent's work arrives in two forms: the `changes.diff` artifact (stored with the
//! task, applied here) and, when the provider keeps branches, a commit on the task's
//! branch in the repository it worked in (named by the `branch` artifact). Applying the
//! diff works on any checkout of the repository, including one on another machine.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde::Serialize;
use supervisor_proto::v1::{Task, TaskStatus};

use crate::commands::output::{OutputFormat, print_json, print_line};

/// What an apply did, for `--output json`.
#[derive(Debug, Serialize)]
struct Applied {
    task: String,
    repo: String,
    files: Vec<String>,
    branch: Option<String>,
    commit: Option<String>,
}

/// Applies `task`'s diff to the checkout at `repo` (default: the repository the task
/// named, else the current directory). With `check`, only says whether it applies.
pub fn apply(
    task: &Task,
    repo: Option<PathBuf>,
    check: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let id = &task.id;
    if task.status != TaskStatus::Succeeded as i32 {
        bail!(
            "task {id} has not succeeded, so it has no changes to apply; `supervisor task get {id}` shows how it ended"
        );
    }
    let artifacts = task
        .result
        .as_ref()
        .map(|r| r.artifacts.as_slice())
        .unwrap_or_default();
    let artifact = |name: &str| artifacts.iter().find(|a| a.name == name);
    let Some(diff) = artifact("changes.diff") else {
        bail!(
            "task {id} has no changes.diff: only tasks that name a repository (context repo=) and ran on a claude_cli provider produce one"
        );
    };
    let files = changed_files(&diff.content);
    if files.is_empty() {
        bail!("task {id} made no changes; there is nothing to apply");
    }
    let repo = repo
        .or_else(|| task.context.get("repo").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    git_apply(&repo, &diff.content, true)?;
    if !check {
        git_apply(&repo, &diff.content, false)?;
    }
    let (branch, commit) = artifact("branch").map_or((None, None), |a| branch_of(&a.content));
    let shown = Applied {
        task: id.clone(),
        repo: repo.display().to_string(),
        files,
        branch,
        commit,
    };
    match output {
        OutputFormat::Json => print_json(&shown),
        OutputFormat::Text => {
            let verb = if check { "would apply" } else { "applied" };
            print_line(&format!(
                "{verb} the changes of task {id} to {} ({} file(s)): {}",
                shown.repo,
                shown.files.len(),
                shown.files.join(", ")
            ))?;
            if let (Some(branch), Some(commit)) = (&shown.branch, &shown.commit) {
                print_line(&format!(
                    "the agent's commit {commit} is also on branch {branch} of the repository it worked in"
                ))?;
            }
            Ok(())
        }
    }
}

/// The paths a unified diff changes (from its `diff --git a/x b/x` lines).
fn changed_files(diff: &str) -> Vec<String> {
    diff.lines()
        .filter_map(|l| l.strip_prefix("diff --git a/"))
        .filter_map(|rest| rest.split_once(" b/").map(|(a, _)| a.to_string()))
        .collect()
}

/// The branch and commit the `branch` artifact names (`branch <name>`, `commit <sha>`).
fn branch_of(text: &str) -> (Option<String>, Option<String>) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    (field("branch "), field("commit "))
}

/// Runs `git apply` (`--check` when `check`) in `repo` with `diff` on its input.
fn git_apply(repo: &Path, diff: &str, check: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo).arg("apply");
    if check {
        cmd.arg("--check");
    }
    let mut child = cmd
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not run git (is it installed and on PATH?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(diff.as_bytes())
            .context("could not hand the diff to git apply")?;
    }
    let out = child
        .wait_with_output()
        .context("git apply did not finish")?;
    if !out.status.success() {
        bail!(
            "the changes do not apply to {}: {}; check out the commit the task started from, or pass --repo",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_branch_are_read_from_the_artifacts() {
        let diff = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/README b/README\n";
        assert_eq!(changed_files(diff), ["src/lib.rs", "README"]);
        assert_eq!(
            branch_of("repo /src\nbranch supervisor/t1-a1\ncommit abc123\n"),
            (Some("supervisor/t1-a1".into()), Some("abc123".into()))
        );
        assert_eq!(branch_of(""), (None, None));
    }
}
