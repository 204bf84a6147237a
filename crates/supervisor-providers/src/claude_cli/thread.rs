//! Conversation turns on the Claude Code CLI: a thread keeps one CLI session, one HOME
//! and one branch across its turns.
//!
//! Each turn of a thread runs in the same place: the attempt directory is named after the
//! thread (`thread-<id>`), so the CLI's working directory is the same path every turn and
//! its session (which the CLI files under `$HOME/.claude` by working directory) can be
//! resumed; HOME is the thread's own, kept under `<data_dir>/claude-threads/<provider>/
//! <id>/home` between turns (private to the node's user); the worktree is made on the
//! branch `supervisor/thread-<id>` from its tip, so a turn sees the changes earlier turns
//! committed. A turn resumes the CLI's session (`--resume <session>`, with only the new
//! message as the prompt) when the thread's previous reply is the one this node's session
//! wrote (the request names that reply's task) and the CLI's session file is still there;
//! otherwise (the first turn, a previous reply written elsewhere or refused, an attempt
//! that failed) it starts a new session with the whole conversation in the prompt. One
//! attempt of a thread at a time works in its directory on this node (a lock held for the
//! whole attempt, its cleanup included). Thread directories unused for [`IDLE_LIMIT`] are
//! removed when the node starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::worktree::failed;
use crate::ProviderError;

/// Thread directories unused this long are removed at start.
pub(super) const IDLE_LIMIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// What is saved after a turn: the CLI's session and the task whose reply it wrote.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    session: String,
    task: String,
}

