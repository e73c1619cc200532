//! The listener's TLS: the certificate Postern presents, and the client certificates it accepts
//! in place of a token — X.509-SVIDs, verified against a trust bundle and named by their SPIFFE
//! ID (`[listen.tls] client_ca`, `client_certificates`, `[listen.tls.client_identity]`).
//!
//! Reading the files and verifying certificates is the proxy's business; turning a verified
//! certificate into an identity is `postern-identity`'s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Config, POSTERN_ISSUER_NAME, Problem, check_trust_domain};

/// The issuer name identities from client certificates carry when the configuration names
/// none: what audit events, role rules' `issuers` and Cedar's `principal.issuer_name` see.
pub const DEFAULT_CERTIFICATE_ISSUER_NAME: &str = "spiffe-x509";

/// PEM files for the listener's TLS, and the client certificates it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The trust bundle (PEM, one or more CA certificates) client certificates must chain to.
    /// When set, Postern asks every TLS client for a certificate, and a client that presents
    /// one is logged in by it (no token asked for); when unset, no client certificate is asked
    /// for or accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Whether a TLS client must present a certificate. Default `optional` when `client_ca` is
    /// set: a client without one logs in with a token as `client_auth` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<ClientCertificates>,
    /// Who a client certificate names. Required with `client_ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<ClientIdentityConfig>,
}

/// Whether TLS clients must present a certificate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificates {
    /// Asked for; a client without one logs in with a token.
    #[default]
    Optional,
    /// A TLS client without a certificate fails the TLS handshake; plaintext cannot be allowed
    /// (it could carry no certificate).
    Required,
}

/// How a verified client certificate becomes an identity. Client certificates are X.509-SVIDs
/// (SPIFFE): the one URI in the subjectAltName is the SPIFFE ID, which becomes the subject of a
/// `Service` identity whose workload Cedar policies see as `principal.workload` (`kind`
/// `"spiffe"`, `trust_domain`, `path`), as for a JWT-SVID from an issuer with
/// `preset = "spiffe"`.
/// <https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md>
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientIdentityConfig {
    /// The SPIFFE trust domain every client certificate's SPIFFE ID must be in, `example.org`.
    /// The trust bundle says who may sign; this says what they may sign for.
    pub trust_domain: String,
    /// The name these identities carry as their issuer's, like a key under `[issuers]`
    /// (audit events, role rules' `issuers`, Cedar's `principal.issuer_name`). Their `issuer`
    /// is `spiffe://<trust_domain>`.
    #[serde(default = "default_issuer_name")]
    pub issuer_name: String,
}

fn default_issuer_name() -> String {
    DEFAULT_CERTIFICATE_ISSUER_NAME.to_owned()
}

impl TlsFiles {
    /// A certificate and key, with no client certificates asked for.
    #[must_use]
    pub fn new(certificate: PathBuf, private_key: PathBuf) -> Self {
        Self {
            certificate,
            private_key,
            client_ca: None,
            client_certificates: None,
            client_identity: None,
        }
    }

    /// Whether TLS clients must present a certificate (`false` when none is asked for).
    #[must_use]
    pub fn client_certificate_required(&self) -> bool {
        self.client_ca.is_some()
            && self.client_certificates.unwrap_or_default() == ClientCertificates::Required
    }
}

impl ClientIdentityConfig {
    /// The `issuer` of the identities: `spiffe://<trust_domain>`, the trust domain's own SPIFFE
    /// ID, so a revocation by issuer and subject reads as SPIFFE writes it.
    #[must_use]
    pub fn issuer(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }
}

