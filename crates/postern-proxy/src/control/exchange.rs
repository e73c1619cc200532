//! Token exchange (RFC 8693): an accepted external token — a person's or a workload's — for a
//! short-lived Postern token, optionally down-scoped to one target and role.
//!
//! The exchanged token names the same subject and groups, carries the same workload (for policies
//! on `principal.workload`), says where it came from (`src_iss`),
//! lasts `[token_exchange] lifetime` but never beyond the token it was exchanged for, and is
//! signed by Postern's own issuer (`issuer.rs`). A scope of `target:NAME` and/or `role:NAME`
//! is written into the token (`postern_target`, `postern_role`), and the handshake refuses the
//! token anywhere else. A Postern token cannot be exchanged again: exchange never extends access.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_config::POSTERN_ISSUER_NAME;
use postern_identity::IdentityKind;
use postern_policy::cedar::RequestContext;
use serde_json::{Map, Value, json};

use super::Control;

/// The token type Postern issues and accepts (`subject_token_type`).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Also accepted as the subject token's type: what most providers call their tokens.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Also accepted: an OpenID Connect ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The claim naming the only target an exchanged token may be used on.
pub const TARGET_CLAIM: &str = "postern_target";
/// The claim naming the only role an exchanged token may be used as.
pub const ROLE_CLAIM: &str = "postern_role";

/// Why an exchange was refused, as RFC 6749 section 5.2 and RFC 8693 section 2.2.2 name it.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// `invalid_request`: a parameter is missing, repeated or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// `invalid_grant`: the subject token does not verify, or may not be exchanged.
    #[error("{0}")]
    InvalidGrant(String),
    /// `invalid_target`: the scope names a target or role the identity may not have.
    #[error("{0}")]
    InvalidTarget(String),
    /// `temporarily_unavailable`: the store, the audit log or Postern itself.
    #[error("{0}")]
    Unavailable(String),
}

impl ExchangeError {
    /// The OAuth error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::InvalidTarget(_) => "invalid_target",
            Self::Unavailable(_) => "temporarily_unavailable",
        }
    }
}

/// What an exchange asks for.
#[derive(Debug, Default)]
pub struct ExchangeRequest {
    pub subject_token: String,
    pub subject_token_type: String,
    /// Space-separated `target:NAME` and `role:NAME`.
    pub scope: Option<String>,
}

