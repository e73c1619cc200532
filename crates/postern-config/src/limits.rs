//! `[targets.X.sessions]`: how long a client session may last and stay idle, and how many one
//! identity may hold, per target with per-role overrides.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Problem;

/// Limits on a target's client sessions. Every limit is off unless set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    #[serde(flatten)]
    pub limits: Limits,
    /// How long a session may outlive its token's expiry (clock trouble, a long statement
    /// finishing): none by default.
    #[serde(default, with = "humantime_serde")]
    pub token_grace: Duration,
    /// Per-role limits; a limit a role leaves unset is the target's.
    #[serde(default)]
    pub roles: BTreeMap<String, Limits>,
}

/// One set of limits.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// A session ends this long after it started, whatever it is doing.
    #[serde(default, with = "humantime_serde")]
    pub max_duration: Option<Duration>,
    /// A session that has sent nothing for this long, outside a transaction, ends.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// A session idle this long inside a transaction block ends (its transaction rolls back).
    #[serde(default, with = "humantime_serde")]
    pub idle_in_transaction_timeout: Option<Duration>,
    /// Most sessions one identity may hold open on the target at once.
    #[serde(default)]
    pub max_per_identity: Option<usize>,
}

impl SessionLimits {
    /// The limits for sessions as `role`.
    #[must_use]
    pub fn for_role(&self, role: &str) -> Limits {
        let target = self.limits;
        match self.roles.get(role) {
            Some(role) => Limits {
                max_duration: role.max_duration.or(target.max_duration),
                idle_timeout: role.idle_timeout.or(target.idle_timeout),
                idle_in_transaction_timeout: role
                    .idle_in_transaction_timeout
                    .or(target.idle_in_transaction_timeout),
                max_per_identity: role.max_per_identity.or(target.max_per_identity),
            },
            None => target,
        }
    }

    pub(crate) fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        let mut check = |key: String, limits: &Limits| {
            for (name, value) in [
                ("max_duration", limits.max_duration),
                ("idle_timeout", limits.idle_timeout),
                (
                    "idle_in_transaction_timeout",
                    limits.idle_in_transaction_timeout,
                ),
            ] {
                if value.is_some_and(|d| d.is_zero()) {
                    problems.push(Problem::new(
                        format!("{key}.{name}"),
                        "must be more than zero (leave it out for no limit)",
                    ));
                }
            }
            if limits.max_per_identity == Some(0) {
                problems.push(Problem::new(
                    format!("{key}.max_per_identity"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        };
        check(key.to_owned(), &self.limits);
        for (role, limits) in &self.roles {
            check(format!("{key}.roles.{role}"), limits);
        }
    }
}
