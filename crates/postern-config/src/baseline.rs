//! `[baselines]`: watching machines. For every `Service` identity Postern learns, per target, the
//! statement fingerprints it runs and the networks it connects from; what is first seen after the
//! observation window is an `anomaly` audit event. `[[baselines.enforce]]` entries switch named
//! service identities to enforcement: only learned fingerprints run, on top of policy and the
//! escape guard, never instead of them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{IssuerConfig, Problem, TargetConfig};

/// The `[baselines]` section. Every field has a default, so the section may be absent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BaselinesConfig {
    /// Whether service identities' baselines are kept at all.
    #[serde(default = "default_learn")]
    pub learn: bool,
    /// How long after a service identity first reaches a target (or after its baseline is
    /// reset) what it does is learned rather than reported.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub observation_window: Duration,
    /// The prefix an IPv4 client address is masked to before it is compared: 32 compares exact
    /// addresses, 24 the /24 network (for workloads whose address changes within a subnet).
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u8,
    /// The same for IPv6; 64 is one subnet.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Service identities whose baselines are enforced.
    #[serde(default)]
    pub enforce: Vec<BaselineEnforcement>,
}

/// One service identity (on one target, or all) whose learned fingerprints are the only ones it
/// may run once its observation window is over.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BaselineEnforcement {
    /// The identity's subject, exactly.
    pub subject: String,
    /// The configured issuer's name (its key under `[issuers]`, or the client certificates'
    /// issuer name); any issuer when absent.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The target; every target when absent.
    #[serde(default)]
    pub target: Option<String>,
    /// This identity's observation window, in place of the section's.
    #[serde(default, with = "humantime_serde")]
    pub observation_window: Option<Duration>,
}

fn default_learn() -> bool {
    true
}

fn default_window() -> Duration {
    Duration::from_secs(7 * 24 * 60 * 60)
}

fn default_ipv4_prefix() -> u8 {
    32
}

fn default_ipv6_prefix() -> u8 {
    64
}

impl Default for BaselinesConfig {
    fn default() -> Self {
        Self {
            learn: default_learn(),
            observation_window: default_window(),
            ipv4_prefix: default_ipv4_prefix(),
            ipv6_prefix: default_ipv6_prefix(),
            enforce: Vec::new(),
        }
    }
}

impl BaselinesConfig {
    /// The enforcement entry covering this identity on this target, if any (the first that
    /// matches).
    #[must_use]
    pub fn enforcement(
        &self,
        issuer_name: &str,
        subject: &str,
        target: &str,
    ) -> Option<&BaselineEnforcement> {
        self.enforce.iter().find(|rule| {
            rule.subject == subject
                && rule.issuer.as_deref().is_none_or(|i| i == issuer_name)
                && rule.target.as_deref().is_none_or(|t| t == target)
        })
    }

    pub(crate) fn validate(
        &self,
        issuers: &BTreeMap<String, IssuerConfig>,
        certificate_issuer: Option<&str>,
        targets: &BTreeMap<String, TargetConfig>,
        problems: &mut Vec<Problem>,
    ) {
        let window_ok = |window: Duration| !window.is_zero();
        if !window_ok(self.observation_window) {
            problems.push(Problem::new(
                "baselines.observation_window",
                "must be longer than zero",
            ));
        }
        if !(8..=32).contains(&self.ipv4_prefix) {
            problems.push(Problem::new(
                "baselines.ipv4_prefix",
                "must be 8 to 32 (32 compares exact addresses)",
            ));
        }
        if !(16..=128).contains(&self.ipv6_prefix) {
            problems.push(Problem::new(
                "baselines.ipv6_prefix",
                "must be 16 to 128 (128 compares exact addresses)",
            ));
        }
        if !self.enforce.is_empty() && !self.learn {
            problems.push(Problem::new(
                "baselines.enforce",
                "enforcing needs learning: remove `learn = false`, or the enforced identities \
                 could run nothing",
            ));
        }
        for (index, rule) in self.enforce.iter().enumerate() {
            let key = format!("baselines.enforce[{index}]");
            if rule.subject.is_empty() {
                problems.push(Problem::new(
                    format!("{key}.subject"),
                    "must name a subject",
                ));
            }
            if let Some(issuer) = &rule.issuer
                && !issuers.contains_key(issuer)
                && certificate_issuer != Some(issuer.as_str())
            {
                problems.push(Problem::new(
                    format!("{key}.issuer"),
                    format!("no issuer named \"{issuer}\" is configured"),
                ));
            }
            if let Some(target) = &rule.target
                && !targets.contains_key(target)
            {
                problems.push(Problem::new(
                    format!("{key}.target"),
                    format!("no target named \"{target}\" is configured"),
                ));
            }
            if rule.observation_window.is_some_and(|w| !window_ok(w)) {
                problems.push(Problem::new(
                    format!("{key}.observation_window"),
                    "must be longer than zero",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::{BaselineEnforcement, BaselinesConfig};

    fn rule(subject: &str, issuer: Option<&str>, target: Option<&str>) -> BaselineEnforcement {
        BaselineEnforcement {
            subject: subject.into(),
            issuer: issuer.map(Into::into),
            target: target.map(Into::into),
            observation_window: None,
        }
    }

    #[test]
    fn enforcement_matches_subject_then_optional_issuer_and_target() {
        let config = BaselinesConfig {
            enforce: vec![
                rule("billing", Some("k8s"), Some("demo")),
                rule("reporter", None, None),
            ],
            ..BaselinesConfig::default()
        };
        assert!(config.enforcement("k8s", "billing", "demo").is_some());
        assert!(config.enforcement("github", "billing", "demo").is_none());
        assert!(config.enforcement("k8s", "billing", "other").is_none());
        assert!(config.enforcement("any", "reporter", "any").is_some());
        assert!(config.enforcement("k8s", "Billing", "demo").is_none());
    }

    #[test]
    fn unknown_names_and_empty_windows_are_problems() {
        let config = BaselinesConfig {
            observation_window: Duration::ZERO,
            ipv4_prefix: 40,
            enforce: vec![BaselineEnforcement {
                observation_window: Some(Duration::ZERO),
                ..rule("", Some("nowhere"), Some("nothing"))
            }],
            ..BaselinesConfig::default()
        };
        let mut problems = Vec::new();
        config.validate(&BTreeMap::new(), None, &BTreeMap::new(), &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "baselines.observation_window",
                "baselines.ipv4_prefix",
                "baselines.enforce[0].subject",
                "baselines.enforce[0].issuer",
                "baselines.enforce[0].target",
                "baselines.enforce[0].observation_window",
            ]
        );
    }

    #[test]
    fn the_section_parses_with_defaults() {
        let parsed: BaselinesConfig = toml::from_str(
            "observation_window = \"2h\"\n[[enforce]]\nsubject = \"svc\"\nobservation_window = \"30m\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.observation_window, Duration::from_secs(7200));
        assert_eq!(parsed.ipv4_prefix, 32);
        assert_eq!(
            parsed.enforce[0].observation_window,
            Some(Duration::from_secs(1800))
        );
    }
}
