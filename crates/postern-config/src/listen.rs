//! The client-facing listener: address, TLS (`tls.rs`, with client certificates), the plaintext
//! exception for loopback, and how clients present their token ([`ClientAuthMethod`], which a
//! target may override; resolved per target by [`Config::client_auth`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Config, IssuerConfig, Problem, TargetConfig};

pub(crate) mod tls;

pub use tls::{
    ClientCertificates, ClientIdentityConfig, DEFAULT_CERTIFICATE_ISSUER_NAME, TlsFiles,
};

/// The scope advertised to OAUTHBEARER clients when the configuration names none.
pub const DEFAULT_OAUTH_SCOPE: &str = "openid";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address the Postgres-protocol listener binds.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Certificate and key offered to clients that send SSLRequest, and the client certificates
    /// accepted in place of a token.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Accept tokens over plaintext from loopback clients. Off by default: a token on the wire in
    /// clear is a credential anyone on the path can replay.
    #[serde(default)]
    pub allow_plaintext_loopback: bool,
    /// Most client connections served at once; further ones are refused with 53300.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take from TCP accept to a completed authentication.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How clients present their token, unless a target says otherwise (`client_auth` in
    /// `[targets.X]`). PostgreSQL's server picks the method before it knows what the client can
    /// do, and so must Postern: see [`ClientAuthMethod`] for the trade-off.
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// For `oauthbearer`: the issuer whose discovery document clients are sent to, by its name
    /// under `[issuers]`. Default: the only issuer, when exactly one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_issuer: Option<String>,
    /// For `oauthbearer`: the scope clients ask the issuer for (space-separated, RFC 6749
    /// section 3.3). Default: `openid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_scope: Option<String>,
    /// Threads that serve client sessions. Default: half the machine's cores, at least one
    /// ([`ListenConfig::serving_threads`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
}

/// How a client presents its identity token in the startup exchange.
///
/// The server sends one authentication request, chosen from the startup packet alone: nothing
/// in it says whether the client understands OAUTHBEARER (libpq 18 still asks for protocol 3.0),
/// so the choice is configuration, per target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// AuthenticationCleartextPassword: the token travels as the password. Every PostgreSQL
    /// client and driver can do this; the user fetches the token first (`postern login`, a CI
    /// job's identity) and passes it as `PGPASSWORD`.
    #[default]
    #[serde(rename = "password")]
    Password,
    /// AuthenticationSASL offering only `OAUTHBEARER` (RFC 7628), PostgreSQL 18's OAuth: a
    /// libpq 18 client given `oauth_issuer` and `oauth_client_id` asks Postern where to log in,
    /// runs the device flow itself and presents the bearer token. Clients without OAUTHBEARER
    /// (libpq before 18, most drivers) cannot log in to such a target at all.
    #[serde(rename = "oauthbearer")]
    OAuthBearer,
}

/// How one target's clients authenticate, with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    Password,
    OAuthBearer(OAuthBearerSettings),
}

/// What an OAUTHBEARER target tells a client that has no valid token (RFC 7628 section 3.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthBearerSettings {
    /// The issuer's name under `[issuers]`.
    pub issuer_name: String,
    /// Its issuer identifier (the `iss` of its tokens): what clients must be given as
    /// `oauth_issuer`, since libpq refuses a discovery document of any other issuer.
    pub issuer: String,
    /// The scope clients ask for.
    pub scope: String,
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6432))
}
fn default_max_connections() -> usize {
    10_000
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            address: default_address(),
            tls: None,
            allow_plaintext_loopback: false,
            max_connections: default_max_connections(),
            handshake_timeout: default_handshake_timeout(),
            client_auth: ClientAuthMethod::default(),
            oauth_issuer: None,
            oauth_scope: None,
            worker_threads: None,
        }
    }
}

/// Most worker threads a configuration may ask for: far past any machine Postern runs on, and
/// low enough that a typo cannot exhaust the process's threads.
pub const MAX_WORKER_THREADS: usize = 1024;

