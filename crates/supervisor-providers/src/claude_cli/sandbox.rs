//! Where an attempt's processes run so that one decision ends all of them: the attempt
//! finished, failed, timed out or was dropped, or the node itself died.
//!
//! The CLI starts tools (shells, test runners, servers) that may start their own session,
//! so a process group is not enough. What Linux offers, best first, is detected once when
//! the provider is built ([`Sandbox::detect`]) and reported by the provider:
//!
//! 1. **A PID namespace per attempt**: an init process is PID 1 of a fresh namespace and
//!    the CLI its child; when the init exits, the kernel kills every process in the
//!    namespace. Needs root (CAP_SYS_ADMIN) or unprivileged user namespaces.
//! 2. **A cgroup v2 per attempt** under the node's own cgroup, when that is writable
//!    (delegated): `cgroup.kill` ends every member at once, even if the supervising
//!    process was killed.
//! 3. **A subreaper**: the supervising process adopts every orphan of the CLI's tree,
//!    whatever its session, and kills them; only if that supervisor is itself killed
//!    from outside can a process survive.
//!
//! In all three the node's child is the shim of [`super::shim`], which watches a lifeline
//! pipe: when the node closes it (the attempt is dropped) or dies (the kernel closes it),
//! the shim kills everything under it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use super::shim::{self, Confinement, Plan, UserMaps};
use crate::config::IsolationMode;

/// How long a signalled CLI gets to exit before everything is killed.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// How long to wait for the shim to exit after it was told to kill everything.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// Prefix of the cgroups made for attempts (recovery looks for it).
pub(super) const CGROUP_PREFIX: &str = "supervisor-";

/// The mechanism in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Isolation {
    /// A PID namespace per attempt, inside a user namespace when not root.
    PidNamespace { user_namespace: bool },
    /// A cgroup per attempt, made under `parent`.
    Cgroup { parent: PathBuf },
    /// The supervising process alone.
    Subreaper,
}

/// The detected isolation and what the provider says about it.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    isolation: Isolation,
    /// Whether the shim can list its children to find orphans.
    children_listing: bool,
    /// Why better mechanisms were not used (for the description).
    passed_over: Vec<String>,
}

impl Sandbox {
    /// Finds the mechanism `mode` asks for: the best available one for `auto`, else that
    /// one or an error saying why it cannot be used here.
    pub(crate) fn detect(mode: IsolationMode) -> Result<Sandbox, String> {
        let children_listing = std::fs::File::open("/proc/thread-self/children").is_ok();
        let mut passed_over = Vec::new();
        let wanted = |m: IsolationMode| mode == IsolationMode::Auto || mode == m;
        if wanted(IsolationMode::PidNamespace) {
            match probe_pid_namespace() {
                Ok(user_namespace) => {
                    return Ok(Sandbox {
                        isolation: Isolation::PidNamespace { user_namespace },
                        children_listing,
                        passed_over,
                    });
                }
                Err(e) if mode == IsolationMode::PidNamespace => {
                    return Err(format!(
                        "isolation = \"pid_namespace\" is not available: {e}"
                    ));
                }
                Err(e) => passed_over.push(format!("no PID namespace: {e}")),
            }
        }
        if wanted(IsolationMode::Cgroup) {
            match own_cgroup_dir().and_then(|dir| probe_cgroup(&dir).map(|()| dir)) {
                Ok(parent) => {
                    return Ok(Sandbox {
                        isolation: Isolation::Cgroup { parent },
                        children_listing,
                        passed_over,
                    });
                }
                Err(e) if mode == IsolationMode::Cgroup => {
                    return Err(format!("isolation = \"cgroup\" is not available: {e}"));
                }
                Err(e) => passed_over.push(format!("no cgroup: {e}")),
            }
        }
        Ok(Sandbox {
            isolation: Isolation::Subreaper,
            children_listing,
            passed_over,
        })
    }

