//! The code that runs between `fork` and `exec` of an agent process: it turns the forked
//! child into a small supervisor that outlives nothing it started.
//!
//! Why a supervisor process: the CLI's tools may leave its process group and session
//! (`setsid`), so signalling a group cannot reach them, and a node killed with `kill -9`
//! signals nobody. The forked child (the *shim*) therefore stays between the node and the
//! CLI. It is a child subreaper (orphans of the CLI's tree are re-parented to it, whatever
//! their session), it holds the read end of a *lifeline* pipe whose write end only the node
//! holds, and it waits for the CLI. When the CLI exits, or the lifeline reports that the
//! node closed it (the attempt was dropped, or the node died and the kernel closed it), the
//! shim kills every process left under it with SIGKILL, reaps them and exits, with the
//! CLI's exit status when it has one.
//!
//! With a PID namespace the shim first unshares one, so its child is PID 1 of a fresh
//! namespace: a tiny init that forwards signals to the CLI (its own child), reaps orphans,
//! and exits with the CLI's status. When that init exits the kernel kills every process in
//! the namespace, including those that called `setsid`, and it has `PR_SET_PDEATHSIG`
//! set to SIGKILL against the shim, so even a shim killed from outside takes the namespace
//! with it. With a cgroup, the shim moves itself into the attempt's cgroup first, so the
//! node can end everything with `cgroup.kill` whatever happened to the shim.
//!
//! Everything here runs in a child forked from a multi-threaded process, so it may only
//! make async-signal-safe calls: raw system calls, no allocation, no locks, no
//! formatting. What it needs (paths, the user-namespace maps) is prepared by the node
//! before the fork, in [`Plan`].
//!
//! The node never sets `PR_SET_PDEATHSIG` on the shim itself: that signal fires when the
//! *thread* that forked it exits, and a runtime's threads come and go. The lifeline is
//! tied to the node's process instead: only its exit (or the attempt's end) closes it.
//!
//! Cost: the shim is a fork of the node that never execs, so it shares the node's memory
//! pages as they were at the fork, and every page the node writes afterwards exists twice
//! until the attempt ends. A shim exec'd from a small entry point of the node's binary
//! would avoid that; it needs the binary's cooperation, which a library cannot assume.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// Signals the shim and the namespace init pass on to their child.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Exit status of a shim whose node went away before the CLI ended.
const ABANDONED: libc::c_int = 128 + libc::SIGKILL;

/// The identity maps written for a user namespace: `<id> <id> 1`.
#[derive(Debug, Clone)]
pub(super) struct UserMaps {
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
}

impl UserMaps {
    /// Maps of the current user onto itself (so files keep their owner).
    pub(super) fn current() -> UserMaps {
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        UserMaps {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }
}

/// How the shim confines its child.
#[derive(Debug, Clone)]
pub(super) enum Confinement {
    /// A new PID namespace (inside a new user namespace when `user` is set, for nodes that
    /// do not run as root).
    PidNamespace { user: Option<UserMaps> },
    /// Subreaper only (the node may add a cgroup).
    Subreaper,
}

/// Everything the shim needs, prepared before the fork.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub confinement: Confinement,
    /// The read end of the lifeline (the node keeps the write end).
    pub lifeline: RawFd,
    /// `<cgroup>/cgroup.procs` of the attempt's cgroup, to move into first.
    pub cgroup_procs: Option<CString>,
    /// Whether `/proc/thread-self/children` lists a process's children (to find
    /// orphans to kill); without it the shim kills its child and gives the rest a moment.
    pub children_listing: bool,
}

/// Signals received by the shim and not yet forwarded, one bit per signal number.
static PENDING: AtomicU32 = AtomicU32::new(0);

extern "C" fn remember(sig: libc::c_int) {
    if (0..32).contains(&sig) {
        PENDING.fetch_or(1 << sig, Ordering::SeqCst);
    }
}

