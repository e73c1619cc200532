//! Where statement policies come from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Problem;

/// The `[policy]` section: Cedar policy files, loaded at start and again on SIGHUP or when a file
/// changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Cedar policy files, each policy with a unique `@id("...")`.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Add Postern's shipped defaults (read, write, DDL and COPY for anyone who may connect; DCL,
    /// admin and raw statements only where a policy grants them). Off: nothing is allowed that
    /// the files do not permit.
    #[serde(default = "default_true")]
    pub include_defaults: bool,
    /// Reload when a policy file changes (SIGHUP always reloads).
    #[serde(default = "default_true")]
    pub watch: bool,
}

fn default_true() -> bool {
    true
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            include_defaults: true,
            watch: true,
        }
    }
}

impl PolicyConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.files.is_empty() && !self.include_defaults {
            problems.push(Problem::new(
                "policy.include_defaults",
                "with no policy files and the defaults off, every statement would be refused; \
                 list policy files or turn the defaults on",
            ));
        }
    }
}
