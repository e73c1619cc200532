//! One issuer's key cache. Keys are served from memory; they are loaded on first use, refreshed
//! in the background once older than `refresh_interval` (the old keys keep serving meanwhile,
//! and after a failed refresh), and refreshed on demand when a token names an unknown `kid` —
//! at most once per `min_refresh_interval`, so a client sending random key ids cannot make
//! Postern hammer the identity provider.
//!
//! Every refresh is *single-flight*: it runs in a spawned task that owns the refresh lock, so
//! concurrent verifications of an unknown `kid` wait for one fetch instead of starting many,
//! and a verification that is cancelled while waiting does not cancel the fetch others wait
//! for. The spawned task is bounded by the fetch timeouts and aborted when the
//! [`crate::Verifier`] is dropped.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use postern_config::JwksSource;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::fetch::{read_file, read_file_async};
use super::{FetchError, Fetcher, KeySet, Selection, VerificationKey, parse_jwks};
use crate::error::AuthError;

/// Where an issuer's keys come from (the runtime form of [`JwksSource`]).
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    /// A JWKS this process publishes itself (Postern as an issuer): read in memory, never over
    /// the network.
    Local(LocalJwks),
    /// OIDC discovery from the issuer URL, then its `jwks_uri`.
    Discovery,
    /// A JWKS at this URL.
    Uri(String),
    /// A JWKS in this file.
    File(PathBuf),
    /// An HMAC secret in this file.
    SharedSecret(PathBuf),
}

/// The public JWKS of an issuer in this process, as a function returning the current document
/// (keys rotate).
#[derive(Clone)]
pub struct LocalJwks(pub Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for LocalJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalJwks")
    }
}

impl From<&JwksSource> for KeySource {
    fn from(source: &JwksSource) -> Self {
        match source {
            JwksSource::Discovery => Self::Discovery,
            JwksSource::Uri(uri) => Self::Uri(uri.clone()),
            JwksSource::File(path) => Self::File(path.clone()),
            JwksSource::SharedSecretFile(path) => Self::SharedSecret(path.clone()),
        }
    }
}

/// Book-keeping of refreshes; only touched with the refresh lock held.
#[derive(Debug, Default)]
struct RefreshState {
    /// Start of the last fetch, successful or not: the rate limit counts from here.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, if it did; reported while rate-limited.
    last_error: Option<FetchError>,
    /// `jwks_uri` from discovery, kept until a JWKS fetch from it fails.
    jwks_uri: Option<String>,
    /// Generation of the last key set installed.
    generation: u64,
}

impl RefreshState {
    fn may_attempt(&self, min_interval: Duration) -> bool {
        self.last_attempt
            .is_none_or(|at| at.elapsed() >= min_interval)
    }
}

/// The cached keys of one issuer.
#[derive(Debug)]
pub(crate) struct IssuerKeys {
    /// The issuer URL, for messages and logs.
    issuer: String,
    source: KeySource,
    /// Age after which keys are refreshed in the background.
    refresh_interval: Duration,
    /// Least time between two fetches.
    min_refresh_interval: Duration,
    /// The keys in use; `None` until the first successful load. Never locked across `.await`.
    current: RwLock<Option<Arc<KeySet>>>,
    /// The single-flight lock: whoever holds it may fetch.
    refresh: Arc<tokio::sync::Mutex<RefreshState>>,
    /// The refresh task last spawned, aborted when the verifier goes away.
    background: Mutex<Option<tokio::task::AbortHandle>>,
}

impl IssuerKeys {
    pub fn new(
        issuer: String,
        source: KeySource,
        refresh_interval: Duration,
        min_refresh_interval: Duration,
    ) -> Self {
        Self {
            issuer,
            source,
            refresh_interval,
            min_refresh_interval,
            current: RwLock::new(None),
            refresh: Arc::new(tokio::sync::Mutex::new(RefreshState::default())),
            background: Mutex::new(None),
        }
    }

