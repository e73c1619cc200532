//! A target: the database a client names as `dbname`, how Postern reaches it, and who may assume
//! which role there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ClientAuthMethod, IssuerConfig, PoolConfig, Problem, SessionLimits};

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
    /// mapped roles in `role_login` mode, creates and drops the login roles of `ephemeral_user`
    /// mode (it needs `CREATEROLE` and, from PostgreSQL 16, `ADMIN OPTION` on the mapped roles),
    /// installs the `postern` schema, ends backends.
    pub admin: UpstreamLogin,
    /// In `set_role` mode: the login role that is a NOINHERIT member of every mapped role.
    #[serde(default)]
    pub session_login: Option<UpstreamLogin>,
    /// In `role_login` mode: per role, where its password comes from. A role not listed here gets
    /// a password that Postern sets through the admin login and keeps in memory.
    #[serde(default)]
    pub role_passwords: BTreeMap<String, SecretSource>,
    /// In `ephemeral_user` mode: how the per-identity login roles are named and what happens to
    /// objects they own when they are dropped. Defaults apply when absent.
    #[serde(default)]
    pub ephemeral: Option<EphemeralConfig>,
    /// TLS towards the database.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// How upstream connections are kept and shared between client sessions.
    #[serde(default)]
    pub pool: PoolConfig,
    /// How long client sessions may last and idle, and how many one identity may hold.
    #[serde(default)]
    pub sessions: SessionLimits,
    /// Which identities may assume which roles. First match does not matter: the union of every
    /// rule matching the identity is what it may assume.
    #[serde(default)]
    pub roles: Vec<RoleRule>,
    /// How this target's clients present their token; `[listen] client_auth` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuthMethod>,
    /// For `oauthbearer`: the issuer clients are sent to (a name under `[issuers]`);
    /// `[listen] oauth_issuer` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_issuer: Option<String>,
    /// For `oauthbearer`: the scope clients ask for; `[listen] oauth_scope` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_scope: Option<String>,
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
    /// A login role per identity and mapped role, created for its sessions (`VALID UNTIL` the
    /// token's expiry, granted the mapped role) and dropped after the last one ends.
    EphemeralUser,
}

/// `[targets.X.ephemeral]`: the login roles of `ephemeral_user` mode.
///
/// Their passwords are random and live only in Postern's memory, but limit where they may log in
/// from anyway, so that they are useless away from Postern. In `pg_hba.conf`, before the
/// general lines (`10.0.0.5` being Postern's address, `pst_` the prefix):
///
/// ```text
/// # PostgreSQL 16 and later: a regular expression on the role name.
/// host  all  /^pst_     10.0.0.5/32  scram-sha-256
/// host  all  /^pst_     all          reject
/// # PostgreSQL 15 and earlier: every ephemeral role is a member of a mapped role.
/// host  all  +reader    10.0.0.5/32  scram-sha-256
/// host  all  +reader    all          reject
/// ```
///
/// (One pair of lines per mapped role. `+reader` matches every member of `reader`, so these
/// lines hold any other login role that is a member of it to Postern's address as well.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EphemeralConfig {
    /// What happens to objects an ephemeral role owns when it is dropped.
    #[serde(default)]
    pub on_owned_objects: OnOwnedObjects,
    /// Start of every ephemeral role's name. Postern sweeps roles with this prefix (and its
    /// marker comment) at start, so Postern instances or targets sharing a database cluster need
    /// different prefixes.
    #[serde(default = "default_name_prefix")]
    pub name_prefix: String,
}

/// The longest `name_prefix`: what is left of PostgreSQL's 63-byte names must still tell
/// identities apart to a reader.
pub const MAX_NAME_PREFIX_BYTES: usize = 20;

fn default_name_prefix() -> String {
    "pst_".to_owned()
}

impl Default for EphemeralConfig {
    fn default() -> Self {
        Self {
            on_owned_objects: OnOwnedObjects::default(),
            name_prefix: default_name_prefix(),
        }
    }
}

