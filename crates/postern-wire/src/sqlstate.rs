//! SQLSTATE codes Postern sends. See
//! <https://www.postgresql.org/docs/current/errcodes-appendix.html>.

pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const CONNECTION_FAILURE: &str = "08006";
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
pub const INVALID_PASSWORD: &str = "28P01";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const DUPLICATE_CURSOR: &str = "42P03";
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
pub const INVALID_CATALOG_NAME: &str = "3D000";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const QUERY_CANCELED: &str = "57014";
pub const INTERNAL_ERROR: &str = "XX000";
pub const IO_ERROR: &str = "58030";
pub const SYSTEM_ERROR: &str = "58000";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
