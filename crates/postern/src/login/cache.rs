//! The token cache: `tokens.json` in the CLI's configuration directory, one entry per issuer and
//! client id, holding the access token, the ID token and the refresh token of the last sign-in.
//!
//! The directory is made 0700 and the file 0600, written whole to a new file in the same
//! directory, synced and renamed over the old one, so a crash leaves the old cache or the new,
//! never half of one. A `tokens.lock` file serialises the processes that read, refresh and write
//! (two `postern psql` refreshing at once would otherwise spend the same single-use refresh
//! token twice). Tokens are never printed or logged from here.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The cache file's name in the configuration directory.
pub const TOKENS_FILE: &str = "tokens.json";
/// The lock file's name.
const LOCK_FILE: &str = "tokens.lock";
/// Largest cache file read.
const MAX_CACHE_BYTES: u64 = 1024 * 1024;
/// The format written; a file of another version is refused rather than misread.
const VERSION: u32 = 1;

/// One sign-in's tokens. Its `Debug` leaves the tokens out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedTokens {
    pub issuer: String,
    pub client_id: String,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds), if the provider or the token said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When these tokens were obtained (Unix seconds).
    pub obtained_at: u64,
}

impl std::fmt::Debug for CachedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTokens")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("has_id_token", &self.id_token.is_some())
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("obtained_at", &self.obtained_at)
            .finish_non_exhaustive()
    }
}

impl CachedTokens {
    /// Whether the access token expires within `margin` of now (unknown expiry: no).
    pub fn expires_within(&self, margin: Duration) -> bool {
        self.expires_at
            .is_some_and(|at| at <= unix_now().saturating_add(margin.as_secs()))
    }

    /// The expiry as a time.
    pub fn expiry(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.expires_at?))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    version: u32,
    sessions: Vec<CachedTokens>,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The cache in a directory.
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
}

/// Held while a process reads, refreshes and writes; released on drop.
pub struct CacheLock {
    _file: File,
}

