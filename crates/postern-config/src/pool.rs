//! `[targets.X.pool]`: the upstream connections Postern keeps open and hands from one client
//! session to the next.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Problem;

/// How a target's upstream connections are shared.
///
/// A pool holds the connections of one upstream login with one set of startup parameters (so a
/// reused connection has exactly the settings a new one would): in `role_login` mode one pool
/// per mapped role, shared by every identity mapped to it; in `set_role` mode one per session
/// login. `ephemeral_user` targets are not pooled: each identity logs in as its own role, which
/// is dropped after its last session (and `mode = "transaction"` is refused for them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default)]
    pub mode: PoolMode,
    /// Most server connections one pool holds, busy and idle together. A client that finds them
    /// all busy waits up to `checkout_timeout`, then is refused with SQLSTATE 53300.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Idle connections kept open once a pool is in use, even past `idle_timeout`.
    #[serde(default)]
    pub min_idle: usize,
    /// A connection older than this is closed instead of being handed out again.
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// An idle connection unused for this long is closed (down to `min_idle`).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a client waits for a connection when all are busy.
    #[serde(default = "default_checkout_timeout", with = "humantime_serde")]
    pub checkout_timeout: Duration,
    /// A connection idle for longer than this is checked with an empty query before it is
    /// handed out (the database may have restarted or a firewall dropped it meanwhile).
    #[serde(default = "default_health_check_after", with = "humantime_serde")]
    pub health_check_after: Duration,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// A client holds one server connection for its whole session; at the end Postern resets it
    /// (`DISCARD ALL`: role, settings, prepared statements, cursors, listeners, advisory locks,
    /// temporary objects) and hands it to the next client.
    #[default]
    Session,
    /// A client holds a server connection only for the length of a transaction (or of a
    /// statement outside one); between transactions the connection serves other clients of the
    /// same upstream login. At the start of each transaction Postern applies the identity's
    /// signed claims (and in `set_role` mode its role) transaction-locally, in the same round
    /// trip as the client's first message, and prepares the client's named statements on the
    /// connection in use. Statements that leave state on the connection past their transaction
    /// (session `SET`, `LISTEN`, session advisory locks, `WITH HOLD` cursors, SQL `PREPARE`,
    /// temporary tables) are refused with a message naming the pool mode.
    Transaction,
    /// Every client session logs in anew and its connection is closed at the end.
    None,
}

fn default_max_connections() -> usize {
    20
}

fn default_max_lifetime() -> Duration {
    Duration::from_secs(3600)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_checkout_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_health_check_after() -> Duration {
    Duration::from_secs(30)
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            mode: PoolMode::default(),
            max_connections: default_max_connections(),
            min_idle: 0,
            max_lifetime: default_max_lifetime(),
            idle_timeout: default_idle_timeout(),
            checkout_timeout: default_checkout_timeout(),
            health_check_after: default_health_check_after(),
        }
    }
}

impl PoolConfig {
    pub(crate) fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        if self.max_connections == 0 {
            problems.push(Problem::new(
                format!("{key}.max_connections"),
                "must be at least 1 (use mode = \"none\" to open a connection per session)",
            ));
        }
        if self.min_idle > self.max_connections {
            problems.push(Problem::new(
                format!("{key}.min_idle"),
                format!(
                    "is {} but max_connections is {}: it cannot be more",
                    self.min_idle, self.max_connections
                ),
            ));
        }
        if self.checkout_timeout.is_zero() {
            problems.push(Problem::new(
                format!("{key}.checkout_timeout"),
                "must be more than zero",
            ));
        }
        if self.max_lifetime.is_zero() {
            problems.push(Problem::new(
                format!("{key}.max_lifetime"),
                "must be more than zero",
            ));
        }
    }
}
