//! [`Identity`]: who is behind a connection, as established from a verified token, and how the
//! issuer's configuration maps claims (subject, groups, `amr`, its preset's workload) onto it.
//! Deciding what the identity may do is `postern-policy`'s business.

use std::time::SystemTime;

use postern_config::{IdentityKindRule, IssuerConfig};
use serde_json::{Map, Value};

use crate::claims::TokenTimes;
use crate::error::AuthError;
use crate::workload::Workload;

/// Authentication method references (RFC 8176, `amr`) that show more than a password was used:
/// a second factor, a hardware or software key, or a biometric.
/// <https://www.rfc-editor.org/rfc/rfc8176#section-2>
pub const MFA_METHODS: &[&str] = &[
    "mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm", "sms", "tel",
];

/// Whether an identity names a person or a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A person, typically signed in through a browser or device flow.
    Human,
    /// A workload: a CI job, a service, a cron job.
    Service,
}

impl From<IdentityKindRule> for IdentityKind {
    fn from(rule: IdentityKindRule) -> Self {
        match rule {
            IdentityKindRule::Human => Self::Human,
            IdentityKindRule::Service => Self::Service,
        }
    }
}

/// Who is behind a connection, established from a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The configured issuer's name (its key under `[issuers]`).
    pub issuer_name: String,
    /// The `iss` claim.
    pub issuer: String,
    /// The value of the issuer's `subject_claim` (`sub` by default).
    pub subject: String,
    /// Person or machine, from the issuer's configuration.
    pub kind: IdentityKind,
    /// The issuer's `groups_claim`: an array of strings, or one string. Empty when absent.
    pub groups: Vec<String>,
    /// Every claim of the verified token.
    pub claims: Map<String, Value>,
    /// `exp`: no session may outlive it.
    pub expires_at: SystemTime,
    /// `iat`, when present.
    pub issued_at: Option<SystemTime>,
    /// `jti`, when present.
    pub token_id: Option<String>,
    /// Whether `amr` shows a multi-factor sign-in (see [`MFA_METHODS`]).
    pub mfa: bool,
    /// What the token says about the workload behind it, when its issuer has a preset.
    pub workload: Option<Workload>,
}

impl Identity {
    /// Builds the identity from claims whose signature and registered claims have been checked.
    pub(crate) fn from_verified(
        issuer_name: &str,
        config: &IssuerConfig,
        claims: Map<String, Value>,
        times: TokenTimes,
    ) -> Result<Self, AuthError> {
        let workload = match Workload::from_claims(config, &claims)? {
            // Postern's own exchanged tokens carry the workload of the token they replaced;
            // no other issuer's claim of that name is believed.
            None if issuer_name == postern_config::POSTERN_ISSUER_NAME => claims
                .get(crate::workload::EXCHANGED_WORKLOAD_CLAIM)
                .map(Workload::from_claim)
                .transpose()?,
            found => found,
        };
        let subject = match workload.as_ref().and_then(Workload::subject) {
            Some(subject) => subject.to_owned(),
            None => subject_of(&claims, &config.subject_claim)?,
        };
        let groups = match claims.get(&config.groups_claim) {
            Some(Value::String(group)) => vec![group.clone()],
            Some(Value::Array(values)) => {
                // Entries that are not strings cannot name a group; they are ignored rather than
                // failing a sign-in over an issuer's quirk.
                values
                    .iter()
                    .filter_map(|value| value.as_str().map(str::to_owned))
                    .collect()
            }
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(invalid(
                    &config.groups_claim,
                    "is not a string or an array of strings",
                ));
            }
        };
        let token_id = match claims.get("jti") {
            Some(Value::String(jti)) => Some(jti.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(invalid("jti", "is not a string")),
        };
        let mfa = match claims.get("amr") {
            Some(Value::Array(methods)) => methods
                .iter()
                .any(|method| method.as_str().is_some_and(is_mfa_method)),
            Some(Value::String(method)) => is_mfa_method(method),
            _ => false,
        };
        Ok(Self {
            issuer_name: issuer_name.to_owned(),
            issuer: config.issuer.clone(),
            subject,
            kind: config.identity_kind.into(),
            groups,
            claims,
            expires_at: times.expires_at,
            issued_at: times.issued_at,
            token_id,
            mfa,
            workload,
        })
    }
}

fn subject_of(claims: &Map<String, Value>, subject_claim: &str) -> Result<String, AuthError> {
    match claims.get(subject_claim) {
        Some(Value::String(subject)) if !subject.is_empty() => Ok(subject.clone()),
        Some(Value::String(_)) => Err(invalid(subject_claim, "is empty")),
        None | Some(Value::Null) => Err(AuthError::MissingClaim(subject_claim.to_owned())),
        Some(_) => Err(invalid(subject_claim, "is not a string")),
    }
}

fn is_mfa_method(method: &str) -> bool {
    MFA_METHODS.contains(&method)
}

fn invalid(claim: &str, problem: &'static str) -> AuthError {
    AuthError::InvalidClaim {
        claim: claim.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use postern_config::JwksSource;
    use serde_json::json;

    use super::*;

    fn build(config: &IssuerConfig, claims: Value) -> Result<Identity, AuthError> {
        let Value::Object(claims) = claims else {
            panic!("not an object")
        };
        let times = TokenTimes {
            expires_at: UNIX_EPOCH + Duration::from_secs(100),
            issued_at: None,
        };
        Identity::from_verified("corp", config, claims, times)
    }

    fn config() -> IssuerConfig {
        IssuerConfig::new("https://idp", "postern", JwksSource::Discovery)
    }

    #[test]
    fn maps_claims() {
        let identity = build(
            &config(),
            json!({"sub": "alice", "groups": ["dba", 7, "ops"], "jti": "t1", "amr": ["pwd", "otp"]}),
        )
        .unwrap();
        assert_eq!(identity.issuer_name, "corp");
        assert_eq!(identity.issuer, "https://idp");
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.kind, IdentityKind::Human);
        assert_eq!(identity.groups, ["dba", "ops"]);
        assert_eq!(identity.token_id.as_deref(), Some("t1"));
        assert!(identity.mfa);
        assert_eq!(identity.claims["jti"], "t1");
    }

    #[test]
    fn follows_the_issuer_configuration() {
        let mut config = config();
        config.subject_claim = "email".into();
        config.groups_claim = "roles".into();
        config.identity_kind = IdentityKindRule::Service;
        let identity = build(
            &config,
            json!({"sub": "123", "email": "ci@corp", "roles": "deployer", "amr": ["pwd"]}),
        )
        .unwrap();
        assert_eq!(identity.subject, "ci@corp");
        assert_eq!(identity.groups, ["deployer"]);
        assert_eq!(identity.kind, IdentityKind::Service);
        assert!(!identity.mfa);

        let err = build(&config, json!({"sub": "123"})).unwrap_err();
        assert_eq!(err.to_string(), "token has no 'email' claim");
    }

    #[test]
    fn refuses_unusable_claims() {
        let cases = [
            (json!({}), "token has no 'sub' claim"),
            (json!({"sub": ""}), "token claim 'sub' is empty"),
            (json!({"sub": 5}), "token claim 'sub' is not a string"),
            (
                json!({"sub": "a", "groups": {"x": 1}}),
                "token claim 'groups' is not a string or an array of strings",
            ),
            (
                json!({"sub": "a", "jti": 5}),
                "token claim 'jti' is not a string",
            ),
        ];
        for (claims, message) in cases {
            assert_eq!(build(&config(), claims).unwrap_err().to_string(), message);
        }
    }
}
