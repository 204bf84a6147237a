//! The PostgreSQL backend: the store in one PostgreSQL database, for deployments that
//! already run PostgreSQL and want its operations (backups, replication, managed hosting)
//! rather than a FoundationDB cluster.
//!
//! Why it is built this way: like the embedded backend it must behave exactly like
//! FoundationDB, conflicts included, so that engine code tested on one backend behaves
//! the same on the others. PostgreSQL's own `SERIALIZABLE` isolation does not give that
//! contract, so the backend copies FoundationDB's design on top of plain PostgreSQL:
//!
//! - **Snapshot reads.** A transaction's first read opens a `REPEATABLE READ, READ ONLY`
//!   transaction on a pooled connection and reads the commit version in it (the snapshot's
//!   *read version*). Every later read runs in that snapshot and is merged with the
//!   transaction's own buffered writes (the shared read-your-writes buffer); non-snapshot
//!   reads record read conflict ranges on the client, snapshot reads record nothing.
//!   Writes are buffered on the client until commit. A transaction that never reads takes
//!   no snapshot and holds no connection until it commits (FoundationDB also gets its read
//!   version lazily); its read version is then its commit's, so an
//!   `add_read_conflict_range` without any read conflicts with nothing.
//! - **Commit = resolver + apply, one batch per process, in one short SQL transaction.**
//!   A commit ends the read snapshot (its connection goes back to the pool) and hands the
//!   transaction to the process's committer (`group`), which takes every transaction
//!   queued meanwhile as one batch and, on its own connection, starts a `READ COMMITTED`
//!   transaction that locks the single row of `supervisor_meta` (`SELECT … FOR UPDATE`).
//!   Committers (one per process) therefore run one at a time, in one total order. Under
//!   that lock it checks every transaction's read ranges against `supervisor_kv_history`
//!   — the key ranges written by every commit after its read version — and against the
//!   transactions before it in the batch; an overlap fails that transaction with
//!   [`StoreError::Conflict`], exactly FoundationDB's rule. The others' writes fold into
//!   one net change, applied as a whole (cleared ranges as `DELETE … WHERE key >= AND <`,
//!   sets as one `unnest` upsert, atomic adds read-modify-written under the lock,
//!   versionstamped keys); the batch records its written ranges in the history, bumps the
//!   commit version, sends one notification for watches and commits: one lock hold and
//!   one WAL flush for the whole batch.
//! - **Versionstamps** are the batch's commit version as 8 big-endian bytes followed by
//!   the transaction's 2-byte order in the batch, as FoundationDB's commit proxies number
//!   them; all keys of one transaction share the stamp, and its user version tells them
//!   apart. Commit versions grow with commit order because they are assigned under the
//!   commit lock.
//! - **Conflict window.** History is pruned after five seconds (FoundationDB's transaction
//!   lifetime), raising the *history floor*; a transaction whose read version is below the
//!   floor can no longer be checked and its commit fails with [`StoreError::TooOld`]
//!   (retryable). Reads themselves never fail for age.
//! - **Watches** use `LISTEN`/`NOTIFY`: each commit notifies the keys and ranges it wrote,
//!   tagged with its commit version, and one listener connection per store fires the
//!   matching watches (see `watches`). Activation compares the key's current value with
//!   what the watching transaction saw, as in the embedded backend.
//!
//! Why not PostgreSQL's `SERIALIZABLE`: its serializable snapshot isolation aborts a
//! transaction only when a cycle of read/write dependencies could make the outcome
//! non-serializable, at a granularity (rows, index pages, whole relations) that depends on
//! the query plan. FoundationDB's contract is different and deterministic: a read conflicts
//! with any later write to what it read, and nothing else conflicts. Under `SERIALIZABLE`
//! (1) blind writes and atomic adds to a key changed since the snapshot fail with
//! "could not serialize access due to concurrent update", where the contract says they
//! never conflict; (2) a read followed by an unrelated write is allowed to commit when no
//! cycle forms, where the contract (and `add_read_conflict_range`) says it must conflict;
//! and (3) a commit counter updated inside every transaction makes every pair of
//! concurrent writers conflict. The conformance suite checks all three.
//!
//! - **Lanes.** Reads of [`Priority::System`] transactions (lease renewals, completions,
//!   heartbeats) take connections from a small pool of their own, and commits go through
//!   the committer's own connection, so a flood of submits cannot starve them of
//!   connections. A transaction that relaxed its durability
//!   ([`crate::Transaction::relax_durability`]) may be acknowledged before its WAL is
//!   flushed when its whole batch did (`synchronous_commit = off`).
//!
//! Costs of this design: batches are serialized by the meta row lock (each holds it for
//! two pipelined round trips plus the server's commit), so a database sustains on the
//! order of a thousand batches per second, less with a slow WAL flush, and as many
//! transactions per batch as the processes had queued; every batch sends one
//! notification. Keys are limited by PostgreSQL's btree, which stores an index entry of
//! at most 2,704 bytes (after compression): a longer key fails at commit with
//! [`StoreError::Io`] naming the limit, although FoundationDB allows 10,000 bytes. Only
//! unencrypted connections are supported (no TLS connector is linked in).
//!
//! Errors: SQLSTATE `40001` (serialization failure) and `40P01` (deadlock) map to
//! [`StoreError::Conflict`]; a connection lost while a commit was in flight to
//! [`StoreError::CommitUnknown`]; a server that cannot be reached to
//! [`StoreError::Unavailable`], naming the URL with its password redacted; a database
//! without the schema to [`StoreError::Corrupt`] saying how to create it.

