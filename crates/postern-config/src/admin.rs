//! `[admin]`: the admin HTTP API (health, live sessions, revocations, approvals), the web
//! console it serves (`[admin.console]`) and the SCIM 2.0 provisioning endpoint
//! (`[admin.scim]`). Off unless configured.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{IssuerConfig, Problem};

/// The console's client id when the configuration does not name one.
pub const DEFAULT_CONSOLE_CLIENT_ID: &str = "postern-console";
/// Longest client id accepted.
const MAX_CLIENT_ID_CHARS: usize = 255;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the API listens, e.g. `127.0.0.1:6480`. Callers authenticate with the same tokens
    /// as database clients and need policy grants (`view_sessions`, `end_session`, `revoke`).
    /// The API speaks plain HTTP, so it must be a loopback address: bearer tokens never cross a
    /// network in the clear (put a TLS-terminating proxy in front to reach it remotely).
    pub address: SocketAddr,
    /// The web console served under `/console/`.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The SCIM 2.0 service provider under `/scim/v2`; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim: Option<ScimConfig>,
}

/// `[admin.scim]`: the identity provider provisions users to Postern over SCIM 2.0 (RFC 7644),
/// and deactivating or deleting one there revokes that person here at once. The provider
/// authenticates with a bearer token of its own (not an identity token), read from `token_file`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScimConfig {
    /// A file holding the bearer token the provider sends (one line, at least 32 characters:
    /// `openssl rand -hex 32`). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The issuer whose tokens carry these users' subjects: its name under `[issuers]`.
    /// Default: the only issuer when exactly one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Which SCIM attribute of a user equals the subject of that person's tokens.
    #[serde(default)]
    pub subject_attribute: ScimSubjectAttribute,
}

/// The SCIM user attribute that holds the person's subject (the issuer's `subject_claim`,
/// `sub` by default), compared exactly.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ScimSubjectAttribute {
    /// `userName` (Okta, OneLogin, and Entra ID mapping `userPrincipalName`).
    #[default]
    #[serde(rename = "userName")]
    UserName,
    /// `externalId`: the provider's own id of the user (Entra ID's `objectId`, say).
    #[serde(rename = "externalId")]
    ExternalId,
    /// `id`: the id Postern gave the user.
    #[serde(rename = "id")]
    Id,
}

impl ScimSubjectAttribute {
    /// The attribute's name as SCIM writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserName => "userName",
            Self::ExternalId => "externalId",
            Self::Id => "id",
        }
    }
}

/// `[admin.console]`: how people sign in to the web console. The console signs in with OpenID
/// Connect (authorization code flow with PKCE) at the issuer's provider, found through its
/// discovery document, and verifies the access token it gets like any client's token. Register
/// the console with the provider as a public client (no secret) whose redirect URI is
/// `http://<admin address>/console/callback`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Whether the admin API serves the console.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The issuer people sign in with: its name under `[issuers]`. Default: the only issuer
    /// when exactly one is configured (with several, name one or the console stays off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The OAuth client id the console signs in as.
    #[serde(default = "default_client_id")]
    pub client_id: String,
}

fn default_enabled() -> bool {
    true
}

fn default_client_id() -> String {
    DEFAULT_CONSOLE_CLIENT_ID.to_owned()
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            issuer: None,
            client_id: default_client_id(),
        }
    }
}