    /// A few words for a health detail: `pid namespace`, `cgroup`, `subreaper`.
    pub(crate) fn summary(&self) -> &'static str {
        match self.isolation {
            Isolation::PidNamespace {
                user_namespace: false,
            } => "pid namespace",
            Isolation::PidNamespace {
                user_namespace: true,
            } => "pid namespace in a user namespace",
            Isolation::Cgroup { .. } => "cgroup",
            Isolation::Subreaper => "subreaper",
        }
    }

    /// What the mechanism guarantees, and why better ones were not used.
    pub(crate) fn describe(&self) -> String {
        let mut text = match &self.isolation {
            Isolation::PidNamespace { user_namespace } => format!(
                "pid namespace{}: each attempt runs under an init that is PID 1 of its own PID namespace; when the attempt ends (done, failed, timed out, cancelled) or the node dies, the kernel kills every process in it, including those that left the CLI's session",
                if *user_namespace {
                    " (in a user namespace, as the node is not root)"
                } else {
                    ""
                }
            ),
            Isolation::Cgroup { parent } => format!(
                "cgroup: each attempt runs in its own cgroup under {}, killed with cgroup.kill when the attempt ends; if the node dies, the attempt's supervising process kills it, and the node's recovery at start kills whatever is left",
                parent.display()
            ),
            Isolation::Subreaper => "subreaper: a supervising process adopts every orphan of the CLI's processes, whatever their session, and kills them all when the attempt ends or the node dies; they survive only if that supervisor is itself killed from outside (e.g. by the OOM killer)".to_string(),
        };
        // In a PID namespace the kernel finds the orphans; elsewhere the shim must list them.
        if !self.children_listing && !matches!(self.isolation, Isolation::PidNamespace { .. }) {
            text.push_str(
                "; /proc/thread-self/children is unavailable, so descendants that leave the CLI's session may survive",
            );
        }
        for reason in &self.passed_over {
            text.push_str("; ");
            text.push_str(reason);
        }
        text
    }

    /// The cgroup an attempt named `name` runs in, if cgroups are the mechanism. Its name
    /// carries the node process's identity, so recovery can tell a live node's from a dead
    /// one's.
    pub(super) fn cgroup_for(&self, name: &str, owner: &super::recovery::Owner) -> Option<PathBuf> {
        match &self.isolation {
            Isolation::Cgroup { parent } => Some(parent.join(format!(
                "{CGROUP_PREFIX}{}-{}-{name}",
                owner.pid, owner.start
            ))),
            _ => None,
        }
    }

    /// Starts `cmd` under the shim, stdin closed, stdout and stderr piped, in the cgroup
    /// `cgroup` (made here) when there is one.
    pub(crate) fn spawn(
        &self,
        mut cmd: Command,
        cgroup: Option<&Path>,
    ) -> io::Result<(AgentProcess, ChildStdout, ChildStderr)> {
        let (read, write) = lifeline()?;
        let cgroup_procs = match cgroup {
            Some(dir) => {
                std::fs::create_dir(dir).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create the cgroup {}: {e}", dir.display()),
                    )
                })?;
                Some(cstring(&dir.join("cgroup.procs"))?)
            }
            None => None,
        };
        let plan = Plan {
            confinement: match self.isolation {
                Isolation::PidNamespace { user_namespace } => Confinement::PidNamespace {
                    user: user_namespace.then(UserMaps::current),
                },
                Isolation::Cgroup { .. } | Isolation::Subreaper => Confinement::Subreaper,
            },
            lifeline: read.as_raw_fd(),
            cgroup_procs,
            children_listing: self.children_listing,
        };
        // SAFETY: `shim::enter` makes only async-signal-safe calls (see its module).
        unsafe {
            cmd.pre_exec(move || shim::enter(&plan));
        }
        cmd.process_group(0)
            .kill_on_drop(false)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = cmd.spawn();
        // The shim has its own copy; the node keeps only the write end.
        drop(read);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(dir) = cgroup {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e);
            }
        };
        let pid = child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
            .unwrap_or(0);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let process = AgentProcess {
            pid,
            child,
            lifeline: Some(write),
            cgroup: cgroup.map(Path::to_path_buf),
            done: false,
        };
        match (pid > 1, stdout, stderr) {
            (true, Some(out), Some(err)) => Ok((process, out, err)),
            _ => Err(io::Error::other(
                "the started process has no pid or no pipes",
            )),
        }
    }
}

