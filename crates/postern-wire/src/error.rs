//! Protocol violations. Each one ends the offending connection, never the process.

/// Something a peer sent that does not follow the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid length {length} in {what}")]
    InvalidLength { what: &'static str, length: i64 },
    #[error("{what} of {length} bytes exceeds the limit of {limit} bytes")]
    TooLong {
        what: &'static str,
        length: usize,
        limit: usize,
    },
    #[error("unknown {side} message type 0x{tag:02x}")]
    UnknownMessageType { side: &'static str, tag: u8 },
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
}

impl WireError {
    /// A short stable name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidLength { .. } => "invalid_length",
            Self::TooLong { .. } => "too_long",
            Self::UnknownMessageType { .. } => "unknown_message_type",
            Self::UnsupportedProtocol { .. } => "unsupported_protocol",
            Self::Malformed { .. } => "malformed",
        }
    }
}