mod group;
mod session;
mod sql;
mod txn;
mod watches;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::{Backend, Db, Priority, RawTransaction, StoreError};

/// How long the server lets a session sit idle inside a transaction before ending it
/// (and releasing the commit lock it may hold).
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(6);

/// How long a connection attempt may take when the URL does not say (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a transaction waits for a free pooled connection before giving up.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections kept for [`Priority::System`] transactions (lease renewals, completions,
/// heartbeats), so a flood of ordinary ones cannot make them wait for a connection.
const SYSTEM_POOL_SIZE: usize = 4;

/// Options of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections the pool opens. A transaction holds one from its first read to its
    /// end (a blind-write transaction only while it commits); the watch listener uses one
    /// more of its own.
    pub pool_size: usize,
    /// Create the schema when the database has none (as [`PostgresStore::init`] does).
    /// Off by default, so that a mistyped URL fails instead of filling the wrong database.
    pub create_schema: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            create_schema: false,
        }
    }
}

/// State shared by the store handle and its transactions.
pub(crate) struct Shared {
    /// Connections for reads of [`Priority::Default`] transactions.
    pub(crate) pool: Pool,
    /// Connections for reads of [`Priority::System`] transactions.
    pub(crate) system_pool: Pool,
    /// Where every commit of this process goes (one batch at a time).
    pub(crate) committer: group::Committer,
    /// The URL with its password redacted, for messages.
    pub(crate) target: String,
    pub(crate) pool_size: usize,
    pub(crate) watches: Arc<watches::WatchRegistry>,
}

impl Shared {
    /// A pooled connection for a transaction of `priority`.
    pub(crate) async fn connection(
        &self,
        priority: Priority,
    ) -> Result<deadpool_postgres::Object, StoreError> {
        let (pool, size) = match priority {
            Priority::Default => (&self.pool, self.pool_size),
            Priority::System => (&self.system_pool, SYSTEM_POOL_SIZE),
        };
        pool.get()
            .await
            .map_err(|err| pool_error(err, &self.target, size))
    }
}

