//! Postern as an issuer: the keys it signs exchanged tokens with, their rotation, and the
//! documents that publish them (`/.well-known/jwks.json`, `/.well-known/openid-configuration`).
//!
//! Keys are EC P-256 (ES256), generated here and kept in the control store, so every Postern
//! sharing the store signs with and publishes the same ones, and a restart changes nothing. The
//! newest key that has not retired signs; when none is left (at start, or `rotate_every` after
//! the last one was made) a new one is made. A retired key stays published until every token it
//! signed has expired (`retire_at` + the longest token lifetime + clock skew), so rotation never
//! breaks a live token. Postern verifies its own tokens like any issuer's, reading this JWKS in
//! memory (`postern_identity::LocalJwks`) rather than over HTTP.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_config::{MAX_EXCHANGED_LIFETIME, TokenExchangeConfig};
use postern_store::{SigningKey, Store, StoreError, unix_seconds};
use serde_json::{Map, Value, json};

use crate::Clock;

/// Extra time a retired key stays published, beyond the longest token it can have signed.
const PUBLISH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How often keys made by another Postern sharing the store are looked for.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the control store failed: {0}")]
    Store(#[from] StoreError),
    #[error("a signing key could not be made or read")]
    Key,
}

/// One key, ready to sign and publish.
struct LoadedKey {
    kid: String,
    pair: EcdsaKeyPair,
    jwk: Value,
    retire_at: i64,
}

/// Postern's own issuer.
pub struct PosternIssuer {
    pub(crate) config: TokenExchangeConfig,
    store: Store,
    clock: Clock,
    /// The published keys, newest first.
    keys: ArcSwap<Vec<Arc<LoadedKey>>>,
    /// One rotation at a time in this process.
    rotating: tokio::sync::Mutex<()>,
}

impl PosternIssuer {
    /// Loads the keys from the store, making the first one if there is none that signs.
    pub(crate) async fn load(
        config: TokenExchangeConfig,
        store: Store,
        clock: Clock,
    ) -> Result<Arc<Self>, SigningError> {
        let issuer = Arc::new(Self {
            config,
            store,
            clock,
            keys: ArcSwap::from_pointee(Vec::new()),
            rotating: tokio::sync::Mutex::new(()),
        });
        issuer.signing_key().await?;
        Ok(issuer)
    }

    fn now(&self) -> i64 {
        unix_seconds((self.clock)())
    }

    /// Reads the published keys from the store again (another Postern may have made one).
    pub(crate) async fn reload(&self) -> Result<(), SigningError> {
        let stored = self.store.signing_keys(self.now()).await?;
        let loaded: Vec<Arc<LoadedKey>> = stored
            .iter()
            .filter_map(|key| match load_key(key) {
                Some(loaded) => Some(Arc::new(loaded)),
                None => {
                    tracing::error!(kid = %key.kid, "a stored signing key cannot be read; it is not used");
                    None
                }
            })
            .collect();
        self.keys.store(Arc::new(loaded));
        Ok(())
    }

    /// The key that signs now, making a new one when the newest has retired.
    async fn signing_key(&self) -> Result<Arc<LoadedKey>, SigningError> {
        let now = self.now();
        if let Some(key) = self.keys.load().iter().find(|k| k.retire_at > now) {
            return Ok(Arc::clone(key));
        }
        let _rotating = self.rotating.lock().await;
        self.reload().await?;
        if let Some(key) = self.keys.load().iter().find(|k| k.retire_at > now) {
            return Ok(Arc::clone(key));
        }
        let rotate = i64::try_from(self.config.rotate_every.as_secs()).unwrap_or(i64::MAX);
        let publish =
            i64::try_from((MAX_EXCHANGED_LIFETIME + PUBLISH_MARGIN).as_secs()).unwrap_or(i64::MAX);
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| SigningError::Key)?;
        let private_key = pair
            .to_pkcs8v1()
            .map_err(|_| SigningError::Key)?
            .as_ref()
            .to_vec();
        let mut id = [0u8; 8];
        crate::target::fill_random(&mut id);
        let retire_at = now.saturating_add(rotate);
        let key = SigningKey {
            kid: format!("postern-{}", hex::encode(id)),
            algorithm: "ES256".to_owned(),
            private_key,
            created_at: now,
            retire_at,
            expires_at: retire_at.saturating_add(publish),
        };
        self.store.add_signing_key(&key).await?;
        tracing::info!(kid = %key.kid, "made a new signing key for exchanged tokens");
        self.reload().await?;
        self.keys
            .load()
            .iter()
            .find(|k| k.kid == key.kid)
            .cloned()
            .ok_or(SigningError::Key)
    }

    /// Signs `claims` (adding `iss`) as a JWT with the current key.
    pub(crate) async fn sign(
        &self,
        mut claims: Map<String, Value>,
    ) -> Result<String, SigningError> {
        let key = self.signing_key().await?;
        claims.insert("iss".into(), json!(self.config.issuer));
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": key.kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = key
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| SigningError::Key)?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The public JWK Set: every key still published.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.keys.load().iter().map(|k| k.jwk.clone()).collect();
        json!({ "keys": keys })
    }

    /// The OpenID Provider metadata of Postern's issuer.
    pub fn discovery(&self) -> Value {
        let base = self.config.issuer.trim_end_matches('/');
        json!({
            "issuer": self.config.issuer,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "token_endpoint": format!("{base}/v1/token"),
            "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
        })
    }

    /// The JWKS as the verifier reads it, in memory.
    pub(crate) fn local_jwks(self: &Arc<Self>) -> postern_identity::LocalJwks {
        let issuer = Arc::downgrade(self);
        postern_identity::LocalJwks(Arc::new(move || {
            issuer
                .upgrade()
                .map_or_else(|| json!({ "keys": [] }), |issuer| issuer.jwks())
        }))
    }

    /// Reloads the keys every [`RELOAD_INTERVAL`] and rotates on time, until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.reload().await {
                        tracing::warn!(error = %error, "cannot read signing keys; keeping the last ones read");
                    }
                    if let Err(error) = self.signing_key().await {
                        tracing::error!(error = %error, "cannot make a signing key for exchanged tokens");
                    }
                }
            }
        }
    }
}

/// A stored key, checked and with its public JWK.
fn load_key(key: &SigningKey) -> Option<LoadedKey> {
    if key.algorithm != "ES256" {
        return None;
    }
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.private_key).ok()?;
    // Uncompressed SEC1 point: 0x04 || x || y, 32 bytes each for P-256.
    let (x, y) = match pair.public_key().as_ref() {
        [0x04, coordinates @ ..] if coordinates.len() == 64 => coordinates.split_at(32),
        _ => return None,
    };
    let jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "kid": key.kid,
        "use": "sig",
        "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    });
    Some(LoadedKey {
        kid: key.kid.clone(),
        pair,
        jwk,
        retire_at: key.retire_at,
    })
}
