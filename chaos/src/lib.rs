//! The chaos suite of Supervisor: a cluster of `supervisor up` processes on a throwaway
//! PostgreSQL server, a steady load of tasks, one injected fault at a time (`kill -9`,
//! SIGSTOP past the lease, a network partition, a PostgreSQL restart, a rolling
//! restart), and an audit of the store afterwards. See `chaos/README.md`.

pub mod audit;
pub mod cluster;
pub mod load;
pub mod netns;
pub mod nodes;
pub mod pg;
pub mod report;
pub mod scale;
pub mod scenario;

/// Wall-clock time in unix microseconds, the unit of event timestamps.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Today's date (UTC) as `YYYY-MM-DD`, for result file names.
pub fn today() -> String {
    chrono::DateTime::from_timestamp_micros(now_micros())
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "undated".into())
}

/// A loopback port nothing listens on right now (the kernel's pick for port 0).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| anyhow::anyhow!("cannot find a free port: {e}"))?;
    Ok(listener.local_addr()?.port())
}