/// The PostgreSQL store: a connection pool and a watch listener on one database. Wrap it in
/// a [`Db`] (see [`open_db`]) to use it.
pub struct PostgresStore {
    shared: Arc<Shared>,
    listener: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shared.target)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// or PostgreSQL's `key=value` form), checks its schema (creating it if
    /// `opts.create_schema` is set) and starts the watch listener. Must run inside a Tokio
    /// runtime, which then drives the store's connections.
    ///
    /// Fails with [`StoreError::Unavailable`] when the server cannot be reached, with
    /// [`StoreError::Io`] when it refuses the login or the database does not exist, and with
    /// [`StoreError::Corrupt`] when the database has no Supervisor schema (and
    /// `create_schema` is off) or one of another version. Messages name the URL with its
    /// password redacted.
    pub async fn connect(url: &str, opts: PostgresOptions) -> Result<Arc<Self>, StoreError> {
        let target = redact_url(url);
        let config = parse_url(url, &target)?;
        let pool_size = opts.pool_size.max(1);
        let pool = build_pool(&config, pool_size)?;
        let system_pool = build_pool(&config, SYSTEM_POOL_SIZE)?;
        let commit_pool = build_pool(&config, 1)?;
        {
            let client = pool
                .get()
                .await
                .map_err(|err| pool_error(err, &target, pool_size))?;
            check_schema(&client, &target, opts.create_schema).await?;
        }
        let registry = Arc::new(watches::WatchRegistry::default());
        let listener = watches::start_listener(config, registry.clone(), target.clone()).await?;
        tracing::debug!(url = %target, pool_size, "postgres store connected");
        Ok(Arc::new(PostgresStore {
            shared: Arc::new(Shared {
                pool,
                system_pool,
                committer: group::Committer::start(commit_pool, target.clone()),
                target,
                pool_size,
                watches: registry,
            }),
            listener,
        }))
    }

    /// Creates the Supervisor schema in the database at `url` if it is missing, and checks
    /// its version if it exists. Idempotent, and safe to run from several processes at once.
    /// The database itself must exist, and the user needs the `CREATE` privilege on its
    /// `public` schema (PostgreSQL 15 grants it only to the database owner by default).
    pub async fn init(url: &str) -> Result<(), StoreError> {
        let target = redact_url(url);
        let config = parse_url(url, &target)?;
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|err| connect_error(&err, &target))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let result = check_schema(&client, &target, true).await;
        drop(client);
        let _ = driver.await;
        result
    }

    /// The URL of the database, with its password redacted.
    pub fn url(&self) -> &str {
        &self.shared.target
    }
}

/// Dropping the store stops its watch listener and resolves active watches with
/// [`StoreError::Closed`]. Transactions still in flight keep the connection pool alive and
/// can still commit; the pool's connections close when the last of them is gone.
impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.shared.watches.close();
    }
}

#[async_trait::async_trait]
impl Backend for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn begin(&self) -> Result<Box<dyn RawTransaction>, StoreError> {
        Ok(Box::new(txn::PgTxn::new(self.shared.clone())))
    }
}

/// Connects to the PostgreSQL database at `url` and wraps the store in a [`Db`] (see
/// [`PostgresStore::connect`]).
pub async fn open_db(url: &str, opts: PostgresOptions) -> Result<Db, StoreError> {
    Ok(Db::new(PostgresStore::connect(url, opts).await?))
}

/// A pool of at most `size` connections to `config`.
fn build_pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Io(format!("cannot build the connection pool: {e}")))
}

