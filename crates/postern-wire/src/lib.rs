//! The PostgreSQL v3 wire protocol, as much of it as Postern needs to see.
//!
//! # Layout
//! - [`limits`]: the bounds every decoder enforces, each citing where PostgreSQL sets the same.
//! - [`startup`]: the untyped first packet — StartupMessage, SSLRequest, GSSENCRequest,
//!   CancelRequest.
//! - [`frame`]: the typed-message framing that follows startup, decoded check-then-parse so a
//!   partial frame costs nothing, kept as the raw bytes so relaying never re-encodes.
//! - [`frontend`] / [`backend`]: lazily decoded views of the messages Postern inspects, and
//!   builders for the ones it emits.
//! - [`sqlstate`]: the error codes Postern uses.
//!
//! This crate does no I/O and knows nothing of identities or policies: it turns bytes into
//! messages and messages into bytes.

#![forbid(unsafe_code)]

pub mod backend;
mod cursor;
mod error;
pub mod frame;
pub mod frontend;
pub mod limits;
pub mod sqlstate;
pub mod startup;

pub use error::WireError;
pub use frame::{Frame, FrameDecoder};
