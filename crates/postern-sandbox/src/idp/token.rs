//! What a development token says: [`TokenRequest`] and the claims built from it. Signing lives
//! in [`super::keys`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::{DevAlgorithm, IdpError};

/// Lifetime of a token when the request does not say otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// Everything a development token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The `iss` claim; normally [`super::DevIdentityProvider::issuer`].
    pub issuer: String,
    /// The `sub` claim.
    pub subject: String,
    /// The `aud` claim (one audience).
    pub audience: String,
    /// The `groups` claim; left out when empty.
    pub groups: Vec<String>,
    /// `exp` is `iat` plus this.
    pub ttl: Duration,
    /// The `nbf` claim, when set.
    pub not_before: Option<SystemTime>,
    /// The `iat` claim; now when not set.
    pub issued_at: Option<SystemTime>,
    /// Further claims, applied last so they override the ones above. A `null` value removes the
    /// claim instead (e.g. `"exp": null` for a token that never expires).
    pub extra_claims: Map<String, Value>,
    /// Which key signs.
    pub algorithm: DevAlgorithm,
    /// The header `kid`. When it names one of the provider's keys (e.g. one added by `rotate`),
    /// that key signs; otherwise the key for `algorithm` signs and the header still says this.
    pub kid: Option<String>,
}

impl TokenRequest {
    /// A request for an RS256 token valid for [`DEFAULT_TTL`] from now, without groups.
    pub fn new(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            subject: subject.into(),
            audience: audience.into(),
            groups: Vec::new(),
            ttl: DEFAULT_TTL,
            not_before: None,
            issued_at: None,
            extra_claims: Map::new(),
            algorithm: DevAlgorithm::default(),
            kid: None,
        }
    }
}

/// The claims of the token `request` describes.
pub(super) fn claims(request: &TokenRequest) -> Result<Map<String, Value>, IdpError> {
    let issued_at = unix_seconds(
        request.issued_at.unwrap_or_else(SystemTime::now),
        "issued_at is before 1970",
    )?;
    let expires_at = issued_at
        .checked_add(request.ttl.as_secs())
        .ok_or(IdpError::Request("ttl is too long"))?;
    let mut jti = [0_u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| IdpError::Signing)?;

    let mut claims = Map::new();
    claims.insert("iss".into(), request.issuer.clone().into());
    claims.insert("sub".into(), request.subject.clone().into());
    claims.insert("aud".into(), request.audience.clone().into());
    claims.insert("iat".into(), issued_at.into());
    claims.insert("exp".into(), expires_at.into());
    claims.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
    if let Some(not_before) = request.not_before {
        claims.insert(
            "nbf".into(),
            unix_seconds(not_before, "not_before is before 1970")?.into(),
        );
    }
    if !request.groups.is_empty() {
        claims.insert("groups".into(), request.groups.clone().into());
    }
    for (name, value) in &request.extra_claims {
        if value.is_null() {
            claims.remove(name);
        } else {
            claims.insert(name.clone(), value.clone());
        }
    }
    Ok(claims)
}

fn unix_seconds(time: SystemTime, what: &'static str) -> Result<u64, IdpError> {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .map_err(|_| IdpError::Request(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_follow_the_request() {
        let mut request = TokenRequest::new("http://127.0.0.1:1", "alice", "postern");
        request.issued_at = Some(UNIX_EPOCH + Duration::from_secs(1_000));
        request.not_before = Some(UNIX_EPOCH + Duration::from_secs(1_100));
        request.groups = vec!["dba".into()];
        request
            .extra_claims
            .insert("amr".into(), serde_json::json!(["pwd", "otp"]));
        request.extra_claims.insert("jti".into(), Value::Null);
        let claims = claims(&request).unwrap();
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["exp"], 1_900);
        assert_eq!(claims["nbf"], 1_100);
        assert_eq!(claims["groups"], serde_json::json!(["dba"]));
        assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
        assert!(!claims.contains_key("jti"));
    }

    #[test]
    fn times_before_1970_are_refused() {
        let mut request = TokenRequest::new("i", "s", "a");
        request.issued_at = Some(UNIX_EPOCH - Duration::from_secs(1));
        assert!(matches!(
            claims(&request),
            Err(IdpError::Request("issued_at is before 1970"))
        ));
    }
}
