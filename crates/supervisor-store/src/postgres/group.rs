//! Group commit: every transaction a process commits goes through one committer task,
//! which resolves and applies the transactions queued meanwhile as one batch, in one SQL
//! transaction under the commit lock.
//!
//! Why this exists: the commit lock puts every commit of every node in one total order, so
//! a database whose committers take the lock one transaction at a time tops out at about
//! one commit per lock hold (two round trips and a WAL flush), whatever the number of
//! nodes. FoundationDB's commit proxies batch the transactions they receive and resolve the
//! batch as a unit; this does the same per process: one lock hold, one WAL flush and one
//! notification carry the whole batch.
//!
//! The batch at a glance (see the parent module for the single-transaction design):
//! 1. Round trip 1: `BEGIN`, take the lock (the last commit version and the history floor),
//!    find which transactions' read ranges were written by commits after their read
//!    versions (one query for the whole batch, through the shared history), and read the
//!    bases of every atomic add.
//! 2. Locally, in queue order: a transaction whose snapshot is below the floor fails with
//!    [`StoreError::TooOld`]; one that conflicts with another process's commit, or with an
//!    earlier transaction of this batch, fails with [`StoreError::Conflict`], exactly
//!    FoundationDB's rule (the whole batch commits at one version, later than every read
//!    version in it). The others' writes fold into one net change: a later clear removes
//!    an earlier write, an atomic add starts from what the batch wrote before it.
//! 3. Round trip 2: apply the net change, record its ranges in the history at the batch's
//!    version, publish the version, notify watches once, read the watched keys, `COMMIT`.
//!
//! Versionstamps are FoundationDB's: the batch's commit version in 8 bytes, then the
//! transaction's order in the batch in 2, so they grow with commit order within a batch
//! too. A batch where no transaction needs durability (see
//! [`crate::Transaction::relax_durability`]) commits with `synchronous_commit = off`:
//! PostgreSQL acknowledges it before its WAL reaches the disk, and the next durable commit
//! flushes it with its own (WAL order is commit order).
//!
//! A batch that PostgreSQL refuses for a reason of one transaction's own (a key over the
//! btree's limit) is retried one transaction at a time, so the others do not fail with it.
//! The committer has its own connection, outside the pool: commits never wait behind reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};

use super::session::Session;
use super::txn::{Param, Request, batch, first_error, pairs, query, rollback, to_version};
use super::watches::encode_changes;
use super::{Phase, pg_error, sql};
use crate::StoreError;
use crate::buffer::{Entry, RangeSet, WriteBuffer, add_le, stamped_keys};
use crate::keys::key_after;

/// Most transactions in one batch (versionstamps number them in 2 bytes).
const MAX_BATCH: usize = 1_024;
/// Most bytes of writes in one batch; a single larger transaction still goes alone.
const MAX_BATCH_BYTES: usize = 32 << 20;
/// How often (at most) the committer prunes the conflict history. The window itself (five
/// seconds, FoundationDB's transaction lifetime) is written into [`sql::PRUNE_HISTORY`].
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// One transaction asking to commit.
pub(crate) struct CommitJob {
    /// The read version to check its read ranges from (`None`: it took no snapshot or
    /// recorded no read conflict, so nothing can conflict).
    pub(crate) check: Option<u64>,
    /// Its read conflict ranges, `[begin, end)`.
    pub(crate) reads: Vec<(Vec<u8>, Vec<u8>)>,
    /// What it writes.
    pub(crate) buffer: WriteBuffer,
    /// The keys whose value right after the commit it needs (for its watches).
    pub(crate) watched: Vec<Vec<u8>>,
    /// Whether the acknowledgement must wait for the WAL flush.
    pub(crate) durable: bool,
}