impl ListenConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.tls.is_none() && !self.allow_plaintext_loopback {
            problems.push(Problem::new(
                "listen.tls",
                "no TLS certificate is configured and plaintext is not allowed, so no client could \
                 log in: set listen.tls, or listen.allow_plaintext_loopback = true for local use",
            ));
        }
        if self.max_connections == 0 {
            problems.push(Problem::new("listen.max_connections", "must be at least 1"));
        }
        if let Some(threads) = self.worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&threads)
        {
            problems.push(Problem::new(
                "listen.worker_threads",
                format!("must be between 1 and {MAX_WORKER_THREADS}"),
            ));
        }
    }

    /// Threads that serve client sessions: `worker_threads` if set, otherwise half of
    /// `available_cores`, at least one.
    ///
    /// Half, because Postern usually shares its machine with the busiest parts of its own
    /// workload: the database, or the application and its driver. Measured with `bench/run` on two
    /// cores shared with PostgreSQL and pgbench, one thread served more transactions than two and
    /// spent about a quarter less CPU on each: the second thread mostly woke up to steal work the
    /// first would have done a moment later. Odyssey's `workers "auto"` makes the same choice.
    #[must_use]
    pub fn serving_threads(&self, available_cores: usize) -> usize {
        self.worker_threads
            .unwrap_or(available_cores / 2)
            .clamp(1, MAX_WORKER_THREADS)
    }
}

impl Config {
    /// How clients of `target` authenticate: its own `client_auth`, `oauth_issuer` and
    /// `oauth_scope` where set, `[listen]`'s otherwise.
    ///
    /// # Errors
    /// Every problem with those settings, located at the key that holds the faulty value.
    pub fn client_auth(&self, target: &str) -> Result<ClientAuth, Vec<Problem>> {
        let key = format!("targets.{target}");
        let Some(config) = self.targets.get(target) else {
            return Err(vec![Problem::new(key, "no such target")]);
        };
        resolve(&self.listen, &key, config, &self.issuers)
    }
}

fn resolve(
    listen: &ListenConfig,
    key: &str,
    target: &TargetConfig,
    issuers: &BTreeMap<String, IssuerConfig>,
) -> Result<ClientAuth, Vec<Problem>> {
    let mut problems = Vec::new();
    let method = target.client_auth.unwrap_or(listen.client_auth);
    if method == ClientAuthMethod::Password {
        for (name, set) in [
            ("oauth_issuer", target.oauth_issuer.is_some()),
            ("oauth_scope", target.oauth_scope.is_some()),
        ] {
            if set {
                problems.push(Problem::new(
                    format!("{key}.{name}"),
                    "is set but this target's client_auth is \"password\"; set client_auth = \
                     \"oauthbearer\" or remove it",
                ));
            }
        }
        return if problems.is_empty() {
            Ok(ClientAuth::Password)
        } else {
            Err(problems)
        };
    }
    let (issuer_key, issuer_name) = match (&target.oauth_issuer, &listen.oauth_issuer) {
        (Some(name), _) => (format!("{key}.oauth_issuer"), Some(name.clone())),
        (None, Some(name)) => ("listen.oauth_issuer".to_owned(), Some(name.clone())),
        (None, None) => (
            format!("{key}.client_auth"),
            (issuers.len() == 1)
                .then(|| issuers.keys().next().cloned())
                .flatten(),
        ),
    };
    let names = || issuers.keys().cloned().collect::<Vec<_>>().join(", ");
    let issuer = match issuer_name {
        None => {
            problems.push(Problem::new(
                issuer_key,
                format!(
                    "client_auth = \"oauthbearer\" needs the issuer clients are sent to: set \
                     oauth_issuer to one of [issuers]: {}",
                    names()
                ),
            ));
            None
        }
        Some(name) => match issuers.get(&name) {
            None => {
                problems.push(Problem::new(
                    issuer_key,
                    format!(
                        "no issuer {name:?} is configured; name one of [issuers]: {}",
                        names()
                    ),
                ));
                None
            }
            Some(config) => {
                if let Err(why) = check_issuer_url(&config.issuer) {
                    problems.push(Problem::new(format!("issuers.{name}.issuer"), why));
                }
                Some((name, config.issuer.clone()))
            }
        },
    };
    let (scope_key, scope) = match (&target.oauth_scope, &listen.oauth_scope) {
        (Some(scope), _) => (format!("{key}.oauth_scope"), scope.clone()),
        (None, Some(scope)) => ("listen.oauth_scope".to_owned(), scope.clone()),
        (None, None) => (
            "listen.oauth_scope".to_owned(),
            DEFAULT_OAUTH_SCOPE.to_owned(),
        ),
    };
    if !is_scope(&scope) {
        problems.push(Problem::new(
            scope_key,
            "must be scope tokens separated by single spaces (RFC 6749 section 3.3: printable \
             ASCII without '\"' or '\\'), e.g. \"openid\" or \"openid postgres\"",
        ));
    }
    match issuer {
        Some((issuer_name, issuer)) if problems.is_empty() => {
            Ok(ClientAuth::OAuthBearer(OAuthBearerSettings {
                issuer_name,
                issuer,
                scope,
            }))
        }
        _ => Err(problems),
    }
}

