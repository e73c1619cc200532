//! Postern's tamper-evident audit log: one JSON object per line, each carrying the SHA-256 of the
//! line before it.
//!
//! Every statement is recorded *before* it runs (architecture decision 4): [`AuditLog::record`]
//! returns only once the event is written and flushed, and when it cannot be written the caller
//! refuses the statement (fail closed). The hash chain makes any later edit, insertion or deletion
//! inside the file visible to [`verify`]; a cut at the very end is only visible against an outside
//! anchor, such as the last [`EventReceipt::hash`] kept elsewhere.
//!
//! # Line format
//!
//! ```text
//! {"seq":1,"time":"2025-01-02T03:04:05.123456Z","prev":"0000…0000","kind":"statement",…}\n
//! ```
//!
//! - `seq` counts from 1 and has no gaps.
//! - `time` is when the writer serialised the event, RFC 3339 in UTC with microseconds.
//! - `prev` is the lowercase hex SHA-256 of the previous line's exact bytes *including* its
//!   trailing newline, so `sed -n 16p audit.jsonl | sha256sum` reproduces line 17's `prev`. The
//!   first event of a chain has 64 zeros.
//! - The remaining fields are whatever the caller passed. Values under keys that name a secret
//!   (`password`, `secret`, `token`, `authorization`, …) are replaced by `"[redacted]"` as a second
//!   wall; callers must still not pass secrets.
//!
//! # Layout
//! - [`AuditLog`] (in `log`): the handle sessions share and the writer that owns the file; the
//!   session that finds it free writes whatever is queued in one write (group commit).
//! - [`Event`] (in `event`): an event's own fields over an [`EventBase`] shared by a session's
//!   events and encoded once.
//! - `chain`: the line format: encoding, hashing, parsing one line.
//! - [`verify()`] (in `verify`): checks a whole file.
//! - [`AuditError`] (in `error`): what `record` and `open` report, with a client-safe message.
//!
//! What this crate does not own: deciding what goes into an event (the proxy), indexing or
//! searching events (the store), rotation (an operator renames the file and restarts; a renamed
//! file makes `record` fail with [`AuditError::FileGone`] until then).

mod chain;
mod error;
mod event;
mod log;
mod verify;

pub use chain::GENESIS_PREV;
pub use error::AuditError;
pub use event::{Event, EventBase};
pub use log::{AuditLog, AuditOptions, Durability, EventReceipt};
pub use verify::{Problem, VerifyError, VerifyReport, verify};

/// The current time as RFC 3339 in UTC with microseconds, e.g. `2025-01-02T03:04:05.123456Z`: the
/// format of every event's `time` field.
#[must_use]
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
