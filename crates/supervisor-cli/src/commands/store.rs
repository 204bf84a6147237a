//! `supervisor store ...` and `supervisor archive read`: preparing a store, its figures,
//! backups and restores, compaction, and reading what retention archived.
//!
//! `init`, `restore`, `compact`, `fence-all` and `stats --data-dir` work on this machine's
//! files or on a store URL; `backup` and `stats` without `--data-dir` ask a running node.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use supervisor_client::v1;
use supervisor_server::config::Config;
use supervisor_server::maintenance;
use supervisor_server::store::{self, StoreUrl};

use crate::commands::output::{OutputFormat, bytes, print_json, print_stdout};
use crate::commands::{ClientArgs, GlobalArgs, connect};

/// Work on a store.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the store's schema (PostgreSQL; harmless to repeat) or check that the store
    /// is reachable.
    Init {
        /// The store's URL (default: `store.url` from the config).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// A TOML config file.
        #[arg(long, value_name = "FILE", env = "SUPERVISOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The store's size, free space and what it holds: asks the running node, or reads
    /// a stopped node's data directory with --data-dir.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// Read the embedded store in this data directory instead (the node must be
        /// stopped).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Take a consistent backup of a running node's embedded store into FILE (the node
    /// keeps running; the copy is one snapshot). For PostgreSQL use pg_dump
    /// (docs/data.md).
    Backup {
        #[command(flatten)]
        client: ClientArgs,
        /// Where to write the backup (must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Bring a backup back as the embedded store of DIR, fencing every node that ran on
    /// the original so none of them completes anything in the restored store.
    Restore {
        /// The backup (from `supervisor store backup`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The data directory of the node that will run on it.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Replace a store already in DIR (it is kept as supervisor.redb.before-restore).
        #[arg(long)]
        force: bool,
    },
    /// Give the free pages of a stopped node's embedded store back to the file system.
    Compact {
        /// The node's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Fence every node recorded in a store restored by other means (a PostgreSQL dump):
    /// nodes of the original must not complete anything in the restored store.
    FenceAll {
        /// The store's URL (default: `store.url` from the config).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// A TOML config file.
        #[arg(long, value_name = "FILE", env = "SUPERVISOR_CONFIG")]
        config: Option<PathBuf>,
    },
}

impl StoreCommand {
    /// Whether it works on this machine only (takes no client option).
    pub fn is_local(&self) -> bool {
        !matches!(
            self,
            StoreCommand::Backup { .. } | StoreCommand::Stats { data_dir: None, .. }
        )
    }
}

/// Read what retention archived.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Print the records of an archive file as JSON lines (one per record).
    Read {
        /// An archive file (`<archive_dir>/<tenant>/<hour>.jsonl.zst`).
        file: PathBuf,
        /// Only the record with this id.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
}

/// The stats as people read them.
fn stats_text(stats: &v1::StoreStats) -> String {
    let mut out = format!("backend: {}\n", stats.backend);
    if !stats.answered_by.is_empty() {
        out.push_str(&format!("node: {}\n", stats.answered_by));
    }
    if !stats.path.is_empty() {
        let share = |n: u64| {
            if stats.file_bytes == 0 {
                0.0
            } else {
                100.0 * n as f64 / stats.file_bytes as f64
            }
        };
        out.push_str(&format!(
            "file: {}\nsize: {}\nin use: {} ({:.0}%): keys and values {}, page overhead {}, the rest unused space inside pages\nfree: {} ({:.0}%; reused by new writes, given back by `supervisor store compact`)\n",
            stats.path,
            bytes(stats.file_bytes),
            bytes(stats.allocated_bytes),
            share(stats.allocated_bytes),
            bytes(stats.stored_bytes),
            bytes(stats.metadata_bytes),
            bytes(stats.free_bytes),
            share(stats.free_bytes),
        ));
    }
    out.push_str(&format!("tasks held: {}\n", stats.tasks));
    if stats.tasks > 0 && stats.file_bytes > 0 {
        out.push_str(&format!(
            "bytes per task held: {}\n",
            stats.allocated_bytes / stats.tasks
        ));
    }
    out.push_str(&match stats.retention_keep_seconds {
        0 => "retention: finished work is kept forever\n".to_string(),
        // As the config spells it ("30d"), not humantime's "30days".
        s => format!(
            "retention: finished work is deleted {} after it ends\n",
            maintenance::format_period(std::time::Duration::from_secs(s))
        ),
    });
    out
}

fn stats_json(stats: &v1::StoreStats) -> serde_json::Value {
    serde_json::json!({
        "answered_by": stats.answered_by,
        "backend": stats.backend,
        "path": stats.path,
        "file_bytes": stats.file_bytes,
        "allocated_bytes": stats.allocated_bytes,
        "stored_bytes": stats.stored_bytes,
        "metadata_bytes": stats.metadata_bytes,
        "fragmented_bytes": stats.fragmented_bytes,
        "free_bytes": stats.free_bytes,
        "tasks": stats.tasks,
        "retention_keep_seconds": stats.retention_keep_seconds,
    })
}

/// Receives a backup stream into `to`, checking its length and BLAKE3 before keeping it.
async fn receive_backup(
    mut stream: tonic::Streaming<v1::BackupChunk>,
    to: &Path,
) -> anyhow::Result<v1::BackupTrailer> {
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let trailer = loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break None,
            Err(status) => {
                let _ = std::fs::remove_file(&partial);
                return Err(supervisor_client::ClientError::from(status).into());
            }
        };
        match chunk.part {
            Some(v1::backup_chunk::Part::Data(data)) => {
                hasher.update(&data);
                total += data.len() as u64;
                file.write_all(&data)?;
            }
            Some(v1::backup_chunk::Part::Trailer(trailer)) => break Some(trailer),
            None => {}
        }
    };
    let checked = match trailer {
        None => Err(anyhow::anyhow!(
            "the backup stream ended without its trailer after {total} bytes; nothing was kept, take the backup again"
        )),
        Some(t) if t.total_bytes != total || t.blake3 != hasher.finalize().to_hex().as_str() => {
            Err(anyhow::anyhow!(
                "the backup arrived damaged ({total} bytes, the node sent {}; checksums differ); nothing was kept, take the backup again",
                t.total_bytes
            ))
        }
        Some(t) => Ok(t),
    };
    let trailer = match checked {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    file.sync_all()?;
    drop(file);
    if to.exists() {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "{} appeared meanwhile; a backup never overwrites a file",
            to.display()
        );
    }
    std::fs::rename(&partial, to)?;
    Ok(trailer)
}

