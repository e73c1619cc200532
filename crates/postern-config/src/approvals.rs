//! `[approvals]`: how statements held for just-in-time approval wait, and whom Postern tells.
//! Which statements need approval is policy (`@approval(...)` on a permit); this section is only
//! the mechanics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Problem;

/// The `[approvals]` section. Every field has a default, so the section may be absent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a held statement waits for a decision before the client gets an error. The
    /// request stays open after that; an approval arriving later makes a grant the requester
    /// uses by running the statement again.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// How long a request stays open for a decision at all; then it lapses (`expired`).
    #[serde(default = "default_request_ttl", with = "humantime_serde")]
    pub request_ttl: Duration,
    /// How often a waiting client is sent a NoticeResponse, so that idle timeouts of load
    /// balancers and firewalls along the path do not cut the connection.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// The console's address as approvers reach it (`https://postern.example.com/console/`),
    /// quoted in notices and webhooks. Default: the admin API's own address.
    #[serde(default)]
    pub console_url: Option<String>,
    /// A webhook per approver group, told of every request that group may approve.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookConfig>,
}

/// One approver group's webhook (a Slack incoming webhook, or any receiver of signed JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. Slack webhook URLs are secrets: they are never logged.
    pub url: String,
    /// The HMAC-SHA256 key the body is signed with, read from this file (trailing newline
    /// ignored) so that it stays out of the configuration.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Or read from this environment variable.
    #[serde(default)]
    pub secret_env: Option<String>,
}

fn default_wait() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_request_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

fn default_keepalive() -> Duration {
    Duration::from_secs(20)
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            wait: default_wait(),
            request_ttl: default_request_ttl(),
            keepalive: default_keepalive(),
            console_url: None,
            webhooks: BTreeMap::new(),
        }
    }
}

impl ApprovalsConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.wait.is_zero() || self.wait > Duration::from_secs(24 * 60 * 60) {
            problems.push(Problem::new(
                "approvals.wait",
                "must be more than zero and at most 24h: the client's connection is held open \
                 for that long",
            ));
        }
        if self.request_ttl < self.wait {
            problems.push(Problem::new(
                "approvals.request_ttl",
                "must be at least approvals.wait: a request cannot lapse while its statement \
                 still waits",
            ));
        }
        if self.keepalive < Duration::from_secs(1) {
            problems.push(Problem::new("approvals.keepalive", "must be at least 1s"));
        }
        for (group, webhook) in &self.webhooks {
            let at = format!("approvals.webhooks.{group}");
            if !(webhook.url.starts_with("https://") || webhook.url.starts_with("http://")) {
                problems.push(Problem::new(
                    format!("{at}.url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if webhook.secret_file.is_some() == webhook.secret_env.is_some() {
                problems.push(Problem::new(
                    at,
                    "give the signing secret as exactly one of secret_file or secret_env: \
                     receivers must be able to check that a request came from Postern",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let config = Config::from_toml("", "test");
        if let Ok(config) = config {
            assert_eq!(config.approvals, ApprovalsConfig::default());
        }
        let parsed: ApprovalsConfig = toml::from_str(
            "wait = \"2m\"\nkeepalive = \"5s\"\n[webhooks.dbas]\nurl = \"https://hooks.example.com/x\"\nsecret_env = \"HOOK\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.wait, Duration::from_secs(120));
        assert_eq!(parsed.keepalive, Duration::from_secs(5));
        assert_eq!(parsed.request_ttl, default_request_ttl());
        assert_eq!(parsed.webhooks["dbas"].secret_env.as_deref(), Some("HOOK"));
    }

    #[test]
    fn mistakes_are_reported() {
        let parsed: ApprovalsConfig =
            toml::from_str("wait = \"0s\"\n[webhooks.dbas]\nurl = \"ftp://x\"\n")
                .unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        parsed.validate(&mut problems);
        let error: String = problems.iter().map(|p| format!("{p}\n")).collect();
        assert!(error.contains("approvals.wait"), "{error}");
        assert!(error.contains("approvals.webhooks.dbas.url"), "{error}");
        assert!(
            error.contains("exactly one of secret_file or secret_env"),
            "{error}"
        );
    }
}
