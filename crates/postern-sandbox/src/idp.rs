//! The development identity provider: what `postern quickstart`, `postern token --dev` and the
//! integration tests use instead of a real OIDC provider.
//!
//! It owns signing keys persisted in a directory ([`DevKeys`]), token minting ([`TokenRequest`])
//! and a loopback HTTP server ([`DevIdentityProvider`]) publishing OIDC discovery and the JWK
//! Set, which is how Postern's verifier finds the keys — exactly as it would with a real
//! provider — the authorization code flow with PKCE, which is how a browser signs in to
//! Postern's console and `postern login --browser`, the device authorization grant, which is how
//! `postern login --device` signs in, and rotating refresh tokens, which keep `postern psql`
//! going. It does not verify tokens (that is `postern-identity`), and nothing here is meant for
//! production: the keys sit unencrypted on disk, and the sign-in forms ask for no password.
//!
//! # Layout
//! - [`keys`]: key generation, persistence (0600 PEM files), JWKS, signing.
//! - [`token`]: [`TokenRequest`] and the claims it produces.
//! - [`authorize`]: `/authorize` (sign-in form, one-time codes) and the code + PKCE verifier
//!   exchange.
//! - [`device`]: `/device_authorization`, the `/device` form and the device code exchange.
//! - [`refresh`]: refresh tokens, single-use and rotated.
//! - [`grant`]: `/token` (which grant) and the tokens a successful grant gets.
//! - [`form`]: form encoding and HTML escaping for those endpoints.
//! - this file: the HTTP server and the issuer file that lets another process find it.

mod authorize;
mod device;
mod form;
mod grant;
mod keys;
mod refresh;
mod token;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::oneshot;

pub use authorize::{AUTHORIZE_PATH, CODE_TTL, MAX_PENDING_CODES, MFA_ACR, TOKEN_PATH};
pub use device::{
    DEFAULT_POLL_INTERVAL, DEVICE_AUTHORIZATION_PATH, DEVICE_CODE_TTL, DEVICE_PATH,
    MAX_PENDING_DEVICE_CODES, SLOW_DOWN_STEP,
};
pub use grant::DEVICE_CODE_GRANT;
pub use keys::{DevAlgorithm, DevKeys, EC_KEY_FILE, EC_KID, RSA_KEY_FILE, RSA_KID};
pub use refresh::{MAX_REFRESH_TOKENS, REFRESH_TTL};
pub use token::{DEFAULT_TTL, TokenRequest};

/// File (inside the key directory) holding the issuer URL of the last provider started there,
/// so `postern token --dev --dir DIR` can mint tokens for it from another process.
pub const ISSUER_FILE: &str = "issuer";
/// Path of the OIDC discovery document, relative to the issuer.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the JWK Set, relative to the issuer.
pub const JWKS_PATH: &str = "/jwks.json";
/// Audience of the tokens [`DevIdentityProvider::mint`] produces.
pub const DEV_AUDIENCE: &str = "postern";

/// Why the development identity provider could not do something.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// A file or directory operation failed.
    #[error("cannot {action} '{}': {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A persisted key file exists but does not hold a usable key.
    #[error("'{}' does not hold a valid {what} key; delete it to have a new one generated", path.display())]
    BadKey { path: PathBuf, what: &'static str },
    /// aws-lc-rs could not generate a key.
    #[error("key generation failed")]
    KeyGeneration,
    /// aws-lc-rs could not sign.
    #[error("signing failed")]
    Signing,
    /// The token request cannot be turned into a token.
    #[error("token request is invalid: {0}")]
    Request(&'static str),
    /// No provider has been started with this directory.
    #[error(
        "no development identity provider has run with '{}' (no issuer file); start one with \
         `postern quickstart`",
        path.display()
    )]
    NoIssuer { path: PathBuf },
    /// A blocking helper task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Reads the issuer URL a provider started with `dir` wrote there.
