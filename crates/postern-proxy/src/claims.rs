//! Signed claims for row-level security: the value Postern puts in `postern.claims` on every
//! upstream session, which the SECURITY DEFINER functions installed by `postern setup-db` verify.
//!
//! Format: `base64(json) "." hex(hmac_sha256(key, base64(json)))`, where the JSON is
//! `{"iss", "sub", "claims", "pid", "exp"}`. `pid` binds the value to one backend (a value seen
//! in one session is useless in another) and `exp` to the token's lifetime. Both halves use only
//! characters that need no quoting in an SQL literal.

use base64::Engine as _;
use postern_identity::Identity;
use serde_json::json;

/// The HMAC key, as read from `postern.signing_key`.
pub struct SigningKey {
    key: aws_lc_rs::hmac::Key,
}

impl SigningKey {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
        }
    }

    /// The `postern.claims` value for `identity` on backend `pid`.
    pub fn sign(&self, identity: &Identity, pid: i32) -> String {
        let exp = identity
            .expires_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = json!({
            "iss": identity.issuer,
            "sub": identity.subject,
            "claims": identity.claims,
            "pid": pid,
            "exp": exp,
        });
        let payload = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        let tag = aws_lc_rs::hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", hex::encode(tag.as_ref()))
    }
}
