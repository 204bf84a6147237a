//! Work on a store's files and data that needs no running node: the figures of a stopped
//! node's embedded store, restoring a backup, compacting, fencing the nodes of a store
//! restored by other means, reading retention archives. The `supervisor store` and
//! `supervisor archive` commands call these.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use supervisor_engine::{Engine, EngineConfig, EngineError, SystemClock};
use supervisor_proto::v1;
use supervisor_store::StoreError;
use supervisor_store::embedded::{self, Compaction, EmbeddedOptions, EmbeddedStore, StoreSpace};

use crate::config::Config;
use crate::store::{self, OpenError, StoreUrl};

pub use supervisor_engine::archive::{ArchiveRecord, read as read_archive};
pub use supervisor_engine::format_period;

/// The embedded store's file in a data directory.
pub const STORE_FILE: &str = "supervisor.redb";

/// Why a maintenance command failed, in words that say what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MaintenanceError(String);

impl From<StoreError> for MaintenanceError {
    fn from(e: StoreError) -> Self {
        MaintenanceError(e.to_string())
    }
}

impl From<EngineError> for MaintenanceError {
    fn from(e: EngineError) -> Self {
        MaintenanceError(e.to_string())
    }
}

impl From<OpenError> for MaintenanceError {
    fn from(e: OpenError) -> Self {
        MaintenanceError(e.to_string())
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> MaintenanceError {
    move |e| MaintenanceError(format!("{what}: {e}"))
}

/// The store file of a data directory, or the file itself when given one.
pub fn store_file(data_dir: &Path) -> PathBuf {
    if data_dir.is_file() {
        data_dir.to_path_buf()
    } else {
        data_dir.join(STORE_FILE)
    }
}

/// An engine over `db` for work without a node.
fn engine_on(db: supervisor_store::Db) -> Engine {
    Engine::new(db, EngineConfig::default(), Arc::new(SystemClock))
}

/// The figures of a stopped node's embedded store in `data_dir` (the retention period
/// is the configuration's here: `config`, else the defaults and environment).
pub async fn offline_stats(
    data_dir: &Path,
    config: Option<&Path>,
) -> Result<v1::StoreStats, MaintenanceError> {
    let path = store_file(data_dir);
    if !path.exists() {
        return Err(MaintenanceError(format!(
            "{} does not exist: give the data directory of a node that ran on the embedded store",
            path.display()
        )));
    }
    let store = EmbeddedStore::open(&path, EmbeddedOptions::default()).map_err(|e| {
        MaintenanceError(format!(
            "reading {}: {e} (a running node holds its file: ask it with `supervisor store stats` without --data-dir)",
            path.display()
        ))
    })?;
    let space: StoreSpace = store.space()?;
    let engine = engine_on(supervisor_store::Db::new(store));
    let tasks = engine.status_counts().await?.total();
    let keep = Config::load(config)
        .map(|c| c.retention.keep.as_secs())
        .unwrap_or_default();
    Ok(stats_of(
        String::new(),
        "embedded",
        Some((path.display().to_string(), space)),
        tasks,
        keep,
    ))
}

/// A store's figures as the API gives them: `file` is the embedded store's path and
/// space (none for a shared store).
pub fn stats_of(
    answered_by: String,
    backend: &str,
    file: Option<(String, StoreSpace)>,
    tasks: u64,
    retention_keep_seconds: u64,
) -> v1::StoreStats {
    let (path, space) = file.unwrap_or_default();
    v1::StoreStats {
        answered_by,
        backend: backend.to_string(),
        path,
        file_bytes: space.file_bytes,
        allocated_bytes: space.allocated_bytes,
        stored_bytes: space.stored_bytes,
        metadata_bytes: space.metadata_bytes,
        fragmented_bytes: space.fragmented_bytes,
        free_bytes: space.free_bytes(),
        tasks,
        retention_keep_seconds,
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The store file now in place.
    pub file: PathBuf,
    /// The commit version the backup holds everything up to.
    pub version: u64,
    /// Node records of the original that were fenced.
    pub fenced: usize,
}

/// Restores the backup `from` as the embedded store of `data_dir` (refusing a directory
/// that has one unless `force`, which keeps the old file as `supervisor.redb.before-restore`),
/// and fences every node recorded in it.
pub async fn restore(
    from: &Path,
    data_dir: &Path,
    force: bool,
) -> Result<Restored, MaintenanceError> {
    if !from.is_file() {
        return Err(MaintenanceError(format!(
            "{} is not a file: give a backup written by `supervisor store backup`",
            from.display()
        )));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(io(format!("cannot create {}", data_dir.display())))?;
    let target = data_dir.join(STORE_FILE);
    if target.exists() && !force {
        return Err(MaintenanceError(format!(
            "{} already holds a store; restore into an empty data directory, or pass --force to replace it (the current file is kept as {STORE_FILE}.before-restore)",
            data_dir.display()
        )));
    }
    let staging = data_dir.join(format!("{STORE_FILE}.restoring"));
    let _ = std::fs::remove_file(&staging);
    std::fs::copy(from, &staging).map_err(io(format!(
        "cannot copy {} into {}",
        from.display(),
        data_dir.display()
    )))?;
    let version = match embedded::accept_backup(&staging) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(MaintenanceError(format!(
                "{} cannot be restored: {e}",
                from.display()
            )));
        }
    };
    let fenced = {
        let engine = engine_on(embedded::open_db(&staging, EmbeddedOptions::default())?);
        let note = format!(
            "fenced at the restore of {} (backup up to commit version {version})",
            from.display()
        );
        engine.fence_all_after_restore(&note).await?
    };
    if target.exists() {
        let kept = data_dir.join(format!("{STORE_FILE}.before-restore"));
        std::fs::rename(&target, &kept).map_err(io(format!("cannot keep {}", target.display())))?;
    }
    std::fs::rename(&staging, &target)
        .map_err(io(format!("cannot put {} in place", target.display())))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot sync {}", data_dir.display())))?;
    Ok(Restored {
        file: target,
        version,
        fenced,
    })
}

/// Compacts the stopped node's embedded store in `data_dir`.
pub fn compact(data_dir: &Path) -> Result<(PathBuf, Compaction), MaintenanceError> {
    let path = store_file(data_dir);
    let done = embedded::compact(&path).map_err(|e| {
        MaintenanceError(format!(
            "compacting {}: {e} (it needs the node stopped: a running node reuses free pages by itself)",
            path.display()
        ))
    })?;
    Ok((path, done))
}

/// Fences every node recorded in the store `url` names (after restoring it by other
/// means than `restore`, such as a PostgreSQL dump). Returns how many.
pub async fn fence_all(url: &StoreUrl, cfg: &Config) -> Result<usize, MaintenanceError> {
    let db = store::open(url, &cfg.store, &cfg.data_dir.0).await?;
    Ok(engine_on(db)
        .fence_all_after_restore("fenced after the store was restored (store fence-all)")
        .await?)
}
