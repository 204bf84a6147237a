//! What a node that died leaves behind, and how its next start cleans it up.
//!
//! An attempt cleans up after itself, also when it fails or is dropped. A node killed
//! with `kill -9` (or a machine that lost power) cannot: its attempts' directories (the
//! worktree, HOME and TMPDIR), their worktree registrations and branches, and, with
//! cgroups, their cgroups stay. So every attempt directory holds a small record
//! ([`RunRecord`], `run.json`) naming the node process that made it (pid and start time,
//! so a reused pid is not mistaken for it), the repository, the branch and the cgroup.
//! [`recover`] removes every attempt directory whose node process is gone, kills any
//! process still working in one, and prunes the repositories' worktree lists.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::environment;
use super::sandbox::{self, CGROUP_PREFIX};
use crate::Recovery;

/// The record's file name in an attempt directory.
pub(super) const RECORD: &str = "run.json";

/// A process, identified so that a reused pid does not pass for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Owner {
    /// Its pid.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start: u64,
}

impl Owner {
    /// This process.
    pub(super) fn current() -> Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pid,
                start: start_time(pid).unwrap_or(0),
            }
        })
    }

    /// Whether this process still runs.
    pub(super) fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// The start time of `pid`, if it runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name come fields 3 (state) onwards; the start time is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What an attempt directory holds, for whoever has to clean it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RunRecord {
    /// The node process running the attempt.
    pub owner: Owner,
    /// The repository the worktree belongs to (none for a scratch directory).
    pub repo: Option<PathBuf>,
    /// The attempt's branch.
    pub branch: Option<String>,
    /// The attempt's cgroup, if it has one.
    pub cgroup: Option<PathBuf>,
    /// Whether the branch holds the finished attempt's commit and is to be kept.
    pub keep_branch: bool,
    /// A thread's branch, which existed before the attempt: put back to this commit
    /// unless the attempt succeeded (never deleted).
    #[serde(default)]
    pub reset_to: Option<String>,
}