/// Whether `id` looks like a session id the CLI gave (and cannot be read as an option).
fn valid_session(id: &str) -> bool {
    id.len() <= 128
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A thread's directory on this node.
#[derive(Debug)]
pub(super) struct ThreadState {
    dir: PathBuf,
    home: PathBuf,
}

/// `id` made safe for a directory or branch name.
fn safe(id: &str) -> String {
    let s: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    if s.is_empty() { "thread".into() } else { s }
}

/// The attempt directory of a thread's turns (the same every turn).
pub(super) fn workspace_name(id: &str) -> String {
    format!("thread-{}", safe(id))
}

/// The branch a thread's turns commit to.
pub(super) fn branch(id: &str) -> String {
    format!("supervisor/thread-{}", safe(id))
}

impl ThreadState {
    /// Opens (making it when needed) the directory of thread `id` under `root`.
    pub(super) async fn open(root: &Path, id: &str) -> Result<ThreadState, ProviderError> {
        let dir = root.join(safe(id));
        let home = dir.join("home");
        super::worktree::create_private_dir(&home)
            .await
            .map_err(|e| failed(format!("cannot create {}: {e}", home.display())))?;
        // Touched each turn: the idle sweep goes by it.
        let _ = mark_used(&dir);
        Ok(ThreadState { dir, home })
    }

    /// The thread's HOME.
    pub(super) fn home(&self) -> &Path {
        &self.home
    }

    /// The session to resume after the reply `previous` wrote (the thread's reply before
    /// this turn, when it succeeded): the one saved here by that very task, when the CLI
    /// still has its file (`$HOME/.claude/projects/*/<session>.jsonl`).
    pub(super) async fn resumable(&self, previous: Option<&str>) -> Option<String> {
        let previous = previous?;
        let bytes = tokio::fs::read(self.dir.join("session.json")).await.ok()?;
        let saved: Saved = serde_json::from_slice(&bytes).ok()?;
        if saved.task != previous || !valid_session(&saved.session) {
            return None;
        }
        let projects = self.home.join(".claude").join("projects");
        let file = format!("{}.jsonl", saved.session);
        let mut dirs = tokio::fs::read_dir(&projects).await.ok()?;
        while let Ok(Some(dir)) = dirs.next_entry().await {
            if tokio::fs::try_exists(dir.path().join(&file))
                .await
                .unwrap_or(false)
            {
                return Some(saved.session);
            }
        }
        None
    }

    /// Saves the session of the turn `task` ran.
    pub(super) async fn save(&self, session: &str, task: &str) {
        if !valid_session(session) {
            return;
        }
        let saved = Saved {
            session: session.to_string(),
            task: task.to_string(),
        };
        let Ok(bytes) = serde_json::to_vec(&saved) else {
            return;
        };
        let tmp = self.dir.join("session.json.tmp");
        let ok = tokio::fs::write(&tmp, bytes).await.is_ok()
            && tokio::fs::rename(&tmp, self.dir.join("session.json"))
                .await
                .is_ok();
        if !ok {
            tracing::warn!(dir = %self.dir.display(), "claude_cli: could not save the thread's session; its next turn starts a new one");
        }
    }

    /// Forgets the saved session (a resumed run failed: the next attempt starts anew).
    pub(super) async fn forget(&self) {
        let _ = tokio::fs::remove_file(self.dir.join("session.json")).await;
    }

    /// Waits until no other attempt of the thread works here, at most `patience`, and
    /// holds that until the returned file is dropped (an exclusive `flock` on
    /// `<dir>/lock`, polled so that no thread blocks on it).
    pub(super) async fn lock(&self, patience: Duration) -> Result<std::fs::File, ProviderError> {
        use std::os::fd::AsRawFd;
        let path = self.dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(file);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(failed(format!("cannot lock {}: {e}", path.display())));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::Retryable {
                    kind: "timeout",
                    message: format!(
                        "another attempt of this thread still works in {} after {patience:?}",
                        self.dir.display()
                    ),
                    retry_after: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Marks the thread used now (the idle sweep reads the time of `.used`).
fn mark_used(dir: &Path) -> std::io::Result<()> {
    let stamp = dir.join(".used");
    std::fs::write(&stamp, b"")?;
    Ok(())
}

/// Removes the thread directories under `root` not used for [`IDLE_LIMIT`]; returns how
/// many.
pub(super) fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        let used = std::fs::metadata(dir.join(".used"))
            .or_else(|_| std::fs::metadata(&dir))
            .and_then(|m| m.modified());
        let idle = used
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > IDLE_LIMIT);
        if idle && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_resumes_only_after_the_reply_it_wrote() {
        let root = tempfile::tempdir().unwrap();
        let t = ThreadState::open(root.path(), "0192f5e4-7c2a")
            .await
            .unwrap();
        assert!(t.home().is_dir());
        assert_eq!(t.resumable(Some("task-1")).await, None);
        t.save("abc-123", "task-1").await;
        assert_eq!(
            t.resumable(Some("task-1")).await,
            None,
            "the CLI has no such session file"
        );
        let project = t.home().join(".claude/projects/-work-x");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(project.join("abc-123.jsonl"), "{}").unwrap();
        assert_eq!(
            t.resumable(Some("task-1")).await.as_deref(),
            Some("abc-123")
        );
        assert_eq!(
            t.resumable(Some("task-2")).await,
            None,
            "another task wrote the reply"
        );
        assert_eq!(t.resumable(None).await, None, "the reply before failed");
        t.save("-rf", "task-3").await;
        assert_eq!(t.resumable(Some("task-3")).await, None, "not a session id");
        t.forget().await;
        assert_eq!(t.resumable(Some("task-1")).await, None);
        assert_eq!(workspace_name("../x y"), "thread-xy");
        assert_eq!(branch("a/b"), "supervisor/thread-ab");
        assert_eq!(sweep(root.path()), 0, "just used");
        let held = t.lock(Duration::from_secs(1)).await.unwrap();
        let again = t.lock(Duration::from_millis(200)).await;
        assert!(again.is_err(), "a second attempt waits, then gives up");
        drop(held);
        t.lock(Duration::from_secs(1)).await.unwrap();
    }
}
