//! What a cached token says about itself, read without checking its signature: the CLI only
//! uses it for its own bookkeeping (when the token expires, who it names, whether a second factor
//! was used). Postern verifies every token it is given; nothing here decides access.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Largest token looked into (Postern refuses larger passwords anyway).
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The claims of a JWT, or `None` when `token` is not one (an opaque access token).
pub fn unverified(token: &str) -> Option<Map<String, Value>> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// Whether `amr` (RFC 8176) shows a second factor, by the methods Postern itself counts as one
/// (`context.mfa` in policy). `None` when the claims do not say.
pub fn used_mfa(claims: &Map<String, Value>) -> Option<bool> {
    let is_mfa = |method: &Value| {
        method
            .as_str()
            .is_some_and(|m| postern_identity::MFA_METHODS.contains(&m))
    };
    match claims.get("amr")? {
        Value::Array(methods) => Some(methods.iter().any(is_mfa)),
        method @ Value::String(_) => Some(is_mfa(method)),
        _ => None,
    }
}

/// The `exp` claim as a time.
pub fn expires_at(claims: &Map<String, Value>) -> Option<SystemTime> {
    let exp = claims.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// The `sub` claim.
pub fn subject(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("sub")?.as_str()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use serde_json::json;

    use super::*;

    fn jwt(claims: &Value) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn reads_the_payload_of_a_jwt_only() {
        let claims = unverified(&jwt(
            &json!({"sub": "alice", "exp": 100, "amr": ["pwd", "otp"]}),
        ))
        .unwrap();
        assert_eq!(subject(&claims), Some("alice"));
        assert_eq!(
            expires_at(&claims),
            Some(UNIX_EPOCH + Duration::from_secs(100))
        );
        assert_eq!(used_mfa(&claims), Some(true));
        assert_eq!(
            used_mfa(&unverified(&jwt(&json!({"amr": ["pwd"]}))).unwrap()),
            Some(false)
        );
        assert_eq!(
            used_mfa(&unverified(&jwt(&json!({"amr": "hwk"}))).unwrap()),
            Some(true)
        );
        assert_eq!(used_mfa(&unverified(&jwt(&json!({}))).unwrap()), None);
        for opaque in [
            "",
            "opaque-access-token",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &jwt(&json!([1, 2])),
            &format!("a.{}.c", "A".repeat(MAX_TOKEN_BYTES)),
        ] {
            assert!(unverified(opaque).is_none(), "{opaque:.40}");
        }
    }
}
