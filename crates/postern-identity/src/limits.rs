//! Every bound this crate puts on input from clients and identity providers, in one place.

use std::time::Duration;

/// Largest token accepted, in bytes. Real OIDC tokens are 1–4 KiB; a token carrying hundreds of
/// groups may reach 10 KiB. PostgreSQL bounds the password message that carries the token at
/// 65535 bytes (`PG_MAX_AUTH_TOKEN_LENGTH`,
/// <https://github.com/postgres/postgres/blob/master/src/include/libpq/auth.h>); this is tighter
/// so that base64 decoding and JSON parsing of hostile input stay cheap.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Largest discovery or JWKS document read from an identity provider. Bodies are read
/// incrementally and refused once past this (Neon's proxy: `MAX_JWK_BODY_SIZE`, 64 KiB; large
/// providers publish a few dozen keys, ~20 KiB).
pub const MAX_JWKS_BODY_BYTES: usize = 256 * 1024;

/// Most keys taken from one JWKS; the rest are ignored (with a warning). Bounds the work of a
/// token without `kid`, which is tried against every fitting key.
pub const MAX_JWKS_KEYS: usize = 64;

/// Time allowed to open a connection to an identity provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for one whole request to an identity provider, body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects followed when fetching discovery or JWKS documents.
pub const MAX_REDIRECTS: usize = 3;

/// Shortest HMAC secret accepted, in bytes: RFC 7518 §3.2 requires a key at least as long as the
/// hash output (<https://www.rfc-editor.org/rfc/rfc7518#section-3.2>).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Largest NumericDate accepted (`exp`, `nbf`, `iat`): the last second of year 9999, beyond
/// which RFC 3339 cannot write the time back in an error message.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Characters of client-supplied text (issuer, key id, audience) repeated in an error message.
pub const MAX_ECHOED_CHARS: usize = 128;

/// Largest `clock_skew` an issuer may be configured with. Skew widens every token's lifetime;
/// beyond this it is a misconfiguration, not a clock problem.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);

/// Longest time a token's verification is reused for a reconnect with the same token (never
/// past the token's expiry): a key the issuer withdraws from its JWKS stops being honoured
/// within this time.
pub const MAX_VERIFICATION_REUSE: Duration = Duration::from_secs(300);

/// Most verified tokens remembered. Past it, expired entries are dropped, and if none had
/// expired the memory starts afresh: a flood of distinct valid tokens costs signature checks,
/// never memory.
pub const MAX_VERIFIED_TOKENS: usize = 10_000;

/// Longest SPIFFE ID accepted in a JWT-SVID's `sub`: "URIs with a total length of more than 2048
/// bytes … SHOULD NOT be used" (SPIFFE ID §2).
/// <https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md#23-maximum-spiffe-id-length>
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;