/// A token issued by exchange.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exchanged {
    pub access_token: String,
    pub issued_token_type: &'static str,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Control {
    /// Exchanges `request.subject_token` for a Postern token; audited.
    pub async fn exchange_token(
        &self,
        request: &ExchangeRequest,
        source_ip: IpAddr,
    ) -> Result<Exchanged, ExchangeError> {
        let unavailable = |e: &dyn std::fmt::Display| ExchangeError::Unavailable(e.to_string());
        let shared = self.shared().map_err(|e| unavailable(&e))?;
        let issuer = shared.issuer.clone().ok_or_else(|| {
            ExchangeError::InvalidRequest(
                "token exchange is not configured on this Postern ([token_exchange])".into(),
            )
        })?;
        if ![TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN]
            .contains(&request.subject_token_type.as_str())
        {
            return Err(ExchangeError::InvalidRequest(format!(
                "subject_token_type must be {TOKEN_TYPE_JWT} (or the access_token or id_token \
                 types)"
            )));
        }
        let identity = shared
            .verifier
            .verify(&request.subject_token)
            .await
            .map_err(|e| {
                ExchangeError::InvalidGrant(format!("the subject token is refused: {e}"))
            })?;
        if identity.issuer_name == POSTERN_ISSUER_NAME {
            return Err(ExchangeError::InvalidGrant(
                "a Postern token cannot be exchanged again: exchange the token it came from".into(),
            ));
        }
        let accept = &issuer.config.accept;
        if !accept.is_empty() && !accept.contains(&identity.issuer_name) {
            return Err(ExchangeError::InvalidGrant(format!(
                "tokens from issuer \"{}\" may not be exchanged here ([token_exchange] accept)",
                identity.issuer_name
            )));
        }
        let now = (shared.clock)();
        let revoked = shared.revocations.covering(&identity, now);
        if let Some(revocation) = revoked {
            return Err(ExchangeError::InvalidGrant(format!(
                "access for {} was revoked by {}: {}",
                identity.subject, revocation.created_by, revocation.reason
            )));
        }

        // Down-scoping: a target that exists, a role policy lets this identity assume there.
        let mut target = None;
        let mut role = None;
        for word in request.scope.as_deref().unwrap_or("").split_whitespace() {
            match word.split_once(':') {
                Some(("target", name)) if target.is_none() && !name.is_empty() => {
                    target = Some(name.to_owned());
                }
                Some(("role", name)) if role.is_none() && !name.is_empty() => {
                    role = Some(name.to_owned());
                }
                _ => {
                    return Err(ExchangeError::InvalidRequest(format!(
                        "scope: \"{word}\" is not target:NAME or role:NAME (each at most once)"
                    )));
                }
            }
        }
        if let Some(name) = &target
            && !shared.targets.contains_key(name)
        {
            return Err(ExchangeError::InvalidTarget(format!(
                "no target named \"{name}\""
            )));
        }
        if let Some(role) = &role {
            let engine = shared.policies.current();
            let request = RequestContext {
                source_ip,
                now,
                target: String::new(),
                role: String::new(),
                application_name: None,
                search_path: Vec::new(),
            };
            let targets: Vec<&String> = match &target {
                Some(name) => vec![name],
                None => shared.targets.keys().collect(),
            };
            let allowed = targets.iter().any(|t| {
                engine
                    .decide_assume(&identity, &request, t, role)
                    .is_allowed()
            });
            if !allowed {
                return Err(ExchangeError::InvalidTarget(format!(
                    "{} may not assume role \"{role}\"{}",
                    identity.subject,
                    target
                        .as_ref()
                        .map(|t| format!(" on target \"{t}\""))
                        .unwrap_or_default()
                )));
            }
        }

        let lifetime = issuer.config.lifetime;
        let expires_at = (now + lifetime).min(identity.expires_at);
        let expires_in = expires_at.duration_since(now).unwrap_or_default();
        if expires_in < Duration::from_secs(1) {
            return Err(ExchangeError::InvalidGrant(
                "the subject token expires too soon to exchange".into(),
            ));
        }
        let mut id = [0u8; 16];
        crate::target::fill_random(&mut id);
        let jti = hex::encode(id);
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(identity.subject));
        claims.insert("aud".into(), json!(issuer.config.audience));
        claims.insert("iat".into(), json!(seconds(now)));
        claims.insert("nbf".into(), json!(seconds(now)));
        claims.insert("exp".into(), json!(seconds(expires_at)));
        claims.insert("jti".into(), json!(jti));
        claims.insert("groups".into(), json!(identity.groups));
        claims.insert("src_iss".into(), json!(identity.issuer));
        let kind = match identity.kind {
            IdentityKind::Human => "human",
            IdentityKind::Service => "service",
        };
        claims.insert("postern_kind".into(), json!(kind));
        if identity.mfa {
            claims.insert("amr".into(), json!(["mfa"]));
        }
        // Policies on `principal.workload` must hold for the exchanged token as they did for
        // the original: without it, a `forbid … when { principal.workload.kind == … }` would
        // not match the exchanged token at all.
        if let Some(workload) = &identity.workload {
            claims.insert(
                postern_identity::EXCHANGED_WORKLOAD_CLAIM.into(),
                workload.to_claim(),
            );
        }
        if let Some(target) = &target {
            claims.insert(TARGET_CLAIM.into(), json!(target));
        }
        if let Some(role) = &role {
            claims.insert(ROLE_CLAIM.into(), json!(role));
        }

        let mut event = Map::new();
        event.insert("kind".into(), json!("control"));
        event.insert("action".into(), json!("token_exchange"));
        event.insert("by".into(), json!(identity.subject));
        event.insert("by_issuer".into(), json!(identity.issuer));
        event.insert("source_ip".into(), json!(source_ip.to_string()));
        event.insert(
            "details".into(),
            json!({"jti": jti, "target": target, "role": role, "expires_at": seconds(expires_at)}),
        );
        shared
            .audit
            .record(event)
            .await
            .map_err(|e| ExchangeError::Unavailable(e.client_message()))?;
        let access_token = issuer.sign(claims).await.map_err(|e| unavailable(&e))?;
        let scope = match (&target, &role) {
            (None, None) => None,
            _ => Some(
                [
                    target.as_ref().map(|t| format!("target:{t}")),
                    role.as_ref().map(|r| format!("role:{r}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
            ),
        };
        Ok(Exchanged {
            access_token,
            issued_token_type: TOKEN_TYPE_JWT,
            token_type: "Bearer",
            expires_in: expires_in.as_secs(),
            scope,
        })
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether an identity's token was down-scoped away from `target` or `role`; the refusal says
/// so.
pub(crate) fn scope_refusal(
    identity: &postern_identity::Identity,
    target: &str,
    role: &str,
) -> Option<String> {
    let claim = |name: &str| identity.claims.get(name).and_then(Value::as_str);
    if let Some(only) = claim(TARGET_CLAIM)
        && only != target
    {
        return Some(format!(
            "this token was exchanged for target \"{only}\" only, not \"{target}\""
        ));
    }
    if let Some(only) = claim(ROLE_CLAIM)
        && only != role
    {
        return Some(format!(
            "this token was exchanged for role \"{only}\" only, not \"{role}\""
        ));
    }
    None
}

impl Control {
    /// Postern's issuer's public keys, when token exchange is configured.
    pub fn issuer_jwks(&self) -> Option<Value> {
        Some(self.shared().ok()?.issuer.as_ref()?.jwks())
    }

    /// Postern's issuer's OpenID Provider metadata, when token exchange is configured.
    pub fn issuer_discovery(&self) -> Option<Value> {
        Some(self.shared().ok()?.issuer.as_ref()?.discovery())
    }
}