pub fn read_issuer(dir: &Path) -> Result<String, IdpError> {
    let path = dir.join(ISSUER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(IdpError::NoIssuer { path }),
        Err(source) => Err(IdpError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// A development OIDC provider serving discovery and JWKS over HTTP on loopback.
///
/// The server stops when this value is dropped: idle connections are closed at once and
/// responses carry `Connection: close`, so a dropped provider really is unreachable.
pub struct DevIdentityProvider {
    /// `http://127.0.0.1:PORT`, the `iss` of every token minted for this provider.
    issuer: String,
    /// Shared with the server task, which publishes their public halves.
    keys: Arc<DevKeys>,
    /// How many times the JWKS has been served; tests assert refresh behaviour with it.
    jwks_requests: Arc<AtomicU64>,
    /// Authorization codes not yet exchanged, shared with the server task.
    codes: Arc<authorize::Codes>,
    /// Device sign-ins in progress, shared with the server task.
    devices: Arc<device::DeviceCodes>,
    /// Refresh tokens issued, shared with the server task.
    refresh: Arc<refresh::RefreshTokens>,
    /// Dropping (or sending on) this tells the server task to shut down.
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for DevIdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdentityProvider")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct ServerState {
    issuer: Arc<str>,
    keys: Arc<DevKeys>,
    jwks_requests: Arc<AtomicU64>,
    /// Authorization codes issued and not yet exchanged.
    codes: Arc<authorize::Codes>,
    /// Device sign-ins in progress.
    devices: Arc<device::DeviceCodes>,
    /// Refresh tokens issued.
    refresh: Arc<refresh::RefreshTokens>,
}

impl DevIdentityProvider {
    /// Starts a provider on `127.0.0.1` and a free port, with keys from `dir`.
    pub async fn start(dir: &Path) -> Result<Self, IdpError> {
        Self::start_on(dir, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a provider on `addr`, with keys loaded from (or created in) `dir`, and writes the
    /// issuer URL to `dir`/[`ISSUER_FILE`].
    pub async fn start_on(dir: &Path, addr: SocketAddr) -> Result<Self, IdpError> {
        let key_dir = dir.to_owned();
        let keys = Arc::new(
            tokio::task::spawn_blocking(move || DevKeys::load_or_create(&key_dir)).await??,
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| IdpError::Io {
                action: "listen on",
                path: PathBuf::from(addr.to_string()),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| IdpError::Io {
            action: "listen on",
            path: PathBuf::from(addr.to_string()),
            source,
        })?;
        let issuer = format!("http://{local}");
        write_issuer(dir, &issuer)?;

        let jwks_requests = Arc::new(AtomicU64::new(0));
        let codes = Arc::new(authorize::Codes::default());
        let devices = Arc::new(device::DeviceCodes::default());
        let refresh = Arc::new(refresh::RefreshTokens::default());
        let state = ServerState {
            issuer: issuer.as_str().into(),
            keys: Arc::clone(&keys),
            jwks_requests: Arc::clone(&jwks_requests),
            codes: Arc::clone(&codes),
            devices: Arc::clone(&devices),
            refresh: Arc::clone(&refresh),
        };
        let app = Router::new()
            .route(DISCOVERY_PATH, get(discovery))
            .route(JWKS_PATH, get(jwks))
            .route(AUTHORIZE_PATH, get(authorize::form).post(authorize::submit))
            .route(TOKEN_PATH, post(grant::token))
            .route(DEVICE_AUTHORIZATION_PATH, post(device::authorize))
            .route(DEVICE_PATH, get(device::form).post(device::submit))
            .with_state(state);
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "development identity provider stopped");
            }
        });
        tracing::info!(%issuer, "development identity provider started");
        Ok(Self {
            issuer,
            keys,
            jwks_requests,
            codes,
            devices,
            refresh,
            shutdown: Some(shutdown),
        })
    }

    /// The issuer URL, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the JWK Set is served.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.issuer)
    }

    /// The signing keys.
    pub fn keys(&self) -> &DevKeys {
        &self.keys
    }

    /// How many times the JWK Set has been requested.
    pub fn jwks_requests(&self) -> u64 {
        self.jwks_requests.load(Ordering::SeqCst)
    }

    /// How many authorization codes are issued and not yet exchanged (expired ones included
    /// until the next sign-in prunes them).
    pub fn pending_codes(&self) -> usize {
        self.codes
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// How many refreshes (`grant_type=refresh_token` requests, granted or not) were asked for.
    pub fn refresh_requests(&self) -> u64 {
        self.refresh.requests.load(Ordering::SeqCst)
    }

    /// Ends every sign-in's session: each refresh token expires now, as when a provider's
    /// session lifetime runs out.
    pub fn end_sessions(&self) {
        self.refresh.expire_all();
    }

    /// The polling interval given to device sign-ins started from now on (whole seconds, at
    /// least one; [`DEFAULT_POLL_INTERVAL`] unless changed). Tests shorten it.
    pub fn set_device_poll_interval(&self, interval: Duration) {
        self.devices
            .interval_secs
            .store(interval.as_secs().max(1), Ordering::SeqCst);
    }

    /// A request for a token from this provider: audience [`DEV_AUDIENCE`], 15 minutes, RS256.
    pub fn request(&self, subject: &str) -> TokenRequest {
        TokenRequest::new(self.issuer.clone(), subject, DEV_AUDIENCE)
    }

    /// Mints an RS256 token for `subject` in `groups`, audience [`DEV_AUDIENCE`], valid for 15
    /// minutes.
    ///
    /// # Panics
    /// If signing fails, which it does not with the keys this provider generated; use
    /// [`DevKeys::mint`] for a fallible version.
    pub fn mint(&self, subject: &str, groups: &[&str]) -> String {
        let mut request = self.request(subject);
        request.groups = groups.iter().map(|&group| group.to_owned()).collect();
        match self.keys.mint(&request) {
            Ok(token) => token,
            Err(err) => panic!("minting a development token failed: {err}"),
        }
    }

    /// Publishes a new RSA key with a new `kid` (returned) alongside the existing ones. Mint
    /// with it by setting [`TokenRequest::kid`].
    pub async fn rotate(&self) -> Result<String, IdpError> {
        let keys = Arc::clone(&self.keys);
        tokio::task::spawn_blocking(move || keys.rotate()).await?
    }
}

impl Drop for DevIdentityProvider {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn write_issuer(dir: &Path, issuer: &str) -> Result<(), IdpError> {
    let path = dir.join(ISSUER_FILE);
    let temporary = keys::temporary_sibling(&path);
    keys::write_private(&temporary, format!("{issuer}\n").as_bytes())?;
    std::fs::rename(&temporary, &path).map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        IdpError::Io {
            action: "replace",
            path,
            source,
        }
    })
}

async fn discovery(State(state): State<ServerState>) -> impl IntoResponse {
    let document = json!({
        "issuer": &*state.issuer,
        "jwks_uri": format!("{}{JWKS_PATH}", state.issuer),
        "authorization_endpoint": format!("{}{AUTHORIZE_PATH}", state.issuer),
        "token_endpoint": format!("{}{TOKEN_PATH}", state.issuer),
        "device_authorization_endpoint": format!("{}{DEVICE_AUTHORIZATION_PATH}", state.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "response_types_supported": ["code", "id_token"],
        "grant_types_supported": ["authorization_code", DEVICE_CODE_GRANT, "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "offline_access"],
        "acr_values_supported": [MFA_ACR],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "groups", "amr", "nonce"],
        "subject_types_supported": ["public"],
    });
    ([(header::CONNECTION, "close")], axum::Json(document))
}

async fn jwks(State(state): State<ServerState>) -> impl IntoResponse {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    (
        [(header::CONNECTION, "close")],
        axum::Json(state.keys.jwks()),
    )
}

#[cfg(test)]
mod grant_tests;
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::{Map, Value};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A minimal HTTP/1.1 exchange, so the tests exercise the real server without an HTTP
    /// client dependency. `form` makes it a POST of that form body. Returns the status code, the
    /// header block (names lower-cased) and the body.
    pub(super) async fn http(url: &str, form: Option<&str>) -> (u16, String, String) {
        let rest = url.strip_prefix("http://").unwrap();
        let (authority, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
        let request = match form {
            None => {
                format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
            }
            Some(body) => format!(
                "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        };
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .unwrap()
        .unwrap();
        let status = response.split(' ').nth(1).unwrap().parse().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let head: Vec<String> = head
            .lines()
            .map(|line| match line.split_once(':') {
                Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
                None => line.to_owned(),
            })
            .collect();
        (status, head.join("\n"), body.to_owned())
    }

    async fn get(url: &str) -> (u16, String) {
        let (status, _, body) = http(url, None).await;
        (status, body)
    }

    pub(super) fn verify(token: &str, jwks: &Value, alg: Algorithm) -> Map<String, Value> {
        let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut validation = Validation::new(alg);
        validation.set_audience(&[DEV_AUDIENCE]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .unwrap()
            .claims
    }

    #[tokio::test]
    async fn serves_discovery_and_jwks_over_http() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        assert!(idp.issuer().starts_with("http://127.0.0.1:"));
        assert_eq!(read_issuer(dir.path()).unwrap(), idp.issuer());

        let (status, body) = get(&format!("{}{DISCOVERY_PATH}", idp.issuer())).await;
        assert_eq!(status, 200);
        let document: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(document["issuer"], idp.issuer());
        assert_eq!(document["jwks_uri"], idp.jwks_uri());
        assert_eq!(idp.jwks_requests(), 0);

        let (status, body) = get(&idp.jwks_uri()).await;
        assert_eq!(status, 200);
        let jwks: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(jwks, idp.keys().jwks());
        assert_eq!(idp.jwks_requests(), 1);

        let (status, _) = get(&format!("{}/nope", idp.issuer())).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_the_published_keys() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        let (_, body) = get(&idp.jwks_uri()).await;
        let jwks: Value = serde_json::from_str(&body).unwrap();

        let claims = verify(&idp.mint("alice", &["dba", "ops"]), &jwks, Algorithm::RS256);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iss"], idp.issuer());
        assert_eq!(claims["groups"], serde_json::json!(["dba", "ops"]));
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, DEFAULT_TTL.as_secs());

        let mut request = idp.request("svc");
        request.algorithm = DevAlgorithm::Es256;
        let token = idp.keys().mint(&request).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
            Some(EC_KID)
        );
        assert_eq!(verify(&token, &jwks, Algorithm::ES256)["sub"], "svc");
    }

    #[tokio::test]
    async fn rotated_keys_are_published_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        let kid = idp.rotate().await.unwrap();
        let (_, body) = get(&idp.jwks_uri()).await;
        let jwks: Value = serde_json::from_str(&body).unwrap();
        let mut request = idp.request("bob");
        request.kid = Some(kid.clone());
        let token = idp.keys().mint(&request).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid, Some(kid));
        assert_eq!(verify(&token, &jwks, Algorithm::RS256)["sub"], "bob");

        // An unknown kid goes into the header, signed by the default key.
        request.kid = Some("nope".into());
        let token = idp.keys().mint(&request).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
            Some("nope")
        );
    }

    #[tokio::test]
    async fn a_second_process_reuses_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevIdentityProvider::start(dir.path()).await.unwrap();
        let jwks = first.keys().jwks();
        drop(first);
        let keys = DevKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(keys.jwks(), jwks);
    }

    /// A PKCE verifier and its S256 challenge.
    pub(super) fn pkce() -> (String, String) {
        let verifier = "a-fixed-verifier-of-enough-length-0123456789_~.".to_owned();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()),
        );
        (verifier, challenge)
    }

    const REDIRECT: &str = "http://127.0.0.1:6480/console/callback";

    fn authorization_query(challenge: &str, state: &str) -> String {
        format!(
            "response_type=code&client_id=postern-console&redirect_uri={}&state={}\
             &nonce=n-123&code_challenge={challenge}&code_challenge_method=S256",
            form::encode(REDIRECT),
            form::encode(state),
        )
    }

    /// Signs in on the form as `subject` in `groups`; returns the code the redirect carries.
    pub(super) async fn sign_in(
        idp: &DevIdentityProvider,
        challenge: &str,
        subject: &str,
        groups: &str,
    ) -> String {
        let body = format!(
            "{}&subject={}&groups={}",
            authorization_query(challenge, "st/ate"),
            form::encode(subject),
            form::encode(groups)
        );
        let (status, head, _) =
            http(&format!("{}{AUTHORIZE_PATH}", idp.issuer()), Some(&body)).await;
        assert_eq!(status, 303, "{head}");
        let location = head
            .lines()
            .find_map(|line| line.strip_prefix("location: "))
            .unwrap();
        let query = location
            .strip_prefix(&format!("{REDIRECT}?"))
            .unwrap_or_else(|| panic!("redirected to {location}"));
        let params = form::Params::parse(query).unwrap();
        assert_eq!(params.get("state"), Some("st/ate"));
        params.get("code").unwrap().to_owned()
    }

    pub(super) fn exchange_body(code: &str, verifier: &str) -> String {
        format!(
            "grant_type=authorization_code&code={}&code_verifier={verifier}&redirect_uri={}\
             &client_id=postern-console",
            form::encode(code),
            form::encode(REDIRECT)
        )
    }

    pub(super) async fn exchange(idp: &DevIdentityProvider, body: &str) -> (u16, Value) {
        let (status, head, body) = http(&format!("{}{TOKEN_PATH}", idp.issuer()), Some(body)).await;
        assert!(head.contains("cache-control: no-store"), "{head}");
        (status, serde_json::from_str(&body).unwrap())
    }

    #[tokio::test]
    async fn discovery_advertises_the_code_flow() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        let (_, body) = get(&format!("{}{DISCOVERY_PATH}", idp.issuer())).await;
        let document: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            document["authorization_endpoint"],
            format!("{}/authorize", idp.issuer())
        );
        assert_eq!(
            document["token_endpoint"],
            format!("{}/token", idp.issuer())
        );
        assert_eq!(
            document["code_challenge_methods_supported"],
            json!(["S256"])
        );
    }

    #[tokio::test]
    async fn a_browser_signs_in_with_a_code_and_pkce() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        let (verifier, challenge) = pkce();

        // The form: what it says, the parameters carried along (escaped), and a policy that lets
        // it post here and be redirected to the client only.
        let url = format!(
            "{}{AUTHORIZE_PATH}?{}",
            idp.issuer(),
            authorization_query(&challenge, "<x\">")
        );
        let (status, head, page) = http(&url, None).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            page.contains("Development sign-in — no password: this provider is for trying Postern")
        );
        assert!(page.contains("name=\"subject\""));
        assert!(page.contains("value=\"&lt;x&quot;&gt;\""), "{page}");
        assert!(!page.contains("<x\""));
        assert!(
            head.contains("form-action 'self' http://127.0.0.1:6480;"),
            "{head}"
        );
        assert!(head.contains("default-src 'none'"), "{head}");

        let code = sign_in(&idp, &challenge, "dana@example.com", "dbas, ops").await;
        let (status, tokens) = exchange(&idp, &exchange_body(&code, &verifier)).await;
        assert_eq!(status, 200, "{tokens}");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], DEFAULT_TTL.as_secs());
        let (_, body) = get(&idp.jwks_uri()).await;
        let jwks: Value = serde_json::from_str(&body).unwrap();
        let access = verify(
            tokens["access_token"].as_str().unwrap(),
            &jwks,
            Algorithm::RS256,
        );
        assert_eq!(access["sub"], "dana@example.com");
        assert_eq!(access["aud"], DEV_AUDIENCE);
        assert_eq!(access["iss"], idp.issuer());
        assert_eq!(access["groups"], json!(["dbas", "ops"]));
        let id = verify(
            tokens["id_token"].as_str().unwrap(),
            &jwks,
            Algorithm::RS256,
        );
        assert_eq!(id["sub"], "dana@example.com");
        assert_eq!(id["nonce"], "n-123");

        // Codes are single-use.
        let (status, answer) = exchange(&idp, &exchange_body(&code, &verifier)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }

    #[tokio::test]
    async fn a_code_needs_its_verifier_and_is_spent_by_a_wrong_one() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        let (verifier, challenge) = pkce();

        let code = sign_in(&idp, &challenge, "mallory", "").await;
        let wrong = "b".repeat(43);
        let (status, answer) = exchange(&idp, &exchange_body(&code, &wrong)).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"], "invalid_grant");
        assert!(
            answer["error_description"]
                .as_str()
                .unwrap()
                .contains("code_challenge")
        );
        let (status, _) = exchange(&idp, &exchange_body(&code, &verifier)).await;
        assert_eq!(status, 400, "a code tried once is gone");

        // Another redirect URI or client than the authorization's.
        let code = sign_in(&idp, &challenge, "mallory", "").await;
        let body = exchange_body(&code, &verifier).replace("postern-console", "other");
        assert_eq!(exchange(&idp, &body).await.1["error"], "invalid_grant");

        // A code past its time.
        let code = sign_in(&idp, &challenge, "mallory", "").await;
        if let Some(pending) = idp.codes.pending.lock().unwrap().get_mut(&code) {
            pending.expires = std::time::Instant::now();
        }
        let (status, answer) = exchange(&idp, &exchange_body(&code, &verifier)).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error_description"], "the code has expired");

        // Not a code exchange at all.
        let (status, answer) = exchange(&idp, "grant_type=password&username=x").await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );
        let (status, answer) = exchange(&idp, "grant_type=authorization_code&code=x").await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_request"))
        );
        assert_eq!(idp.pending_codes(), 0);
    }

    #[tokio::test]
    async fn bad_authorization_requests_are_refused_without_a_redirect() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        let (_, challenge) = pkce();
        let good = authorization_query(&challenge, "s");
        for (change, why) in [
            (good.replace("127.0.0.1%3A6480", "evil.example"), "loopback"),
            (good.replace("S256", "plain"), "S256"),
            (
                good.replace("response_type=code", "response_type=token"),
                "code flow",
            ),
            (good.replace(&challenge, "short"), "code_challenge"),
            (good.replace("&nonce=n-123", ""), "nonce is missing"),
            (good.replace("&state=s", ""), "state is missing"),
            (format!("{good}&state=t"), "more than once"),
        ] {
            let url = format!("{}{AUTHORIZE_PATH}?{change}", idp.issuer());
            let (status, head, page) = http(&url, None).await;
            assert_eq!(status, 400, "{change}");
            assert!(!head.contains("location:"), "{head}");
            assert!(page.contains(why), "{why}: {page}");
            // The form's POST checks everything again.
            let body = format!("{change}&subject=x");
            let (status, head, _) =
                http(&format!("{}{AUTHORIZE_PATH}", idp.issuer()), Some(&body)).await;
            assert_eq!(status, 400, "{change}");
            assert!(!head.contains("location:"), "{head}");
        }
        let body = format!("{good}&subject=");
        let (status, _, page) =
            http(&format!("{}{AUTHORIZE_PATH}", idp.issuer()), Some(&body)).await;
        assert_eq!(status, 400);
        assert!(page.contains("subject is missing"), "{page}");
    }

    #[tokio::test]
    async fn dropping_the_provider_stops_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
        let authority = idp.issuer().strip_prefix("http://").unwrap().to_owned();
        drop(idp);
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&authority).await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "the server still accepts connections after drop");
    }
}