/// Runs a `store` subcommand.
pub async fn run(
    command: StoreCommand,
    global: impl Fn(&ClientArgs) -> GlobalArgs,
) -> anyhow::Result<()> {
    match command {
        StoreCommand::Init { store, config } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(url) = store {
                cfg.store.url = url;
            }
            let url = StoreUrl::parse(&cfg.store.url)?;
            println!("{}", store::init(&url, &cfg.store, &cfg.data_dir.0).await?);
        }
        StoreCommand::Stats { client, data_dir } => {
            let global = global(&client);
            let stats = match data_dir {
                Some(dir) => maintenance::offline_stats(&dir, None).await?,
                None => connect(&global).await?.store_stats().await?,
            };
            match global.output {
                OutputFormat::Json => print_json(&stats_json(&stats))?,
                OutputFormat::Text => print_stdout(&stats_text(&stats))?,
            }
        }
        StoreCommand::Backup { client, to } => {
            if to.exists() {
                bail!(
                    "{} exists; a backup never overwrites a file: choose a new name",
                    to.display()
                );
            }
            let client = connect(&global(&client)).await?;
            let stream = client.backup_store().await?;
            let trailer = receive_backup(stream, &to).await?;
            println!(
                "backup written to {}: {} ({} keys, everything committed up to version {}); restore it with `supervisor store restore --from {} --data-dir DIR`",
                to.display(),
                bytes(trailer.total_bytes),
                trailer.keys,
                trailer.version,
                to.display()
            );
        }
        StoreCommand::Restore {
            from,
            data_dir,
            force,
        } => {
            let done = maintenance::restore(&from, &data_dir, force).await?;
            println!(
                "restored {} into {} (everything committed up to version {}); fenced {} node record(s) of the original, so none of them completes anything here; start a node with --data-dir {}",
                from.display(),
                done.file.display(),
                done.version,
                done.fenced,
                data_dir.display()
            );
        }
        StoreCommand::Compact { data_dir } => {
            let (path, done) = maintenance::compact(&data_dir)?;
            println!(
                "compacted {}: {} -> {} ({} given back)",
                path.display(),
                bytes(done.before_bytes),
                bytes(done.after_bytes),
                bytes(done.before_bytes.saturating_sub(done.after_bytes))
            );
        }
        StoreCommand::FenceAll { store, config } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(url) = store {
                cfg.store.url = url;
            }
            let url = StoreUrl::parse(&cfg.store.url)?;
            let fenced = maintenance::fence_all(&url, &cfg).await?;
            println!(
                "fenced {fenced} node record(s) in {}; nodes started from now on run normally",
                url.display(&cfg.data_dir.0)
            );
        }
    }
    Ok(())
}

/// Runs an `archive` subcommand.
pub fn run_archive(command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Read { file, id } => {
            let (records, error) = maintenance::read_archive(&file);
            let mut out = String::new();
            for record in records
                .iter()
                .filter(|r| id.as_deref().is_none_or(|id| r.id.to_string() == id))
            {
                out.push_str(&serde_json::to_string(record)?);
                out.push('\n');
            }
            print_stdout(&out)?;
            if let Some(error) = error {
                bail!("{error}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_as_the_config_spells_it() {
        let line = |keep: u64| {
            let stats = v1::StoreStats {
                retention_keep_seconds: keep,
                ..Default::default()
            };
            stats_text(&stats)
                .lines()
                .find(|l| l.starts_with("retention: "))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        assert_eq!(line(0), "retention: finished work is kept forever");
        assert_eq!(
            line(30 * 86_400),
            "retention: finished work is deleted 30d after it ends"
        );
        assert_eq!(
            line(3),
            "retention: finished work is deleted 3s after it ends"
        );
    }
}