impl CommitJob {
    /// Roughly how many bytes the job writes.
    fn bytes(&self) -> usize {
        let entries: usize = self
            .buffer
            .entries
            .iter()
            .map(|(k, e)| {
                k.len()
                    + match e {
                        Entry::Value(v) => v.len(),
                        Entry::Cleared | Entry::Add(_) => 8,
                    }
            })
            .sum();
        let stamped: usize = self
            .buffer
            .versionstamped
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        entries + stamped
    }
}

/// The commit version, and the watched keys' values right after it.
pub(crate) type Committed = (u64, Vec<Option<Vec<u8>>>);
type Reply = oneshot::Sender<Result<Committed, StoreError>>;

/// The handle transactions commit through.
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<(CommitJob, Reply)>,
}

impl Committer {
    /// Starts the committer task, with its own connections from `pool` (size 1).
    pub(crate) fn start(pool: Pool, target: String) -> Committer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, target, jobs));
        Committer { queue }
    }

    /// Queues `job` and waits for its outcome.
    pub(crate) async fn commit(&self, job: CommitJob) -> Result<Committed, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((job, reply))
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }
}

/// The committer: takes whatever is queued, commits it as one batch, repeats. Ends when
/// the store and every transaction are gone.
async fn run(pool: Pool, target: String, mut jobs: mpsc::UnboundedReceiver<(CommitJob, Reply)>) {
    let mut last_prune: Option<Instant> = None;
    while let Some(first) = jobs.recv().await {
        let mut bytes = first.0.bytes();
        let mut queued = vec![first];
        while queued.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.0.bytes();
                    queued.push(job);
                }
                Err(_) => break,
            }
        }
        let (batch, replies): (Vec<CommitJob>, Vec<Reply>) = queued.into_iter().unzip();
        let prune = last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        if prune {
            last_prune = Some(Instant::now());
        }
        if supervisor_telemetry::metrics_on() {
            supervisor_telemetry::metrics().store_batch_size.record(
                batch.len() as u64,
                &crate::transaction::opentelemetry_backend("postgres"),
            );
        }
        let outcomes = match commit_batch(&pool, &target, &batch, prune).await {
            Ok(outcomes) => outcomes,
            Err(StoreError::Io(_)) if batch.len() > 1 => {
                // Refused for something in it (not the connection): find whose by
                // committing each alone.
                let mut outcomes = Vec::with_capacity(batch.len());
                for job in batch.chunks(1) {
                    outcomes.push(match commit_batch(&pool, &target, job, false).await {
                        Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Closed)),
                        Err(err) => Err(err),
                    });
                }
                outcomes
            }
            Err(err) => batch.iter().map(|_| Err(err.clone())).collect(),
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}

/// What the local resolution decided for a batch.
#[derive(Default)]
struct Resolved {
    /// Per job: `None` if accepted, else why not.
    refused: Vec<Option<StoreError>>,
    /// The net writes, keyed: `None` removes the key.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Every cleared range (applied before `writes`).
    cleared: RangeSet,
}

