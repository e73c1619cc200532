//! Issuer presets: the kinds of workload token issuers Postern knows — GitHub Actions OIDC,
//! Kubernetes projected service-account tokens, SPIFFE JWT-SVIDs and OAuth 2.0 client
//! credentials — with the defaults each brings to an `[issuers.X]` table and the settings that
//! contradict it.
//!
//! This module only describes presets. Which claims a preset reads and what it makes of them is
//! `postern-identity`'s `workload.rs`; the Cedar attributes are `postern-policy`'s.

use serde::{Deserialize, Serialize};

use super::{DEFAULT_ALGORITHMS, IdentityKindRule, IssuerConfig, JwksSource};
use crate::Problem;

/// The issuer of GitHub Actions OIDC tokens on github.com.
/// <https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect>
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Longest SPIFFE trust domain name: "Trust domain names SHOULD NOT exceed 255 bytes".
/// <https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md#21-trust-domain>
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// A kind of workload token issuer whose defaults and claims Postern knows
/// (`[issuers.X] preset = "…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerPreset {
    /// GitHub Actions OIDC: a workflow run's token, `sub` like
    /// `repo:acme/app:ref:refs/heads/main`, with `repository`, `ref`, `workflow`, `actor`, ….
    GithubActions,
    /// Kubernetes projected service-account tokens: `sub` is
    /// `system:serviceaccount:<namespace>:<name>`, the `kubernetes.io` claim names the namespace,
    /// service account and pod.
    Kubernetes,
    /// SPIFFE JWT-SVIDs: `sub` is a SPIFFE ID, `spiffe://<trust domain>/<path>`.
    Spiffe,
    /// OAuth 2.0 client credentials: the client itself, named by `client_id` or `azp`.
    OauthClient,
}

impl IssuerPreset {
    /// Every preset.
    pub const ALL: [Self; 4] = [
        Self::GithubActions,
        Self::Kubernetes,
        Self::Spiffe,
        Self::OauthClient,
    ];

    /// The name used in configuration and in Cedar (`principal.workload.kind`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GithubActions => "github_actions",
            Self::Kubernetes => "kubernetes",
            Self::Spiffe => "spiffe",
            Self::OauthClient => "oauth_client",
        }
    }

    /// The issuer URL the preset fills in, when there is one every deployment shares.
    #[must_use]
    pub fn default_issuer(self) -> Option<&'static str> {
        match self {
            Self::GithubActions => Some(GITHUB_ACTIONS_ISSUER),
            Self::Kubernetes | Self::Spiffe | Self::OauthClient => None,
        }
    }

    /// The algorithms the preset accepts unless the configuration lists its own.
    #[must_use]
    pub fn default_algorithms(self) -> &'static [&'static str] {
        match self {
            // GitHub signs with RS256 only (its discovery document says so).
            Self::GithubActions => &["RS256"],
            // The API server signs with its service-account key: RSA, or ECDSA P-256.
            Self::Kubernetes => &["RS256", "ES256"],
            // JWT-SVID §3: RS/ES/PS 256–512; Postern has no ES512.
            // <https://github.com/spiffe/spiffe/blob/main/standards/JWT-SVID.md#3-jwt-svid-header>
            Self::Spiffe => &[
                "RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512",
            ],
            Self::OauthClient => DEFAULT_ALGORITHMS,
        }
    }

    /// What the operator should set `issuer` to, for presets without a default.
    fn issuer_hint(self) -> &'static str {
        match self {
            Self::GithubActions => "https://token.actions.githubusercontent.com",
            Self::Kubernetes => {
                "the cluster's service-account issuer (`kubectl get --raw \
                 /.well-known/openid-configuration`, field issuer)"
            }
            Self::Spiffe => {
                "the `iss` your SPIRE server puts in JWT-SVIDs (its jwt_issuer, usually the OIDC \
                 discovery provider's URL)"
            }
            Self::OauthClient => "the authorization server's issuer URL",
        }
    }

    /// Where the audience a workload asks for comes from, for the missing-audience problem.
    fn audience_hint(self) -> &'static str {
        match self {
            Self::GithubActions => {
                "the audience the workflow asks for (core.getIDToken('postern'), or the \
                 `audience` input of the action that fetches the token)"
            }
            Self::Kubernetes => {
                "the audience of the pod's projected token (serviceAccountToken.audience in the \
                 pod spec)"
            }
            Self::Spiffe => "the audience workloads fetch their JWT-SVID for",
            Self::OauthClient => "the audience (resource) clients request their tokens for",
        }
    }
}