extern "C" fn wake(_sig: libc::c_int) {}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Turns the freshly forked child into the shim.
///
/// Returns `Ok(())` only in the process that must go on to exec the CLI; the shim (and
/// the namespace init) never return. An error (a refused `unshare`, a full process table)
/// is returned before anything was started, so the spawn fails with it.
///
/// # Safety
/// Must only be called in a child just forked by `Command::spawn` (from `pre_exec`):
/// it forks, waits and exits.
pub(super) unsafe fn enter(plan: &Plan) -> io::Result<()> {
    // SAFETY (whole function): only async-signal-safe system calls on memory prepared
    // before the fork; see the module documentation.
    unsafe {
        if let Some(procs) = &plan.cgroup_procs {
            write_file(procs, b"0")?;
        }
        // Signals stay blocked outside the wait (`ppoll` unblocks them atomically), so
        // none is lost between a check and the wait. The child restores the mask.
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut blocked);
        libc::sigaddset(&mut blocked, libc::SIGCHLD);
        for sig in FORWARDED {
            libc::sigaddset(&mut blocked, sig);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &blocked, &mut previous) != 0 {
            return Err(last_error());
        }
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            return Err(last_error());
        }
        let shim = libc::getpid();
        match &plan.confinement {
            Confinement::Subreaper => {
                let pid = libc::fork();
                if pid < 0 {
                    return Err(last_error());
                }
                if pid == 0 {
                    return become_cli(shim, &previous);
                }
                supervise(pid, Some(plan.lifeline), plan.children_listing, &previous)
            }
            Confinement::PidNamespace { user } => {
                let mut flags = libc::CLONE_NEWPID;
                if user.is_some() {
                    flags |= libc::CLONE_NEWUSER;
                }
                if libc::unshare(flags) != 0 {
                    return Err(last_error());
                }
                if let Some(maps) = user {
                    write_maps(maps)?;
                }
                let init = libc::fork();
                if init < 0 {
                    return Err(last_error());
                }
                if init > 0 {
                    supervise(init, Some(plan.lifeline), plan.children_listing, &previous)
                }
                // PID 1 of the new namespace: dies with the shim, and takes the namespace
                // with it when it exits.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(last_error());
                }
                let cli = libc::fork();
                if cli < 0 {
                    return Err(last_error());
                }
                if cli == 0 {
                    // Its parent is the init, PID 1 in this namespace.
                    return become_cli(1, &previous);
                }
                supervise(cli, None, false, &previous)
            }
        }
    }
}

/// In the process that will exec the CLI: die with the parent, and restore the signal
/// mask the CLI must start with.
unsafe fn become_cli(parent: libc::pid_t, mask: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: async-signal-safe system calls only.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(last_error());
        }
        // The parent may have died before the line above: then nobody would kill us.
        if libc::getppid() != parent {
            libc::_exit(ABANDONED);
        }
        if libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) != 0 {
            return Err(last_error());
        }
        Ok(())
    }
}

/// Waits for `child` while forwarding signals to it and watching the lifeline, then ends
/// everything left under this process and exits like the child did.
unsafe fn supervise(
    child: libc::pid_t,
    lifeline: Option<RawFd>,
    children_listing: bool,
    mask: &libc::sigset_t,
) -> ! {
    // SAFETY: async-signal-safe system calls only.
    unsafe {
        // Nothing inherited stays open here: not the CLI's pipes (so they close when the
        // CLI's tree is gone), not other attempts' lifelines (so their shims see them
        // close), not the spawn's error pipe (so the node's spawn returns once the CLI
        // has exec'd).
        close_all_but(lifeline);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = remember as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in FORWARDED {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
        action.sa_sigaction = wake as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());

        let mut status: Option<libc::c_int> = None;
        loop {
            reap(child, &mut status);
            if status.is_some() {
                break;
            }
            let pending = PENDING.swap(0, Ordering::SeqCst);
            for sig in FORWARDED {
                if pending & (1 << sig) != 0 {
                    libc::kill(child, sig);
                }
            }
            let mut fds = [libc::pollfd {
                fd: lifeline.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            }];
            let n = libc::ppoll(
                fds.as_mut_ptr(),
                if lifeline.is_some() { 1 } else { 0 },
                std::ptr::null(),
                mask,
            );
            // Nothing is ever written to the lifeline: any event means it was closed.
            if n > 0 && fds[0].revents != 0 {
                break;
            }
        }
        end_everything(child, &mut status, children_listing);
        exit_like(status)
    }
}

/// Reaps every child that exited, noting `child`'s status.
unsafe fn reap(child: libc::pid_t, status: &mut Option<libc::c_int>) {
    loop {
        let mut st = 0;
        // SAFETY: waitpid on our own children.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if pid == child {
            *status = Some(st);
        }
    }
}

