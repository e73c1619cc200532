//! `[admin]`: the admin HTTP API (health, live sessions, revocations). Off unless configured.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Problem;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the API listens, e.g. `127.0.0.1:6480`. Callers authenticate with the same tokens
    /// as database clients and need policy grants (`view_sessions`, `end_session`, `revoke`).
    /// The API speaks plain HTTP, so it must be a loopback address: bearer tokens never cross a
    /// network in the clear (put a TLS-terminating proxy in front to reach it remotely).
    pub address: SocketAddr,
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
    }
}
