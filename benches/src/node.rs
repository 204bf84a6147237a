//! A `supervisor up` process for the bench binaries that measure a node from outside
//! (shared through `#[path]`): started on a free port with the given arguments and
//! environment, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// A running node.
pub struct Node {
    /// Its process.
    pub child: Child,
    /// Its gRPC address.
    pub addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `supervisor` binary: `given`, else the one next to this bench binary.
pub fn supervisor_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench's directory")?
            .join("supervisor"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p supervisor-cli) or pass --supervisor",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts `bin up` on a free loopback port over `data_dir` with `args` and `env` (no
/// HTTP side, warnings only), and waits until it listens.
pub fn start(
    bin: &Path,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Node> {
    let mut cmd = Command::new(bin);
    cmd.args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("SUPERVISOR_SERVER__HTTP_LISTEN", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the node did not report its address within 60s")?;
    Ok(Node { child, addr })
}

/// Stops `node` with SIGTERM and waits for it to exit.
#[allow(dead_code)] // not every binary stops its node gracefully
pub fn stop(mut node: Node) -> anyhow::Result<()> {
    // SAFETY: kill(2) on our own child with SIGTERM.
    unsafe {
        libc::kill(node.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.child.try_wait()?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "the node did not stop within 60s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
