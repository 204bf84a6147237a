//! A throwaway PostgreSQL server that the suite can stop and start again under load.
//!
//! The server is run with `pg_ctl` (not as a child of this process) so that the
//! `pg-restart` scenario can stop it with `pg_ctl -m fast stop` and bring it back on the same
//! data directory and port, exactly as an operator would. PostgreSQL refuses to run as
//! root, so as root it runs as the OS user `supervisor-test` (created when missing), as the
//! store's own tests do. Connections are trusted (no password): the server listens only on
//! loopback and, for the `partition` scenario, on the host end of the suite's own bridge.
//! `fsync` is off: no scenario crashes the server itself (`pg-restart` stops it cleanly),
//! and the suite measures the cluster, not the disk.
//!
//! The server is stopped and its directory removed when the [`PgServer`] is dropped.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The OS user the server runs as when the suite runs as root.
const OS_USER: &str = "supervisor-test";

/// The database superuser the nodes connect as.
pub const DB_USER: &str = "postgres";

/// A PostgreSQL server in a temporary directory.
pub struct PgServer {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    listen: Vec<String>,
    owner: Option<(u32, u32)>,
    settings: Vec<String>,
}

impl PgServer {
    /// Creates a cluster with `initdb` and starts it on a free port, listening on
    /// `listen` (IPv4 addresses; `127.0.0.1` is always added), with extra server
    /// `settings` (`name=value`, as `postgres -c` takes them).
    pub fn start(listen: &[String], settings: &[String]) -> Result<PgServer> {
        let bin = server_binaries()?;
        let owner = os_owner()?;
        let root = tempfile::Builder::new()
            .prefix("supervisor-chaos-pg-")
            .tempdir()
            .context("cannot create a directory for the PostgreSQL server")?
            .keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to {OS_USER}", root.display()))?;
        }
        let mut addrs = vec!["127.0.0.1".to_string()];
        addrs.extend(listen.iter().filter(|a| *a != "127.0.0.1").cloned());
        let port = crate::free_port()?;
        let server = PgServer {
            bin,
            root,
            port,
            listen: addrs,
            owner,
            settings: settings.to_vec(),
        };
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-U", DB_USER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .context("cannot run initdb")?;
        check(&out, "initdb")?;
        server.trust_bridge_hosts()?;
        server.start_again()?;
        Ok(server)
    }

    /// `initdb` trusts loopback only; nodes in namespaces connect from the bridge's /24.
    fn trust_bridge_hosts(&self) -> Result<()> {
        let hba = self.data_dir().join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba)
            .with_context(|| format!("cannot read {}", hba.display()))?;
        for addr in self.listen.iter().filter(|a| *a != "127.0.0.1") {
            text.push_str(&format!("host all all {addr}/24 trust\n"));
        }
        std::fs::write(&hba, text).with_context(|| format!("cannot write {}", hba.display()))
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log file (kept until the server is dropped).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Where the server's programs are (`pg_dump`, `pg_restore`, `psql` beside them).
    pub fn bin_dir(&self) -> &std::path::Path {
        &self.bin
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.root).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) -> Result<()> {
        let mut options = format!(
            "-p {} -c listen_addresses={} -k {} -c fsync=off -c max_connections=400",
            self.port,
            self.listen.join(","),
            self.root.display(),
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .context("cannot run pg_ctl start")?;
        check(&out, "pg_ctl start").map_err(|e| anyhow!("{e}\nserver log:\n{}", self.log()))
    }

    /// Stops the server the way `pg_ctl -m fast stop` does: open sessions are ended,
    /// committed work is kept.
    pub fn stop_fast(&self) -> Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .context("cannot run pg_ctl stop")?;
        check(&out, "pg_ctl stop")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A connection URL for `database` through `host` (one of the listen addresses).
    pub fn url(&self, host: &str, database: &str) -> String {
        format!("postgres://{DB_USER}@{host}:{}/{database}", self.port)
    }

    /// Creates an empty database (no schema) named `name`.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let statement = format!("CREATE DATABASE {name}");
        self.admin(async |client| {
            client
                .batch_execute(&statement)
                .await
                .with_context(|| format!("cannot create database {name}"))
        })
        .await
    }

    /// Runs `work` on a superuser connection to the `postgres` database.
    async fn admin<T>(
        &self,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T>,
    ) -> Result<T> {
        let url = self.url("127.0.0.1", "postgres");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to the PostgreSQL server at {url}"))?;
        let driver = tokio::spawn(connection);
        let result = work(&client).await;
        drop(client);
        let _ = driver.await;
        result
    }

    /// A one-line summary of the sessions on `database`: client address, state and what
    /// they wait for, with counts (for diagnosing a stalled cluster).
    pub async fn sessions(&self, database: &str) -> Result<String> {
        let rows = self
            .admin(async |client| {
                client
                    .query(
                        "SELECT coalesce(host(client_addr), 'local'), coalesce(state, ''), \
                 coalesce(wait_event_type || ':' || wait_event, 'running'), count(*) \
                 FROM pg_stat_activity WHERE datname = $1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                        &[&database],
                    )
                    .await
                    .context("cannot read pg_stat_activity")
            })
            .await?;
        let parts: Vec<String> = rows
            .iter()
            .map(|r| {
                let (addr, state, wait, n): (String, String, String, i64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                format!("{addr} {state} ({wait}) ×{n}")
            })
            .collect();
        Ok(parts.join("; "))
    }

    /// Waits until the server accepts connections again, up to `limit`.
    pub fn wait_ready(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "PostgreSQL did not accept connections within {limit:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn check(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The directory with `initdb`, `pg_ctl` and `pg_isready`: `SUPERVISOR_TEST_PG_BIN`, else
/// the newest `/usr/lib/postgresql/*/bin`.
fn server_binaries() -> Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "pg_isready", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("SUPERVISOR_TEST_PG_BIN").map(PathBuf::from) {
        if complete(&dir) {
            return Ok(dir);
        }
        bail!(
            "SUPERVISOR_TEST_PG_BIN={} lacks one of initdb, pg_ctl, pg_isready, postgres",
            dir.display()
        );
    }
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let dir = entry.path().join("bin");
            if let Some(version) = entry.file_name().to_str().and_then(|v| v.parse().ok())
                && complete(&dir)
            {
                found.push((version, dir));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, dir)| dir).ok_or_else(|| {
        anyhow!(
            "the chaos suite needs the PostgreSQL server binaries and found none under \
             /usr/lib/postgresql/*/bin; install them (Debian: `apt-get install postgresql`) \
             or set SUPERVISOR_TEST_PG_BIN to their directory"
        )
    })
}

/// As root, the uid and gid of [`OS_USER`] (created when missing); otherwise `None`.
fn os_owner() -> Result<Option<(u32, u32)>> {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return Ok(None);
    }
    let lookup = || -> Option<(u32, u32)> {
        let out = Command::new("id").arg(OS_USER).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // `uid=998(supervisor-test) gid=998(supervisor-test) groups=...`
        let field = |name: &str| -> Option<u32> {
            let rest = text.split(&format!("{name}=")).nth(1)?;
            rest.split('(').next()?.parse().ok()
        };
        Some((field("uid")?, field("gid")?))
    };
    if let Some(ids) = lookup() {
        return Ok(Some(ids));
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(OS_USER)
        .output()
        .context("PostgreSQL refuses to run as root, and useradd could not run")?;
    lookup().map(Some).ok_or_else(|| {
        anyhow!(
            "PostgreSQL refuses to run as root, and creating the OS user {OS_USER} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
