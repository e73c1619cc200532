//! The control plane's persistent state: what must outlive a Postern process and be seen by every
//! Postern process that shares the store.
//!
//! Today that is revocations (issue 5), the `jti`s of back-channel logout tokens acted on, the
//! users an identity provider provisions over SCIM, and just-in-time approvals: requests held for
//! approvers, their votes, and the grants approvals make. Sessions and signing keys follow. The store is an
//! embedded SQLite file (through sqlx, with SQLite bundled); a PostgreSQL backend for several
//! instances is planned behind the same API.
//!
//! # Layout
//!
//! - [`Store`] (this file): opening the file — mode 0600, WAL, `synchronous=FULL`, a busy
//!   timeout — and the connection pool. Cheap to clone; every clone shares the pool.
//! - `migrate.rs`: the schema as numbered SQL files in `migrations/`, embedded and applied under
//!   SQLite's write lock so that two processes opening one new file do not race.
//! - `revocation.rs`: revocations as plain data, and the pure check the proxy runs on every
//!   connection ([`Revocation::covers`], [`RevocationSet::covering`]) without touching the file.
//!   `revocation/table.rs`: reading and writing them.
//! - `approval.rs`: approval requests, votes and grants as plain data, and what a grant covers
//!   ([`Grant::covers_statement`], [`Grant::covers_actions`]); `approval/tally.rs`: deciding a
//!   request from its votes ([`ApprovalRequest::tally`]); `approval/table.rs`: reading and
//!   writing them, a vote and the grant it makes in one write transaction.
//! - `baseline.rs`: what each service identity has been seen running, and from where, on each
//!   target: learned fingerprints and networks, and the anomalies seen after the observation
//!   window.
//! - `scim.rs`: the users an identity provider provisions over SCIM 2.0, and the revocations
//!   SCIM made (so that reactivation lifts those and no others).
//! - `error.rs`: [`StoreError`], naming the file and the operation; [`ConflictReason`].
//!
//! # Time
//!
//! Times are unix seconds (`i64`) and are always given by the caller (see [`unix_seconds`]), so the
//! proxy's injectable clock decides what "now" is, in tests too.
//!
//! # Runtime and cancellation
//!
//! The store needs a Tokio runtime with the time driver (sqlx runs SQLite on worker threads and
//! answers through Tokio). No operation is cancel safe in the sense of "nothing happened": a write
//! whose future is dropped may or may not have been committed, so a caller that must know reads
//! the list again.

mod approval;
mod baseline;
mod error;
mod logout;
mod migrate;
mod revocation;
mod scim;
mod signing_key;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use approval::{
    ActionOn, ApprovalRequest, Grant, GrantScope, GrantTerms, MAX_ACTIONS, MAX_CONTEXT_BYTES,
    MAX_GROUPS, MAX_JUSTIFICATION_CHARS, MAX_PREVIEW_BYTES, MAX_REQUIREMENTS, MAX_STATEMENT_BYTES,
    NewApprovalRequest, NewVote, RequestState, Requirement, Tally, Verdict, Vote, VoteOutcome,
};
pub use baseline::{
    Baseline, BaselineEntry, BaselineEntryKind, BaselineKey, BaselineSummary, MAX_SAMPLE_BYTES,
};
pub use error::{ConflictReason, StoreError};
pub use revocation::{
    MAX_NAME_BYTES, MAX_REASON_BYTES, NewRevocation, Revocation, RevocationScope, RevocationSet,
};
pub use scim::{
    MAX_SCIM_ATTRIBUTES_BYTES, MAX_SCIM_PAGE, ScimUser, ScimUserData, ScimUserFilter, ScimUserPage,
};
pub use signing_key::SigningKey;

/// How long a statement waits for another connection or process to release SQLite's write lock
/// before failing with "database is locked" (`PRAGMA busy_timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Store::open`] pauses before trying again while another process turns the new file
/// into WAL mode.
const OPEN_RETRY_PAUSE: Duration = Duration::from_millis(25);

/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections to a store file. SQLite runs one writer at a time whatever the number; more
/// connections let reads (in WAL mode, never blocked by the writer) run alongside a write.
const MAX_CONNECTIONS: u32 = 4;

/// Postern's control store. `Send + Sync`; clone it freely (clones share one connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    /// The pool every operation takes a connection from.
    pool: SqlitePool,
    /// The file, named in every error (`:memory:` for an in-memory store).
    path: Arc<Path>,
}

impl Store {
    /// Opens the store at `path`, creating the file (mode 0600 on Unix) and its directory (0700)
    /// if needed, and brings its schema up to date.
    ///
    /// The file is put in WAL mode with `synchronous=FULL`: every committed change, a revocation
    /// above all, is on disk before the call returns, and readers never wait for the writer.
    /// Several processes may open the same file; each sees the others' committed writes.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotADatabase`] or [`StoreError::ForeignDatabase`] for a file that is not a
    /// Postern store, [`StoreError::TooNew`] for one migrated by a newer Postern, and the I/O and
    /// SQLite errors of creating, opening and migrating it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        create_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = connect(options, path).await?;
        Self::migrated(pool, path).await
    }

    /// A store that lives in memory and vanishes when the last clone is dropped: for tests.
    ///
    /// # Errors
    ///
    /// Only if SQLite cannot open an in-memory database or apply the schema.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let path = Path::new(":memory:");
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        // Each connection to `:memory:` is a database of its own, so the pool holds exactly one
        // connection and never closes it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::migrated(pool, path).await
    }

    async fn migrated(pool: SqlitePool, path: &Path) -> Result<Self, StoreError> {
        if let Err(error) = migrate::run(&pool, path).await {
            pool.close().await;
            return Err(error);
        }
        Ok(Self {
            pool,
            path: Arc::from(path),
        })
    }

    /// The store's file (`:memory:` for an in-memory store).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection once the operations in flight have finished. Other clones can no
    /// longer be used afterwards. Dropping the last clone closes the connections too, without
    /// waiting.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The file, for an error.
    fn location(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    /// A failed query, named.
    fn query_error(&self, operation: &'static str, source: sqlx::Error) -> StoreError {
        StoreError::Query {
            path: self.location(),
            operation,
            source,
        }
    }
}

/// Opens the pool, whose first connection sets the pragmas at once: a file that is not a database
/// fails here rather than at the first query.
///
/// Turning a new file into WAL mode needs an exclusive lock that SQLite does not wait for (the
/// busy timeout does not apply), so when two processes open one new file together, one of them
/// gets "database is locked"; it tries again, for as long as the busy timeout. Once the file is in
/// WAL mode, opening it never needs that lock again.
async fn connect(options: SqliteConnectOptions, path: &Path) -> Result<SqlitePool, StoreError> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let connected = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await;
        match connected {
            Ok(pool) => return Ok(pool),
            Err(error) if error::is_busy(&error) && Instant::now() < deadline => {
                tokio::time::sleep(OPEN_RETRY_PAUSE).await;
            }
            Err(source) if error::is_not_a_database(&source) => {
                return Err(StoreError::NotADatabase {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Creates the store's directory (0700) and file (0600) if absent, so that SQLite never creates
/// them with the process's umask: the store holds who was revoked and why, and who may run what.
/// An existing file is left as it is. (SQLite gives the `-wal` and `-shm` files the database
/// file's permissions.)
fn create_file(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `time` as unix seconds: negative before 1970, saturating far beyond.
#[must_use]
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests;
