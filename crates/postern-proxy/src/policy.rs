//! The policy set in force, and replacing it while Postern runs.
//!
//! `postern-policy` decides and does no I/O; this module reads the policy files, keeps the
//! current [`PolicyEngine`] behind an [`ArcSwap`] so that every statement sees a whole policy set
//! (the old one or the new one, never a mix), and reloads on request (SIGHUP, `reload()`) or when
//! a file changes. A set that does not load is refused with its errors logged, and the old one
//! stays in force.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use postern_config::{Config, PolicyConfig, RoleRule};
use postern_policy::cedar::{LoadOptions, PolicyEngine, PolicySource};
use tokio_util::sync::CancellationToken;

/// How long a burst of file events is left to settle before reloading: editors write a file in
/// several steps (truncate, write, rename).
const SETTLE: Duration = Duration::from_millis(200);

/// Why a policy set could not be loaded: every problem, each with file and line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PolicyLoadError(pub String);

/// The policy set in force and where it comes from.
pub struct Policies {
    current: ArcSwap<PolicyEngine>,
    config: PolicyConfig,
    rules: BTreeMap<String, Vec<RoleRule>>,
    /// Serialises reloads, so two at once cannot finish out of order.
    reloading: Mutex<()>,
}

impl Policies {
    /// Loads the configured policy set.
    pub fn load(config: &Config) -> Result<Self, PolicyLoadError> {
        let rules = config
            .targets
            .iter()
            .map(|(name, target)| (name.clone(), target.roles.clone()))
            .collect();
        let engine = build(&config.policy, &rules)?;
        Ok(Self {
            current: ArcSwap::from_pointee(engine),
            config: config.policy.clone(),
            rules,
            reloading: Mutex::new(()),
        })
    }

    /// The policy set in force now.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.current.load_full()
    }

    /// Reads the files again and, if they load, puts the new set in force for every session's
    /// next statement. Returns the number of policies now loaded.
    pub fn reload(&self) -> Result<usize, PolicyLoadError> {
        let _serial = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match build(&self.config, &self.rules) {
            Ok(engine) => {
                let count = engine.policy_count();
                self.current.store(Arc::new(engine));
                tracing::info!(policies = count, "policy set reloaded");
                Ok(count)
            }
            Err(error) => {
                tracing::error!(errors = %error, "policy reload refused; the previous policy set stays in force");
                Err(error)
            }
        }
    }

    /// Reloads whenever a policy file changes, until `stop` is cancelled. Watches the files'
    /// directories, since editors often replace a file rather than write it in place.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken) {
        if !self.config.watch || self.config.files.is_empty() {
            return;
        }
        let files: Vec<PathBuf> = self.config.files.iter().map(|f| absolute(f)).collect();
        let (changed, mut changes) = tokio::sync::mpsc::channel::<()>(1);
        let watched = files.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && event
                    .paths
                    .iter()
                    .any(|path| watched.iter().any(|file| file == path))
            {
                let _ = changed.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(error = %error, "cannot watch policy files; reload with SIGHUP");
                return;
            }
        };
        let mut directories: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(PathBuf::from))
            .collect();
        directories.sort();
        directories.dedup();
        for directory in &directories {
            if let Err(error) =
                notify::Watcher::watch(&mut watcher, directory, notify::RecursiveMode::NonRecursive)
            {
                tracing::warn!(directory = %directory.display(), error = %error, "cannot watch a policy directory; reload with SIGHUP");
            }
        }
        let policies = Arc::clone(self);
        tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    change = changes.recv() => {
                        if change.is_none() {
                            break;
                        }
                        tokio::time::sleep(SETTLE).await;
                        while changes.try_recv().is_ok() {}
                        let _ = policies.reload();
                    }
                }
            }
        });
    }
}

fn build(
    config: &PolicyConfig,
    rules: &BTreeMap<String, Vec<RoleRule>>,
) -> Result<PolicyEngine, PolicyLoadError> {
    let mut sources = Vec::with_capacity(config.files.len());
    for file in &config.files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            PolicyLoadError(format!("cannot read policy file {}: {e}", file.display()))
        })?;
        sources.push(PolicySource {
            origin: file.display().to_string(),
            text,
        });
    }
    let engine = PolicyEngine::load_with(
        &sources,
        rules,
        LoadOptions {
            include_defaults: config.include_defaults,
        },
    )
    .map_err(|errors| PolicyLoadError(errors.to_string()))?;
    for warning in engine.warnings() {
        tracing::warn!(%warning, "policy warning");
    }
    Ok(engine)
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