impl TokenCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The cache file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(TOKENS_FILE)
    }

    /// Creates the directory (0700) if needed and takes the cache's lock, waiting for another
    /// process to release it. Blocking.
    pub fn lock(&self) -> anyhow::Result<CacheLock> {
        self.make_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(CacheLock { _file: file })
    }

    fn make_dir(&self) -> anyhow::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        // The directory may predate us with looser permissions; it holds secrets.
        std::fs::set_permissions(&self.dir, Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", self.dir.display()))
    }

    /// Every cached sign-in (none when there is no file).
    fn load(&self, _lock: &CacheLock) -> anyhow::Result<Vec<CachedTokens>> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.len() > MAX_CACHE_BYTES {
            bail!(
                "{} is larger than {MAX_CACHE_BYTES} bytes; remove it with `postern logout --all`",
                path.display()
            );
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))?;
        }
        let text = std::io::read_to_string(file)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cache: CacheFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a token cache this postern understands; remove it with `postern \
                 logout --all`",
                path.display()
            )
        })?;
        if cache.version != VERSION {
            bail!(
                "{} is of another version ({}); remove it with `postern logout --all`",
                path.display(),
                cache.version
            );
        }
        Ok(cache.sessions)
    }

    /// The sign-in cached for `issuer` and `client_id`.
    pub fn get(
        &self,
        lock: &CacheLock,
        issuer: &str,
        client_id: &str,
    ) -> anyhow::Result<Option<CachedTokens>> {
        Ok(self
            .load(lock)?
            .into_iter()
            .find(|entry| entry.issuer == issuer && entry.client_id == client_id))
    }

    /// Stores `entry` in place of the one for the same issuer and client id.
    pub fn put(&self, lock: &CacheLock, entry: CachedTokens) -> anyhow::Result<()> {
        let mut sessions = self.load(lock)?;
        sessions.retain(|old| old.issuer != entry.issuer || old.client_id != entry.client_id);
        sessions.push(entry);
        self.write(&sessions)
    }

    /// Removes the sign-in for `issuer` and `client_id` (all when `None`); how many went.
    pub fn remove(&self, lock: &CacheLock, which: Option<(&str, &str)>) -> anyhow::Result<usize> {
        let sessions = match self.load(lock) {
            Ok(sessions) => sessions,
            // `logout --all` must work on a cache it cannot read.
            Err(_) if which.is_none() => Vec::new(),
            Err(error) => return Err(error),
        };
        let before = sessions.len();
        let kept: Vec<CachedTokens> = match which {
            Some((issuer, client_id)) => sessions
                .into_iter()
                .filter(|old| old.issuer != issuer || old.client_id != client_id)
                .collect(),
            None => Vec::new(),
        };
        let removed = before - kept.len();
        if kept.is_empty() {
            match std::fs::remove_file(self.path()) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("cannot remove {}", self.path().display()));
                }
            }
        } else {
            self.write(&kept)?;
        }
        Ok(removed)
    }

    /// Writes the whole cache atomically: a new 0600 file, synced, renamed over the old one, the
    /// directory synced.
    fn write(&self, sessions: &[CachedTokens]) -> anyhow::Result<()> {
        self.make_dir()?;
        let text = serde_json::to_string_pretty(&CacheFile {
            version: VERSION,
            sessions: sessions.to_vec(),
        })?;
        let mut suffix = [0_u8; 8];
        aws_lc_rs::rand::fill(&mut suffix).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let temporary = self.dir.join(format!(
            ".{TOKENS_FILE}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(suffix)
        ));
        let written = (|| -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&temporary, self.path())?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(error).with_context(|| format!("cannot write {}", self.path().display()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use std::path::Path;

    use super::*;

    /// Whether `path` and its directory are private to the user (0600 and 0700).
    fn private(path: &Path) -> bool {
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        mode(path).ok() == Some(0o600)
            && path.parent().map(mode).and_then(Result::ok) == Some(0o700)
    }

    fn entry(issuer: &str, token: &str) -> CachedTokens {
        CachedTokens {
            issuer: issuer.to_owned(),
            client_id: "postern-cli".to_owned(),
            access_token: token.to_owned(),
            id_token: None,
            refresh_token: Some(format!("r-{token}")),
            expires_at: Some(unix_now() + 30),
            scope: None,
            obtained_at: unix_now(),
        }
    }

    #[test]
    fn stores_one_entry_per_issuer_and_client_privately() {
        let scratch = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(scratch.path().join("config/postern"));
        let lock = cache.lock().unwrap();
        assert!(
            cache
                .get(&lock, "https://a", "postern-cli")
                .unwrap()
                .is_none()
        );
        cache.put(&lock, entry("https://a", "one")).unwrap();
        cache.put(&lock, entry("https://b", "two")).unwrap();
        cache.put(&lock, entry("https://a", "three")).unwrap();
        assert!(private(&cache.path()));
        let a = cache
            .get(&lock, "https://a", "postern-cli")
            .unwrap()
            .unwrap();
        assert_eq!(a.access_token, "three");
        assert!(cache.get(&lock, "https://a", "other").unwrap().is_none());
        assert!(a.expires_within(Duration::from_secs(60)));
        assert!(!a.expires_within(Duration::from_secs(10)));
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(scratch.path().join("config/postern"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        assert_eq!(
            cache
                .remove(&lock, Some(("https://a", "postern-cli")))
                .unwrap(),
            1
        );
        assert_eq!(
            cache
                .remove(&lock, Some(("https://a", "postern-cli")))
                .unwrap(),
            0
        );
        assert!(
            cache
                .get(&lock, "https://b", "postern-cli")
                .unwrap()
                .is_some()
        );
        assert_eq!(cache.remove(&lock, None).unwrap(), 1);
        assert!(!cache.path().exists());
    }

    #[test]
    fn a_loose_file_is_made_private_and_a_foreign_one_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(scratch.path().to_owned());
        let lock = cache.lock().unwrap();
        cache.put(&lock, entry("https://a", "one")).unwrap();
        std::fs::set_permissions(cache.path(), Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(scratch.path(), Permissions::from_mode(0o755)).unwrap();
        assert!(
            cache
                .get(&lock, "https://a", "postern-cli")
                .unwrap()
                .is_some()
        );
        cache.put(&lock, entry("https://a", "two")).unwrap();
        assert!(private(&cache.path()));

        std::fs::write(cache.path(), "{\"version\": 2, \"sessions\": []}").unwrap();
        let error = cache.get(&lock, "https://a", "postern-cli").unwrap_err();
        assert!(error.to_string().contains("logout --all"), "{error}");
        std::fs::write(cache.path(), "not json").unwrap();
        assert!(cache.get(&lock, "https://a", "postern-cli").is_err());
        assert_eq!(cache.remove(&lock, None).unwrap(), 0);
        assert!(!cache.path().exists());
    }
}
