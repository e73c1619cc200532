//! What can go wrong with the control store.
//!
//! Every variant names the store's file and, for queries, the operation, so a log line says what
//! failed where without a backtrace. Causes are kept as sources, never flattened into strings.

use std::path::PathBuf;

use crate::RequestState;

/// An error from [`Store`](crate::Store).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory that should hold the store could not be created.
    #[error("cannot create the directory {} for the control store: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store's file could not be created.
    #[error("cannot create the control store {}: {source}", path.display())]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file exists but SQLite does not recognise it as a database.
    #[error(
        "{} is not a Postern control store: the file exists but is not an SQLite database \
         (point `[store] path` at a new file, or restore the right one)",
        path.display()
    )]
    NotADatabase { path: PathBuf },
    /// The file is an SQLite database, but another program's: Postern will not add its tables.
    #[error(
        "{} is an SQLite database of another program (it has the tables {tables}), not a Postern \
         control store: point `[store] path` at a new file",
        path.display()
    )]
    ForeignDatabase { path: PathBuf, tables: String },
    /// SQLite refused to open the file (permissions, locking, I/O).
    #[error("cannot open the control store {}: {source}", path.display())]
    Open { path: PathBuf, source: sqlx::Error },
    /// A schema migration failed; the transaction holding it was rolled back.
    #[error(
        "cannot bring the control store {} to schema version {version}: {source}",
        path.display()
    )]
    Migrate {
        path: PathBuf,
        version: i64,
        source: sqlx::Error,
    },
    /// The store was written by a newer Postern whose schema this one does not know.
    #[error(
        "the control store {} has schema version {found}, newer than this Postern knows \
         ({known}): run the newer Postern, or restore a copy of the file it did not migrate",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A query failed.
    #[error("control store {}: {operation} failed: {source}", path.display())]
    Query {
        path: PathBuf,
        operation: &'static str,
        source: sqlx::Error,
    },
    /// A row could not be read back (edited by hand, or written by a newer Postern).
    #[error("control store {}: {operation}: unreadable row: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        operation: &'static str,
        detail: String,
    },
    /// What the caller asked to store is not acceptable.
    #[error("invalid {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: &'static str,
    },
    /// The request, grant, … the caller named does not exist. (No file named: the message may be
    /// shown to an API client.)
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    /// A value that must be unique is taken (a SCIM user's `userName`). (No file named: the
    /// message may be shown to an API client.)
    #[error("{field} {value:?} is already taken")]
    Duplicate { field: &'static str, value: String },
    /// The approval request is not in a state that allows the change. (No file named: the
    /// message may be shown to an API client.)
    #[error("approval request {request_id}: {reason}")]
    Conflict {
        request_id: String,
        reason: ConflictReason,
    },
}

/// Why an approval request refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflictReason {
    /// Votes are taken only while the request is pending.
    #[error("it is {state}, no longer pending")]
    NotPending { state: RequestState },
    /// Each approver votes once; a vote is not changed afterwards.
    #[error("{approver_subject} ({approver_issuer}) has already voted")]
    AlreadyVoted {
        approver_subject: String,
        approver_issuer: String,
    },
}

impl StoreError {
    /// A short, stable name for the kind of error, usable as a metrics label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CreateDir { .. } | Self::CreateFile { .. } => "create",
            Self::NotADatabase { .. } => "not_a_database",
            Self::ForeignDatabase { .. } => "foreign_database",
            Self::Open { .. } => "open",
            Self::Migrate { .. } => "migrate",
            Self::TooNew { .. } => "too_new",
            Self::Query { .. } => "query",
            Self::Corrupt { .. } => "corrupt",
            Self::Invalid { .. } => "invalid",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Duplicate { .. } => "duplicate",
        }
    }
}

/// SQLite's primary result code for "file is not a database"
/// (<https://www.sqlite.org/rescode.html#notadb>).
const SQLITE_NOTADB: &str = "26";

/// SQLite's primary result code for "database is locked"
/// (<https://www.sqlite.org/rescode.html#busy>); extended codes carry it in their low byte.
const SQLITE_BUSY: i32 = 5;

/// Whether SQLite gave up waiting for a lock held by another connection.
pub(crate) fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == SQLITE_BUSY),
        _ => false,
    }
}

/// Whether SQLite said the file is not a database.
pub(crate) fn is_not_a_database(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database.code().as_deref() == Some(SQLITE_NOTADB),
        _ => false,
    }
}