/// A running agent: the shim the node started, and what ends it. Dropping it kills
/// everything at once (the shim sees its lifeline close); [`AgentProcess::terminate`] is
/// the polite way.
#[derive(Debug)]
pub(crate) struct AgentProcess {
    pid: libc::pid_t,
    child: Child,
    lifeline: Option<OwnedFd>,
    cgroup: Option<PathBuf>,
    done: bool,
}

impl AgentProcess {
    /// The pid of the process the node started (the confining one).
    pub(crate) fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Waits for the CLI to exit (the shim exits once it has, and once everything the CLI
    /// left is dead), with the CLI's status. Cancel safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Sends `signal` to the shim, which passes it on to the CLI.
    fn signal(&self, signal: libc::c_int) {
        // `id()` is None once the shim was reaped: its pid may then belong to another
        // process.
        let Some(pid) = self
            .child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
        else {
            return;
        };
        if pid > 1 {
            // SAFETY: kill has no memory-safety preconditions; the shim is our unreaped
            // child, so the pid is not reused.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Kills everything now, without waiting: closes the lifeline (the shim kills its
    /// tree with SIGKILL and exits) and kills the cgroup, if any.
    pub(crate) fn kill_now(&mut self) {
        self.lifeline = None;
        if let Some(dir) = &self.cgroup {
            kill_cgroup(dir);
        }
    }

    /// Ends the attempt's processes: SIGTERM to the CLI, up to [`GRACE`] for it to exit,
    /// then SIGKILL to everything left, and reaps the shim; removes the cgroup.
    pub(crate) async fn terminate(mut self) {
        self.signal(libc::SIGTERM);
        let _ = tokio::time::timeout(GRACE, self.child.wait()).await;
        self.finish().await;
    }

    /// After [`AgentProcess::kill_now`] (or instead of it): makes sure everything is dead
    /// and reaped, and removes the cgroup.
    pub(crate) async fn finish(&mut self) {
        self.kill_now();
        if tokio::time::timeout(REAP_LIMIT, self.child.wait())
            .await
            .is_err()
        {
            // The shim itself is stuck: kill it. Its namespace or cgroup (if any) goes with
            // it; in subreaper mode what it adopted may survive (recovery sweeps for it).
            tracing::warn!(
                pid = self.pid,
                "claude_cli: the agent's supervisor did not exit; killing it"
            );
            self.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(REAP_LIMIT, self.child.wait()).await;
        }
        if let Some(dir) = self.cgroup.take() {
            remove_cgroup(&dir).await;
        }
        self.done = true;
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if !self.done {
            // No runtime to wait on: kill now; the runtime reaps the shim in the
            // background, and recovery removes a cgroup that could not be removed yet.
            self.kill_now();
            if let Some(dir) = &self.cgroup {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// A pipe whose ends close on exec, so only the node and the shim ever hold them.
fn lifeline() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} contains a NUL byte", path.display())))
}

/// Kills every process of the cgroup at `dir` (nothing if it is gone).
pub(super) fn kill_cgroup(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
}

/// Whether the cgroup at `dir` still has processes (false once it is gone).
fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Kills and removes the cgroup at `dir`, waiting (briefly) for its processes to go.
pub(super) async fn remove_cgroup(dir: &Path) {
    kill_cgroup(dir);
    for _ in 0..100 {
        if !populated(dir) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(cgroup = %dir.display(), error = %e, "claude_cli: could not remove an attempt's cgroup")
        }
    }
}

/// Kills and removes the cgroup at `dir` without a runtime (recovery at start).
pub(super) fn remove_cgroup_blocking(dir: &Path) -> io::Result<()> {
    kill_cgroup(dir);
    for _ in 0..100 {
        if !populated(dir) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Forks a child that unshares a PID namespace (in a user namespace when plain unsharing
/// is refused) and checks that its own child is PID 1 there. Returns whether a user
/// namespace was needed.
fn probe_pid_namespace() -> Result<bool, String> {
    match probe_namespace(None) {
        Ok(()) => Ok(false),
        Err(plain) => {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                return Err(plain);
            }
            probe_namespace(Some(UserMaps::current()))
                .map(|()| true)
                .map_err(|user| format!("{plain}; in a user namespace: {user}"))
        }
    }
}

fn probe_namespace(user: Option<UserMaps>) -> Result<(), String> {
    // SAFETY: the child makes only async-signal-safe calls on memory prepared before the
    // fork, and always ends with _exit.
    let code = unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(format!("fork failed: {}", io::Error::last_os_error()));
        }
        if pid == 0 {
            let mut flags = libc::CLONE_NEWPID;
            if user.is_some() {
                flags |= libc::CLONE_NEWUSER;
            }
            if libc::unshare(flags) != 0 {
                libc::_exit(10);
            }
            if let Some(maps) = &user
                && shim::write_maps(maps).is_err()
            {
                libc::_exit(11);
            }
            let inner = libc::fork();
            if inner < 0 {
                libc::_exit(12);
            }
            if inner == 0 {
                libc::_exit(if libc::getpid() == 1 { 0 } else { 13 });
            }
            let mut st = 0;
            while libc::waitpid(inner, &mut st, 0) < 0 {
                if *libc::__errno_location() != libc::EINTR {
                    libc::_exit(14);
                }
            }
            libc::_exit(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                15
            });
        }
        wait_exit_code(pid)
    };
    match code {
        0 => Ok(()),
        10 => Err(if user.is_some() {
            "unshare(CLONE_NEWUSER | CLONE_NEWPID) was refused (unprivileged user namespaces are disabled here)".into()
        } else {
            "unshare(CLONE_NEWPID) was refused (it needs root or CAP_SYS_ADMIN)".into()
        }),
        11 => Err("the user namespace's uid/gid maps could not be written".into()),
        13 => Err("the namespace's first process is not PID 1".into()),
        other => Err(format!("the probe failed (code {other})")),
    }
}

/// Waits for `pid` (our child) and returns its exit code (-1 if it did not exit).
fn wait_exit_code(pid: libc::pid_t) -> i32 {
    let mut st = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            break;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return -1;
        }
    }
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        -1
    }
}

