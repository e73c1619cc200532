//! Checking a whole audit log file: every line complete and a JSON object, `seq` consecutive,
//! each `prev` the SHA-256 of the line before. Reports the first broken event and nothing after
//! it, since everything after a break is unanchored.
//!
//! Synchronous, reading line by line: meant for `postern audit verify` and tests, not the hot path.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chain::{self, GENESIS_PREV};

/// What a successful [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of events (lines) in the file.
    pub events: u64,
    /// Hex SHA-256 of the last line: what the next event's `prev` must be, and what to keep
    /// elsewhere to detect a later cut at the end of the file. [`GENESIS_PREV`] for an empty file.
    pub last_hash: String,
    /// `seq` of the first event (1 unless the file continues an older one); 0 for an empty file.
    pub first_seq: u64,
    /// `seq` of the last event; 0 for an empty file.
    pub last_seq: u64,
}

/// Why an audit log failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read at all.
    #[error("cannot read audit log {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The first line at which the chain breaks.
    #[error("{}", describe(*.line, *.seq, .problem))]
    Broken {
        /// 1-based line number.
        line: u64,
        /// The event's `seq`, when the line has a readable one.
        seq: Option<u64>,
        problem: Problem,
    },
}

/// What is wrong with one line. Displayed as a phrase that follows "line N" or "event S (line N):".
#[derive(Debug, Clone, thiserror::Error)]
pub enum Problem {
    #[error(
        "is incomplete (no newline at the end): the log was cut short while an event was being written"
    )]
    Incomplete,
    #[error("is not valid JSON ({0})")]
    NotJson(#[source] Arc<serde_json::Error>),
    #[error("is not a JSON object")]
    NotObject,
    /// A chain field (`seq`, `prev`, `time`) is missing or malformed.
    #[error("has no valid \"{0}\" field")]
    BadField(&'static str),
    #[error(
        "seq is {found} but {expected} was expected — an event is missing, repeated or out of order"
    )]
    SeqGap { expected: u64, found: u64 },
    #[error(
        "prev does not match the hash of event {previous_seq} — the log was changed at or before line {previous_line}"
    )]
    PrevMismatch {
        previous_seq: u64,
        previous_line: u64,
    },
    #[error("is event 1 but its prev is not 64 zeros — the start of the log was changed")]
    GenesisPrev,
}

/// Renders a broken line the way an operator reads it: "event 17 (line 17): prev does not …" or
/// "line 5 is not valid JSON …".
fn describe(line: u64, seq: Option<u64>, problem: &Problem) -> String {
    match seq {
        Some(seq) => format!("event {seq} (line {line}): {problem}"),
        None => format!("line {line} {problem}"),
    }
}

/// Verifies the hash chain of the audit log at `path`.
///
/// The first line may start at any `seq` (a file that continues an older one); its `prev` is then
/// taken on trust and only checked when `seq` is 1.
///
/// # Errors
/// [`VerifyError::Read`] if the file cannot be read, [`VerifyError::Broken`] naming the first
/// line where the chain breaks.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let read_error = |source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(read_error)?);
    let mut report = VerifyReport {
        events: 0,
        last_hash: GENESIS_PREV.to_owned(),
        first_seq: 0,
        last_seq: 0,
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_error)? == 0 {
            return Ok(report);
        }
        let line = report.events + 1;
        let broken = |seq, problem| VerifyError::Broken { line, seq, problem };
        let Some(content) = buf.strip_suffix(b"\n") else {
            return Err(broken(None, Problem::Incomplete));
        };
        let fields = chain::parse(content).map_err(|(seq, problem)| broken(seq, problem))?;
        let seq = Some(fields.seq);
        if report.events == 0 {
            if fields.seq == 1 && fields.prev != GENESIS_PREV {
                return Err(broken(seq, Problem::GenesisPrev));
            }
            report.first_seq = fields.seq;
        } else {
            let expected = report.last_seq + 1;
            if fields.seq != expected {
                return Err(broken(
                    seq,
                    Problem::SeqGap {
                        expected,
                        found: fields.seq,
                    },
                ));
            }
            if fields.prev != report.last_hash {
                return Err(broken(
                    seq,
                    Problem::PrevMismatch {
                        previous_seq: report.last_seq,
                        previous_line: report.events,
                    },
                ));
            }
        }
        report.events = line;
        report.last_seq = fields.seq;
        report.last_hash = chain::line_hash(&buf);
    }
}