/// Parses a connection URL, filling in this backend's defaults.
fn parse_url(url: &str, target: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        StoreError::Io(format!(
            "invalid PostgreSQL URL {target}: {e}; expected \
             postgres://user:password@host:port/database"
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("supervisor");
    }
    // A client that vanishes (crash, network partition) must not hold the commit lock
    // for long: the server ends a session left idle inside a transaction (no
    // transaction may last 5 s by the store's contract), and the client gives up on a
    // connection whose packets go unacknowledged instead of retransmitting for minutes.
    if config.get_options().is_none() {
        config.options(format!(
            "-c idle_in_transaction_session_timeout={}",
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
        ));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(5));
    config.tcp_user_timeout(Duration::from_secs(10));
    Ok(config)
}

/// Checks the schema version, creating the schema first if `create` is set and it is
/// missing.
async fn check_schema(
    client: &tokio_postgres::Client,
    target: &str,
    create: bool,
) -> Result<(), StoreError> {
    let missing = || {
        StoreError::Corrupt(format!(
            "the PostgreSQL database at {target} has no Supervisor schema (table \
             supervisor_meta is missing or empty); create it with `supervisor store init --store URL` (or PostgresStore::init), or \
             connect with PostgresOptions::create_schema set, and check that the URL names \
             the right database"
        ))
    };
    if create {
        client
            .batch_execute(sql::CREATE_SCHEMA)
            .await
            .map_err(|err| schema_error(&err, target))?;
    }
    let row = match client.query_opt(sql::SCHEMA_VERSION_OF_DB, &[]).await {
        Ok(row) => row,
        Err(err) if err.code() == Some(&SqlState::UNDEFINED_TABLE) => return Err(missing()),
        Err(err) => return Err(schema_error(&err, target)),
    };
    let version: i64 = match row {
        None => return Err(missing()),
        Some(row) => row.try_get(0).map_err(|err| schema_error(&err, target))?,
    };
    if version != sql::SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the PostgreSQL database at {target} has Supervisor schema version {version}, but \
             this Supervisor understands version {}; run the Supervisor version that wrote \
             it, or restore a backup",
            sql::SCHEMA_VERSION
        )));
    }
    Ok(())
}

/// Maps an error while checking or creating the schema.
fn schema_error(err: &tokio_postgres::Error, target: &str) -> StoreError {
    match err.code() {
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => StoreError::Io(format!(
            "the database user may not create the Supervisor schema in {target}: {}; grant it \
             CREATE on the public schema (or let the database owner run PostgresStore::init)",
            chain(err)
        )),
        Some(code)
            if *code == SqlState::UNDEFINED_COLUMN || *code == SqlState::DATATYPE_MISMATCH =>
        {
            StoreError::Corrupt(format!(
                "the Supervisor tables in {target} do not have the expected columns ({}); \
                 they are from an incompatible version, or another program uses those names",
                chain(err)
            ))
        }
        _ => pg_error(err, target, Phase::Read),
    }
}

/// Where in a transaction's life an error happened: it decides what a lost connection means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading, or committing before anything could have been applied: a lost connection
    /// leaves nothing behind ([`StoreError::Unavailable`]).
    Read,
    /// Applying and committing: a lost connection leaves the outcome unknown
    /// ([`StoreError::CommitUnknown`]).
    Commit,
}

/// Maps an error from a connection in use.
pub(crate) fn pg_error(err: &tokio_postgres::Error, target: &str, phase: Phase) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return StoreError::Conflict;
        }
        if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::UNDEFINED_COLUMN {
            return StoreError::Corrupt(format!(
                "the Supervisor schema in {target} is missing or incomplete ({}); create it \
                 with PostgresStore::init",
                db.message()
            ));
        }
        if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
            return StoreError::Io(format!(
                "PostgreSQL at {target} refused the commit: {}; the PostgreSQL backend keeps \
                 keys in a btree index, whose entries hold at most 2,704 bytes after \
                 compression, so keep keys shorter than that",
                db.message()
            ));
        }
        let class = code.code().get(..2).unwrap_or_default();
        if matches!(class, "08" | "53" | "57") {
            // Connection exceptions, insufficient resources, operator intervention
            // (shutdown, recovery): the server is (temporarily) not serving.
            let what = format!(
                "PostgreSQL at {target} is not serving: {} (SQLSTATE {}); check the server's \
                 state and logs",
                db.message(),
                code.code()
            );
            return match phase {
                Phase::Read => StoreError::Unavailable(what),
                Phase::Commit => StoreError::CommitUnknown(what),
            };
        }
        return StoreError::Io(format!(
            "PostgreSQL at {target} failed: {} (SQLSTATE {})",
            db.message(),
            code.code()
        ));
    }
    if is_connection_failure(err) {
        let what = format!(
            "lost the connection to PostgreSQL at {target}: {}; check that the server is \
             running and reachable",
            chain(err)
        );
        return match phase {
            Phase::Read => StoreError::Unavailable(what),
            Phase::Commit => StoreError::CommitUnknown(what),
        };
    }
    StoreError::Io(format!(
        "unexpected PostgreSQL client error with {target}: {}",
        chain(err)
    ))
}

