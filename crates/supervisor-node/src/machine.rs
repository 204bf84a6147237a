//! What a node measures of its machine for its heartbeat: CPU and memory from `/proc`,
//! free space of the disks it writes to from `statvfs`, and the processes of its running
//! attempts (the node's descendants, grouped by the attempt's work directory). Measured,
//! never assumed: a value the platform does not give stays zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use supervisor_engine::{AttemptUsage, DiskUsage, NodeResources};

/// Most attempts listed in one report (the busiest by memory).
const MAX_ATTEMPTS_LISTED: usize = 64;

/// Measures the machine; remembers the previous CPU counters to report a busy share.
#[derive(Debug)]
pub(crate) struct Sampler {
    /// Directories to measure: what is kept there, where, and whether repository work
    /// needs its space.
    disks: Vec<(String, PathBuf, bool)>,
    /// Below this many free bytes on a work disk the node takes no repository tasks.
    min_free_bytes: u64,
    previous_cpu: Option<(u64, u64)>,
    ticks_per_second: u64,
    page_size: u64,
}

impl Sampler {
    /// A sampler of `data_dir` and the providers' `work_dirs` (purpose, path).
    pub(crate) fn new(
        data_dir: Option<PathBuf>,
        work_dirs: Vec<(String, PathBuf)>,
        min_free_bytes: u64,
    ) -> Sampler {
        let mut disks = Vec::new();
        if let Some(dir) = data_dir {
            disks.push(("data".to_string(), dir, false));
        }
        for (purpose, dir) in work_dirs {
            disks.push((purpose, dir, true));
        }
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Sampler {
            disks,
            min_free_bytes,
            previous_cpu: None,
            ticks_per_second: u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100),
            page_size: u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096),
        }
    }

    /// Measures everything now.
    pub(crate) fn sample(&mut self, now_micros: i64) -> NodeResources {
        let mut r = NodeResources {
            measured_at: now_micros,
            cpu_cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(0),
            ..NodeResources::default()
        };
        if let Some((busy, total)) = read_cpu_totals() {
            if let Some((pbusy, ptotal)) = self.previous_cpu
                && total > ptotal
            {
                r.cpu_busy_permille =
                    (busy.saturating_sub(pbusy) * 1000 / (total - ptotal)).min(1000) as u32;
            }
            self.previous_cpu = Some((busy, total));
        }
        if let Some((total, available)) = read_meminfo() {
            r.memory_total_bytes = total;
            r.memory_available_bytes = available;
        }
        let me = std::process::id();
        let processes = read_processes(self.ticks_per_second, self.page_size);
        if let Some(own) = processes.get(&me) {
            r.process_rss_bytes = own.rss_bytes;
            r.process_cpu_ms = own.cpu_ms;
        }
        r.attempts = group_attempts(me, &processes);
        for (purpose, path, work) in &self.disks {
            if let Some((total, free)) = statvfs(path) {
                if *work && free < self.min_free_bytes {
                    r.low_on_disk = true;
                }
                r.disks.push(DiskUsage {
                    purpose: purpose.clone(),
                    path: path.display().to_string(),
                    total_bytes: total,
                    free_bytes: free,
                });
            }
        }
        r
    }
}

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn read_cpu_totals() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Total and available memory, from `/proc/meminfo`.
fn read_meminfo() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

#[derive(Debug, Clone, Default)]
struct Process {
    parent: u32,
    rss_bytes: u64,
    cpu_ms: u64,
    command: String,
}

/// Every process this node may read, by pid.
fn read_processes(ticks_per_second: u64, page_size: u64) -> HashMap<u32, Process> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(p) = read_process(pid, ticks_per_second, page_size) {
            out.insert(pid, p);
        }
    }
    out
}

/// One process from `/proc/<pid>/stat` (the command sits in parentheses and may hold
/// spaces, so fields are read after its closing one).
fn read_process(pid: u32, ticks_per_second: u64, page_size: u64) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, ticks_per_second, page_size)
}

fn parse_stat(stat: &str, ticks_per_second: u64, page_size: u64) -> Option<Process> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12) ... rss(21).
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: i64 = fields.get(21)?.parse().ok()?;
    Some(Process {
        parent,
        rss_bytes: rss_pages.max(0) as u64 * page_size,
        cpu_ms: (utime + stime) * 1000 / ticks_per_second.max(1),
        command,
    })
}

