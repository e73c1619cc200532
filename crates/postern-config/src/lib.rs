//! Postern's configuration as plain data.
//!
//! This crate owns the serde structs that describe a Postern deployment, their defaults, and
//! [`Config::validate`], which reports *every* problem at once. It does no I/O beyond reading the
//! file it is asked to load, and it is never reached as a global: whoever needs a section gets it
//! passed down explicitly.

mod admin;
mod approvals;
mod baseline;
mod error;
mod exchange;
mod issuer;
mod limits;
mod listen;
mod policy;
mod pool;
mod store;
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use admin::{AdminConfig, ConsoleConfig, ScimConfig, ScimSubjectAttribute};
pub use approvals::{ApprovalsConfig, WebhookConfig};
pub use baseline::{BaselineEnforcement, BaselinesConfig};
pub use error::{ConfigError, Problem};
pub use exchange::{MAX_EXCHANGED_LIFETIME, POSTERN_ISSUER_NAME, TokenExchangeConfig};
pub use issuer::{
    GITHUB_ACTIONS_ISSUER, IdentityKindRule, IssuerConfig, IssuerPreset, JwksSource,
    MAX_TRUST_DOMAIN_BYTES, check_trust_domain,
};
pub use limits::{Limits, SessionLimits};
pub use listen::{
    ClientAuth, ClientAuthMethod, ClientCertificates, ClientIdentityConfig,
    DEFAULT_CERTIFICATE_ISSUER_NAME, DEFAULT_OAUTH_SCOPE, ListenConfig, OAuthBearerSettings,
    TlsFiles,
};
pub use policy::PolicyConfig;
pub use pool::{PoolConfig, PoolMode};
pub use store::StoreConfig;
pub use target::{
    EphemeralConfig, MAX_NAME_PREFIX_BYTES, OnOwnedObjects, RoleRule, SecretSource, TargetConfig,
    UpstreamLogin, UpstreamMode, UpstreamTls, UpstreamTlsMode,
};

/// The whole of `postern.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect, and with what TLS.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Trusted token issuers, by a name of the operator's choosing.
    #[serde(default)]
    pub issuers: BTreeMap<String, IssuerConfig>,
    /// Databases clients may reach, by the name they give as `dbname`.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// Where the audit trail goes.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Statement policies (Cedar).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The control store (revocations).
    #[serde(default)]
    pub store: StoreConfig,
    /// The admin HTTP API; off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// How statements held for approval wait, and the approver groups' webhooks.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Postern as an issuer of exchanged tokens; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchangeConfig>,
    /// What service identities are seen doing: learned, reported when new, enforced where asked.
    #[serde(default)]
    pub baselines: BaselinesConfig,
}

/// The audit trail's destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A JSON-lines file; every event carries the SHA-256 of the previous one.
    pub path: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("postern-audit.jsonl"),
        }
    }
}

impl Config {
    /// Parses TOML text; `origin` names the source in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_owned(),
            message: source.to_string(),
        })
    }

    /// Reads and parses a TOML file, then validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::from_toml(&text, &path.display().to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// How client certificates become identities, when the listener accepts them (both
    /// `[listen.tls] client_ca` and `[listen.tls.client_identity]` are set).
    #[must_use]
    pub fn certificate_identity(&self) -> Option<&ClientIdentityConfig> {
        let tls = self.listen.tls.as_ref()?;
        tls.client_ca.as_ref()?;
        tls.client_identity.as_ref()
    }

    /// Checks everything that can be checked without I/O and reports every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.listen.validate(&mut problems);
        listen::tls::validate(self, &mut problems);
        self.policy.validate(&mut problems);
        if let Some(admin) = &self.admin {
            admin.validate(&mut problems);
            admin.validate_console(&self.issuers, &mut problems);
            admin.validate_scim(&self.issuers, &mut problems);
        }
        self.approvals.validate(&mut problems);
        if let Some(exchange) = &self.token_exchange {
            exchange.validate(&self.issuers, &mut problems);
        }
        let certificate_issuer = self.certificate_identity().map(|c| c.issuer_name.as_str());
        if self.issuers.is_empty() && certificate_issuer.is_none() {
            problems.push(Problem::new(
                "issuers",
                "at least one token issuer (or client certificates: listen.tls.client_ca) must \
                 be configured",
            ));
        }
        self.baselines.validate(
            &self.issuers,
            certificate_issuer,
            &self.targets,
            &mut problems,
        );
        // Tokens of the issuer so named are believed about what they carry over from exchange
        // (`postern_kind`, `postern_workload`): no other issuer may take the name, even while
        // token exchange is off.
        if self.issuers.contains_key(POSTERN_ISSUER_NAME) {
            problems.push(Problem::new(
                format!("issuers.{POSTERN_ISSUER_NAME}"),
                format!(
                    "the name \"{POSTERN_ISSUER_NAME}\" is Postern's own issuer's (token \
                     exchange); give this issuer another"
                ),
            ));
        }
        if certificate_issuer == Some(POSTERN_ISSUER_NAME) {
            problems.push(Problem::new(
                "listen.tls.client_identity.issuer_name",
                format!(
                    "the name \"{POSTERN_ISSUER_NAME}\" is Postern's own issuer's (token \
                     exchange); choose another"
                ),
            ));
        }
        for (name, issuer) in &self.issuers {
            issuer.validate(&format!("issuers.{name}"), &mut problems);
        }
        if self.targets.is_empty() {
            problems.push(Problem::new(
                "targets",
                "at least one target must be configured",
            ));
        }
        for (name, target) in &self.targets {
            target.validate(
                &format!("targets.{name}"),
                &self.issuers,
                certificate_issuer,
                &mut problems,
            );
        }
        target::validate_ephemeral_prefixes(&self.targets, &mut problems);
        listen::validate_client_auth(self, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests;