    /// For keys in local files: loads them now (blocking), so that a missing or broken file is
    /// reported when the verifier is built rather than at the first sign-in.
    pub fn load_local(&self) -> Result<(), FetchError> {
        let keys = match &self.source {
            KeySource::File(path) => {
                let document =
                    serde_json::from_slice(&read_file(path)?).map_err(|_| FetchError::NotJson)?;
                parse_jwks(&document, &self.issuer)?
            }
            KeySource::SharedSecret(path) => {
                vec![VerificationKey::shared_secret(secret(&read_file(path)?))?]
            }
            KeySource::Local(jwks) => parse_jwks(&(jwks.0)(), &self.issuer)?,
            KeySource::Discovery | KeySource::Uri(_) => return Ok(()),
        };
        // Nobody else can hold the lock while the verifier is being built.
        if let Ok(mut state) = self.refresh.try_lock() {
            state.last_attempt = Some(Instant::now());
            self.install(&mut state, keys);
        }
        Ok(())
    }

    /// The keys that may verify an `alg` token with header `kid`, refreshing once (rate-limited)
    /// when the `kid` is unknown.
    pub async fn select(
        self: &Arc<Self>,
        fetcher: &Fetcher,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<Arc<VerificationKey>>, AuthError> {
        let set = match self.snapshot() {
            Some(set) => {
                if set.loaded_at.elapsed() >= self.refresh_interval {
                    self.refresh_in_background(fetcher, set.generation);
                }
                set
            }
            None => self.refresh_and_wait(fetcher, 0).await?,
        };
        match set.select(alg, kid) {
            Selection::Found(keys) => return Ok(keys),
            Selection::Mismatch => return Err(self.mismatch(alg, kid)),
            Selection::Missing => {}
        }
        let set = self.refresh_and_wait(fetcher, set.generation).await?;
        match set.select(alg, kid) {
            Selection::Found(keys) => Ok(keys),
            Selection::Mismatch => Err(self.mismatch(alg, kid)),
            Selection::Missing => Err(AuthError::UnknownKey {
                kid: kid.map(str::to_owned),
                issuer: self.issuer.clone(),
                alg: format!("{alg:?}"),
            }),
        }
    }

    /// Fetches the keys now unless rate-limited, waiting for the result.
    pub async fn refresh_now(self: &Arc<Self>, fetcher: &Fetcher) -> Result<(), AuthError> {
        let seen = self.snapshot().map_or(0, |set| set.generation);
        self.refresh_and_wait(fetcher, seen).await.map(drop)
    }

    /// Stops a background refresh, if one is running.
    pub fn abort_background(&self) {
        if let Some(task) = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for the refresh lock; then, unless someone installed newer keys than generation
    /// `seen` meanwhile or the rate limit forbids it, fetches and returns the new keys.
    async fn refresh_and_wait(
        self: &Arc<Self>,
        fetcher: &Fetcher,
        seen: u64,
    ) -> Result<Arc<KeySet>, AuthError> {
        let state = Arc::clone(&self.refresh).lock_owned().await;
        if let Some(set) = self.snapshot()
            && set.generation != seen
        {
            return Ok(set);
        }
        if !state.may_attempt(self.min_refresh_interval) {
            return match (&state.last_error, self.snapshot()) {
                (None, Some(set)) => Ok(set),
                (error, _) => Err(self.unavailable(error.as_ref())),
            };
        }
        let task = tokio::spawn(Arc::clone(self).refresh_locked(state, fetcher.clone()));
        self.track(task.abort_handle());
        match task.await {
            Ok(Ok(set)) => Ok(set),
            Ok(Err(err)) => Err(self.unavailable(Some(&err))),
            Err(_) => Err(self.unavailable(None)),
        }
    }

    /// Starts a refresh without waiting for it, unless one is running or rate-limited.
    fn refresh_in_background(self: &Arc<Self>, fetcher: &Fetcher, seen: u64) {
        let Ok(state) = Arc::clone(&self.refresh).try_lock_owned() else {
            return; // a refresh is under way
        };
        let newer = self.snapshot().is_some_and(|set| set.generation != seen);
        if newer || !state.may_attempt(self.min_refresh_interval) {
            return;
        }
        let task = tokio::spawn(Arc::clone(self).refresh_locked(state, fetcher.clone()));
        self.track(task.abort_handle());
    }

    /// Fetches and installs keys; runs in its own task, owning the refresh lock.
    async fn refresh_locked(
        self: Arc<Self>,
        mut state: OwnedMutexGuard<RefreshState>,
        fetcher: Fetcher,
    ) -> Result<Arc<KeySet>, FetchError> {
        state.last_attempt = Some(Instant::now());
        match self.load(&mut state, &fetcher).await {
            Ok(keys) => {
                state.last_error = None;
                Ok(self.install(&mut state, keys))
            }
            Err(err) => {
                tracing::warn!(issuer = %self.issuer, error = %err, "refreshing signing keys failed; keeping any previous keys");
                state.last_error = Some(err.clone());
                Err(err)
            }
        }
    }

    async fn load(
        &self,
        state: &mut RefreshState,
        fetcher: &Fetcher,
    ) -> Result<Vec<VerificationKey>, FetchError> {
        match &self.source {
            KeySource::Discovery => {
                let jwks_uri = match state.jwks_uri.take() {
                    Some(uri) => uri,
                    None => fetcher.discover(&self.issuer).await?,
                };
                let document = fetcher.get_json(&jwks_uri).await?;
                // Keep the discovered URI only once it has served a document.
                state.jwks_uri = Some(jwks_uri);
                parse_jwks(&document, &self.issuer)
            }
            KeySource::Uri(uri) => parse_jwks(&fetcher.get_json(uri).await?, &self.issuer),
            KeySource::Local(jwks) => parse_jwks(&(jwks.0)(), &self.issuer),
            KeySource::File(path) => {
                let bytes = read_file_async(path.clone()).await?;
                let document = serde_json::from_slice(&bytes).map_err(|_| FetchError::NotJson)?;
                parse_jwks(&document, &self.issuer)
            }
            KeySource::SharedSecret(path) => {
                let bytes = read_file_async(path.clone()).await?;
                Ok(vec![VerificationKey::shared_secret(secret(&bytes))?])
            }
        }
    }

    fn install(&self, state: &mut RefreshState, keys: Vec<VerificationKey>) -> Arc<KeySet> {
        state.generation += 1;
        if keys.is_empty() {
            tracing::warn!(issuer = %self.issuer, "the issuer publishes no usable signing keys");
        } else {
            tracing::info!(issuer = %self.issuer, keys = keys.len(), generation = state.generation, "loaded signing keys");
        }
        let set = Arc::new(KeySet {
            keys: keys.into_iter().map(Arc::new).collect(),
            loaded_at: Instant::now(),
            generation: state.generation,
        });
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&set));
        set
    }

    fn track(&self, task: tokio::task::AbortHandle) {
        *self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    fn unavailable(&self, error: Option<&FetchError>) -> AuthError {
        AuthError::KeysUnavailable {
            issuer: self.issuer.clone(),
            reason: error.map_or_else(
                || "no keys could be loaded yet; try again shortly".to_owned(),
                ToString::to_string,
            ),
        }
    }

    fn mismatch(&self, alg: Algorithm, kid: Option<&str>) -> AuthError {
        AuthError::KeyMismatch {
            kid: kid.unwrap_or_default().to_owned(),
            issuer: self.issuer.clone(),
            alg: format!("{alg:?}"),
        }
    }
}

/// The secret in a shared-secret file: its bytes without the trailing newline editors and
/// `echo` add (which would otherwise silently become part of the key).
fn secret(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |last| last + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_drops_trailing_newlines_only() {
        assert_eq!(secret(b"abc\n"), b"abc");
        assert_eq!(secret(b"abc\r\n\n"), b"abc");
        assert_eq!(secret(b" abc "), b" abc ");
        assert_eq!(secret(b"\n"), b"");
    }
}