/// Commits `jobs` as one SQL transaction. `Err` means none of them committed (or, for
/// [`StoreError::CommitUnknown`], that nobody knows); `Ok` has one outcome per job.
async fn commit_batch(
    pool: &Pool,
    target: &str,
    jobs: &[CommitJob],
    prune: bool,
) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let before = |err: &tokio_postgres::Error| pg_error(err, target, Phase::Read);
    let during = |err: &tokio_postgres::Error| pg_error(err, target, Phase::Commit);
    let client = pool
        .get()
        .await
        .map_err(|err| super::pool_error(err, target, 1))?;
    let mut session = Session::new(client);

    // Round trip 1: start, lock, conflicts against other processes, bases of adds.
    let mut range_job = Vec::new();
    let mut range_version = Vec::new();
    let mut range_begin: Vec<&[u8]> = Vec::new();
    let mut range_end: Vec<&[u8]> = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        let Some(version) = job.check else { continue };
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        for (begin, end) in &job.reads {
            range_job.push(index);
            range_version.push(version);
            range_begin.push(begin);
            range_end.push(end);
        }
    }
    let add_keys: Vec<&[u8]> = jobs
        .iter()
        .flat_map(|job| {
            job.buffer
                .entries
                .iter()
                .filter(|(_, entry)| matches!(entry, Entry::Add(_)))
                .map(|(key, _)| key.as_slice())
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let client = session.client();
    let lock = client
        .prepare_cached(sql::LOCK_FOR_COMMIT)
        .await
        .map_err(|e| before(&e))?;
    let conflicts = client
        .prepare_cached(sql::CONFLICTING_JOBS)
        .await
        .map_err(|e| before(&e))?;
    let get_many = client
        .prepare_cached(sql::GET_MANY)
        .await
        .map_err(|e| before(&e))?;
    session.set_in_txn(true);
    let client = session.client();
    let oldest_read = range_version.iter().copied().min().unwrap_or(0);
    let conflict_params: [Param<'_>; 5] = [
        &range_job,
        &range_version,
        &range_begin,
        &range_end,
        &oldest_read,
    ];
    let add_params: [Param<'_>; 1] = [&add_keys];
    let mut requests: Vec<Request<'_>> =
        vec![batch(client, sql::BEGIN_COMMIT), query(client, &lock, &[])];
    if !range_job.is_empty() {
        requests.push(query(client, &conflicts, &conflict_params));
    }
    if !add_keys.is_empty() {
        requests.push(query(client, &get_many, &add_params));
    }
    let mut results = first_error(join_all(requests).await)
        .map_err(|e| before(&e))?
        .into_iter()
        .skip(1);
    let lock_rows = results.next().unwrap_or_default();
    let Some(row) = lock_rows.first() else {
        return Err(StoreError::Corrupt(format!(
            "the PostgreSQL database at {target} lost its supervisor_meta row; restore it \
             from a backup"
        )));
    };
    let current = to_version(row.try_get(0).map_err(|e| before(&e))?)?;
    let floor = to_version(row.try_get(1).map_err(|e| before(&e))?)?;
    let mut remote_conflicts = HashSet::new();
    if !range_job.is_empty() {
        for row in results.next().unwrap_or_default() {
            let index: i32 = row.try_get(0).map_err(|e| before(&e))?;
            remote_conflicts.insert(usize::try_from(index).unwrap_or(usize::MAX));
        }
    }
    let bases = match results.next() {
        Some(rows) => pairs(&rows).map_err(|e| before(&e))?,
        None => HashMap::new(),
    };

    let version = current + 1;
    let resolved = resolve(jobs, version, floor, &remote_conflicts, &bases);
    let accepted: Vec<usize> = (0..jobs.len())
        .filter(|&i| resolved.refused[i].is_none())
        .collect();
    if accepted.is_empty() {
        rollback(session).await;
        return Ok(resolved
            .refused
            .into_iter()
            .map(|why| Err(why.unwrap_or(StoreError::Conflict)))
            .collect());
    }

    // Round trip 2: apply, record, publish, notify, read the watched keys, commit.
    let Resolved {
        refused,
        writes,
        cleared,
    } = resolved;
    let (clear_begins, clear_ends): (Vec<&[u8]>, Vec<&[u8]>) = cleared.iter().unzip();
    let removed: Vec<&[u8]> = writes
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_slice())
        .collect();
    let (set_keys, set_values): (Vec<&[u8]>, Vec<&[u8]>) = writes
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
        .unzip();
    let point_ends: Vec<Vec<u8>> = writes.keys().map(|k| key_after(k)).collect();
    let history_begins: Vec<&[u8]> = clear_begins
        .iter()
        .copied()
        .chain(writes.keys().map(Vec::as_slice))
        .collect();
    let history_ends: Vec<&[u8]> = clear_ends
        .iter()
        .copied()
        .chain(point_ends.iter().map(Vec::as_slice))
        .collect();
    let payload = encode_changes(version, writes.keys().map(Vec::as_slice), cleared.iter());
    let new_version = i64::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("commit version {version} is out of range")))?;
    let watched: Vec<&[u8]> = accepted
        .iter()
        .flat_map(|&i| jobs[i].watched.iter().map(Vec::as_slice))
        .collect();
    let durable = accepted.iter().any(|&i| jobs[i].durable);
    let channel = sql::NOTIFY_CHANNEL;

    let client = session.client();
    let mut statements = Vec::new();
    for text in [
        sql::CLEAR_RANGES,
        sql::DELETE_KEYS,
        sql::UPSERT,
        sql::RECORD_HISTORY,
        sql::SET_VERSION,
        sql::PRUNE_HISTORY,
        sql::NOTIFY,
        sql::CURRENT_VALUES,
    ] {
        statements.push(client.prepare_cached(text).await.map_err(|e| before(&e))?);
    }
    let [
        clear,
        delete,
        upsert,
        record,
        set_version,
        prune_history,
        notify,
        current_values,
    ] = <[_; 8]>::try_from(statements)
        .map_err(|_| StoreError::Io("statement preparation lost a statement".into()))?;
    let clear_params: [Param<'_>; 2] = [&clear_begins, &clear_ends];
    let delete_params: [Param<'_>; 1] = [&removed];
    let upsert_params: [Param<'_>; 2] = [&set_keys, &set_values];
    let record_params: [Param<'_>; 3] = [&new_version, &history_begins, &history_ends];
    let version_params: [Param<'_>; 1] = [&new_version];
    let notify_params: [Param<'_>; 2] = [&channel, &payload];
    let watched_params: [Param<'_>; 1] = [&watched];
    let mut requests: Vec<Request<'_>> = Vec::new();
    if !durable {
        requests.push(batch(client, sql::RELAXED_COMMIT));
    }
    if !clear_begins.is_empty() {
        requests.push(query(client, &clear, &clear_params));
    }
    if !removed.is_empty() {
        requests.push(query(client, &delete, &delete_params));
    }
    if !set_keys.is_empty() {
        requests.push(query(client, &upsert, &upsert_params));
    }
    requests.push(query(client, &record, &record_params));
    requests.push(query(client, &set_version, &version_params));
    if prune {
        requests.push(query(client, &prune_history, &[]));
    }
    requests.push(query(client, &notify, &notify_params));
    if !watched.is_empty() {
        requests.push(query(client, &current_values, &watched_params));
    }
    requests.push(batch(client, sql::COMMIT));
    let mut results = join_all(requests).await;
    let committed = results.pop().unwrap_or_else(|| Ok(Vec::new()));
    // An answer to COMMIT ends the transaction whatever it says (after an earlier failure
    // PostgreSQL answers it by rolling back); only a lost connection leaves it open, and
    // then the session is discarded.
    if committed
        .as_ref()
        .map_or_else(|err| err.as_db_error().is_some(), |_| true)
    {
        session.set_in_txn(false);
    }
    // The first failure is the cause; the statements after it only report that the
    // transaction was aborted.
    let mut rows = first_error(results).map_err(|e| during(&e))?;
    committed.map_err(|e| during(&e))?;
    let watched_rows = if watched.is_empty() {
        Vec::new()
    } else {
        rows.pop().unwrap_or_default()
    };
    // The batch has committed: nothing from here on may fail it (a failure would send
    // its jobs to be committed again). A value that cannot be read counts as changed,
    // which only fires a watch early, as watches may.
    let changed = || Some(vec![0xff; 1]);
    let mut current = watched_rows
        .iter()
        .map(|row| {
            row.try_get::<_, Option<Vec<u8>>>(0)
                .unwrap_or_else(|_| changed())
        })
        .chain(std::iter::repeat_with(changed));
    Ok(refused
        .into_iter()
        .zip(jobs)
        .map(|(why, job)| match why {
            Some(err) => Err(err),
            None => Ok((version, current.by_ref().take(job.watched.len()).collect())),
        })
        .collect())
}

/// Decides, in queue order, which jobs commit at `version`, and folds their writes into
/// one net change.
fn resolve(
    jobs: &[CommitJob],
    version: u64,
    floor: u64,
    remote_conflicts: &HashSet<usize>,
    bases: &HashMap<Vec<u8>, Vec<u8>>,
) -> Resolved {
    let mut out = Resolved::default();
    // What the jobs accepted so far wrote: later readers of it conflict.
    let mut written_keys: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut order: u16 = 0;
    for (index, job) in jobs.iter().enumerate() {
        if let Some(read_version) = job.check {
            if read_version < floor {
                out.refused.push(Some(StoreError::TooOld));
                continue;
            }
            let local = job.reads.iter().any(|(begin, end)| {
                out.cleared.overlaps(begin, end)
                    || written_keys
                        .range::<[u8], _>((
                            std::ops::Bound::Included(begin.as_slice()),
                            std::ops::Bound::Excluded(end.as_slice()),
                        ))
                        .next()
                        .is_some()
            });
            if local || remote_conflicts.contains(&index) {
                out.refused.push(Some(StoreError::Conflict));
                continue;
            }
        }
        let Some(stamped) = stamped_keys(&job.buffer.versionstamped, version, order) else {
            out.refused.push(Some(StoreError::InvalidVersionstamp(
                "placeholder offset does not fit in the key".into(),
            )));
            continue;
        };
        order = order.saturating_add(1);
        for (begin, end) in job.buffer.cleared.iter() {
            let superseded: Vec<Vec<u8>> = out
                .writes
                .range::<[u8], _>((
                    std::ops::Bound::Included(begin),
                    std::ops::Bound::Excluded(end),
                ))
                .map(|(k, _)| k.clone())
                .collect();
            for key in superseded {
                out.writes.remove(&key);
            }
            out.cleared.insert(begin, end);
        }
        for (key, entry) in &job.buffer.entries {
            let value = match entry {
                Entry::Value(v) => Some(v.clone()),
                Entry::Cleared => None,
                Entry::Add(delta) => {
                    let base = match out.writes.get(key) {
                        Some(written) => written.as_deref(),
                        None if out.cleared.contains(key) => None,
                        None => bases.get(key).map(Vec::as_slice),
                    };
                    Some(add_le(base, *delta))
                }
            };
            out.writes.insert(key.clone(), value);
            written_keys.insert(key.clone());
        }
        for (key, value) in stamped {
            written_keys.insert(key.clone());
            out.writes.insert(key, Some(value.to_vec()));
        }
        out.refused.push(None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        check: Option<u64>,
        reads: &[(&[u8], &[u8])],
        write: impl FnOnce(&mut WriteBuffer),
    ) -> CommitJob {
        let mut buffer = WriteBuffer::default();
        write(&mut buffer);
        CommitJob {
            check,
            reads: reads
                .iter()
                .map(|(b, e)| (b.to_vec(), e.to_vec()))
                .collect(),
            buffer,
            watched: Vec::new(),
            durable: true,
        }
    }

    fn value(resolved: &Resolved, key: &[u8]) -> Option<Option<Vec<u8>>> {
        resolved.writes.get(key).cloned()
    }

    #[test]
    fn a_reader_of_what_an_earlier_job_wrote_conflicts() {
        let jobs = [
            job(Some(5), &[], |b| b.set(b"k", b"1")),
            job(Some(5), &[(b"k", b"k\0")], |b| b.set(b"x", b"2")),
            // Read at the same version, but of something nobody in the batch wrote.
            job(Some(5), &[(b"a", b"b")], |b| b.set(b"y", b"3")),
            // Reads the range an earlier job cleared.
            job(Some(5), &[], |b| b.clear_range(b"m", b"p")),
            job(Some(5), &[(b"n", b"o")], |b| b.set(b"z", b"4")),
        ];
        let resolved = resolve(&jobs, 7, 0, &HashSet::new(), &HashMap::new());
        let verdicts: Vec<bool> = resolved.refused.iter().map(Option::is_none).collect();
        assert_eq!(verdicts, [true, false, true, true, false]);
        assert!(matches!(resolved.refused[1], Some(StoreError::Conflict)));
        assert_eq!(value(&resolved, b"x"), None, "a refused job writes nothing");
        assert_eq!(value(&resolved, b"y"), Some(Some(b"3".to_vec())));
    }

    #[test]
    fn remote_conflicts_and_old_snapshots_refuse_only_their_job() {
        let jobs = [
            job(Some(3), &[(b"a", b"b")], |b| b.set(b"p", b"1")),
            job(Some(9), &[(b"a", b"b")], |b| b.set(b"q", b"1")),
            job(Some(9), &[(b"a", b"b")], |b| b.set(b"r", b"1")),
            // Took no snapshot: never checked.
            job(None, &[], |b| b.set(b"s", b"1")),
        ];
        let remote = HashSet::from([2usize]);
        let resolved = resolve(&jobs, 12, 4, &remote, &HashMap::new());
        assert!(matches!(resolved.refused[0], Some(StoreError::TooOld)));
        assert!(resolved.refused[1].is_none());
        assert!(matches!(resolved.refused[2], Some(StoreError::Conflict)));
        assert!(resolved.refused[3].is_none());
    }

    #[test]
    fn writes_fold_in_queue_order() {
        let bases = HashMap::from([(b"n".to_vec(), 10i64.to_le_bytes().to_vec())]);
        let jobs = [
            job(None, &[], |b| {
                b.set(b"c1", b"old");
                b.atomic_add(b"n", 1);
            }),
            // Clears what the first job set; the set after the clear stays.
            job(None, &[], |b| {
                b.clear_range(b"c", b"d");
                b.set(b"c2", b"new");
            }),
            // Adds on top of what the batch wrote, and from nothing inside a clear.
            job(None, &[], |b| {
                b.atomic_add(b"n", 5);
                b.atomic_add(b"c3", 2);
            }),
            job(None, &[], |b| b.clear(b"c2")),
        ];
        let resolved = resolve(&jobs, 2, 0, &HashSet::new(), &bases);
        assert!(resolved.refused.iter().all(Option::is_none));
        assert_eq!(value(&resolved, b"c1"), None, "superseded by the clear");
        assert!(resolved.cleared.contains(b"c1"));
        assert_eq!(value(&resolved, b"c2"), Some(None));
        assert_eq!(
            value(&resolved, b"n"),
            Some(Some(16i64.to_le_bytes().to_vec()))
        );
        assert_eq!(
            value(&resolved, b"c3"),
            Some(Some(2i64.to_le_bytes().to_vec()))
        );
    }

    #[test]
    fn versionstamps_number_the_accepted_jobs_in_order() {
        let stamped = |b: &mut WriteBuffer| {
            let mut key = b"v".to_vec();
            key.extend_from_slice(&[0; crate::VERSIONSTAMP_BYTES]);
            key.extend_from_slice(&1u32.to_le_bytes());
            b.set_versionstamped(&key, b"x");
        };
        let jobs = [
            job(None, &[], stamped),
            job(Some(1), &[(b"v", b"w")], stamped),
            job(None, &[], stamped),
        ];
        let resolved = resolve(&jobs, 0x0102, 0, &HashSet::new(), &HashMap::new());
        // The second job read where the first wrote its stamped key: refused, and the
        // third takes order 1.
        assert!(matches!(resolved.refused[1], Some(StoreError::Conflict)));
        let keys: Vec<Vec<u8>> = resolved.writes.keys().cloned().collect();
        let mut first = b"v".to_vec();
        first.extend_from_slice(&0x0102u64.to_be_bytes());
        let mut second = first.clone();
        first.extend_from_slice(&[0, 0]);
        second.extend_from_slice(&[0, 1]);
        assert_eq!(keys, [first, second]);
    }
}
