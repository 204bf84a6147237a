//! The retention archive: what the retention sweeper deletes, kept cheaply outside the
//! store as zstd-compressed JSON lines, one file per tenant and hour of the records' end
//! (`<dir>/<tenant>/<YYYY-MM-DDTHH>.jsonl.zst`, UTC).
//!
//! Each sweep batch appends one zstd frame to each file it touches and flushes it to disk
//! before the records are deleted; a file is a sequence of frames, which zstd reads as
//! one stream. A crash between the append and the delete archives a record again in the
//! next sweep, so a reader that wants one line per record keeps the last per `id`. A
//! crash during an append leaves a partial last frame: [`read`] returns every complete
//! line before it and then the error.
//!
//! One line is an [`ArchiveRecord`] (schema 1): `kind` (`task` or `workflow_run`),
//! `tenant`, `id`, `ended_at` (unix microseconds), `record` (the task as `GetTask`
//! returns it, output and artifacts included, or the workflow run) and `events` (its
//! event log, in order).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use supervisor_model::{Task, TaskEvent, TaskId};

use crate::EngineError;
use crate::workflows::{WorkflowEvent, WorkflowRun};

/// The schema version of the lines this code writes.
pub const ARCHIVE_SCHEMA: u32 = 1;

/// zstd level of archive frames (the library's default: fast, about 4× on records).
const LEVEL: i32 = 3;

/// One archived record, one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    /// The line's schema version ([`ARCHIVE_SCHEMA`]).
    pub schema: u32,
    /// `task` or `workflow_run`.
    pub kind: String,
    /// Its tenant.
    pub tenant: String,
    /// Its id.
    pub id: TaskId,
    /// When it ended (unix microseconds).
    pub ended_at: i64,
    /// The task (with output and artifacts) or the run, as JSON.
    pub record: serde_json::Value,
    /// Its event log, in order.
    pub events: Vec<serde_json::Value>,
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, EngineError> {
    serde_json::to_value(value)
        .map_err(|e| EngineError::Internal(format!("could not archive a record: {e}")))
}

impl ArchiveRecord {
    /// The archive form of a task and its events.
    pub(crate) fn task(
        ended_at: i64,
        task: Task,
        events: Vec<TaskEvent>,
    ) -> Result<ArchiveRecord, EngineError> {
        Ok(ArchiveRecord {
            schema: ARCHIVE_SCHEMA,
            kind: "task".into(),
            tenant: task.tenant.clone(),
            id: task.id,
            ended_at,
            record: json(&task)?,
            events: events.iter().map(json).collect::<Result<_, _>>()?,
        })
    }

    /// The archive form of a workflow run and its events.
    pub(crate) fn run(
        ended_at: i64,
        run: WorkflowRun,
        events: Vec<WorkflowEvent>,
    ) -> Result<ArchiveRecord, EngineError> {
        Ok(ArchiveRecord {
            schema: ARCHIVE_SCHEMA,
            kind: "workflow_run".into(),
            tenant: run.tenant.clone(),
            id: run.id,
            ended_at,
            record: json(&run)?,
            events: events.iter().map(json).collect::<Result<_, _>>()?,
        })
    }
}

/// Appends archived records under one directory.
#[derive(Debug, Clone)]
pub struct Archiver {
    dir: PathBuf,
}

impl Archiver {
    /// An archiver writing under `dir` (created when first written to).
    pub fn new(dir: impl Into<PathBuf>) -> Archiver {
        Archiver { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a record of `tenant` that ended at `ended_at` goes to.
    pub fn file_for(&self, tenant: &str, ended_at: i64) -> PathBuf {
        let hour = chrono::DateTime::from_timestamp_micros(ended_at)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H");
        self.dir.join(tenant).join(format!("{hour}.jsonl.zst"))
    }

    /// Appends `records` of `tenant` (one frame per file touched) and flushes them to
    /// disk.
    pub fn append(&self, tenant: &str, records: &[ArchiveRecord]) -> std::io::Result<()> {
        let mut by_file: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        for record in records {
            let lines = by_file
                .entry(self.file_for(tenant, record.ended_at))
                .or_default();
            serde_json::to_writer(&mut *lines, record)?;
            lines.push(b'\n');
        }
        for (path, lines) in by_file {
            let dir = path.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(dir)?;
            let created = !path.exists();
            let frame = zstd::encode_all(&lines[..], LEVEL)?;
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.write_all(&frame)?;
            file.sync_data()?;
            if created {
                // The new file's name must survive a crash too.
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    }
}

/// Reads an archive file: every record in order, then the error that stopped the read,
/// if any (a partial last frame left by a crash, a file that is not an archive).
pub fn read(path: &Path) -> (Vec<ArchiveRecord>, Option<String>) {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return (
                Vec::new(),
                Some(format!("cannot open {}: {e}", path.display())),
            );
        }
    };
    let decoder = match zstd::stream::read::Decoder::new(file) {
        Ok(d) => d,
        Err(e) => return (Vec::new(), Some(format!("{}: {e}", path.display()))),
    };
    let mut records = Vec::new();
    for (n, line) in BufReader::new(decoder).lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                return (
                    records,
                    Some(format!(
                        "{}: stopped after {n} records: {e} (a zstd archive ends in a partial frame when a write was interrupted; the records before it are complete)",
                        path.display()
                    )),
                );
            }
        };
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<ArchiveRecord>(&line) {
            Ok(record) => records.push(record),
            Err(e) => {
                return (
                    records,
                    Some(format!(
                        "{}: line {} is not an archive record: {e}",
                        path.display(),
                        n + 1
                    )),
                );
            }
        }
    }
    (records, None)
}