/// An issuer identifier libpq 18 accepts as `oauth_issuer`: an `https` URL (`http` only with
/// `PGOAUTHDEBUG=UNSAFE` on the client) without query or fragment (RFC 8414 section 2).
fn check_issuer_url(issuer: &str) -> Result<(), String> {
    let lower = issuer.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(
            "OAUTHBEARER clients are sent to this issuer's discovery document, so it must be an \
             https URL"
                .to_owned(),
        );
    }
    if issuer.contains(['?', '#']) {
        return Err(
            "an issuer identifier has no query or fragment (RFC 8414 section 2), and libpq \
             refuses one"
                .to_owned(),
        );
    }
    Ok(())
}

/// RFC 6749 section 3.3: `scope-token *( SP scope-token )`, each token
/// `1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.split(' ').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        })
}

/// Checks every target's client authentication (and `[listen]`'s own settings, used or not).
pub(crate) fn validate_client_auth(config: &Config, problems: &mut Vec<Problem>) {
    if let Some(name) = &config.listen.oauth_issuer
        && !config.issuers.contains_key(name)
    {
        problems.push(Problem::new(
            "listen.oauth_issuer",
            format!(
                "no issuer {name:?} is configured; name one of [issuers]: {}",
                config
                    .issuers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some(scope) = &config.listen.oauth_scope
        && !is_scope(scope)
    {
        problems.push(Problem::new(
            "listen.oauth_scope",
            "must be scope tokens separated by single spaces (RFC 6749 section 3.3)",
        ));
    }
    for name in config.targets.keys() {
        if let Err(found) = config.client_auth(name) {
            for problem in found {
                if !problems.contains(&problem) && !problem.key.starts_with("listen.") {
                    problems.push(problem);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    /// A configuration with issuers `corp` (and `ci` when `two`), targets `app` and `bi`, and
    /// `extra` appended (more keys for `[listen]` first, then whole tables).
    fn config(two: bool, listen: &str, extra: &str) -> Config {
        let ci = if two {
            "[issuers.ci]\nissuer = \"https://ci.example.com\"\naudience = [\"postern\"]\n"
        } else {
            ""
        };
        let text = format!(
            r#"
[listen]
allow_plaintext_loopback = true
{listen}

[issuers.corp]
issuer = "https://login.example.com/realms/corp"
audience = ["postern"]
{ci}
[targets.app]
host = "db"
database = "app"
admin = {{ user = "postern_admin" }}
roles = [{{ roles = ["reader"], groups = ["analysts"] }}]

[targets.bi]
host = "db"
database = "bi"
admin = {{ user = "postern_admin" }}
roles = [{{ roles = ["reader"], groups = ["analysts"] }}]
{extra}
"#
        );
        Config::from_toml(&text, "test").unwrap()
    }

    fn problems(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(crate::ConfigError::Invalid(problems)) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => panic!("{other}"),
        }
    }

    fn corp(scope: &str) -> ClientAuth {
        ClientAuth::OAuthBearer(OAuthBearerSettings {
            issuer_name: "corp".to_owned(),
            issuer: "https://login.example.com/realms/corp".to_owned(),
            scope: scope.to_owned(),
        })
    }

    #[test]
    fn password_is_the_default() {
        let config = self::config(true, "", "");
        assert!(problems(&config).is_empty());
        assert_eq!(config.client_auth("app").unwrap(), ClientAuth::Password);
        assert!(config.client_auth("nope").is_err());
    }

    #[test]
    fn oauthbearer_for_the_listener_or_one_target() {
        // The only issuer, the default scope, every target.
        let config = self::config(false, "client_auth = \"oauthbearer\"", "");
        assert!(problems(&config).is_empty(), "{:?}", problems(&config));
        assert_eq!(config.client_auth("app").unwrap(), corp("openid"));
        assert_eq!(config.client_auth("bi").unwrap(), corp("openid"));

        // One target only, with its own scope, the issuer named on the listener.
        let mut config = self::config(true, "oauth_issuer = \"corp\"", "");
        let bi = config.targets.get_mut("bi").unwrap();
        bi.client_auth = Some(ClientAuthMethod::OAuthBearer);
        bi.oauth_scope = Some("openid postgres".to_owned());
        assert!(problems(&config).is_empty(), "{:?}", problems(&config));
        assert_eq!(config.client_auth("app").unwrap(), ClientAuth::Password);
        assert_eq!(config.client_auth("bi").unwrap(), corp("openid postgres"));

        // A listener for OAUTHBEARER with one target kept on passwords.
        let mut config = self::config(false, "client_auth = \"oauthbearer\"", "");
        config.targets.get_mut("app").unwrap().client_auth = Some(ClientAuthMethod::Password);
        assert!(problems(&config).is_empty(), "{:?}", problems(&config));
        assert_eq!(config.client_auth("app").unwrap(), ClientAuth::Password);
        assert_eq!(config.client_auth("bi").unwrap(), corp("openid"));
    }

    #[test]
    fn oauthbearer_settings_are_checked() {
        // Two issuers and none named: which one would clients be sent to?
        let config = self::config(true, "client_auth = \"oauthbearer\"", "");
        let found = problems(&config);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("targets.app.client_auth: ") && found[0].contains("ci, corp"),
            "{found:?}"
        );

        // An unknown issuer, a bad scope: reported once, at the listener.
        let config = self::config(
            false,
            "client_auth = \"oauthbearer\"\noauth_issuer = \"okta\"\noauth_scope = \"openid  x\"",
            "",
        );
        let found = problems(&config);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("listen.oauth_issuer: no issuer \"okta\""));
        assert!(found[1].starts_with("listen.oauth_scope: "));

        // OAuth settings on a password target; a scope with a quote.
        let mut config = self::config(false, "", "");
        let app = config.targets.get_mut("app").unwrap();
        app.oauth_issuer = Some("corp".to_owned());
        let bi = config.targets.get_mut("bi").unwrap();
        bi.client_auth = Some(ClientAuthMethod::OAuthBearer);
        bi.oauth_scope = Some("openid \"all\"".to_owned());
        let found = problems(&config);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("targets.app.oauth_issuer: is set but"));
        assert!(found[1].starts_with("targets.bi.oauth_scope: "));

        // An issuer libpq cannot be sent to.
        let mut config = self::config(false, "client_auth = \"oauthbearer\"", "");
        config.issuers.get_mut("corp").unwrap().issuer = "corp-idp".to_owned();
        let found = problems(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("issuers.corp.issuer: "), "{found:?}");

        assert!(toml::from_str::<ListenConfig>("client_auth = \"scram\"").is_err());
    }
}
