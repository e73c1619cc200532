//! The client-facing listener: address, TLS, and the plaintext exception for loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Problem;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address the Postgres-protocol listener binds.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Certificate and key offered to clients that send SSLRequest.
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
        }
    }
}

/// PEM files for a TLS endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

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
    }
}
