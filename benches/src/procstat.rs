//! CPU time of a process from `/proc/<pid>/stat` (shared by the bench binaries through
//! `#[path]`).

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds of the process whose stat file is `path` (`/proc/self/stat`,
/// `/proc/<pid>/stat`): its own (user + system, every thread) and its ended, waited-for
/// children's. Zero for what cannot be read.
pub fn cpu_seconds(path: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime, stime, cutime, cstime are fields 14 to 17; index 11 to 14 here.
    (
        (ticks(11) + ticks(12)) / TICKS_PER_S,
        (ticks(13) + ticks(14)) / TICKS_PER_S,
    )
}
