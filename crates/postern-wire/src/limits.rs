//! Bounds on what a peer may send. Every decoder in this crate enforces them.

/// Largest StartupMessage PostgreSQL accepts (`MAX_STARTUP_PACKET_LENGTH` in
/// `src/include/libpq/pqcomm.h`).
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;

/// Largest ordinary frontend message: PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT` (1 GB − 1,
/// `src/include/libpq/libpq.h`) would let a single client pin a gigabyte of Postern's memory, so
/// Postern keeps a lower bound that still fits any realistic statement or COPY chunk.
pub const MAX_FRONTEND_MESSAGE_LENGTH: usize = 64 * 1024 * 1024;

/// Largest message in the authentication exchange (PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`,
/// 65535, in `src/backend/libpq/auth.c`). Tokens are much smaller; this bounds the password
/// message before Postern has any idea who is talking.
pub const MAX_AUTH_MESSAGE_LENGTH: usize = 65_535;

/// Largest backend message Postern buffers. The upstream is trusted, but a bound still keeps a
/// runaway row from exhausting memory (PostgreSQL's own limit on a field is 1 GB).
pub const MAX_BACKEND_MESSAGE_LENGTH: usize = 1024 * 1024 * 1024;

/// Most parameters in a StartupMessage; real clients send fewer than twenty.
pub const MAX_STARTUP_PARAMETERS: usize = 64;