impl std::fmt::Display for IssuerPreset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` is a SPIFFE trust domain name: lowercase letters, digits, `.`, `-` and `_`,
/// at most [`MAX_TRUST_DOMAIN_BYTES`].
/// <https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md#21-trust-domain>
///
/// # Errors
/// What is wrong with it, worded to follow "trust domain … ".
pub fn check_trust_domain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err("is longer than 255 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("may hold only lowercase letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

/// The problems of an issuer configured with `preset`: settings it needs and settings that
/// contradict it, each naming the setting and the preset.
pub(super) fn validate(
    config: &IssuerConfig,
    preset: IssuerPreset,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    let conflict = |field: &str, message: String| {
        Problem::new(
            format!("{key}.{field}"),
            format!("{message}, which contradicts {key}.preset = \"{preset}\""),
        )
    };
    if config.issuer.is_empty() {
        problems.push(Problem::new(
            format!("{key}.issuer"),
            format!(
                "preset \"{preset}\" has no default issuer: set it to {}",
                preset.issuer_hint()
            ),
        ));
    }
    if config.audience.is_empty() {
        problems.push(Problem::new(
            format!("{key}.audience"),
            format!(
                "preset \"{preset}\" sets no audience (a default would accept tokens minted for \
                 other services): set it to {}",
                preset.audience_hint()
            ),
        ));
    }
    if config.identity_kind == IdentityKindRule::Human {
        problems.push(conflict(
            "identity_kind",
            "identity_kind = \"human\" says its tokens name people, but the preset's tokens \
             name workloads (identity_kind = \"service\")"
                .to_owned(),
        ));
    }
    if matches!(config.jwks, JwksSource::SharedSecretFile(_)) {
        problems.push(conflict(
            "jwks",
            "a shared secret is a static credential the preset's issuer never uses: its keys are \
             public (\"discovery\", { uri = … } or { file = … })"
                .to_owned(),
        ));
    }
    let subject_is_fixed = match preset {
        // A JWT-SVID's subject is its SPIFFE ID (JWT-SVID §3.1.1).
        IssuerPreset::Spiffe => Some("sub, the SPIFFE ID"),
        // The subject is the client: `client_id` or `azp`.
        IssuerPreset::OauthClient => Some("the client id (client_id or azp)"),
        IssuerPreset::GithubActions | IssuerPreset::Kubernetes => None,
    };
    if let Some(subject) = subject_is_fixed
        && config.subject_claim != "sub"
    {
        problems.push(conflict(
            "subject_claim",
            format!(
                "subject_claim = {:?} names another claim, but the preset's subject is {subject}",
                config.subject_claim
            ),
        ));
    }
    match (&config.trust_domain, preset) {
        (Some(domain), IssuerPreset::Spiffe) => {
            if let Err(problem) = check_trust_domain(domain) {
                let hint = if domain.starts_with("spiffe://") {
                    " (write the name alone, without spiffe://)"
                } else {
                    ""
                };
                problems.push(Problem::new(
                    format!("{key}.trust_domain"),
                    format!("trust domain {domain:?} {problem}{hint}"),
                ));
            }
        }
        (None, IssuerPreset::Spiffe) => problems.push(Problem::new(
            format!("{key}.trust_domain"),
            "preset \"spiffe\" needs the trust domain its SPIFFE IDs must be in, e.g. \
             trust_domain = \"example.org\" (a JWT-SVID of another trust domain is refused)",
        )),
        (Some(_), _) => problems.push(conflict(
            "trust_domain",
            "trust_domain is a SPIFFE setting".to_owned(),
        )),
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    fn parse(table: &str) -> IssuerConfig {
        toml::from_str(table).unwrap_or_else(|e| panic!("{table}: {e}"))
    }

    /// `key: message` of every problem of `table`, as `issuers.ci`.
    fn problems(table: &str) -> Vec<String> {
        let mut problems = Vec::new();
        parse(table).validate("issuers.ci", &mut problems);
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn github_actions_fills_everything_but_the_audience() {
        let config = parse("preset = \"github_actions\"\naudience = [\"postern\"]");
        assert_eq!(config.preset, Some(IssuerPreset::GithubActions));
        assert_eq!(config.issuer, GITHUB_ACTIONS_ISSUER);
        assert_eq!(config.algorithms, ["RS256"]);
        assert_eq!(config.jwks, JwksSource::Discovery);
        assert_eq!(config.subject_claim, "sub");
        assert_eq!(config.identity_kind, IdentityKindRule::Service);
        assert_eq!(
            problems("preset = \"github_actions\"\naudience = [\"postern\"]"),
            Vec::<String>::new()
        );

        let missing = problems("preset = \"github_actions\"");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0]
                .starts_with("issuers.ci.audience: preset \"github_actions\" sets no audience"),
            "{missing:?}"
        );
        assert!(missing[0].contains("core.getIDToken"), "{missing:?}");
    }

    #[test]
    fn explicit_settings_override_the_preset() {
        let config = parse(
            "preset = \"github_actions\"\n\
             issuer = \"https://ghe.example.com/_services/token\"\n\
             audience = [\"postern\"]\n\
             algorithms = [\"RS256\", \"ES256\"]\n\
             jwks = { uri = \"https://ghe.example.com/_services/token/.well-known/jwks\" }\n\
             identity_kind = \"service\"",
        );
        assert_eq!(config.issuer, "https://ghe.example.com/_services/token");
        assert_eq!(config.algorithms, ["RS256", "ES256"]);
        assert!(matches!(config.jwks, JwksSource::Uri(_)));
        let mut problems = Vec::new();
        config.validate("issuers.ci", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn contradicting_settings_name_both() {
        let cases = [
            (
                "preset = \"github_actions\"\naudience = [\"p\"]\nidentity_kind = \"human\"",
                "issuers.ci.identity_kind: identity_kind = \"human\"",
            ),
            (
                "preset = \"oauth_client\"\nissuer = \"https://as\"\naudience = [\"p\"]\n\
                 jwks = { shared_secret_file = \"/s\" }\nalgorithms = [\"HS256\"]",
                "issuers.ci.jwks: a shared secret",
            ),
            (
                "preset = \"oauth_client\"\nissuer = \"https://as\"\naudience = [\"p\"]\n\
                 subject_claim = \"email\"",
                "issuers.ci.subject_claim: subject_claim = \"email\"",
            ),
            (
                "preset = \"spiffe\"\nissuer = \"https://oidc\"\naudience = [\"p\"]\n\
                 trust_domain = \"example.org\"\nsubject_claim = \"spiffe_id\"",
                "issuers.ci.subject_claim: ",
            ),
            (
                "preset = \"kubernetes\"\nissuer = \"https://k8s\"\naudience = [\"p\"]\n\
                 trust_domain = \"example.org\"",
                "issuers.ci.trust_domain: trust_domain is a SPIFFE setting",
            ),
        ];
        for (table, expected) in cases {
            let found = problems(table);
            assert_eq!(found.len(), 1, "{table}: {found:?}");
            assert!(found[0].starts_with(expected), "{table}: {found:?}");
            let preset = table.split('"').nth(1).unwrap();
            assert!(
                found[0].ends_with(&format!("contradicts issuers.ci.preset = \"{preset}\"")),
                "{table}: {found:?}"
            );
        }
    }

    #[test]
    fn presets_without_a_default_issuer_ask_for_one() {
        for (preset, hint) in [
            ("kubernetes", "kubectl get --raw"),
            ("spiffe", "jwt_issuer"),
            ("oauth_client", "issuer URL"),
        ] {
            let found = problems(&format!(
                "preset = \"{preset}\"\naudience = [\"p\"]\ntrust_domain = \"example.org\""
            ))
            .into_iter()
            .filter(|p| !p.starts_with("issuers.ci.trust_domain"))
            .collect::<Vec<_>>();
            assert_eq!(found.len(), 1, "{preset}: {found:?}");
            assert!(
                found[0].starts_with(&format!(
                    "issuers.ci.issuer: preset \"{preset}\" has no default issuer"
                )) && found[0].contains(hint),
                "{preset}: {found:?}"
            );
        }
        let kubernetes = parse(
            "preset = \"kubernetes\"\nissuer = \"https://kubernetes.default.svc\"\naudience = [\"p\"]",
        );
        assert_eq!(kubernetes.algorithms, ["RS256", "ES256"]);
        assert_eq!(kubernetes.identity_kind, IdentityKindRule::Service);
    }

    #[test]
    fn spiffe_needs_a_valid_trust_domain() {
        let table = |domain: &str| {
            format!(
                "preset = \"spiffe\"\nissuer = \"https://oidc.example.org\"\naudience = [\"p\"]\n{domain}"
            )
        };
        assert!(problems(&table("trust_domain = \"prod.example.org\"")).is_empty());
        let missing = problems(&table(""));
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0]
                .starts_with("issuers.ci.trust_domain: preset \"spiffe\" needs the trust domain"),
            "{missing:?}"
        );
        for (domain, needle) in [
            ("spiffe://example.org", "without spiffe://"),
            ("Example.org", "lowercase"),
            ("", "is empty"),
            ("a/b", "lowercase"),
        ] {
            let found = problems(&table(&format!("trust_domain = {domain:?}")));
            assert_eq!(found.len(), 1, "{domain}: {found:?}");
            assert!(found[0].contains(needle), "{domain}: {found:?}");
        }
        assert!(check_trust_domain(&"a".repeat(255)).is_ok());
        assert!(check_trust_domain(&"a".repeat(256)).is_err());
    }

    #[test]
    fn without_a_preset_nothing_changes() {
        let config = parse("issuer = \"https://idp\"\naudience = [\"postern\"]");
        assert_eq!(
            config,
            IssuerConfig::new("https://idp", "postern", JwksSource::Discovery)
        );
        let found = problems("audience = [\"postern\"]\ntrust_domain = \"example.org\"");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("issuers.ci.issuer: must be set"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("issuers.ci.trust_domain: "),
            "{found:?}"
        );
        assert!(toml::from_str::<IssuerConfig>("issuer = \"x\"\npreset = \"gitlab\"").is_err());
        assert!(toml::from_str::<IssuerConfig>("issuer = \"x\"\nprest = \"spiffe\"").is_err());
    }

    #[test]
    fn a_resolved_configuration_reads_back_the_same() {
        for preset in IssuerPreset::ALL {
            let mut config = IssuerConfig::with_preset(preset, "postern");
            if config.issuer.is_empty() {
                config.issuer = "https://issuer.example".into();
            }
            if preset == IssuerPreset::Spiffe {
                config.trust_domain = Some("example.org".into());
            }
            let text = toml::to_string(&config).unwrap();
            assert_eq!(parse(&text), config, "{text}");
            let mut problems = Vec::new();
            config.validate("issuers.ci", &mut problems);
            assert!(problems.is_empty(), "{preset}: {problems:?}");
        }
    }
}
