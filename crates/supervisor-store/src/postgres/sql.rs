//! Every SQL statement of the PostgreSQL backend, in one place.
//!
//! Why this exists: the schema and the statements that depend on it change together;
//! keeping them side by side makes a schema change reviewable at a glance.
//!
//! The schema (version [`SCHEMA_VERSION`]):
//! - `supervisor_kv(key bytea primary key, value bytea not null)`: the keyspace. `bytea`
//!   compares bytewise (`memcmp`, then length), whatever the database's collation, so the
//!   primary key's order is the store's key order.
//! - `supervisor_meta`: one row holding the schema version, the last commit version (the
//!   versionstamp counter) and the history floor. Committers lock this row, which puts
//!   commits in one total order.
//! - `supervisor_kv_history(version, begin_key, end_key, committed_at)`: the key ranges
//!   written by each recent commit, for conflict checks (see the parent module).

/// The schema version this code writes and understands.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// The channel commits notify watches on.
pub(super) const NOTIFY_CHANNEL: &str = "supervisor_kv";

/// Creates the schema if it is missing; safe to run any number of times, concurrently
/// (the advisory lock serializes concurrent runs, which `CREATE TABLE IF NOT EXISTS` alone
/// does not).
pub(super) const CREATE_SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7310869757376210501);
CREATE TABLE IF NOT EXISTS supervisor_meta (
    id smallint PRIMARY KEY CHECK (id = 1),
    schema_version bigint NOT NULL,
    commit_version bigint NOT NULL,
    history_floor bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS supervisor_kv (
    key bytea PRIMARY KEY,
    value bytea NOT NULL
);
-- Half of each page left free: the store's counters are rows nearly every batch updates,
-- and with room on their page an update is a heap-only (HOT) one, pruned in place,
-- instead of a new index entry and a new page per update. Measured: one node on a 64-client
-- closed loop, 240-266 tasks/s at the default (100), 415-494 at 50, 257 at 70. It applies
-- to pages written from now on (a database made before picks it up as pages fill, or at
-- once after VACUUM FULL).
ALTER TABLE supervisor_kv SET (fillfactor = 50);
CREATE TABLE IF NOT EXISTS supervisor_kv_history (
    version bigint NOT NULL,
    begin_key bytea NOT NULL,
    end_key bytea NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS supervisor_kv_history_version ON supervisor_kv_history (version);
CREATE INDEX IF NOT EXISTS supervisor_kv_history_keys ON supervisor_kv_history (begin_key, version);
CREATE INDEX IF NOT EXISTS supervisor_kv_history_ranges ON supervisor_kv_history (version)
    WHERE end_key <> (begin_key || '\\x00'::bytea);
INSERT INTO supervisor_meta (id, schema_version, commit_version, history_floor)
    VALUES (1, 1, 0, 0) ON CONFLICT (id) DO NOTHING;
COMMIT;
";

/// The schema version recorded in the database.
pub(super) const SCHEMA_VERSION_OF_DB: &str =
    "SELECT schema_version FROM supervisor_meta WHERE id = 1";

/// Starts a transaction's read snapshot.
pub(super) const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Starts the commit transaction. READ COMMITTED is deliberate: after the meta row lock is
/// taken, every statement sees every earlier commit, so writes apply to the latest data
/// (blind writes and atomic adds never fail on concurrent updates).
///
/// The commit lock is held across two round trips. A client that vanishes between them
/// (partitioned, frozen) would otherwise hold it until the server notices the dead TCP
/// connection, hours by default, stalling every commit of every node, fencing included.
/// The server therefore ends the session when it sits idle inside this transaction for
/// 2 s (well under the cluster's failure timeout); the client sees a lost connection
/// during commit, which it already treats as "maybe committed", and nothing was.
pub(super) const BEGIN_COMMIT: &str = "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE; \
     SET LOCAL idle_in_transaction_session_timeout = '2s'";

/// Ends a transaction.
pub(super) const COMMIT: &str = "COMMIT";
/// Abandons a transaction.
pub(super) const ROLLBACK: &str = "ROLLBACK";

/// The last commit version: as the first statement of a snapshot, the snapshot's version.
pub(super) const READ_VERSION: &str = "SELECT commit_version FROM supervisor_meta WHERE id = 1";

/// Reads one key.
pub(super) const GET: &str = "SELECT value FROM supervisor_kv WHERE key = $1";

/// Reads several keys (in no particular order).
pub(super) const GET_MANY: &str =
    "SELECT key, value FROM supervisor_kv WHERE key = ANY($1::bytea[])";

/// Reads `[$1, $2)` in key order, at most `$3` rows (`NULL`: all).
pub(super) const RANGE_FORWARD: &str = "SELECT key, value FROM supervisor_kv \
     WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3";

/// Reads `[$1, $2)` in reverse key order, at most `$3` rows (`NULL`: all).
pub(super) const RANGE_REVERSE: &str = "SELECT key, value FROM supervisor_kv \
     WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3";

/// Takes the commit lock: every committer locks the meta row until its transaction ends.
pub(super) const LOCK_FOR_COMMIT: &str =
    "SELECT commit_version, history_floor FROM supervisor_meta WHERE id = 1 FOR UPDATE";

/// Which transactions of a batch conflict with commits of other processes: the job index
/// `$1[i]` read `[$3[i], $4[i])` at version `$2[i]`; a commit after that version wrote into
/// the range. `$5` is the oldest of the read versions.
///
/// Written so that each read range costs an index probe, not a scan of the history: a
/// point write (`end = begin + 0x00`, nearly every row) intersects a range exactly when
/// its key lies in it (index `supervisor_kv_history_keys`); the few cleared ranges newer
/// than the oldest read are fetched once (partial index `supervisor_kv_history_ranges`)
/// and compared with every read range. Left to itself the planner scanned the whole
/// history once per read range for the latter.
pub(super) const CONFLICTING_JOBS: &str = "WITH cleared AS MATERIALIZED ( \
         SELECT version, begin_key, end_key FROM supervisor_kv_history \
         WHERE end_key <> (begin_key || '\\x00'::bytea) AND version > $5) \
     SELECT DISTINCT r.j \
     FROM unnest($1::int4[], $2::int8[], $3::bytea[], $4::bytea[]) AS r(j, v, b, e) \
     WHERE EXISTS (SELECT 1 FROM supervisor_kv_history h \
         WHERE h.begin_key >= r.b AND h.begin_key < r.e AND h.version > r.v) \
     OR EXISTS (SELECT 1 FROM cleared c \
         WHERE c.version > r.v AND c.begin_key < r.e AND c.end_key > r.b)";

/// Lets the commit transaction be acknowledged before its WAL reaches the disk (a batch
/// whose transactions all relaxed their durability). The next durable commit flushes it.
pub(super) const RELAXED_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// Removes every key in the ranges `[$1[i], $2[i])`.
pub(super) const CLEAR_RANGES: &str = "DELETE FROM supervisor_kv kv \
     USING unnest($1::bytea[], $2::bytea[]) AS r(b, e) WHERE kv.key >= r.b AND kv.key < r.e";

/// Removes the keys `$1`.
pub(super) const DELETE_KEYS: &str = "DELETE FROM supervisor_kv WHERE key = ANY($1::bytea[])";

/// Writes `$1[i] = $2[i]` (the keys are distinct).
pub(super) const UPSERT: &str = "INSERT INTO supervisor_kv (key, value) \
     SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

/// Records the ranges `[$2[i], $3[i])` as written by version `$1`.
pub(super) const RECORD_HISTORY: &str = "INSERT INTO supervisor_kv_history (version, begin_key, end_key) \
     SELECT $1, b, e FROM unnest($2::bytea[], $3::bytea[]) AS r(b, e)";

/// Publishes commit version `$1`.
pub(super) const SET_VERSION: &str = "UPDATE supervisor_meta SET commit_version = $1 WHERE id = 1";

/// Forgets history older than the conflict window and raises the floor past it.
pub(super) const PRUNE_HISTORY: &str = "WITH gone AS (
    DELETE FROM supervisor_kv_history
    WHERE committed_at < clock_timestamp() - interval '5 seconds'
    RETURNING version)
UPDATE supervisor_meta SET history_floor = GREATEST(history_floor, (SELECT max(version) FROM gone))
WHERE id = 1";

/// Tells listeners what a commit wrote.
pub(super) const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// The current value of each key in `$1`, in the order given (duplicates kept).
pub(super) const CURRENT_VALUES: &str = "SELECT kv.value FROM unnest($1::bytea[]) \
     WITH ORDINALITY AS w(key, n) LEFT JOIN supervisor_kv kv ON kv.key = w.key ORDER BY w.n";

/// Like [`CURRENT_VALUES`], with the commit version those values are at (one statement, so
/// one snapshot).
pub(super) const CURRENT_VALUES_AND_VERSION: &str = "SELECT (SELECT commit_version FROM supervisor_meta WHERE id = 1), kv.value \
     FROM unnest($1::bytea[]) WITH ORDINALITY AS w(key, n) \
     LEFT JOIN supervisor_kv kv ON kv.key = w.key ORDER BY w.n";
