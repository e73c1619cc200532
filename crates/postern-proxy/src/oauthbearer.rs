//! The SASL `OAUTHBEARER` mechanism (RFC 7628) as PostgreSQL 18 speaks it: reading a client's
//! response and writing the error result that sends a client without a valid token to its
//! identity provider.
//!
//! The exchange, as `src/backend/libpq/auth-oauth.c` runs it and libpq 18
//! (`src/interfaces/libpq/fe-auth-oauth.c`) expects it:
//!
//! ```text
//! server: AuthenticationSASL [OAUTHBEARER]
//! client: SASLInitialResponse OAUTHBEARER  "n,," 0x01 "auth=Bearer <token>" 0x01 0x01
//! server: AuthenticationOk                 (no AuthenticationSASLFinal: OAUTHBEARER has no
//!                                           additional data on success)
//! or, for an empty auth value (libpq's discovery request) or a token that fails:
//! server: AuthenticationSASLContinue {"status":"invalid_token","scope":…,"openid-configuration":…}
//! client: SASLResponse 0x01                (RFC 7628 section 3.2.3: the only valid answer)
//! server: ErrorResponse FATAL 28000
//! ```
//!
//! After a discovery round libpq runs the device flow against the advertised issuer and opens a
//! new connection carrying the token. This module does no I/O and verifies nothing: the
//! handshake reads and writes the messages (`postern-wire` frames them) and the identity crate
//! verifies the token.

use serde_json::json;

/// The mechanism's name, as registered with IANA and listed in AuthenticationSASL.
pub const MECHANISM: &str = "OAUTHBEARER";

/// RFC 7628 section 3.1: `kvsep = %x01`; alone, it is the client's answer to an error result.
pub const KVSEP: u8 = 0x01;

/// The `auth` key/value pair's key (RFC 7628 section 3.1).
const AUTH_KEY: &[u8] = b"auth";

/// The authentication scheme of the `auth` value, compared without regard to case as HTTP
/// schemes are (RFC 7628 section 4, RFC 9110 section 11.1).
const BEARER_SCHEME: &str = "bearer ";

/// What a client's initial response asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientResponse<'a> {
    /// An empty `auth` value: the client asks where to get a token and expects to fail
    /// (libpq 18 sends this when it has neither a token nor a discovery URI).
    Discovery,
    /// A bearer token in the syntax of RFC 6750 section 2.1 (`b64token`), still to be verified.
    Bearer(&'a str),
    /// An `auth` value that is not a usable Bearer credential (another scheme, an empty token,
    /// characters outside `b64token`). PostgreSQL treats this as a failed token, not a protocol
    /// error, and so does Postern; which part was wrong is not echoed, since it holds a secret.
    NotBearer,
}

/// A client response that breaks RFC 7628's grammar, or asks for what Postern does not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedResponse {
    /// GS2 flag `p=…`: OAUTHBEARER defines no channel binding (there is no OAUTHBEARER-PLUS).
    #[error(
        "malformed OAUTHBEARER message: the client asks for channel binding, which OAUTHBEARER \
         does not define (use the GS2 header \"n,,\")"
    )]
    ChannelBinding,
    /// GS2 `a=…`: the startup packet's `user` already names the role; PostgreSQL refuses an
    /// authorization identity too.
    #[error(
        "the client sent an authorization identity (GS2 \"a=\"), which Postern does not support: \
         the startup user names the database role"
    )]
    AuthorizationIdentity,
    #[error("malformed OAUTHBEARER message: {0}")]
    Grammar(&'static str),
}

impl MalformedResponse {
    /// SQLSTATE sent to the client, as PostgreSQL sends it for the same fault.
    pub fn sqlstate(self) -> &'static str {
        match self {
            Self::AuthorizationIdentity => postern_wire::sqlstate::FEATURE_NOT_SUPPORTED,
            Self::ChannelBinding | Self::Grammar(_) => postern_wire::sqlstate::PROTOCOL_VIOLATION,
        }
    }

    /// A metrics and audit label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ChannelBinding => "oauthbearer_channel_binding",
            Self::AuthorizationIdentity => "oauthbearer_authzid",
            Self::Grammar(_) => "oauthbearer_malformed",
        }
    }
}

