//! Which store a node uses, chosen by URL: `embedded:///` (the default: a redb file in the
//! data directory), `embedded:///abs/path/supervisor.redb`, `postgres://user@host/db`, or
//! `fdb:///etc/foundationdb/fdb.cluster` (`fdb://` alone: the default cluster file; needs a
//! build with the `fdb` feature), and the `[store]` settings that go with it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use supervisor_store::embedded::{Durability, EmbeddedOptions};
use supervisor_store::{Db, StoreError};

/// How the embedded store commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// Every acknowledged write is on disk (fsync per group commit). The default.
    #[default]
    Immediate,
    /// Writes are acknowledged before they reach the disk; a crash may lose the last
    /// moments of work. For benchmarks and throwaway nodes.
    Relaxed,
}

/// The store: which one, and how it commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Which store: `embedded:///` (default: `supervisor.redb` in the data directory),
    /// `embedded:///abs/path.redb`, `postgres://user@host:port/db` or
    /// `fdb:///etc/foundationdb/fdb.cluster`.
    pub url: String,
    /// PostgreSQL: most connections in the pool. Default 16.
    pub pool_size: usize,
    /// Embedded: `immediate` (default) or `relaxed`.
    pub durability: DurabilityMode,
    /// Embedded: most transactions applied per disk commit. Default 1024.
    pub max_batch: usize,
    /// Embedded: memory for cached database pages, in MiB. Default 128.
    pub cache_mb: usize,
    /// Embedded: compact the file before the node opens it, giving the pages retention
    /// freed back to the file system (the start takes longer, with the file's size). A
    /// running node reuses free pages by itself. Default false.
    pub compact_at_start: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "embedded:///".into(),
            pool_size: 16,
            durability: DurabilityMode::Immediate,
            max_batch: 1024,
            cache_mb: 128,
            compact_at_start: false,
        }
    }
}

/// A store URL that names no store this build knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    /// `embedded://` followed by a relative path.
    #[error(
        "store URL {url:?}: an embedded path must be absolute, like embedded:///var/lib/supervisor/supervisor.redb"
    )]
    RelativePath {
        /// The URL as given.
        url: String,
    },
    /// A scheme other than `embedded`, `postgres`, `postgresql` or `fdb`.
    #[error(
        "store URL {url:?} is not one of embedded:///[path], postgres://user@host:port/db or fdb:///path/to/fdb.cluster"
    )]
    UnknownScheme {
        /// The URL as given.
        url: String,
    },
}

/// Errors opening or preparing a store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory of the embedded store's file could not be created.
    #[error("could not create the directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The embedded store's file could not be opened (locked by another process,
    /// unreadable, corrupt).
    #[error("could not open the store at {}", path.display())]
    Embedded {
        /// The store's file.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// PostgreSQL or FoundationDB refused or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An `fdb://` URL, in a build without the `fdb` feature.
    #[error(
        "this build has no FoundationDB support: rebuild with `cargo build --release -p supervisor-cli --features fdb` (see docs/foundationdb.md)"
    )]
    NoFdb,
}

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
    pub fn parse(url: &str) -> Result<StoreUrl, StoreUrlError> {
        let url = url.trim();
        if url.is_empty() || url == "embedded" || url == "embedded://" || url == "embedded:///" {
            return Ok(StoreUrl::Embedded(None));
        }
        if let Some(path) = url.strip_prefix("embedded://") {
            if !path.starts_with('/') {
                return Err(StoreUrlError::RelativePath {
                    url: url.to_owned(),
                });
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
        Err(StoreUrlError::UnknownScheme {
            url: url.to_owned(),
        })
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
pub async fn open(url: &StoreUrl, cfg: &StoreConfig, data_dir: &Path) -> Result<Db, OpenError> {
    match url {
        StoreUrl::Embedded(path) => {
            let path = path
                .clone()
                .unwrap_or_else(|| data_dir.join("supervisor.redb"));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| OpenError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            if cfg.compact_at_start && path.exists() {
                let done = supervisor_store::embedded::compact(&path).map_err(|source| {
                    OpenError::Embedded {
                        path: path.clone(),
                        source,
                    }
                })?;
                tracing::info!(
                    path = %path.display(),
                    before = done.before_bytes,
                    after = done.after_bytes,
                    "compacted the store file at start"
                );
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
                .map_err(|source| OpenError::Embedded { path, source })
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

/// Creates the store's schema (PostgreSQL) or checks that it is reachable (others), and
/// says what it did in a line for people.
pub async fn init(url: &StoreUrl, cfg: &StoreConfig, data_dir: &Path) -> Result<String, OpenError> {
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
async fn open_fdb(cluster_file: Option<&Path>) -> Result<Db, OpenError> {
    Ok(
        supervisor_store::fdb::open_db(cluster_file, supervisor_store::fdb::FdbOptions::default())
            .await?,
    )
}

#[cfg(not(feature = "fdb"))]
async fn open_fdb(_cluster_file: Option<&Path>) -> Result<Db, OpenError> {
    Err(OpenError::NoFdb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compact_at_start_gives_freed_pages_back_before_the_node_opens_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::Embedded(None);
        let cfg = StoreConfig::default();
        {
            let db = open(&url, &cfg, dir.path()).await.unwrap();
            let mut txn = db.begin().await.unwrap();
            for i in 0..8000u32 {
                txn.set(format!("k{i:06}").as_bytes(), &[1u8; 1000]);
            }
            txn.commit().await.unwrap();
            let mut txn = db.begin().await.unwrap();
            txn.clear_range(b"k", b"l");
            txn.commit().await.unwrap();
        }
        let file = dir.path().join("supervisor.redb");
        let before = std::fs::metadata(&file).unwrap().len();
        // Off by default: the file keeps its freed pages.
        drop(open(&url, &cfg, dir.path()).await.unwrap());
        let reopened = std::fs::metadata(&file).unwrap().len();
        assert!(reopened > before / 2, "{before} -> {reopened}");
        let compacting = StoreConfig {
            compact_at_start: true,
            ..StoreConfig::default()
        };
        drop(open(&url, &compacting, dir.path()).await.unwrap());
        let after = std::fs::metadata(&file).unwrap().len();
        assert!(after < before / 4, "{before} -> {after}");
    }

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
