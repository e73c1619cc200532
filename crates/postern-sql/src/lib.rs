//! SQL classification for Postern, with the PostgreSQL server's own parser (libpg_query through
//! the `pg_query` crate).
//!
//! This crate turns statement text into facts — what kind of statement each one is, which
//! relations and functions it names, which escape hazards it contains — and makes no decisions:
//! `postern-policy` decides from the facts. It sits in a leaf crate because libpg_query is slow to
//! build, so that editing the proxy does not rebuild it.
//!
//! # Layout
//!
//! - [`Classifier`] (`cache.rs`): the entry point, an LRU cache of analyses keyed by exact text,
//!   and one of plain reads and writes keyed by shape (`shape.rs`: the text with its plain
//!   constants replaced).
//! - `limits.rs`: keeps hostile texts (too long, too deep) away from libpg_query.
//! - `classify.rs`: parse, then walk every node of every statement and gather [`StatementFacts`].
//! - `walk/`: the complete tree walk, generated from pg_query's protobuf definitions.
//! - `command.rs`: PostgreSQL command tags; `functions.rs`: what function names imply.
//! - `session_scoped.rs`: the state a statement leaves on the server connection past its
//!   transaction ([`SessionScoped`]), which transaction pooling cannot carry.
//! - [`is_ascii_safe_encoding`] (`encoding.rs`), [`redact`] (`redact.rs`): client encodings
//!   Postern can read, and secrets kept out of the audit log.
//! - `facts.rs`: the data types returned.

mod cache;
mod classify;
mod command;
mod encoding;
mod facts;
mod functions;
mod limits;
mod redact;
mod session_scoped;
mod shape;
mod walk;

pub use cache::{Classifier, MAX_CACHED_SQL_LEN};
pub use encoding::is_ascii_safe_encoding;
pub use facts::{Analysis, Hazard, PreparedName, SessionScoped, StatementFacts, StatementKind};
pub use limits::MAX_ANALYZED_SQL_LEN;
pub use redact::{REDACTED_PLACEHOLDER, redact};

#[cfg(test)]
mod tests;
