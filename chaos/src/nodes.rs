//! `supervisor up` processes: start (optionally inside a network namespace), signal,
//! restart.
//!
//! A node is ready when it prints a line containing `listening on ADDR`, the same
//! contract the CLI's process tests rely on. Its stdout and stderr go to a log file per
//! start, which the report names when something goes wrong.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// What every node of a run shares.
#[derive(Debug, Clone)]
pub struct NodeCommon {
    /// The `supervisor` binary.
    pub supervisor: PathBuf,
    /// `SUPERVISOR_*` settings passed to every node (mock latency, lease...).
    pub env: Vec<(String, String)>,
    /// Where node data directories and logs go.
    pub work_dir: PathBuf,
}

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its node id (`n1`, `n2`...).
    pub id: String,
    /// The address it listens on (gRPC on a free port, cluster on `cluster_port`).
    pub ip: String,
    /// The network namespace to run in, if any.
    pub netns: Option<String>,
    /// The store URL as seen from where it runs.
    pub store_url: String,
    /// The port of its cluster listener (fixed: peers dial the advertised address, so it
    /// cannot be 0, and it stays the same across restarts).
    pub cluster_port: u16,
}

/// A running (or stopped, or dead) node process.
pub struct Node {
    spec: NodeSpec,
    common: NodeCommon,
    child: Child,
    addr: String,
    log: PathBuf,
    starts: u32,
}

/// How long a node may take to print its address.
const START_LIMIT: Duration = Duration::from_secs(60);

impl Node {
    /// Starts the node and waits until it serves.
    pub fn start(spec: NodeSpec, common: NodeCommon) -> Result<Node> {
        let (child, addr, log) = spawn(&spec, &common, 1)?;
        Ok(Node {
            spec,
            common,
            child,
            addr,
            log,
            starts: 1,
        })
    }

    /// Its node id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The gRPC address of the current process (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The log file of the current process.
    pub fn log(&self) -> &Path {
        &self.log
    }

    fn signal(&self, signal: i32) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped
        // (reaping happens only in `wait_exit`, `kill9` and drop).
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            bail!(
                "kill({pid}, {signal}) on node {} failed: {}",
                self.spec.id,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGKILL: no chance to drain or hand anything back.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        self.child.wait().context("wait for the killed node")?;
        Ok(())
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn stop(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`Node::stop`].
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// SIGTERM, then waits up to `limit` for the process to exit; returns its status.
    pub fn terminate(&mut self, limit: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > limit {
                bail!(
                    "node {} did not exit within {limit:?} of SIGTERM (log: {})",
                    self.spec.id,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Starts a new process for the same node (same id and data directory) after the
    /// previous one exited or was killed.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!(
                "node {} still runs; stop it before restarting",
                self.spec.id
            );
        }
        self.starts += 1;
        let (child, addr, log) = spawn(&self.spec, &self.common, self.starts)?;
        self.child = child;
        self.addr = addr;
        self.log = log;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(spec: &NodeSpec, common: &NodeCommon, start: u32) -> Result<(Child, String, PathBuf)> {
    let data_dir = common.work_dir.join(&spec.id);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let log = common.work_dir.join(format!("{}-{start}.log", spec.id));
    let log_file =
        File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = match &spec.netns {
        Some(ns) => {
            // `ip netns exec` enters the namespace and execs the program, so the child's
            // pid is the node's and signals reach it directly.
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(&common.supervisor);
            cmd
        }
        None => Command::new(&common.supervisor),
    };
    cmd.args([
        "up",
        "--join",
        "--store",
        &spec.store_url,
        "--node-id",
        &spec.id,
    ])
    .arg("--data-dir")
    .arg(&data_dir)
    .args(["--listen", &format!("{}:0", spec.ip)])
    .args(["--http-listen", &format!("{}:0", spec.ip)])
    // A closed network of the test's own namespaces: no authentication to set up.
    .arg("--insecure")
    .args([
        "--cluster-listen",
        &format!("{}:{}", spec.ip, spec.cluster_port),
    ])
    .env("SUPERVISOR_CLUSTER__COOKIE", "chaos-cookie")
    .env(
        "RUST_LOG",
        std::env::var("CHAOS_NODE_RUST_LOG").unwrap_or_else(|_| "warn".into()),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::from(log_file.try_clone()?));
    for (k, v) in &common.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", common.supervisor.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("the node's stdout was not captured"))?;
    let (tx, rx) = mpsc::channel();
    let mut copy = OpenOptions::new().append(true).open(&log)?;
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(copy, "{line}");
            if !sent && let Some(addr) = line.split("listening on ").nth(1) {
                let addr = addr.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(addr.to_string());
                sent = true;
            }
        }
    });
    let start_at = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(addr) => return Ok((child, addr, log)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "node {} exited before it served; its log ({}):\n{}",
                    spec.id,
                    log.display(),
                    tail(&log)
                );
            }
        }
        if start_at.elapsed() > START_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "node {} printed no `listening on` line within {START_LIMIT:?}; its log ({}):\n{}",
                spec.id,
                log.display(),
                tail(&log)
            );
        }
    }
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