impl RunRecord {
    /// Writes the record into `dir` (atomically: a half-written record is never read).
    pub(super) fn write(&self, dir: &Path) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let tmp = dir.join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, dir.join(RECORD))
    }

    /// The record in `dir`, if there is a readable one.
    pub(super) fn read(dir: &Path) -> Option<RunRecord> {
        let bytes = std::fs::read(dir.join(RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Cleans up after node processes that died: every attempt directory under `root` whose
/// node process is gone (or that has no record, such as one an older version made) is
/// removed with its worktree registration; processes still working in it are killed; its
/// branch is deleted unless it holds a finished attempt's commit; its cgroup is killed and
/// removed. Leftover attempt cgroups under this process's cgroup whose node is gone are
/// removed too.
///
/// Call it when no attempt of this process runs under `root` (at start, before leasing):
/// directories of live node processes are left alone, but one this process is still
/// creating may not have its record yet.
pub fn recover(root: &Path) -> Recovery {
    let mut report = Recovery::default();
    // Working directories are read canonical from /proc; so must the root be.
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.filter_map(Result::ok) {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let record = RunRecord::read(&dir);
            if record.as_ref().is_some_and(|r| r.owner.alive()) {
                continue;
            }
            clean_attempt_dir(&dir, record.as_ref(), &mut report);
        }
    }
    sweep_cgroups(&mut report);
    report
}

/// Removes one attempt directory: kills what still runs in it, removes the worktree (and
/// its registration in the repository) and, unless the record says to keep it, the
/// branch.
pub(super) fn clean_attempt_dir(dir: &Path, record: Option<&RunRecord>, report: &mut Recovery) {
    if let Some(cgroup) = record.and_then(|r| r.cgroup.as_deref())
        && let Err(e) = sandbox::remove_cgroup_blocking(cgroup)
    {
        report.problems.push(format!(
            "could not remove the cgroup {}: {e}",
            cgroup.display()
        ));
    }
    report.processes_killed += kill_processes_in(dir);

    // An older layout had the worktree itself as the attempt directory.
    let work = if dir.join(".git").is_file() {
        dir.to_path_buf()
    } else {
        dir.join("work")
    };
    let linked = linked_worktree(&work);
    let repo = record
        .and_then(|r| r.repo.clone())
        .or_else(|| linked.as_ref().map(|l| l.repo.clone()));
    let branch = record
        .and_then(|r| r.branch.clone())
        .or_else(|| linked.as_ref().and_then(|l| l.branch.clone()));
    if let Some(repo) = &repo {
        let _ = git(
            repo,
            &["worktree", "remove", "--force", "--force"],
            Some(&work),
        );
    }
    // `git worktree remove` may have removed it already (when it is the worktree).
    match std::fs::remove_dir_all(dir) {
        Ok(()) => report.workspaces.push(dir.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => report.workspaces.push(dir.to_path_buf()),
        Err(e) => report
            .problems
            .push(format!("could not remove {}: {e}", dir.display())),
    }
    let Some(repo) = repo else { return };
    let _ = git(&repo, &["worktree", "prune"], None);
    let keep = record.is_some_and(|r| r.keep_branch);
    let reset_to = record.and_then(|r| r.reset_to.clone());
    if let (Some(branch), Some(base), false) = (&branch, &reset_to, keep) {
        // A thread's branch: what the dead attempt committed goes, the turns before stay.
        let full = format!("refs/heads/{branch}");
        if let Err(e) = git(&repo, &["update-ref", &full, base], None) {
            report.problems.push(format!(
                "could not put branch {branch} back to {base} in {}: {e}",
                repo.display()
            ));
        }
        return;
    }
    if let Some(branch) = branch.filter(|b| b.starts_with("supervisor/"))
        && !keep
    {
        match git(&repo, &["branch", "-D", "--end-of-options", &branch], None) {
            Ok(true) => report.branches_deleted.push(branch),
            Ok(false) => {} // Already gone.
            Err(e) => report.problems.push(format!(
                "could not delete branch {branch} in {}: {e}",
                repo.display()
            )),
        }
    }
}

/// What a linked worktree's `.git` file says: its repository and branch.
struct Linked {
    repo: PathBuf,
    branch: Option<String>,
}

/// Reads `<work>/.git` (`gitdir: <repo>/.git/worktrees/<name>`) and that directory's
/// `HEAD`.
fn linked_worktree(work: &Path) -> Option<Linked> {
    let text = std::fs::read_to_string(work.join(".git")).ok()?;
    let gitdir = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
    // <repo>/.git/worktrees/<name> → <repo>/.git → <repo>
    let common = gitdir.parent()?.parent()?;
    let repo = if common.file_name()? == ".git" {
        common.parent()?.to_path_buf()
    } else {
        common.to_path_buf() // a bare repository
    };
    let branch = std::fs::read_to_string(gitdir.join("HEAD"))
        .ok()
        .and_then(|head| {
            head.trim()
                .strip_prefix("ref: refs/heads/")
                .map(str::to_string)
        });
    Some(Linked { repo, branch })
}

/// Runs git in `repo` with the provider's git environment, `path` appended after the
/// arguments. Ok(whether it succeeded).
fn git(repo: &Path, args: &[&str], path: Option<&Path>) -> io::Result<bool> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args(args)
        .env_clear()
        .envs(environment::git())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(path) = path {
        cmd.arg(path);
    }
    cmd.status().map(|s| s.success())
}

/// SIGKILLs every process whose working directory is inside `dir` (an agent's tool left
/// behind by a dead node, perhaps in a directory since deleted), a few rounds in case
/// one was starting another. Returns how many were killed.
fn kill_processes_in(dir: &Path) -> usize {
    let me = std::process::id();
    let mut killed = 0;
    for _ in 0..3 {
        let mut found = 0;
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return killed;
        };
        for entry in procs.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
                continue;
            };
            let cwd = cwd.to_string_lossy();
            let cwd = cwd.strip_suffix(" (deleted)").unwrap_or(&cwd);
            if Path::new(cwd).starts_with(dir) {
                let Ok(pid) = libc::pid_t::try_from(pid) else {
                    continue;
                };
                // SAFETY: kill has no memory-safety preconditions.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    found += 1;
                }
            }
        }
        killed += found;
        if found == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    killed
}

/// Removes attempt cgroups (`supervisor-<pid>-<start>-<attempt>`) under this process's
/// cgroup whose node process is gone.
fn sweep_cgroups(report: &mut Recovery) {
    let Ok(parent) = sandbox::own_cgroup_dir() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(CGROUP_PREFIX)) else {
            continue;
        };
        let mut parts = rest.splitn(3, '-');
        let owner = match (parts.next(), parts.next()) {
            (Some(pid), Some(start)) => match (pid.parse(), start.parse()) {
                (Ok(pid), Ok(start)) => Owner { pid, start },
                _ => continue,
            },
            _ => continue,
        };
        if owner.alive() {
            continue;
        }
        if let Err(e) = sandbox::remove_cgroup_blocking(&entry.path()) {
            report.problems.push(format!(
                "could not remove the cgroup {}: {e}",
                entry.path().display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Owner::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start > 0);
        assert!(me.alive());
        assert!(
            !Owner {
                start: me.start + 1,
                ..me
            }
            .alive()
        );
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let record = RunRecord {
            reset_to: None,
            owner: Owner::current(),
            repo: Some("/src/repo".into()),
            branch: Some("supervisor/t-a1".into()),
            cgroup: None,
            keep_branch: false,
        };
        record.write(dir.path()).unwrap();
        assert_eq!(RunRecord::read(dir.path()), Some(record));
        assert_eq!(RunRecord::read(&dir.path().join("nope")), None);
    }
}