/// Kills `child` (if it still runs) and everything re-parented to this process, until no
/// child is left. PID 1 of a namespace has nothing to do: its exit makes the kernel kill
/// every process in the namespace.
unsafe fn end_everything(
    child: libc::pid_t,
    status: &mut Option<libc::c_int>,
    children_listing: bool,
) {
    // SAFETY: async-signal-safe system calls only.
    unsafe {
        if libc::getpid() == 1 {
            return;
        }
        if status.is_none() {
            libc::kill(child, libc::SIGKILL);
        }
        // Without a list of children, orphans cannot be found: give the killed child's
        // tree a moment to go, and leave the rest (the provider says so in its health).
        let mut blind_rounds = 0;
        loop {
            if children_listing {
                kill_listed_children();
            }
            let mut st = 0;
            let flags = if children_listing { 0 } else { libc::WNOHANG };
            let pid = libc::waitpid(-1, &mut st, flags);
            if pid == child {
                *status = Some(st);
            }
            if pid > 0 {
                continue;
            }
            if pid < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if pid < 0 || blind_rounds >= 100 {
                return;
            }
            blind_rounds += 1;
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}

/// SIGKILLs every child listed in `/proc/thread-self/children` (the shim has one thread).
/// A listed pid is an unreaped child of ours, so it cannot have been reused.
unsafe fn kill_listed_children() {
    // SAFETY: async-signal-safe system calls on a stack buffer.
    unsafe {
        let path = c"/proc/thread-self/children";
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut pid: libc::pid_t = 0;
        let mut in_number = false;
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            for &b in &buf[..n as usize] {
                if b.is_ascii_digit() {
                    pid = pid
                        .saturating_mul(10)
                        .saturating_add(libc::pid_t::from(b - b'0'));
                    in_number = true;
                } else if in_number {
                    if pid > 1 {
                        libc::kill(pid, libc::SIGKILL);
                    }
                    pid = 0;
                    in_number = false;
                }
            }
        }
        if in_number && pid > 1 {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::close(fd);
    }
}

/// Exits with `status` as the child did: its exit code, or death by the same signal
/// (without a core dump). PID 1 cannot kill itself with a signal, so it exits with
/// 128 + the signal number instead, as shells report it.
unsafe fn exit_like(status: Option<libc::c_int>) -> ! {
    // SAFETY: async-signal-safe system calls only.
    unsafe {
        let Some(st) = status else {
            libc::_exit(ABANDONED)
        };
        if libc::WIFEXITED(st) {
            libc::_exit(libc::WEXITSTATUS(st));
        }
        if libc::WIFSIGNALED(st) {
            let sig = libc::WTERMSIG(st);
            if libc::getpid() != 1 {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(sig, libc::SIG_DFL);
                let mut only: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut only);
                libc::sigaddset(&mut only, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
            }
            libc::_exit(128 + sig);
        }
        libc::_exit(ABANDONED)
    }
}

/// Closes every descriptor but `keep`.
unsafe fn close_all_but(keep: Option<RawFd>) {
    // SAFETY: closing descriptors of this (single-threaded) process.
    unsafe {
        // Two ranges around `keep`; an empty one is skipped.
        let ranges: [(libc::c_uint, libc::c_uint, bool); 2] = match keep {
            Some(fd) if fd >= 0 => {
                let fd = fd as libc::c_uint;
                [
                    (0, fd.saturating_sub(1), fd > 0),
                    (fd + 1, libc::c_uint::MAX, true),
                ]
            }
            _ => [(0, libc::c_uint::MAX, true), (0, 0, false)],
        };
        for (first, last, wanted) in ranges {
            if !wanted {
                continue;
            }
            if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
                continue;
            }
            // Before Linux 5.9: one at a time, up to the descriptor limit.
            let mut limit: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 20) as libc::c_uint
            } else {
                1024
            };
            let mut fd = first;
            while fd <= last && fd < max {
                libc::close(fd as RawFd);
                fd += 1;
            }
        }
    }
}

/// Writes `data` to the file `path` (a cgroup or proc file: one write).
pub(super) unsafe fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: async-signal-safe system calls on memory prepared before the fork.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(last_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let result = if n == data.len() as isize {
            Ok(())
        } else {
            Err(last_error())
        };
        libc::close(fd);
        result
    }
}

/// Maps the user and group onto themselves in the new user namespace (`setgroups` must
/// be denied before an unprivileged process may write a gid map).
pub(super) unsafe fn write_maps(maps: &UserMaps) -> io::Result<()> {
    // SAFETY: see write_file.
    unsafe {
        // Older kernels have no setgroups file; the gid map then works without it.
        let _ = write_file(c"/proc/self/setgroups", b"deny");
        write_file(c"/proc/self/uid_map", &maps.uid_map)?;
        write_file(c"/proc/self/gid_map", &maps.gid_map)
    }
}