/// Parses a client's initial response (RFC 7628 section 3.1):
///
/// ```text
/// client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
/// gs2-header  = gs2-cb-flag "," [ gs2-authzid ] ","       (RFC 5801)
/// kvpair      = key "=" value kvsep
/// key         = 1*(ALPHA)
/// value       = *(VCHAR / SP / HTAB / CR / LF)
/// ```
///
/// The GS2 flag may be `n` (no channel binding) or `y` (the client could bind but thinks the
/// server cannot: accepted, as PostgreSQL does, for a future specification that defines
/// binding). Keys other than `auth` (`host`, `port`, extensions) are ignored, as section 3.1
/// requires.
///
/// # Errors
/// Anything outside that grammar, `p=` and `a=`.
pub fn parse_initial_response(input: &[u8]) -> Result<ClientResponse<'_>, MalformedResponse> {
    use MalformedResponse::Grammar;
    if input.is_empty() {
        return Err(Grammar("the message is empty"));
    }
    if input.contains(&0) {
        return Err(Grammar("the message contains a NUL byte"));
    }
    let rest = match input.split_first() {
        Some((b'p', _)) => return Err(MalformedResponse::ChannelBinding),
        Some((b'n' | b'y', rest)) => rest
            .strip_prefix(b",")
            .ok_or(Grammar("a comma must follow the channel-binding flag"))?,
        _ => return Err(Grammar("unexpected channel-binding flag")),
    };
    if rest.starts_with(b"a") {
        return Err(MalformedResponse::AuthorizationIdentity);
    }
    let rest = rest
        .strip_prefix(b",")
        .ok_or(Grammar("unexpected attribute in the GS2 header"))?;
    let mut rest = rest
        .strip_prefix(&[KVSEP])
        .ok_or(Grammar("a key/value separator must follow the GS2 header"))?;
    let mut auth = None;
    loop {
        let mut split = rest.splitn(2, |&b| b == KVSEP);
        let pair = split.next().unwrap_or_default();
        let Some(after) = split.next() else {
            return Err(Grammar(
                "unterminated key/value pair, or no final terminator",
            ));
        };
        if pair.is_empty() {
            if !after.is_empty() {
                return Err(Grammar("data after the final terminator"));
            }
            break;
        }
        let mut halves = pair.splitn(2, |&b| b == b'=');
        let key = halves.next().unwrap_or_default();
        let Some(value) = halves.next() else {
            return Err(Grammar("a key without a value"));
        };
        if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
            return Err(Grammar("a key that is not letters only"));
        }
        if !value
            .iter()
            .all(|&b| matches!(b, 0x21..=0x7E | b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err(Grammar(
                "a value with a character outside VCHAR, SP, HTAB, CR, LF",
            ));
        }
        if key == AUTH_KEY {
            if auth.is_some() {
                return Err(Grammar("more than one auth value"));
            }
            auth = Some(value);
        }
        rest = after;
    }
    let auth = auth.ok_or(Grammar("no auth value"))?;
    if auth.is_empty() {
        return Ok(ClientResponse::Discovery);
    }
    // Printable ASCII, checked above.
    let auth = std::str::from_utf8(auth).map_err(|_| Grammar("a value that is not ASCII"))?;
    Ok(bearer_token(auth).map_or(ClientResponse::NotBearer, ClientResponse::Bearer))
}