/// The directory of the cgroup (v2) this process is in.
pub(super) fn own_cgroup_dir() -> Result<PathBuf, String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    for line in mounts.lines() {
        let Some((fields, rest)) = line.split_once(" - ") else {
            continue;
        };
        if rest.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = fields.split(' ').collect();
        let (Some(root), Some(mount)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let Some(relative) = path.strip_prefix(root) else {
            continue;
        };
        let relative = relative.trim_start_matches('/');
        let dir = if relative.is_empty() {
            PathBuf::from(mount)
        } else {
            Path::new(mount).join(relative)
        };
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    Err(format!(
        "no cgroup v2 mount shows this process's cgroup {path}"
    ))
}

/// Checks that a child cgroup can be made under `dir`, has `cgroup.kill`, and takes a
/// process.
fn probe_cgroup(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!("{CGROUP_PREFIX}probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| {
        format!(
            "cannot create a cgroup under {} ({e}); the node needs a writable, delegated cgroup v2",
            dir.display()
        )
    })?;
    let result = (|| {
        if !probe.join("cgroup.kill").exists() {
            return Err("cgroup.kill is missing (it needs Linux 5.14 or later)".to_string());
        }
        let procs = cstring(&probe.join("cgroup.procs")).map_err(|e| e.to_string())?;
        // SAFETY: the child makes only async-signal-safe calls and ends with _exit.
        let code = unsafe {
            let pid = libc::fork();
            if pid < 0 {
                return Err(format!("fork failed: {}", io::Error::last_os_error()));
            }
            if pid == 0 {
                libc::_exit(if shim::write_file(&procs, b"0").is_ok() {
                    0
                } else {
                    1
                });
            }
            wait_exit_code(pid)
        };
        if code != 0 {
            return Err(format!(
                "a process cannot be moved into a cgroup under {} (not delegated to this user?)",
                dir.display()
            ));
        }
        Ok(())
    })();
    let mut removed = std::fs::remove_dir(&probe);
    for _ in 0..50 {
        if removed.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        removed = std::fs::remove_dir(&probe);
    }
    result
}