/// The problems of `[listen.tls]`'s client certificate settings.
pub(crate) fn validate(config: &Config, problems: &mut Vec<Problem>) {
    let Some(tls) = &config.listen.tls else {
        return;
    };
    let Some(_) = &tls.client_ca else {
        for (name, set) in [
            ("client_certificates", tls.client_certificates.is_some()),
            ("client_identity", tls.client_identity.is_some()),
        ] {
            if set {
                problems.push(Problem::new(
                    format!("listen.tls.{name}"),
                    "is set but listen.tls.client_ca is not: set client_ca to the trust bundle \
                     (PEM) client certificates must chain to",
                ));
            }
        }
        return;
    };
    if tls.client_certificate_required() && config.listen.allow_plaintext_loopback {
        problems.push(Problem::new(
            "listen.allow_plaintext_loopback",
            "is true but listen.tls.client_certificates is \"required\": a plaintext connection \
             carries no certificate; remove one of them",
        ));
    }
    let Some(identity) = &tls.client_identity else {
        problems.push(Problem::new(
            "listen.tls.client_identity",
            "client_ca is set, so client certificates are accepted, but nothing says whom they \
             may name: add [listen.tls.client_identity] with trust_domain = \"<the SPIFFE trust \
             domain of your workloads>\"",
        ));
        return;
    };
    let key = "listen.tls.client_identity";
    if let Err(why) = check_trust_domain(&identity.trust_domain) {
        problems.push(Problem::new(
            format!("{key}.trust_domain"),
            format!("trust domain {why} (SPIFFE ID section 2.1), e.g. \"example.org\""),
        ));
    }
    let name = &identity.issuer_name;
    if name.is_empty() {
        problems.push(Problem::new(
            format!("{key}.issuer_name"),
            "must not be empty",
        ));
    } else if config.issuers.contains_key(name) || name == POSTERN_ISSUER_NAME {
        problems.push(Problem::new(
            format!("{key}.issuer_name"),
            format!(
                "\"{name}\" is already the name of a token issuer: role rules and policies \
                 could not tell certificate identities from its tokens; choose another name"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use crate::{Config, ConfigError};

    /// A configuration with `listen` in `[listen]` and `tls` as the `[listen.tls]` table's body
    /// (and further tables), whose target's role rule names the default certificate issuer.
    fn config(listen: &str, tls: &str) -> Config {
        let text = format!(
            r#"
[listen]
{listen}

[listen.tls]
certificate = "/etc/postern/tls.crt"
private_key = "/etc/postern/tls.key"
{tls}

[issuers.corp]
issuer = "https://login.example.com"
audience = ["postern"]

[targets.app]
host = "db"
database = "app"
admin = {{ user = "postern_admin" }}
roles = [{{ roles = ["reader"], subjects = ["spiffe://example.org/api"], issuers = ["spiffe-x509"] }}]
"#
        );
        Config::from_toml(&text, "test").unwrap()
    }

    fn problems(listen: &str, tls: &str) -> Vec<String> {
        match config(listen, tls).validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => panic!("{other}"),
        }
    }

    const CA: &str = "client_ca = \"/etc/postern/spiffe-bundle.pem\"\n";

    #[test]
    fn client_certificates_with_a_trust_domain() {
        let tls = format!("{CA}[listen.tls.client_identity]\ntrust_domain = \"example.org\"\n");
        assert!(problems("", &tls).is_empty(), "{:?}", problems("", &tls));
        let optional = config("", &tls);
        let files = optional.listen.tls.as_ref().unwrap();
        assert!(!files.client_certificate_required());
        let identity = optional.certificate_identity().unwrap();
        assert_eq!(identity.issuer_name, super::DEFAULT_CERTIFICATE_ISSUER_NAME);
        assert_eq!(identity.issuer(), "spiffe://example.org");

        let required = format!("client_certificates = \"required\"\n{tls}");
        assert!(problems("", &required).is_empty());
        let required = config("", &required);
        assert!(required.listen.tls.unwrap().client_certificate_required());

        // Without a trust bundle nothing is asked for, whatever else is set.
        let unset = config(
            "",
            "client_certificates = \"required\"\nclient_identity = { trust_domain = \"example.org\" }",
        );
        assert!(unset.certificate_identity().is_none());
        assert!(!unset.listen.tls.unwrap().client_certificate_required());
    }

    #[test]
    fn client_certificate_settings_are_checked() {
        // No trust domain (so no certificate identities, whose issuer a role rule names).
        let found = problems("", CA);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("listen.tls.client_identity: client_ca is set"),
            "{found:?}"
        );
        assert!(
            found[1].contains("no issuer named 'spiffe-x509'"),
            "{found:?}"
        );

        // Settings without a trust bundle.
        let found = problems(
            "",
            "client_certificates = \"optional\"\n[listen.tls.client_identity]\ntrust_domain = \"example.org\"\n",
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("listen.tls.client_certificates: is set but"));
        assert!(found[1].starts_with("listen.tls.client_identity: is set but"));
        // The role rule's issuer exists only with client certificates.
        assert!(
            found[2].contains("no issuer named 'spiffe-x509'"),
            "{found:?}"
        );

        // A bad trust domain, an issuer name taken, plaintext with certificates required.
        let found = problems(
            "allow_plaintext_loopback = true",
            &format!(
                "{CA}client_certificates = \"required\"\n[listen.tls.client_identity]\n\
                 trust_domain = \"Example.org\"\nissuer_name = \"corp\"\n"
            ),
        );
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].starts_with("listen.allow_plaintext_loopback: "));
        assert!(found[1].starts_with("listen.tls.client_identity.trust_domain: trust domain may"));
        assert!(found[2].starts_with("listen.tls.client_identity.issuer_name: \"corp\" is"));
        assert!(
            found[3].contains("no issuer named 'spiffe-x509'"),
            "{found:?}"
        );

        // A trust bundle without a certificate of Postern's own to present.
        let error = Config::from_toml(
            "[listen.tls]\nclient_ca = \"/etc/postern/spiffe-bundle.pem\"\n",
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("missing field `certificate`"), "{error}");

        assert!(
            toml::from_str::<super::TlsFiles>(
                "certificate = \"a\"\nprivate_key = \"b\"\nclient_certificates = \"always\""
            )
            .is_err()
        );
    }

    #[test]
    fn certificates_alone_need_no_token_issuer() {
        let text = r#"
[listen.tls]
certificate = "/etc/postern/tls.crt"
private_key = "/etc/postern/tls.key"
client_ca = "/etc/postern/spiffe-bundle.pem"
client_certificates = "required"
client_identity = { trust_domain = "example.org", issuer_name = "mesh" }

[targets.app]
host = "db"
database = "app"
admin = { user = "postern_admin" }
roles = [{ roles = ["reader"], issuers = ["mesh"] }]
"#;
        Config::from_toml(text, "test").unwrap().validate().unwrap();
        let without = text.replace("client_ca = \"/etc/postern/spiffe-bundle.pem\"\n", "");
        let ConfigError::Invalid(found) = Config::from_toml(&without, "test")
            .unwrap()
            .validate()
            .unwrap_err()
        else {
            panic!()
        };
        let keys: Vec<_> = found.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"issuers"), "{keys:?}");
    }
}