/// Whether a client error means the connection failed (rather than a bug in this code).
fn is_connection_failure(err: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    err.is_closed()
        || err
            .source()
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some())
        || err.to_string().starts_with("timeout")
}

/// Maps a failure to open a connection.
pub(crate) fn connect_error(err: &tokio_postgres::Error, target: &str) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return StoreError::Io(format!(
                "PostgreSQL at {target} refused the login: {}; check the user name and \
                 password in the URL, and the server's pg_hba.conf",
                db.message()
            ));
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return StoreError::Io(format!(
                "PostgreSQL at {target}: {}; create the database (for example with \
                 createdb), or fix the database name in the URL",
                db.message()
            ));
        }
        return match pg_error(err, target, Phase::Read) {
            StoreError::Io(msg) => StoreError::Unavailable(msg),
            other => other,
        };
    }
    StoreError::Unavailable(format!(
        "cannot connect to PostgreSQL at {target}: {}; check that the server is running, \
         that it listens on that host and port, and that this machine can reach it",
        chain(err)
    ))
}

/// Maps a failure to get a pooled connection.
fn pool_error(err: PoolError, target: &str, pool_size: usize) -> StoreError {
    match err {
        PoolError::Backend(err) => connect_error(&err, target),
        PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            StoreError::Unavailable(format!(
                "all {pool_size} connections to PostgreSQL at {target} stayed busy for {}s; \
                 raise the pool size or keep transactions shorter",
                POOL_WAIT_TIMEOUT.as_secs()
            ))
        }
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "timed out connecting to PostgreSQL at {target}; check that the server is running \
             and reachable"
        )),
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Io(format!(
            "cannot get a connection to PostgreSQL at {target}: {other}"
        )),
    }
}

/// An error and its causes, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `url` with its password replaced by `***`, for messages: the password of a
/// `postgres://user:password@host` URL, of a `password=` query parameter, and of a
/// `password=` key of the `key=value` form.
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let rest = if let Some(scheme_end) = url.find("://") {
        let (scheme, after) = url.split_at(scheme_end + 3);
        out.push_str(scheme);
        let authority_end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, tail) = after.split_at(authority_end);
        match authority.rfind('@') {
            Some(at) => {
                let (userinfo, host) = authority.split_at(at);
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        tail
    } else {
        url
    };
    // `password=` as a query parameter or as a key of the key=value form.
    let mut remaining = rest;
    while let Some(pos) = remaining.find("password=") {
        let boundary_ok = pos == 0
            || remaining[..pos]
                .chars()
                .next_back()
                .is_some_and(|c| c == '?' || c == '&' || c.is_whitespace());
        let value_start = pos + "password=".len();
        out.push_str(&remaining[..value_start]);
        remaining = &remaining[value_start..];
        if !boundary_ok {
            continue;
        }
        let value_end = if let Some(quoted) = remaining.strip_prefix('\'') {
            quoted.find('\'').map_or(remaining.len(), |end| end + 2)
        } else {
            remaining
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(remaining.len())
        };
        out.push_str("***");
        remaining = &remaining[value_end..];
    }
    out.push_str(remaining);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_every_form_of_password() {
        assert_eq!(
            redact_url("postgres://sup:s3cret@db.example:5432/app"),
            "postgres://sup:***@db.example:5432/app"
        );
        assert_eq!(
            redact_url("postgresql://sup:p%40ss:word@127.0.0.1:1/x?sslmode=disable"),
            "postgresql://sup:***@127.0.0.1:1/x?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://sup@h/x?password=hunter2&application_name=a"),
            "postgres://sup@h/x?password=***&application_name=a"
        );
        assert_eq!(
            redact_url("host=h user=u password='a b c' dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(redact_url("host=h password=xyz"), "host=h password=***");
        assert_eq!(redact_url("postgres://h:5432/db"), "postgres://h:5432/db");
        assert_eq!(
            redact_url("host=h mypassword=visible"),
            "host=h mypassword=visible"
        );
    }
}