impl AdminConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if !self.address.ip().is_loopback() {
            problems.push(Problem::new(
                "admin.address",
                format!(
                    "{} is not a loopback address: the admin API speaks plain HTTP and takes \
                     bearer tokens, so it listens on loopback only (front it with TLS to reach \
                     it from elsewhere)",
                    self.address
                ),
            ));
        }
        let client_id = &self.console.client_id;
        // RFC 6749 Appendix A.1: a client id is printable ASCII.
        if client_id.is_empty()
            || client_id.chars().count() > MAX_CLIENT_ID_CHARS
            || !client_id.chars().all(|c| (' '..='~').contains(&c))
        {
            problems.push(Problem::new(
                "admin.console.client_id",
                format!(
                    "must be 1 to {MAX_CLIENT_ID_CHARS} printable ASCII characters (the client \
                     id registered with the identity provider)"
                ),
            ));
        }
    }

    /// Checks `[admin.scim]`: a token file, and an issuer that names a configured one.
    pub fn validate_scim(
        &self,
        issuers: &BTreeMap<String, IssuerConfig>,
        problems: &mut Vec<Problem>,
    ) {
        let Some(scim) = &self.scim else {
            return;
        };
        if scim
            .token_file
            .as_ref()
            .is_none_or(|path| path.as_os_str().is_empty())
        {
            problems.push(Problem::new(
                "admin.scim.token_file",
                "required: the file holding the bearer token the identity provider sends to \
                 /scim/v2 (create one with `openssl rand -hex 32 > scim-token`)",
            ));
        }
        if let Err(problem) = self.scim_issuer(issuers) {
            problems.push(problem);
        }
    }

    /// The issuer whose subjects SCIM users carry, by name: `None` when SCIM is off.
    ///
    /// # Errors
    /// When `[admin.scim] issuer` names no configured issuer, or names none while several are
    /// configured.
    pub fn scim_issuer<'a>(
        &self,
        issuers: &'a BTreeMap<String, IssuerConfig>,
    ) -> Result<Option<(&'a str, &'a IssuerConfig)>, Problem> {
        let Some(scim) = &self.scim else {
            return Ok(None);
        };
        let names = || issuers.keys().cloned().collect::<Vec<_>>().join(", ");
        match &scim.issuer {
            Some(name) => match issuers.get_key_value(name) {
                Some((name, issuer)) => Ok(Some((name.as_str(), issuer))),
                None => Err(Problem::new(
                    "admin.scim.issuer",
                    format!(
                        "no issuer {name:?} is configured; name one of [issuers]: {}",
                        names()
                    ),
                )),
            },
            None if issuers.len() == 1 => Ok(issuers
                .iter()
                .next()
                .map(|(name, issuer)| (name.as_str(), issuer))),
            None => Err(Problem::new(
                "admin.scim.issuer",
                format!(
                    "name the issuer whose tokens carry the provisioned users' subjects, one of \
                     [issuers]: {}",
                    names()
                ),
            )),
        }
    }

    /// Checks that the console's issuer names a configured issuer.
    pub fn validate_console(
        &self,
        issuers: &BTreeMap<String, IssuerConfig>,
        problems: &mut Vec<Problem>,
    ) {
        if let Err(problem) = self.console_issuer(issuers) {
            problems.push(problem);
        }
    }

    /// The issuer the console signs in with, by name: `None` when the console is off, or when
    /// no issuer is named and there is not exactly one to default to.
    ///
    /// # Errors
    /// When `[admin.console] issuer` names no configured issuer.
    pub fn console_issuer<'a>(
        &self,
        issuers: &'a BTreeMap<String, IssuerConfig>,
    ) -> Result<Option<(&'a str, &'a IssuerConfig)>, Problem> {
        if !self.console.enabled {
            return Ok(None);
        }
        match &self.console.issuer {
            Some(name) => match issuers.get_key_value(name) {
                Some((name, issuer)) => Ok(Some((name.as_str(), issuer))),
                None => Err(Problem::new(
                    "admin.console.issuer",
                    format!(
                        "no issuer {name:?} is configured; name one of [issuers]: {}",
                        issuers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
            },
            None if issuers.len() == 1 => Ok(issuers
                .iter()
                .next()
                .map(|(name, issuer)| (name.as_str(), issuer))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;
    use crate::JwksSource;

    fn issuers(names: &[&str]) -> BTreeMap<String, IssuerConfig> {
        names
            .iter()
            .map(|&name| {
                let url = format!("https://{name}.example.com");
                (
                    name.to_owned(),
                    IssuerConfig::new(url, "postern", JwksSource::Discovery),
                )
            })
            .collect()
    }

    fn admin(console: &str) -> AdminConfig {
        toml::from_str(&format!(
            "address = \"127.0.0.1:6480\"\n[console]\n{console}"
        ))
        .unwrap()
    }

    #[test]
    fn the_console_defaults_to_the_only_issuer() {
        let config: AdminConfig = toml::from_str("address = \"127.0.0.1:6480\"").unwrap();
        assert_eq!(config.console, ConsoleConfig::default());
        assert_eq!(config.console.client_id, "postern-console");
        let one = issuers(&["corp"]);
        assert_eq!(config.console_issuer(&one).unwrap().unwrap().0, "corp");
        let two = issuers(&["corp", "ci"]);
        assert!(config.console_issuer(&two).unwrap().is_none());
        let named = admin("issuer = \"ci\"\nclient_id = \"console\"");
        assert_eq!(named.console_issuer(&two).unwrap().unwrap().0, "ci");
        let off = admin("enabled = false");
        assert!(off.console_issuer(&one).unwrap().is_none());
    }

    #[test]
    fn console_settings_are_checked() {
        let unknown = admin("issuer = \"nope\"");
        let mut problems = Vec::new();
        unknown.validate_console(&issuers(&["corp", "ci"]), &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "admin.console.issuer");
        assert!(
            problems[0].message.contains("ci, corp"),
            "{}",
            problems[0].message
        );

        for bad in [
            "client_id = \"\"",
            "client_id = \"café\"",
            "client_id = \"a\\nb\"",
        ] {
            let mut problems = Vec::new();
            admin(bad).validate(&mut problems);
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].key, "admin.console.client_id");
        }
        assert!(
            toml::from_str::<AdminConfig>(
                "address = \"127.0.0.1:6480\"\n[console]\nclient = \"x\""
            )
            .is_err()
        );
    }

    fn scim(section: &str) -> AdminConfig {
        toml::from_str(&format!("address = \"127.0.0.1:6480\"\n[scim]\n{section}")).unwrap()
    }

    fn scim_problems(config: &AdminConfig, names: &[&str]) -> Vec<Problem> {
        let mut problems = Vec::new();
        config.validate_scim(&issuers(names), &mut problems);
        problems
    }

    #[test]
    fn scim_settings_default_and_are_checked() {
        let off: AdminConfig = toml::from_str("address = \"127.0.0.1:6480\"").unwrap();
        assert!(off.scim.is_none());
        assert!(scim_problems(&off, &["corp", "ci"]).is_empty());

        let one = scim("token_file = \"/run/scim-token\"");
        let settings = one.scim.as_ref().unwrap();
        assert_eq!(settings.subject_attribute, ScimSubjectAttribute::UserName);
        assert!(scim_problems(&one, &["corp"]).is_empty());
        assert_eq!(
            one.scim_issuer(&issuers(&["corp"])).unwrap().unwrap().0,
            "corp"
        );

        let named = scim(
            "token_file = \"/run/scim-token\"\nissuer = \"ci\"\nsubject_attribute = \"externalId\"",
        );
        assert!(scim_problems(&named, &["corp", "ci"]).is_empty());
        assert_eq!(
            named.scim.as_ref().unwrap().subject_attribute,
            ScimSubjectAttribute::ExternalId
        );
        assert_eq!(
            scim("token_file = \"t\"\nsubject_attribute = \"id\"")
                .scim
                .unwrap()
                .subject_attribute,
            ScimSubjectAttribute::Id
        );

        let cases = [
            (
                "issuer = \"corp\"",
                &["corp"][..],
                "admin.scim.token_file",
                "required",
            ),
            (
                "token_file = \"\"",
                &["corp"][..],
                "admin.scim.token_file",
                "required",
            ),
            (
                "token_file = \"t\"",
                &["corp", "ci"][..],
                "admin.scim.issuer",
                "ci, corp",
            ),
            (
                "token_file = \"t\"\nissuer = \"nope\"",
                &["corp"][..],
                "admin.scim.issuer",
                "corp",
            ),
        ];
        for (section, names, key, needle) in cases {
            let problems = scim_problems(&scim(section), names);
            assert_eq!(problems.len(), 1, "{section}: {problems:?}");
            assert_eq!(problems[0].key, key, "{section}");
            assert!(
                problems[0].message.contains(needle),
                "{section}: {}",
                problems[0].message
            );
        }
        for bad in [
            "token_file = \"t\"\nsubject_attribute = \"email\"",
            "token = \"x\"",
        ] {
            assert!(
                toml::from_str::<AdminConfig>(&format!(
                    "address = \"127.0.0.1:6480\"\n[scim]\n{bad}"
                ))
                .is_err(),
                "{bad}"
            );
        }
    }
}
