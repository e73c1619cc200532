//! Errors: what stops Postern from starting, and what ends one client's connection.

use postern_wire::WireError;
use postern_wire::sqlstate;

/// Postern cannot start with this configuration or environment.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("identity: {0}")]
    Identity(#[from] postern_identity::IdentityError),
    #[error("audit log: {0}")]
    Audit(#[from] postern_audit::AuditError),
    #[error("policy:\n{0}")]
    Policy(String),
    #[error("control store: {0}")]
    Store(#[from] postern_store::StoreError),
    #[error("approvals: {0}")]
    Approvals(String),
    #[error("SCIM ([admin.scim]): {0}")]
    Scim(String),
    #[error("client authentication: {0}")]
    ClientAuth(String),
}

/// Why a client's connection is refused or ended: sent to the client as a FATAL ErrorResponse
/// (when the connection still works) and recorded in the audit log under `reason`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// SQLSTATE sent to the client.
    pub code: &'static str,
    /// A metrics and audit label: why, in one word.
    pub reason: &'static str,
    /// What the client is told: safe to show, worded so the user can act on it.
    pub message: String,
}

impl Refused {
    pub fn new(code: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// A client broke the protocol.
    pub fn protocol(error: &WireError) -> Self {
        match error {
            // As PostgreSQL answers an old or future major version.
            WireError::UnsupportedProtocol { .. } => Self::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                error.label(),
                format!("{error}: Postern supports protocol 3.0"),
            ),
            _ => Self::new(
                sqlstate::PROTOCOL_VIOLATION,
                error.label(),
                format!("protocol violation: {error}"),
            ),
        }
    }
}

/// What went wrong talking to the upstream database.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connection to {address} timed out")]
    Timeout { address: String },
    #[error("{address} does not accept TLS (it answered {:?} to the TLS request)", char::from(*answer))]
    TlsRefused { address: String, answer: u8 },
    #[error("TLS with {address} failed: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS is configured but {0:?} is not a valid server name")]
    ServerName(String),
    #[error("I/O error with the database: {0}")]
    Io(#[from] std::io::Error),
    #[error("the database broke the protocol: {0}")]
    Protocol(#[from] WireError),
    #[error("the database closed the connection")]
    Closed,
    /// Every connection of the session's pool stayed busy for the whole checkout timeout.
    #[error("all {max} connections of the pool are busy")]
    PoolBusy { max: usize },
    /// A pooled connection's reset did not end as it must.
    #[error("the connection could not be reset: {0}")]
    NotReset(&'static str),
    /// The database answered with an ErrorResponse.
    #[error("{message}")]
    Server {
        code: String,
        message: String,
        detail: Option<String>,
    },
    #[error("the database asks for an authentication method Postern does not support ({0})")]
    UnsupportedAuth(String),
    #[error("the database asks for a password but none is configured for {user:?}")]
    NoPassword { user: String },
    #[error("SCRAM authentication failed: {0}")]
    Scram(std::io::Error),
    #[error("{0}")]
    Secret(String),
    /// No usable login role for an identity in `ephemeral_user` mode.
    #[error("ephemeral role: {0}")]
    EphemeralRole(String),
}

impl UpstreamError {
    /// The SQLSTATE of a server error, if this is one.
    #[must_use]
    pub fn server_code(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}
