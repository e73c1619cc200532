//! A trusted token issuer: where its keys come from and how its claims map to an identity.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Problem;

/// Algorithms accepted when an issuer does not list its own. Asymmetric only: HMAC needs an
/// explicitly configured shared secret, and `none` is never accepted.
pub const DEFAULT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

const ASYMMETRIC_ALGORITHMS: &[&str] = DEFAULT_ALGORITHMS;
const HMAC_ALGORITHMS: &[&str] = &["HS256", "HS384", "HS512"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` claim this issuer puts in its tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audience: Vec<String>,
    /// Where the verification keys come from. Default: OIDC discovery from `issuer`.
    #[serde(default)]
    pub jwks: JwksSource,
    /// Accepted `alg` header values.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Claim holding the subject (`sub` unless the issuer says otherwise, e.g. `email`).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claim holding the group list (an array of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Whether tokens from this issuer name people or machines.
    #[serde(default)]
    pub identity_kind: IdentityKindRule,
    /// How often keys are refreshed even when none is missing.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Least time between two refreshes triggered by an unknown `kid`, so a client sending random
    /// key ids cannot make Postern hammer the identity provider.
    #[serde(default = "default_min_refresh_interval", with = "humantime_serde")]
    pub min_refresh_interval: Duration,
}

/// Where an issuer's verification keys are found.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JwksSource {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    #[default]
    Discovery,
    /// A JWKS document at this URL.
    Uri(String),
    /// A JWKS document in a local file (re-read on refresh).
    File(PathBuf),
    /// A shared HMAC secret read from this file. Enables `HS*` algorithms for this issuer only.
    SharedSecretFile(PathBuf),
}

/// How tokens of an issuer are classified as people or machines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKindRule {
    #[default]
    Human,
    Service,
}

fn default_algorithms() -> Vec<String> {
    DEFAULT_ALGORITHMS.iter().map(|&a| a.to_owned()).collect()
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_refresh_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refresh_interval() -> Duration {
    Duration::from_secs(10)
}

impl IssuerConfig {
    /// A configuration with every default, for the given issuer URL and audience.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks: JwksSource) -> Self {
        Self {
            issuer: issuer.into(),
            audience: vec![audience.into()],
            jwks,
            algorithms: default_algorithms(),
            clock_skew: default_clock_skew(),
            subject_claim: default_subject_claim(),
            groups_claim: default_groups_claim(),
            identity_kind: IdentityKindRule::default(),
            refresh_interval: default_refresh_interval(),
            min_refresh_interval: default_min_refresh_interval(),
        }
    }

    pub(crate) fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        if self.issuer.is_empty() {
            problems.push(Problem::new(format!("{key}.issuer"), "must not be empty"));
        }
        if self.audience.is_empty() {
            problems.push(Problem::new(
                format!("{key}.audience"),
                "list at least one audience; accepting any audience lets tokens minted for other \
                 services in",
            ));
        }
        let hmac_allowed = matches!(self.jwks, JwksSource::SharedSecretFile(_));
        for alg in &self.algorithms {
            let known = ASYMMETRIC_ALGORITHMS.contains(&alg.as_str());
            let hmac = HMAC_ALGORITHMS.contains(&alg.as_str());
            if alg.eq_ignore_ascii_case("none") {
                problems.push(Problem::new(
                    format!("{key}.algorithms"),
                    "'none' means unsigned tokens and is never accepted",
                ));
            } else if hmac && !hmac_allowed {
                problems.push(Problem::new(
                    format!("{key}.algorithms"),
                    format!("{alg} needs jwks = {{ shared_secret_file = \"…\" }}"),
                ));
            } else if hmac_allowed && !hmac {
                problems.push(Problem::new(
                    format!("{key}.algorithms"),
                    format!("{alg} cannot be used with a shared secret; list HS256/384/512"),
                ));
            } else if !known && !hmac {
                problems.push(Problem::new(
                    format!("{key}.algorithms"),
                    format!(
                        "unknown algorithm '{alg}'; choose from {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if self.algorithms.is_empty() {
            problems.push(Problem::new(
                format!("{key}.algorithms"),
                "list at least one algorithm",
            ));
        }
    }
}
