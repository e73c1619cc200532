//! Errors of the audit log, each with a metrics label and a message safe to send a database
//! client. `Clone`, because one failed write is reported to every event of its batch.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::verify::Problem;

/// Why the audit log could not be opened or an event could not be recorded. When `record` returns
/// one of these, the statement must not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error(
        "audit log {path} is already open in another process or handle; two writers would break its hash chain"
    )]
    Locked { path: PathBuf },
    #[error(
        "audit log {path} cannot be continued: its last line {problem}; check it with `postern audit verify`, then move the file aside or remove the broken last line"
    )]
    CorruptTail {
        path: PathBuf,
        #[source]
        problem: Problem,
    },
    #[error(
        "audit log {path} was removed or replaced; refusing to run statements that cannot be recorded"
    )]
    FileGone { path: PathBuf },
    #[error(
        "audit log {path} was changed by another writer (expected {expected} bytes, found {found}); refusing to run statements that cannot be recorded"
    )]
    Modified {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("cannot write to audit log {path}: {source}")]
    WriteFailed {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error(
        "audit log {path} still ends with a partly written event that could not be removed ({source}); refusing to append after it"
    )]
    Unrepaired {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("audit event could not be serialised: {0}")]
    Encode(#[source] Arc<serde_json::Error>),
    #[error("the writer of audit log {path} has stopped")]
    WriterStopped { path: PathBuf },
}

impl AuditError {
    /// A short, stable name for metrics and structured logs.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Open { .. } => "open_failed",
            Self::Locked { .. } => "locked",
            Self::CorruptTail { .. } => "corrupt_tail",
            Self::FileGone { .. } => "file_gone",
            Self::Modified { .. } => "modified",
            Self::WriteFailed { .. } => "write_failed",
            Self::Unrepaired { .. } => "unrepaired",
            Self::Encode(_) => "encode_failed",
            Self::WriterStopped { .. } => "writer_stopped",
        }
    }

    /// What a database client may be told when its statement is refused because of this error.
    /// Names the log file and the operating system's reason, nothing else.
    #[must_use]
    pub fn client_message(&self) -> String {
        format!(
            "statement refused because it could not be recorded: {}",
            self.client_reason()
        )
    }

    /// What went wrong with the log, in the words of [`AuditError::client_message`], for a
    /// client refused something other than a statement (a connection).
    #[must_use]
    pub fn client_reason(&self) -> String {
        match self {
            Self::FileGone { path } => {
                format!("the audit log {} was removed or replaced", path.display())
            }
            Self::WriteFailed { path, source } => {
                format!(
                    "the audit log {} could not be written ({})",
                    path.display(),
                    io_reason(source)
                )
            }
            Self::Unrepaired { path, .. } => format!(
                "the audit log {} ends with a partly written event",
                path.display()
            ),
            Self::Modified { path, .. } => format!(
                "the audit log {} was changed by another writer",
                path.display()
            ),
            Self::Encode(_) => "the event could not be serialised".to_owned(),
            Self::Open { path, .. }
            | Self::Locked { path }
            | Self::CorruptTail { path, .. }
            | Self::WriterStopped { path } => {
                format!("the audit log {} is not available", path.display())
            }
        }
    }
}

/// The operating system's description of an I/O error, without Rust's "(os error N)" suffix.
fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}
