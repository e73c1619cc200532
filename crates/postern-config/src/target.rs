//! A target: the database a client names as `dbname`, how Postern reaches it, and who may assume
//! which role there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{IssuerConfig, Problem};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The upstream database name (may differ from the target's name).
    pub database: String,
    /// How client sessions become database roles; see ARCHITECTURE.md, decision 2.
    #[serde(default)]
    pub mode: UpstreamMode,
    /// Postern's administrative login on this database: sets and rotates the passwords of the
    /// mapped roles in `role_login` mode, installs the `postern` schema, ends backends.
    pub admin: UpstreamLogin,
    /// In `set_role` mode: the login role that is a NOINHERIT member of every mapped role.
    #[serde(default)]
    pub session_login: Option<UpstreamLogin>,
    /// In `role_login` mode: per role, where its password comes from. A role not listed here gets
    /// a password that Postern sets through the admin login and keeps in memory.
    #[serde(default)]
    pub role_passwords: BTreeMap<String, SecretSource>,
    /// TLS towards the database.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Which identities may assume which roles. First match does not matter: the union of every
    /// rule matching the identity is what it may assume.
    #[serde(default)]
    pub roles: Vec<RoleRule>,
}

fn default_port() -> u16 {
    5432
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamMode {
    /// Log in as the mapped role itself: `RESET ROLE` leads nowhere.
    #[default]
    RoleLogin,
    /// One login role plus `SET ROLE`; only as strong as the statement guard.
    SetRole,
}

/// A database login: user name and where its password comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLogin {
    pub user: String,
    #[serde(default)]
    pub password: Option<SecretSource>,
}

/// A secret kept out of the configuration file itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file, without a trailing newline.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret now. The error names the source, never the value.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }
}

/// TLS towards the upstream database.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// PEM bundle of CAs to trust instead of the public web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the server certificate (default: `host`).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTlsMode {
    /// Plain TCP (for a database on the same host or a trusted network).
    #[default]
    Disable,
    /// TLS with full certificate and host name verification.
    VerifyFull,
}

/// Who may assume which roles. Every condition given must hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    /// Roles this rule allows.
    pub roles: Vec<String>,
    /// Identity must be in one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Identity's subject must be one of these.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Identity must come from one of these issuers (by configured name).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Claims that must have exactly these string values.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

impl TargetConfig {
    pub(crate) fn validate(
        &self,
        key: &str,
        issuers: &BTreeMap<String, IssuerConfig>,
        problems: &mut Vec<Problem>,
    ) {
        if self.host.is_empty() {
            problems.push(Problem::new(format!("{key}.host"), "must not be empty"));
        }
        if self.mode == UpstreamMode::SetRole && self.session_login.is_none() {
            problems.push(Problem::new(
                format!("{key}.session_login"),
                "set_role mode needs the login role that SETs the mapped roles",
            ));
        }
        if self.tls.mode == UpstreamTlsMode::Disable && (self.tls.ca_file.is_some()) {
            problems.push(Problem::new(
                format!("{key}.tls.ca_file"),
                "a CA file is set but tls.mode is disable; set mode = \"verify_full\"",
            ));
        }
        if self.roles.is_empty() {
            problems.push(Problem::new(
                format!("{key}.roles"),
                "no role rules: nobody could connect to this target",
            ));
        }
        for (i, rule) in self.roles.iter().enumerate() {
            let rule_key = format!("{key}.roles[{i}]");
            if rule.roles.is_empty() {
                problems.push(Problem::new(
                    format!("{rule_key}.roles"),
                    "list at least one role",
                ));
            }
            if rule.groups.is_empty()
                && rule.subjects.is_empty()
                && rule.issuers.is_empty()
                && rule.claims.is_empty()
            {
                problems.push(Problem::new(
                    rule_key.clone(),
                    "a rule without conditions would let every identity in; name groups, \
                     subjects, issuers or claims",
                ));
            }
            for issuer in &rule.issuers {
                if !issuers.contains_key(issuer) {
                    problems.push(Problem::new(
                        format!("{rule_key}.issuers"),
                        format!("no issuer named '{issuer}' is configured"),
                    ));
                }
            }
        }
    }
}