/// What happens to the objects an ephemeral role owns (tables it created, privileges granted to
/// it) when it is dropped: they must not keep it alive.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnOwnedObjects {
    /// `DROP OWNED BY`: what the session created goes with it.
    #[default]
    Drop,
    /// `REASSIGN OWNED BY … TO` the admin login, then `DROP OWNED BY` (for the privileges).
    Reassign,
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
    /// Identity must come from one of these issuers (by configured name; client certificates'
    /// identities by `[listen.tls.client_identity] issuer_name`).
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
        certificate_issuer: Option<&str>,
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
        match (&self.ephemeral, self.mode) {
            (Some(ephemeral), UpstreamMode::EphemeralUser) => {
                ephemeral.validate(&format!("{key}.ephemeral"), problems);
            }
            (Some(_), _) => problems.push(Problem::new(
                format!("{key}.ephemeral"),
                "ephemeral settings are given but mode is not \"ephemeral_user\"",
            )),
            (None, _) => {}
        }
        if self.tls.mode == UpstreamTlsMode::Disable && (self.tls.ca_file.is_some()) {
            problems.push(Problem::new(
                format!("{key}.tls.ca_file"),
                "a CA file is set but tls.mode is disable; set mode = \"verify_full\"",
            ));
        }
        self.pool.validate(&format!("{key}.pool"), problems);
        if self.pool.mode == crate::PoolMode::Transaction
            && self.mode == UpstreamMode::EphemeralUser
        {
            problems.push(Problem::new(
                format!("{key}.pool.mode"),
                "\"transaction\" needs a shared upstream login, and ephemeral_user targets give \
                 each identity its own login role: use \"session\" or \"none\"",
            ));
        }
        self.sessions.validate(&format!("{key}.sessions"), problems);
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
                if !issuers.contains_key(issuer) && certificate_issuer != Some(issuer.as_str()) {
                    problems.push(Problem::new(
                        format!("{rule_key}.issuers"),
                        format!("no issuer named '{issuer}' is configured"),
                    ));
                }
            }
        }
    }
}

impl EphemeralConfig {
    fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        let prefix = &self.name_prefix;
        let problem = if prefix.is_empty() {
            Some("must not be empty".to_owned())
        } else if prefix.len() > MAX_NAME_PREFIX_BYTES {
            Some(format!("must be at most {MAX_NAME_PREFIX_BYTES} bytes"))
        } else if !prefix.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            Some(
                "must start with a lower-case letter or '_' and hold only lower-case letters, \
                 digits and '_' (the start of an unquoted identifier)"
                    .to_owned(),
            )
        } else if prefix.starts_with("pg_") {
            // https://www.postgresql.org/docs/current/sql-createrole.html
            Some("must not start with \"pg_\": PostgreSQL reserves those role names".to_owned())
        } else {
            None
        };
        if let Some(message) = problem {
            problems.push(Problem::new(format!("{key}.name_prefix"), message));
        }
    }
}

/// Ephemeral roles are cluster-wide and each target keeps its own count of their sessions, so two
/// `ephemeral_user` targets on the same server must not share a name prefix: one would drop the
/// other's roles (at its last session's end, or in its start-up sweep).
pub(crate) fn validate_ephemeral_prefixes(
    targets: &BTreeMap<String, TargetConfig>,
    problems: &mut Vec<Problem>,
) {
    let mut seen: BTreeMap<(&str, u16, String), &str> = BTreeMap::new();
    for (name, target) in targets {
        if target.mode != UpstreamMode::EphemeralUser {
            continue;
        }
        let prefix = target
            .ephemeral
            .as_ref()
            .map_or_else(default_name_prefix, |e| e.name_prefix.clone());
        match seen.entry((target.host.as_str(), target.port, prefix)) {
            std::collections::btree_map::Entry::Occupied(other) => {
                problems.push(Problem::new(
                    format!("targets.{name}.ephemeral.name_prefix"),
                    format!(
                        "target '{}' on the same server uses the same prefix {:?}; give each \
                         ephemeral_user target on a server its own name_prefix",
                        other.get(),
                        other.key().2
                    ),
                ));
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(name);
            }
        }
    }
}
