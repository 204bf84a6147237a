//! Keeping the embedded store's file: consistent backups of a running store, what the
//! file holds and how much of it is free, and compaction of a closed file.
//!
//! A backup copies one redb read snapshot (every commit up to one version, nothing of a
//! later one) into a new redb file while commits go on; the copy is a store file a node
//! or `supervisor store restore` opens as it is. Space figures come from redb's own page
//! accounting, which walks every page of the tree: the writer thread takes them between
//! two batches, so commits wait for the walk (0.2 s for a 408 MiB file, measured end to
//! end through `supervisor store stats`).
//! Compaction needs the file closed (redb moves pages in place); a running node refuses
//! it through the file lock.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use super::{DATA_TABLE, META_TABLE, Shared, redb_error};
use crate::StoreError;

/// What a backup wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupInfo {
    /// Keys copied.
    pub keys: u64,
    /// The commit version the copy holds everything up to.
    pub version: u64,
    /// Size of the backup file.
    pub bytes: u64,
}

/// How the store's file is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSpace {
    /// The file's size.
    pub file_bytes: u64,
    /// Pages in use by the current tree (the rest of the file is free for reuse).
    pub allocated_bytes: u64,
    /// Keys and values stored in leaf pages.
    pub stored_bytes: u64,
    /// Page headers and branch pages.
    pub metadata_bytes: u64,
    /// Unused space inside allocated pages.
    pub fragmented_bytes: u64,
}

impl StoreSpace {
    /// Bytes of the file no page uses: reused by later writes, given back to the file
    /// system by compaction.
    pub fn free_bytes(&self) -> u64 {
        self.file_bytes.saturating_sub(self.allocated_bytes)
    }
}

/// Keys copied per write transaction of a backup.
const BACKUP_BATCH: usize = 20_000;

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

/// Copies one read snapshot of `shared`'s database into a new file at `to`, which must
/// not exist.
pub(crate) fn backup(shared: &Arc<Shared>, to: &Path) -> Result<BackupInfo, StoreError> {
    if to.exists() {
        return Err(StoreError::Io(format!(
            "{} exists; a backup never overwrites a file: choose a new name or remove it",
            to.display()
        )));
    }
    let snapshot = shared.db.begin_read().map_err(redb_error)?;
    let data = snapshot.open_table(DATA_TABLE).map_err(redb_error)?;
    let meta = snapshot.open_table(META_TABLE).map_err(redb_error)?;
    let copy = redb::Database::create(to).map_err(|e| io("cannot create", to, e))?;
    let mut keys = 0u64;
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(BACKUP_BATCH);
    let write = |pending: &mut Vec<(Vec<u8>, Vec<u8>)>| -> Result<(), StoreError> {
        let mut txn = copy.begin_write().map_err(redb_error)?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| io("cannot write", to, e))?;
        {
            let mut table = txn.open_table(DATA_TABLE).map_err(redb_error)?;
            for (k, v) in pending.drain(..) {
                table
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(redb_error)?;
            }
        }
        txn.commit().map_err(redb_error)
    };
    for entry in data.iter().map_err(redb_error)? {
        let (k, v) = entry.map_err(redb_error)?;
        pending.push((k.value().to_vec(), v.value().to_vec()));
        keys += 1;
        if pending.len() >= BACKUP_BATCH {
            write(&mut pending)?;
        }
    }
    write(&mut pending)?;
    // The bookkeeping last, in a durable commit: a file without it is not a finished
    // backup (restore refuses it).
    let mut version = 0;
    let mut txn = copy.begin_write().map_err(redb_error)?;
    {
        let mut table = txn.open_table(META_TABLE).map_err(redb_error)?;
        for entry in meta.iter().map_err(redb_error)? {
            let (k, v) = entry.map_err(redb_error)?;
            if k.value() == super::META_VERSION_KEY {
                version = v.value();
            }
            table.insert(k.value(), v.value()).map_err(redb_error)?;
        }
        table.insert(BACKUP_COMPLETE_KEY, 1).map_err(redb_error)?;
    }
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|e| io("cannot write", to, e))?;
    txn.commit().map_err(redb_error)?;
    drop(copy);
    let bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    Ok(BackupInfo {
        keys,
        version,
        bytes,
    })
}

/// Meta key a finished backup carries (a restore removes it).
pub(crate) const BACKUP_COMPLETE_KEY: &str = "backup_complete";

/// Takes the space figures inside a write transaction that is then dropped (called by
/// the writer thread between batches, or on a closed file).
pub(crate) fn space_of(db: &redb::Database, path: &Path) -> Result<StoreSpace, StoreError> {
    let txn = db.begin_write().map_err(redb_error)?;
    let stats = txn.stats().map_err(redb_error)?;
    let page = stats.page_size() as u64;
    let space = StoreSpace {
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        allocated_bytes: stats.allocated_pages() * page,
        stored_bytes: stats.stored_bytes(),
        metadata_bytes: stats.metadata_bytes(),
        fragmented_bytes: stats.fragmented_bytes(),
    };
    txn.abort().map_err(redb_error)?;
    Ok(space)
}

/// What compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// The file's size before.
    pub before_bytes: u64,
    /// And after.
    pub after_bytes: u64,
}

/// Compacts the closed store file at `path`: moves pages to the front and gives the free
/// tail back to the file system. Fails while a process has the file open.
pub fn compact(path: &Path) -> Result<Compaction, StoreError> {
    if !path.exists() {
        return Err(StoreError::Io(format!(
            "{} does not exist; give the data directory of a node (--data-dir) or the file itself",
            path.display()
        )));
    }
    let before_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut db = redb::Database::open(path).map_err(|e| super::open_error(path, e))?;
    db.compact()
        .map_err(|e| StoreError::Io(format!("compacting {} failed: {e}", path.display())))?;
    drop(db);
    let after_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(Compaction {
        before_bytes,
        after_bytes,
    })
}

/// The space figures of the closed store file at `path`.
pub fn space(path: &Path) -> Result<StoreSpace, StoreError> {
    let db = redb::Database::open(path).map_err(|e| super::open_error(path, e))?;
    space_of(&db, path)
}

/// Checks that `path` holds a finished backup (or a store file) this version can open,
/// and makes it a plain store file: the backup mark is removed. Returns the version it
/// holds everything up to.
pub fn accept_backup(path: &Path) -> Result<u64, StoreError> {
    let db = redb::Database::open(path).map_err(|e| super::open_error(path, e))?;
    let txn = db.begin_write().map_err(redb_error)?;
    let version = {
        txn.open_table(DATA_TABLE)
            .map_err(|e| super::table_error(path, e))?;
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| super::table_error(path, e))?;
        if meta.get(BACKUP_COMPLETE_KEY).map_err(redb_error)?.is_none() {
            return Err(StoreError::Corrupt(format!(
                "{} is not a finished backup (the backup was interrupted, or the file is a live store's); take a new one with `supervisor store backup`",
                path.display()
            )));
        }
        meta.remove(BACKUP_COMPLETE_KEY).map_err(redb_error)?;
        meta.get(super::META_VERSION_KEY)
            .map_err(redb_error)?
            .map(|g| g.value())
            .unwrap_or(0)
    };
    txn.commit().map_err(redb_error)?;
    Ok(version)
}
