//! Why a token was refused ([`AuthError`], shown to the client) and why a [`crate::Verifier`]
//! could not be built ([`IdentityError`], shown to the operator).
//!
//! An `AuthError`'s `Display` is the message the client sees: it says what to fix, never repeats
//! the token, and echoes client-supplied values (issuer, key id, audience) only shortened and
//! with control characters escaped. Internal detail (URLs, I/O errors) goes to the log instead.

use std::borrow::Cow;
use std::time::SystemTime;

use crate::limits::MAX_ECHOED_CHARS;

/// `invalid_password`: the credential itself is bad (forged, expired, malformed).
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
const SQLSTATE_INVALID_PASSWORD: &str = "28P01";
/// `invalid_authorization_specification`: the credential is not one Postern may accept here
/// (untrusted issuer, another audience) or cannot be checked (keys unavailable).
const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Longer than [`crate::limits::MAX_TOKEN_BYTES`].
    #[error("token is too large: {len} bytes, at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    /// Not a compact JWS with JSON header and payload.
    #[error("token is malformed: {0}")]
    Malformed(Cow<'static, str>),
    /// A required claim is absent.
    #[error("token has no '{0}' claim")]
    MissingClaim(String),
    /// A claim is present but unusable.
    #[error("token claim '{claim}' {problem}")]
    InvalidClaim {
        claim: String,
        problem: &'static str,
    },
    /// No configured issuer has this `iss`.
    #[error("issuer '{}' is not trusted", echo(.0))]
    UntrustedIssuer(String),
    /// `alg` is not in the issuer's list (or is `none`, or HMAC without a shared secret).
    #[error("algorithm {} is not accepted for issuer '{}'", echo(.alg), echo(.issuer))]
    AlgorithmNotAccepted { alg: String, issuer: String },
    /// The issuer's JWKS has no key with this `kid`, even after a refresh.
    #[error("{}", unknown_key(.kid.as_deref(), .issuer, .alg))]
    UnknownKey {
        kid: Option<String>,
        issuer: String,
        alg: String,
    },
    /// The key named by `kid` is not for the token's algorithm.
    #[error(
        "signing key '{}' of issuer '{}' cannot verify {} signatures",
        echo(.kid), echo(.issuer), echo(.alg)
    )]
    KeyMismatch {
        kid: String,
        issuer: String,
        alg: String,
    },
    /// The issuer's keys could not be fetched and none are cached.
    #[error("cannot fetch keys of issuer '{}': {reason}", echo(.issuer))]
    KeysUnavailable { issuer: String, reason: String },
    /// The signature does not verify with the issuer's key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` (plus the allowed clock skew) has passed.
    #[error("token expired at {}", rfc3339(*.at))]
    Expired { at: SystemTime },
    /// `nbf` (minus the allowed clock skew) has not come yet.
    #[error("token is not valid before {}", rfc3339(*.at))]
    NotYetValid { at: SystemTime },
    /// No `aud` value is one Postern accepts.
    #[error("{}", wrong_audience(.found, .accepted))]
    WrongAudience {
        found: Vec<String>,
        accepted: Vec<String>,
    },
    /// The token does not fit its issuer's preset: a SPIFFE ID of another trust domain, a
    /// user's token where a client's is expected. The message names the claims at fault, their
    /// values already passed through `echo`.
    #[error("{0}")]
    WorkloadMismatch(String),
    /// A verified client certificate that names no acceptable identity (not exactly one SPIFFE
    /// ID, another trust domain) or is outside its validity. The message starts with "client
    /// certificate" and names what it holds, already passed through `echo`.
    #[error("{0}")]
    Certificate(String),
}

impl AuthError {
    /// The SQLSTATE to send in the ErrorResponse: `28P01` when the credential is bad, `28000`
    /// when it is not acceptable here or cannot be checked.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::UntrustedIssuer(_)
            | Self::WrongAudience { .. }
            | Self::KeysUnavailable { .. }
            | Self::WorkloadMismatch(_)
            | Self::Certificate(_) => SQLSTATE_INVALID_AUTHORIZATION,
            Self::TooLarge { .. }
            | Self::Malformed(_)
            | Self::MissingClaim(_)
            | Self::InvalidClaim { .. }
            | Self::AlgorithmNotAccepted { .. }
            | Self::UnknownKey { .. }
            | Self::KeyMismatch { .. }
            | Self::BadSignature
            | Self::Expired { .. }
            | Self::NotYetValid { .. } => SQLSTATE_INVALID_PASSWORD,
        }
    }

    /// A short, stable name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) => "malformed",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim { .. } => "invalid_claim",
            Self::UntrustedIssuer(_) => "untrusted_issuer",
            Self::AlgorithmNotAccepted { .. } => "algorithm_not_accepted",
            Self::UnknownKey { .. } => "unknown_key",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::KeysUnavailable { .. } => "keys_unavailable",
            Self::BadSignature => "bad_signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::WrongAudience { .. } => "wrong_audience",
            Self::WorkloadMismatch(_) => "workload_mismatch",
            Self::Certificate(_) => "client_certificate",
        }
    }

    pub(crate) fn malformed(why: impl Into<Cow<'static, str>>) -> Self {
        Self::Malformed(why.into())
    }
}

