//! Which store a node uses, chosen by URL: `embedded:///` (the default: a redb file in the
//! data directory), `embedded:///abs/path/supervisor.redb`, `postgres://user@host/db`, or
//! `fdb:///etc/foundationdb/fdb.cluster` (`fdb://` alone: the default cluster file; needs a
//! build with `--features fdb`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use supervisor_store::Db;
use supervisor_store::embedded::{Durability, EmbeddedOptions};

use crate::config::{DurabilityMode, StoreConfig};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store: this file, or `supervisor.redb` in the data directory.
    Embedded(Option<PathBuf>),
    /// PostgreSQL at this connection URL.
    Postgres(String),
    /// FoundationDB through this cluster file (the client library's default when absent).
    Fdb(Option<PathBuf>),
}

impl StoreUrl {
    /// Parses `url`, naming what is wrong with it.
    pub fn parse(url: &str) -> anyhow::Result<StoreUrl> {
        let url = url.trim();
        if url.is_empty() || url == "embedded" || url == "embedded://" || url == "embedded:///" {
            return Ok(StoreUrl::Embedded(None));
        }
        if let Some(path) = url.strip_prefix("embedded://") {
            if !path.starts_with('/') {
                bail!(
                    "store URL {url:?}: an embedded path must be absolute, like embedded:///var/lib/supervisor/supervisor.redb"
                );
            }
            return Ok(StoreUrl::Embedded(Some(PathBuf::from(path))));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("fdb://") {
            return Ok(StoreUrl::Fdb(if path.is_empty() || path == "/" {
                None
            } else {
                Some(PathBuf::from(path))
            }));
        }
        bail!(
            "store URL {url:?} is not one of embedded:///[path], postgres://user@host:port/db or fdb:///path/to/fdb.cluster"
        )
    }

    /// Whether several nodes can share it.
    pub fn is_shared(&self) -> bool {
        !matches!(self, StoreUrl::Embedded(_))
    }

    /// The URL for messages, with any password hidden.
    pub fn display(&self, data_dir: &Path) -> String {
        match self {
            StoreUrl::Embedded(path) => format!(
                "embedded:///{}",
                path.clone()
                    .unwrap_or_else(|| data_dir.join("supervisor.redb"))
                    .display()
                    .to_string()
                    .trim_start_matches('/')
            ),
            StoreUrl::Postgres(url) => supervisor_store::postgres::redact_url(url),
            StoreUrl::Fdb(Some(path)) => format!("fdb://{}", path.display()),
            StoreUrl::Fdb(None) => "fdb:// (default cluster file)".into(),
        }
    }
}

/// Opens the store `url` names with `cfg`'s settings; `data_dir` holds the embedded file
/// when the URL gives no path.
pub async fn open(url: &StoreUrl, cfg: &StoreConfig, data_dir: &Path) -> anyhow::Result<Db> {
    match url {
        StoreUrl::Embedded(path) => {
            let path = path
                .clone()
                .unwrap_or_else(|| data_dir.join("supervisor.redb"));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("could not create the directory {}", parent.display())
                })?;
            }
            let options = EmbeddedOptions {
                durability: match cfg.durability {
                    DurabilityMode::Immediate => Durability::Immediate,
                    DurabilityMode::Relaxed => Durability::Relaxed,
                },
                max_batch: cfg.max_batch,
                cache_bytes: cfg.cache_mb.saturating_mul(1024 * 1024),
            };
            supervisor_store::embedded::open_db(&path, options)
                .with_context(|| format!("could not open the store at {}", path.display()))
        }
        StoreUrl::Postgres(url) => {
            let options = supervisor_store::postgres::PostgresOptions {
                pool_size: cfg.pool_size,
                create_schema: false,
            };
            Ok(supervisor_store::postgres::open_db(url, options).await?)
        }
        StoreUrl::Fdb(cluster_file) => open_fdb(cluster_file.as_deref()).await,
    }
}

/// Creates the store's schema (PostgreSQL) or checks that it is reachable (others).
pub async fn init(url: &StoreUrl, cfg: &StoreConfig, data_dir: &Path) -> anyhow::Result<String> {
    match url {
        StoreUrl::Postgres(raw) => {
            supervisor_store::postgres::PostgresStore::init(raw).await?;
            Ok(format!(
                "initialized {} (the schema is in place; running init again is harmless)",
                url.display(data_dir)
            ))
        }
        _ => {
            let _db = open(url, cfg, data_dir).await?;
            Ok(format!(
                "{} is ready (this store needs no schema)",
                url.display(data_dir)
            ))
        }
    }
}

#[cfg(feature = "fdb")]
async fn open_fdb(cluster_file: Option<&Path>) -> anyhow::Result<Db> {
    Ok(
        supervisor_store::fdb::open_db(cluster_file, supervisor_store::fdb::FdbOptions::default())
            .await?,
    )
}

#[cfg(not(feature = "fdb"))]
async fn open_fdb(_cluster_file: Option<&Path>) -> anyhow::Result<Db> {
    bail!(
        "this build has no FoundationDB support: rebuild with `cargo build --release -p supervisor-cli --features fdb` (see docs/foundationdb.md)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_their_backend_and_bad_ones_say_what_is_accepted() {
        assert_eq!(StoreUrl::parse("").unwrap(), StoreUrl::Embedded(None));
        assert_eq!(
            StoreUrl::parse("embedded:///").unwrap(),
            StoreUrl::Embedded(None)
        );
        assert_eq!(
            StoreUrl::parse("embedded:///var/lib/s.redb").unwrap(),
            StoreUrl::Embedded(Some(PathBuf::from("/var/lib/s.redb")))
        );
        assert!(matches!(
            StoreUrl::parse("postgres://sv@127.0.0.1:5432/sv").unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert_eq!(
            StoreUrl::parse("fdb:///etc/foundationdb/fdb.cluster").unwrap(),
            StoreUrl::Fdb(Some(PathBuf::from("/etc/foundationdb/fdb.cluster")))
        );
        assert_eq!(StoreUrl::parse("fdb://").unwrap(), StoreUrl::Fdb(None));
        let err = StoreUrl::parse("mysql://x").unwrap_err().to_string();
        assert!(err.contains("postgres://"), "{err}");
        let err = StoreUrl::parse("embedded://relative")
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
        assert!(
            !StoreUrl::parse("postgres://sv:hunter2@db/sv")
                .unwrap()
                .display(Path::new("/d"))
                .contains("hunter2")
        );
    }
}
