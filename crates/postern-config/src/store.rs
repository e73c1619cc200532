//! Where Postern keeps its control state (revocations now; approvals, grants and signing keys
//! later): the `[store]` section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[store]` section: the embedded SQLite file of `postern-store`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file, created (mode 0600, with its directory) if absent. Revocations live here,
    /// so it must survive restarts; several Postern processes on one machine may share it.
    #[serde(default = "default_path")]
    pub path: PathBuf,
}

fn default_path() -> PathBuf {
    PathBuf::from("postern-state.db")
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    use super::*;

    #[test]
    fn absent_section_and_absent_path_take_the_default() {
        let config = Config::from_toml("", "test").unwrap();
        assert_eq!(config.store, StoreConfig::default());
        assert_eq!(config.store.path, PathBuf::from("postern-state.db"));
        let config = Config::from_toml("[store]\n", "test").unwrap();
        assert_eq!(config.store, StoreConfig::default());
    }

    #[test]
    fn path_is_read_and_unknown_keys_are_refused() {
        let config =
            Config::from_toml("[store]\npath = \"/var/lib/postern/state.db\"\n", "test").unwrap();
        assert_eq!(
            config.store.path,
            PathBuf::from("/var/lib/postern/state.db")
        );
        let error = Config::from_toml("[store]\nurl = \"postgres://x\"\n", "test").unwrap_err();
        assert!(error.to_string().contains("url"), "{error}");
    }
}