/// Why a [`crate::Verifier`] could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// An issuer's configuration cannot work.
    #[error("issuers.{name}: {problem}")]
    InvalidIssuer { name: String, problem: String },
    /// Two configured issuers have the same `issuer` URL, so a token could not be attributed.
    #[error("issuers.{first} and issuers.{second} both have issuer '{issuer}'")]
    DuplicateIssuer {
        first: String,
        second: String,
        issuer: String,
    },
    /// Keys from a local file (JWKS or shared secret) could not be loaded.
    #[error("issuers.{name}: cannot load keys: {problem}")]
    Keys { name: String, problem: String },
    /// The HTTP client for fetching keys could not be built.
    #[error("cannot build the HTTP client for fetching keys: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The TLS configuration for fetching keys could not be built.
    #[error("cannot configure TLS for fetching keys: {0}")]
    Tls(#[source] rustls::Error),
}

/// `s` shortened to [`MAX_ECHOED_CHARS`] with control characters escaped, safe to repeat in a
/// message shown to a client or written to a log line.
pub(crate) fn echo(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_ECHOED_CHARS + 3));
    for (i, c) in s.chars().enumerate() {
        if i == MAX_ECHOED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn rfc3339(at: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(at)
}

fn quoted_list(values: &[String]) -> String {
    values
        .iter()
        .map(|value| format!("'{}'", echo(value)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_key(kid: Option<&str>, issuer: &str, alg: &str) -> String {
    match kid {
        Some(kid) => format!(
            "signing key '{}' is not published by issuer '{}'",
            echo(kid),
            echo(issuer)
        ),
        None => format!(
            "token names no signing key ('kid') and issuer '{}' publishes no {} key",
            echo(issuer),
            echo(alg)
        ),
    }
}

fn wrong_audience(found: &[String], accepted: &[String]) -> String {
    let subject = match found {
        [one] => format!("audience '{}' is", echo(one)),
        _ => format!("audiences {} are", quoted_list(found)),
    };
    match accepted {
        [one] => format!("{subject} not '{}'", echo(one)),
        _ => format!("{subject} not one of {}", quoted_list(accepted)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn messages() {
        let owned = |v: &[&str]| v.iter().map(|&s| s.to_owned()).collect::<Vec<_>>();
        let cases: Vec<(AuthError, &str, &str, &str)> = vec![
            (
                AuthError::Expired {
                    at: at(1_795_341_600),
                },
                "token expired at 2026-11-22T10:00:00Z",
                "28P01",
                "expired",
            ),
            (
                AuthError::NotYetValid {
                    at: at(1_795_341_600),
                },
                "token is not valid before 2026-11-22T10:00:00Z",
                "28P01",
                "not_yet_valid",
            ),
            (
                AuthError::WrongAudience {
                    found: owned(&["x"]),
                    accepted: owned(&["postern"]),
                },
                "audience 'x' is not 'postern'",
                "28000",
                "wrong_audience",
            ),
            (
                AuthError::WrongAudience {
                    found: owned(&["x"]),
                    accepted: owned(&["a", "b"]),
                },
                "audience 'x' is not one of 'a', 'b'",
                "28000",
                "wrong_audience",
            ),
            (
                AuthError::WrongAudience {
                    found: owned(&["x", "y"]),
                    accepted: owned(&["a"]),
                },
                "audiences 'x', 'y' are not 'a'",
                "28000",
                "wrong_audience",
            ),
            (
                AuthError::UntrustedIssuer("https://evil".into()),
                "issuer 'https://evil' is not trusted",
                "28000",
                "untrusted_issuer",
            ),
            (
                AuthError::BadSignature,
                "token signature is invalid",
                "28P01",
                "bad_signature",
            ),
            (
                AuthError::MissingClaim("sub".into()),
                "token has no 'sub' claim",
                "28P01",
                "missing_claim",
            ),
            (
                AuthError::UnknownKey {
                    kid: Some("abc".into()),
                    issuer: "https://idp".into(),
                    alg: "RS256".into(),
                },
                "signing key 'abc' is not published by issuer 'https://idp'",
                "28P01",
                "unknown_key",
            ),
            (
                AuthError::AlgorithmNotAccepted {
                    alg: "HS256".into(),
                    issuer: "https://idp".into(),
                },
                "algorithm HS256 is not accepted for issuer 'https://idp'",
                "28P01",
                "algorithm_not_accepted",
            ),
            (
                AuthError::KeysUnavailable {
                    issuer: "https://idp".into(),
                    reason: "connection refused".into(),
                },
                "cannot fetch keys of issuer 'https://idp': connection refused",
                "28000",
                "keys_unavailable",
            ),
        ];
        for (error, message, sqlstate, label) in cases {
            assert_eq!(error.to_string(), message);
            assert_eq!(error.sqlstate(), sqlstate, "{message}");
            assert_eq!(error.label(), label, "{message}");
        }
    }

    #[test]
    fn echoed_values_are_shortened_and_escaped() {
        assert_eq!(echo("a\nb\u{1b}"), "a\\nb\\u{1b}");
        let long = "x".repeat(1000);
        let shown = echo(&long);
        assert_eq!(shown.chars().count(), MAX_ECHOED_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
