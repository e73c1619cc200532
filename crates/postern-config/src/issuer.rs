//! A trusted token issuer: where its keys come from and how its claims map to an identity.
//!
//! An issuer may name a preset (`preset = "github_actions"`, see `presets.rs`), which fills the
//! settings the configuration leaves out. A table is read as `IssuerFile` (every preset-filled
//! setting optional) and resolved into [`IssuerConfig`] (every setting known); a setting that
//! contradicts the preset is reported by validation, naming both.

mod presets;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Problem;

pub use presets::{
    GITHUB_ACTIONS_ISSUER, IssuerPreset, MAX_TRUST_DOMAIN_BYTES, check_trust_domain,
};

/// Algorithms accepted when an issuer does not list its own. Asymmetric only: HMAC needs an
/// explicitly configured shared secret, and `none` is never accepted.
pub const DEFAULT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

const ASYMMETRIC_ALGORITHMS: &[&str] = DEFAULT_ALGORITHMS;
const HMAC_ALGORITHMS: &[&str] = &["HS256", "HS384", "HS512"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "IssuerFile", into = "IssuerFile")]
pub struct IssuerConfig {
    /// A kind of workload issuer whose defaults and claims Postern knows; `None` for an ordinary
    /// OIDC provider.
    pub preset: Option<IssuerPreset>,
    /// The exact `iss` claim this issuer puts in its tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audience: Vec<String>,
    /// Where the verification keys come from. Default: OIDC discovery from `issuer`.
    pub jwks: JwksSource,
    /// Accepted `alg` header values. Default: the preset's, or [`DEFAULT_ALGORITHMS`].
    pub algorithms: Vec<String>,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`.
    pub clock_skew: Duration,
    /// Claim holding the subject (`sub` unless the issuer says otherwise, e.g. `email`).
    pub subject_claim: String,
    /// Claim holding the group list (an array of strings, or one string).
    pub groups_claim: String,
    /// Whether tokens from this issuer name people or machines. Default: people, machines with
    /// a preset (every preset is a workload issuer).
    pub identity_kind: IdentityKindRule,
    /// How often keys are refreshed even when none is missing.
    pub refresh_interval: Duration,
    /// Least time between two refreshes triggered by an unknown `kid`, so a client sending random
    /// key ids cannot make Postern hammer the identity provider.
    pub min_refresh_interval: Duration,
    /// For preset `spiffe`: the trust domain every SPIFFE ID must be in (`example.org`).
    pub trust_domain: Option<String>,
}

/// An `[issuers.X]` table as written: what a preset can fill is optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preset: Option<IssuerPreset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    /// No default, with or without a preset: a default audience would accept tokens minted for
    /// other services.
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    jwks: JwksSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    algorithms: Option<Vec<String>>,
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    clock_skew: Duration,
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity_kind: Option<IdentityKindRule>,
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    refresh_interval: Duration,
    #[serde(default = "default_min_refresh_interval", with = "humantime_serde")]
    min_refresh_interval: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trust_domain: Option<String>,
}

impl From<IssuerFile> for IssuerConfig {
    /// Fills what the table leaves out from its preset, or from the general defaults.
    fn from(file: IssuerFile) -> Self {
        let preset = file.preset;
        Self {
            preset,
            issuer: file
                .issuer
                .or_else(|| {
                    preset
                        .and_then(IssuerPreset::default_issuer)
                        .map(str::to_owned)
                })
                .unwrap_or_default(),
            audience: file.audience,
            jwks: file.jwks,
            algorithms: file.algorithms.unwrap_or_else(|| {
                preset
                    .map_or(DEFAULT_ALGORITHMS, IssuerPreset::default_algorithms)
                    .iter()
                    .map(|&a| a.to_owned())
                    .collect()
            }),
            clock_skew: file.clock_skew,
            subject_claim: file.subject_claim,
            groups_claim: file.groups_claim,
            identity_kind: file.identity_kind.unwrap_or(if preset.is_some() {
                IdentityKindRule::Service
            } else {
                IdentityKindRule::Human
            }),
            refresh_interval: file.refresh_interval,
            min_refresh_interval: file.min_refresh_interval,
            trust_domain: file.trust_domain,
        }
    }
}

impl From<IssuerConfig> for IssuerFile {
    /// Every setting written out, so the table reads back as the same configuration.
    fn from(config: IssuerConfig) -> Self {
        Self {
            preset: config.preset,
            issuer: Some(config.issuer),
            audience: config.audience,
            jwks: config.jwks,
            algorithms: Some(config.algorithms),
            clock_skew: config.clock_skew,
            subject_claim: config.subject_claim,
            groups_claim: config.groups_claim,
            identity_kind: Some(config.identity_kind),
            refresh_interval: config.refresh_interval,
            min_refresh_interval: config.min_refresh_interval,
            trust_domain: config.trust_domain,
        }
    }
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
            preset: None,
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
            trust_domain: None,
        }
    }

    /// A configuration with `preset`'s defaults (as `preset = "…"` with nothing else would
    /// give) and the given audience; set `issuer` when the preset has no default, and
    /// `trust_domain` for `spiffe`.
    pub fn with_preset(preset: IssuerPreset, audience: impl Into<String>) -> Self {
        IssuerFile {
            preset: Some(preset),
            issuer: None,
            audience: vec![audience.into()],
            jwks: JwksSource::Discovery,
            algorithms: None,
            clock_skew: default_clock_skew(),
            subject_claim: default_subject_claim(),
            groups_claim: default_groups_claim(),
            identity_kind: None,
            refresh_interval: default_refresh_interval(),
            min_refresh_interval: default_min_refresh_interval(),
            trust_domain: None,
        }
        .into()
    }

    pub(crate) fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        match self.preset {
            Some(preset) => presets::validate(self, preset, key, problems),
            None => self.validate_without_preset(key, problems),
        }
        self.validate_algorithms(key, problems);
    }

    fn validate_without_preset(&self, key: &str, problems: &mut Vec<Problem>) {
        if self.issuer.is_empty() {
            problems.push(Problem::new(
                format!("{key}.issuer"),
                "must be set to the exact iss of the issuer's tokens (or name a preset: \
                 github_actions, kubernetes, spiffe, oauth_client)",
            ));
        }
        if self.trust_domain.is_some() {
            problems.push(Problem::new(
                format!("{key}.trust_domain"),
                "trust_domain is a SPIFFE setting: it needs preset = \"spiffe\"",
            ));
        }
        if self.audience.is_empty() {
            problems.push(Problem::new(
                format!("{key}.audience"),
                "list at least one audience; accepting any audience lets tokens minted for other \
                 services in",
            ));
        }
    }

    fn validate_algorithms(&self, key: &str, problems: &mut Vec<Problem>) {
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
