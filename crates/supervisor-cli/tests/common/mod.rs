//! Starts real `supervisor up` processes for the end-to-end tests.

#![allow(dead_code)]

pub mod receivers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `supervisor up` process. Killed (SIGKILL) when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The HTTP side (`/metrics`), on a free port unless the test chose one.
    pub http_addr: Option<String>,
}

impl NodeProcess {
    /// Starts a node on a free loopback port over `data_dir`, with extra environment
    /// (e.g. `SUPERVISOR_PROVIDERS__MOCK__LATENCY`), and waits until it listens.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> NodeProcess {
        NodeProcess::start_with_args(data_dir, &[], env)
    }

    /// Like [`NodeProcess::start`], with more arguments to `up` (such as `--store URL
    /// --join --node-id n2`).
    pub fn start_with_args(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_supervisor"));
        cmd.args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            // Many nodes run at once: each its own metrics port.
            .env("SUPERVISOR_SERVER__HTTP_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn supervisor up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let (http_tx, http_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut http_tx = Some(http_tx);
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
                if let Some(rest) = line.strip_prefix("metrics: http://")
                    && let Some(addr) = rest.split('/').next()
                    && let Some(http_tx) = &http_tx
                {
                    let _ = http_tx.send(addr.to_string());
                }
                if line.starts_with("providers: ") {
                    // The banner is over: no metrics line means no HTTP side.
                    http_tx = None;
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("supervisor up did not report its address within 60s");
            }
        };
        let http_addr = http_rx.recv_timeout(Duration::from_secs(10)).ok();
        NodeProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            http_addr,
        }
    }

    /// `http://` URL of the node.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, no chance to drain.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` (SIGTERM, SIGINT...) without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Sends `signal` (SIGTERM, SIGINT) and waits for the node to exit; returns the exit
    /// status.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit within 60s of signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `supervisor` command with extra environment and returns (exit code, stdout,
/// stderr); the exit code is -1 when a signal ended it.
pub fn supervisor(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    supervisor_in(Path::new("."), args, env)
}

/// [`supervisor`] run in the directory `dir`.
pub fn supervisor_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run supervisor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `supervisor` CLI against `addr` and returns (exit code, stdout, stderr).
pub fn cli(addr: &str, args: &[&str]) -> (i32, String, String) {
    supervisor(args, &[("SUPERVISOR_SERVER", addr)])
}

/// A client of `node` presenting `token` (an API key or a JWT).
pub async fn as_token(node: &NodeProcess, token: &str) -> supervisor_client::Client {
    supervisor_client::Client::connect_with(
        &node.url(),
        &supervisor_client::ConnectOptions {
            token: Some(token.to_string()),
            ..supervisor_client::ConnectOptions::default()
        },
    )
    .await
    .expect("connect")
}

/// Writes `script` as an executable fake `claude` in `dir`, and the config of a node whose
/// only provider runs it; returns the config's path.
pub fn fake_cli_config(dir: &Path, script: &str) -> PathBuf {
    let fake = dir.join("fake-claude");
    std::fs::write(&fake, script).expect("write the fake CLI");
    let made_executable = Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .expect("chmod")
        .success();
    assert!(made_executable);
    let config = dir.join("supervisor.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.mock]\nkind = \"mock\"\nenabled = false\n\n[providers.cli]\nkind = \"claude_cli\"\nbinary = \"{}\"\n",
            fake.display()
        ),
    )
    .expect("write the config");
    config
}

/// A throwaway PostgreSQL with a fresh database whose schema `store init` made, and the
/// store's URL.
pub async fn pg_store() -> (supervisor_chaos::pg::PgServer, String) {
    let pg = supervisor_chaos::pg::PgServer::start(&[], &[])
        .expect("a throwaway PostgreSQL (apt-get install postgresql)");
    pg.create_database("sv").await.expect("database");
    let url = pg.url("127.0.0.1", "sv");
    let (code, _, err) = supervisor(&["store", "init", "--store", &url], &[]);
    assert_eq!(code, 0, "{err}");
    (pg, url)
}

/// Node processes `n1`, `n2`... sharing a fresh database on a throwaway PostgreSQL.
pub struct PgCluster {
    pub pg: supervisor_chaos::pg::PgServer,
    /// The store's URL.
    pub url: String,
    /// Each node's data directory.
    pub dirs: Vec<tempfile::TempDir>,
    pub nodes: Vec<NodeProcess>,
}

impl PgCluster {
    /// Starts PostgreSQL, creates the schema, and starts `n` nodes with `env`.
    pub async fn start(n: usize, env: &[(&str, &str)]) -> PgCluster {
        let (pg, url) = pg_store().await;
        let dirs: Vec<tempfile::TempDir> = (0..n)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let nodes = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let id = format!("n{}", i + 1);
                NodeProcess::start_with_args(
                    dir.path(),
                    &["--store", &url, "--join", "--node-id", &id],
                    env,
                )
            })
            .collect();
        PgCluster {
            pg,
            url,
            dirs,
            nodes,
        }
    }
}