/// The node's descendants grouped by attempt: each process counts toward the work
/// directory of the nearest ancestor (itself included) whose working directory is an
/// attempt's (`…/<task id>-a<n>`), or else toward its top-level child's command.
fn group_attempts(me: u32, processes: &HashMap<u32, Process>) -> Vec<AttemptUsage> {
    let mut groups: HashMap<String, AttemptUsage> = HashMap::new();
    for (&pid, process) in processes {
        if pid == me || !descends_from(pid, me, processes) {
            continue;
        }
        let name = attempt_of(pid, me, processes).unwrap_or_else(|| process.command.clone());
        let group = groups.entry(name.clone()).or_insert_with(|| AttemptUsage {
            attempt: name,
            ..AttemptUsage::default()
        });
        group.processes += 1;
        group.rss_bytes += process.rss_bytes;
        group.cpu_ms += process.cpu_ms;
    }
    let mut out: Vec<AttemptUsage> = groups.into_values().collect();
    out.sort_by(|a, b| {
        b.rss_bytes
            .cmp(&a.rss_bytes)
            .then(a.attempt.cmp(&b.attempt))
    });
    out.truncate(MAX_ATTEMPTS_LISTED);
    out
}

fn descends_from(mut pid: u32, ancestor: u32, processes: &HashMap<u32, Process>) -> bool {
    // Bounded: a pid table read mid-change could hold a cycle.
    for _ in 0..64 {
        match processes.get(&pid) {
            Some(p) if p.parent == ancestor => return true,
            Some(p) if p.parent > 1 => pid = p.parent,
            _ => return false,
        }
    }
    false
}

/// The attempt directory name of `pid` or its nearest ancestor below `me`.
fn attempt_of(mut pid: u32, me: u32, processes: &HashMap<u32, Process>) -> Option<String> {
    for _ in 0..64 {
        if pid == me {
            return None;
        }
        if let Some(name) = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .and_then(|cwd| attempt_dir_name(&cwd))
        {
            return Some(name);
        }
        pid = processes.get(&pid)?.parent;
    }
    None
}

/// `<uuid>-a<n>` when a path component has that shape.
fn attempt_dir_name(path: &Path) -> Option<String> {
    path.components().rev().find_map(|c| {
        let name = c.as_os_str().to_str()?;
        supervisor_model::attempt_of_dir(name).map(|_| name.to_string())
    })
}

/// Total and available bytes of the file system holding `path` (or its nearest existing
/// ancestor, for a directory not made yet).
fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let mut probe = std::path::absolute(path).ok()?;
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok()?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `out` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), out.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `out`.
    let s = unsafe { out.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (block, blocks, available) = (s.f_frsize as u64, s.f_blocks as u64, s.f_bavail as u64);
    Some((
        blocks.saturating_mul(block),
        available.saturating_mul(block),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_command_parses() {
        let line = "4242 (claude code) S 4000 4242 4242 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 3 0 1 1000 256 18446744073709551615";
        let p = parse_stat(line, 100, 4096).expect("parses");
        assert_eq!(p.parent, 4000);
        assert_eq!(p.command, "claude code");
        assert_eq!(p.cpu_ms, 2000);
        assert_eq!(p.rss_bytes, 256 * 4096);
    }

    #[test]
    fn attempt_directories_are_recognised() {
        let p = Path::new("/var/lib/sv/worktrees/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-a2/src");
        assert_eq!(
            attempt_dir_name(p).as_deref(),
            Some("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-a2")
        );
        assert_eq!(attempt_dir_name(Path::new("/home/a-a1")), None);
    }

    #[test]
    fn a_child_process_is_measured_under_its_attempt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let attempt = dir.path().join("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-a1");
        std::fs::create_dir(&attempt).expect("mkdir");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&attempt)
            .spawn()
            .expect("spawn sleep");
        let mut sampler = Sampler::new(Some(dir.path().to_path_buf()), vec![], 0);
        let first = sampler.sample(1);
        let _ = child.kill();
        let _ = child.wait();
        let group = first
            .attempts
            .iter()
            .find(|a| a.attempt == "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-a1")
            .expect("the child is listed under its attempt");
        assert_eq!(group.processes, 1);
        assert!(group.rss_bytes > 0);
        assert!(first.memory_total_bytes > 0 && first.memory_available_bytes > 0);
        assert!(first.process_rss_bytes > 0);
        assert_eq!(first.disks.len(), 1);
        assert!(first.disks[0].total_bytes >= first.disks[0].free_bytes);
        assert!(first.disks[0].free_bytes > 0);
        // A threshold above any disk's free space marks the node low on disk.
        let mut strict = Sampler::new(None, vec![("work".into(), dir.path().into())], u64::MAX);
        assert!(strict.sample(2).low_on_disk);
    }
}
