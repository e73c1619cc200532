//! `[token_exchange]`: Postern as an issuer. An accepted external token (a person's or a
//! workload's) is exchanged on the admin API (RFC 8693) for a short-lived Postern token, perhaps
//! down-scoped to one target and role, signed with keys kept in the control store and published
//! at `<issuer>/.well-known/jwks.json`. Off unless configured.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{IssuerConfig, Problem};

/// The name Postern's own issuer has among the issuers (in audit events, `issuer_name`).
pub const POSTERN_ISSUER_NAME: &str = "postern";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// The `iss` of exchanged tokens: the URL clients reach the admin API at (its
    /// `/.well-known/openid-configuration` and `/.well-known/jwks.json` are served there).
    pub issuer: String,
    /// The `aud` of exchanged tokens.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// How long an exchanged token lasts; never beyond the token it was exchanged for.
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
    /// How long one signing key signs before a new one takes over (the old one stays published
    /// until the tokens it signed have expired).
    #[serde(default = "default_rotate_every", with = "humantime_serde")]
    pub rotate_every: Duration,
    /// The issuers (names under `[issuers]`) whose tokens may be exchanged; all when empty.
    #[serde(default)]
    pub accept: Vec<String>,
}

fn default_audience() -> String {
    "postern".to_owned()
}

fn default_lifetime() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_rotate_every() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

/// The longest an exchanged token may be made to last.
pub const MAX_EXCHANGED_LIFETIME: Duration = Duration::from_secs(60 * 60);

impl TokenExchangeConfig {
    pub(crate) fn validate(
        &self,
        issuers: &BTreeMap<String, IssuerConfig>,
        problems: &mut Vec<Problem>,
    ) {
        let loopback_http = self.issuer.starts_with("http://127.0.0.1")
            || self.issuer.starts_with("http://localhost")
            || self.issuer.starts_with("http://[::1]");
        if !(self.issuer.starts_with("https://") || loopback_http) {
            problems.push(Problem::new(
                "token_exchange.issuer",
                "must be an https:// URL (or http:// on loopback): clients fetch Postern's keys \
                 there",
            ));
        }
        // The name "postern" is reserved for this issuer by `Config::validate`.
        if issuers.values().any(|i| i.issuer == self.issuer) {
            problems.push(Problem::new(
                "token_exchange.issuer",
                "Postern's own issuer must differ from every [issuers] entry",
            ));
        }
        if self.audience.is_empty() {
            problems.push(Problem::new("token_exchange.audience", "must not be empty"));
        }
        if self.lifetime < Duration::from_secs(1) || self.lifetime > MAX_EXCHANGED_LIFETIME {
            problems.push(Problem::new(
                "token_exchange.lifetime",
                "must be from 1s to 1h: exchanged tokens are short-lived",
            ));
        }
        if self.rotate_every < Duration::from_secs(60) {
            problems.push(Problem::new(
                "token_exchange.rotate_every",
                "must be at least 1m",
            ));
        }
        for name in &self.accept {
            if !issuers.contains_key(name) {
                problems.push(Problem::new(
                    "token_exchange.accept",
                    format!("no issuer named {name:?} is configured"),
                ));
            }
        }
    }

    /// How Postern verifies the tokens it issued: as any issuer, with its own keys.
    #[must_use]
    pub fn as_issuer(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(
            self.issuer.clone(),
            self.audience.clone(),
            crate::JwksSource::Uri(format!(
                "{}/.well-known/jwks.json",
                self.issuer.trim_end_matches('/')
            )),
        );
        config.algorithms = vec!["ES256".to_owned()];
        // Postern reads its own keys in memory: a token signed by a key made a moment ago must
        // find it at once.
        config.min_refresh_interval = Duration::ZERO;
        config
    }
}