/// The token of `Bearer <b64token>` (RFC 6750 section 2.1: `credentials = "Bearer" 1*SP
/// b64token`, `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`).
fn bearer_token(auth: &str) -> Option<&str> {
    let scheme = auth.get(..BEARER_SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(BEARER_SCHEME) {
        return None;
    }
    let token = auth.get(BEARER_SCHEME.len()..)?.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/');
    (!body.is_empty() && body.chars().all(b64)).then_some(token)
}

/// Whether a SASLResponse after an error result is the one answer RFC 7628 section 3.2.3
/// allows: a single kvsep.
pub fn is_error_acknowledgement(data: &[u8]) -> bool {
    data == [KVSEP]
}

/// The error result for a client without a valid token (RFC 7628 section 3.2.2), sent in
/// AuthenticationSASLContinue: `invalid_token`, the scope to ask for, and the issuer's OpenID
/// discovery document, which libpq requires to belong to the issuer it was given as
/// `oauth_issuer` (compared byte for byte).
pub fn error_result(issuer: &str, scope: &str) -> Vec<u8> {
    json!({
        "status": "invalid_token",
        "scope": scope,
        "openid-configuration": discovery_uri(issuer),
    })
    .to_string()
    .into_bytes()
}

/// The issuer's discovery document: `<issuer>/.well-known/openid-configuration` (OpenID Connect
/// Discovery 1.0 section 4), unless the configured value already is a well-known URI, as
/// PostgreSQL's `generate_error_response` builds it.
pub fn discovery_uri(issuer: &str) -> String {
    if issuer.contains("/.well-known/") {
        issuer.to_owned()
    } else {
        format!("{issuer}/.well-known/openid-configuration")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn initial_responses() {
        use ClientResponse::{Bearer, Discovery, NotBearer};
        use MalformedResponse::{AuthorizationIdentity, ChannelBinding, Grammar};
        let cases: &[(&[u8], Result<ClientResponse<'_>, MalformedResponse>)] = &[
            // What libpq 18 sends.
            (
                b"n,,\x01auth=Bearer eyJ.a-b_c.d~+/==\x01\x01",
                Ok(Bearer("eyJ.a-b_c.d~+/==")),
            ),
            (b"n,,\x01auth=\x01\x01", Ok(Discovery)),
            // Scheme without regard to case, several spaces, other keys ignored, flag y.
            (
                b"y,,\x01host=db\x01auth=bEaReR   tok\x01port=5432\x01\x01",
                Ok(Bearer("tok")),
            ),
            // Not a usable Bearer credential: a failed token, not a protocol error.
            (b"n,,\x01auth=Basic dXNlcg==\x01\x01", Ok(NotBearer)),
            (b"n,,\x01auth=Bearer \x01\x01", Ok(NotBearer)),
            (b"n,,\x01auth=Bearer a b\x01\x01", Ok(NotBearer)),
            (b"n,,\x01auth=Bearer a=b\x01\x01", Ok(NotBearer)),
            (b"n,,\x01auth=Bearer\x01\x01", Ok(NotBearer)),
            // GS2 header.
            (
                b"p=tls-server-end-point,,\x01auth=Bearer t\x01\x01",
                Err(ChannelBinding),
            ),
            (
                b"n,a=alice,\x01auth=Bearer t\x01\x01",
                Err(AuthorizationIdentity),
            ),
            (
                b"x,,\x01auth=Bearer t\x01\x01",
                Err(Grammar("unexpected channel-binding flag")),
            ),
            (
                b"n\x01auth=\x01\x01",
                Err(Grammar("a comma must follow the channel-binding flag")),
            ),
            (
                b"n,b,\x01auth=\x01\x01",
                Err(Grammar("unexpected attribute in the GS2 header")),
            ),
            (
                b"n,,auth=\x01\x01",
                Err(Grammar("a key/value separator must follow the GS2 header")),
            ),
            // Key/value pairs.
            (b"", Err(Grammar("the message is empty"))),
            (b"\x01", Err(Grammar("unexpected channel-binding flag"))),
            (
                b"n,,\x01auth=Bearer t\x01",
                Err(Grammar(
                    "unterminated key/value pair, or no final terminator",
                )),
            ),
            (
                b"n,,\x01auth=Bearer t",
                Err(Grammar(
                    "unterminated key/value pair, or no final terminator",
                )),
            ),
            (
                b"n,,\x01auth=Bearer t\x01\x01x",
                Err(Grammar("data after the final terminator")),
            ),
            (b"n,,\x01\x01", Err(Grammar("no auth value"))),
            (
                b"n,,\x01auth\x01\x01",
                Err(Grammar("a key without a value")),
            ),
            (
                b"n,,\x01=x\x01auth=\x01\x01",
                Err(Grammar("a key that is not letters only")),
            ),
            (
                b"n,,\x01au th=x\x01\x01",
                Err(Grammar("a key that is not letters only")),
            ),
            (
                b"n,,\x01auth=Bearer t\x7f\x01\x01",
                Err(Grammar(
                    "a value with a character outside VCHAR, SP, HTAB, CR, LF",
                )),
            ),
            (
                b"n,,\x01auth=Bearer \xc3\xa9\x01\x01",
                Err(Grammar(
                    "a value with a character outside VCHAR, SP, HTAB, CR, LF",
                )),
            ),
            (
                b"n,,\x01auth=\x01auth=Bearer t\x01\x01",
                Err(Grammar("more than one auth value")),
            ),
            (
                b"n,,\x01auth=Bearer t\0\x01\x01",
                Err(Grammar("the message contains a NUL byte")),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &parse_initial_response(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn errors_keep_the_token_out_and_say_which_sqlstate() {
        assert_eq!(MalformedResponse::ChannelBinding.sqlstate(), "08P01");
        assert_eq!(MalformedResponse::AuthorizationIdentity.sqlstate(), "0A000");
        let message = MalformedResponse::Grammar("no auth value").to_string();
        assert_eq!(message, "malformed OAUTHBEARER message: no auth value");
    }

    #[test]
    fn error_result_is_what_libpq_reads() {
        let result = error_result("https://login.example.com/realms/corp", "openid postgres");
        let value: serde_json::Value = serde_json::from_slice(&result).unwrap();
        assert_eq!(
            value,
            json!({
                "status": "invalid_token",
                "scope": "openid postgres",
                "openid-configuration":
                    "https://login.example.com/realms/corp/.well-known/openid-configuration",
            })
        );
        assert_eq!(
            discovery_uri("https://idp.example/.well-known/oauth-authorization-server"),
            "https://idp.example/.well-known/oauth-authorization-server"
        );
        assert!(is_error_acknowledgement(b"\x01"));
        assert!(!is_error_acknowledgement(b"\x01\x01"));
        assert!(!is_error_acknowledgement(b""));
    }
}
