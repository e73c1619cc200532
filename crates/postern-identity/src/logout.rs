//! OpenID Connect Back-Channel Logout 1.0: the logout token an identity provider sends when a
//! user's session there ends, verified so that Postern can end that user's sessions.
//! <https://openid.net/specs/openid-connect-backchannel-1_0.html#Validation>
//!
//! What is checked, in the order of the specification's section 2.6: the token is a JWT signed
//! by a configured issuer with one of its accepted algorithms (the same key cache and rules as
//! access tokens); `iss` is that issuer; `aud` is one of its configured audiences; `iat` is
//! present and recent; `exp`, when present, has not passed; `jti` is present (the caller checks
//! it was not used before); `events` holds the back-channel logout event as a JSON object; `sub`
//! or `sid` (or both) is present; `nonce` is absent (a logout token must never be mistaken for an
//! ID token, nor one for the other). A `typ` header, when present, must be `logout+jwt` (or the
//! generic `JWT`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::token::UnverifiedToken;
use crate::verifier::Verifier;

/// The member of `events` that makes a JWT a logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old a logout token's `iat` may be: a logout is acted on when it happens, and an old one
/// replayed after its `jti` was forgotten must not end today's sessions.
pub const MAX_LOGOUT_TOKEN_AGE: Duration = Duration::from_secs(5 * 60);

/// A verified logout token: whose sessions end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// The issuer's name under `[issuers]`.
    pub issuer_name: String,
    /// The `iss` claim.
    pub issuer: String,
    /// The user whose sessions end, if the token names one.
    pub subject: Option<String>,
    /// The provider's session id (`sid`), if the token names one: only sessions whose token
    /// carried this `sid` end.
    pub session_id: Option<String>,
    /// The token's `jti`, to refuse a replay.
    pub token_id: String,
    /// Until when the `jti` must be remembered: the token's `exp`, or `iat` plus
    /// [`MAX_LOGOUT_TOKEN_AGE`].
    pub remember_until: SystemTime,
}

impl Verifier {
    /// Verifies a back-channel logout token (see the module documentation). Never uses the
    /// verified-token cache: a logout token is acted on once.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] naming what is wrong, safe to return to the identity provider.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutToken, AuthError> {
        let token = token.trim();
        let unverified = UnverifiedToken::parse(token)?;
        if let Some(typ) = unverified.typ.as_deref()
            && !typ.eq_ignore_ascii_case("logout+jwt")
            && !typ.eq_ignore_ascii_case("jwt")
        {
            return Err(AuthError::InvalidClaim {
                claim: "typ".into(),
                problem: "is not logout+jwt",
            });
        }
        let (issuer, claims) = self
            .verify_signed(token, &unverified, |validation| {
                // `exp` is optional in a logout token; checked below when present.
                validation.validate_exp = false;
                validation.set_required_spec_claims(&["iss", "aud"]);
            })
            .await?;
        logout_claims(&issuer.0, &issuer.1, &claims, SystemTime::now(), issuer.2)
    }
}

/// The claims checks of a logout token whose signature, `iss` and `aud` are verified.
pub(crate) fn logout_claims(
    issuer_name: &str,
    issuer: &str,
    claims: &Map<String, Value>,
    now: SystemTime,
    clock_skew: Duration,
) -> Result<LogoutToken, AuthError> {
    let seconds = |claim: &str| -> Result<Option<SystemTime>, AuthError> {
        match claims.get(claim) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .map(|s| Some(UNIX_EPOCH + Duration::from_secs(s)))
                .ok_or_else(|| AuthError::InvalidClaim {
                    claim: claim.into(),
                    problem: "is not a number of seconds",
                }),
        }
    };
    let text = |claim: &str| -> Result<Option<String>, AuthError> {
        match claims.get(claim) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(AuthError::InvalidClaim {
                claim: claim.into(),
                problem: "is not a non-empty string",
            }),
        }
    };
    let issued_at = seconds("iat")?.ok_or_else(|| AuthError::MissingClaim("iat".into()))?;
    if issued_at > now + clock_skew {
        return Err(AuthError::InvalidClaim {
            claim: "iat".into(),
            problem: "is in the future",
        });
    }
    if now
        .duration_since(issued_at)
        .is_ok_and(|age| age > MAX_LOGOUT_TOKEN_AGE + clock_skew)
    {
        return Err(AuthError::InvalidClaim {
            claim: "iat".into(),
            problem: "is too old for a logout token",
        });
    }
    let expires_at = seconds("exp")?;
    if let Some(at) = expires_at
        && at + clock_skew <= now
    {
        return Err(AuthError::Expired { at });
    }
    let token_id = text("jti")?.ok_or_else(|| AuthError::MissingClaim("jti".into()))?;
    match claims.get("events") {
        Some(Value::Object(events))
            if matches!(events.get(BACKCHANNEL_LOGOUT_EVENT), Some(Value::Object(_))) => {}
        Some(_) => {
            return Err(AuthError::InvalidClaim {
                claim: "events".into(),
                problem: "does not hold the back-channel logout event",
            });
        }
        None => return Err(AuthError::MissingClaim("events".into())),
    }
    if claims.contains_key("nonce") {
        return Err(AuthError::InvalidClaim {
            claim: "nonce".into(),
            problem: "must not be in a logout token",
        });
    }
    let subject = text("sub")?;
    let session_id = text("sid")?;
    if subject.is_none() && session_id.is_none() {
        return Err(AuthError::MissingClaim("sub or sid".into()));
    }
    Ok(LogoutToken {
        issuer_name: issuer_name.to_owned(),
        issuer: issuer.to_owned(),
        subject,
        session_id,
        token_id,
        remember_until: expires_at.unwrap_or(issued_at + MAX_LOGOUT_TOKEN_AGE) + clock_skew,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::{Map, Value, json};

    use super::{BACKCHANNEL_LOGOUT_EVENT, logout_claims};

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn a_logout_token_needs_its_claims() {
        let now = SystemTime::now();
        let skew = Duration::from_secs(30);
        let good = json!({
            "iat": now_secs(), "jti": "j1", "sub": "alice",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} }
        });
        let token = logout_claims("idp", "https://idp", &claims(good.clone()), now, skew)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(token.subject.as_deref(), Some("alice"));
        assert_eq!(token.session_id, None);
        for (change, expected) in [
            (json!({"iat": null}), "iat"),
            (json!({"iat": now_secs() - 3600}), "too old"),
            (json!({"iat": now_secs() + 3600}), "future"),
            (json!({"jti": null}), "jti"),
            (
                json!({"events": {"other": {}}}),
                "back-channel logout event",
            ),
            (json!({"events": null}), "events"),
            (json!({"nonce": "n"}), "nonce"),
            (json!({"sub": null}), "sub or sid"),
            (json!({"exp": now_secs() - 3600}), "expired"),
        ] {
            let mut changed = claims(good.clone());
            for (key, value) in claims(change) {
                if value.is_null() {
                    changed.remove(&key);
                } else {
                    changed.insert(key, value);
                }
            }
            let error = logout_claims("idp", "https://idp", &changed, now, skew)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let sid_only = json!({"iat": now_secs(), "jti": "j2", "sid": "s-1",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} }});
        let token = logout_claims("idp", "https://idp", &claims(sid_only), now, skew)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(token.session_id.as_deref(), Some("s-1"));
    }
}
