//! Verification end to end: tokens minted by the development identity provider (or forged
//! here), keys fetched over real HTTP from a loopback server or read from files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_config::{IdentityKindRule, IssuerConfig, JwksSource};
use postern_sandbox::idp::{DevAlgorithm, DevIdentityProvider, DevKeys, RSA_KID, TokenRequest};
use serde_json::{Value, json};

use crate::limits::{MAX_JWKS_BODY_BYTES, MAX_TOKEN_BYTES};
use crate::{AuthError, IdentityError, IdentityKind, Verifier};

struct Fixture {
    idp: DevIdentityProvider,
    _dir: tempfile::TempDir,
}

async fn idp() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
    Fixture { idp, _dir: dir }
}

fn config(issuer: &str, jwks: JwksSource) -> IssuerConfig {
    let mut config = IssuerConfig::new(issuer, "postern", jwks);
    config.min_refresh_interval = Duration::from_secs(3600);
    config
}

fn verifier(config: IssuerConfig) -> Verifier {
    Verifier::new(&BTreeMap::from([("corp".to_owned(), config)])).unwrap()
}

fn discovery_verifier(idp: &DevIdentityProvider) -> Verifier {
    verifier(config(idp.issuer(), JwksSource::Discovery))
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts the refusal's message, and that it never repeats the token.
async fn refused(verifier: &Verifier, token: &str) -> AuthError {
    let err = verifier.verify(token).await.unwrap_err();
    let message = err.to_string();
    assert!(!message.contains(token), "{message}");
    if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 8) {
        assert!(!message.contains(signature), "{message}");
    }
    err
}

#[test]
fn verifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
    assert_send_sync::<AuthError>();
}

#[tokio::test]
async fn accepts_rs256_through_discovery() {
    let fixture = idp().await;
    let idp = &fixture.idp;
    let verifier = discovery_verifier(idp);
    let mut request = idp.request("alice");
    request.groups = vec!["dba".into(), "ops".into()];
    request
        .extra_claims
        .insert("amr".into(), json!(["pwd", "hwk"]));
    let token = idp.keys().mint(&request).unwrap();

    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.issuer_name, "corp");
    assert_eq!(identity.issuer, idp.issuer());
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.kind, IdentityKind::Human);
    assert_eq!(identity.groups, ["dba", "ops"]);
    assert!(identity.mfa);
    assert!(identity.token_id.is_some());
    assert!(identity.issued_at.is_some());
    let lifetime = identity
        .expires_at
        .duration_since(identity.issued_at.unwrap())
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(15 * 60));
    assert_eq!(identity.claims["sub"], "alice");
    assert_eq!(idp.jwks_requests(), 1);

    // Cached: a second verification fetches nothing.
    verifier.verify(&idp.mint("bob", &[])).await.unwrap();
    assert_eq!(idp.jwks_requests(), 1);
}

#[tokio::test]
async fn accepts_es256_from_a_jwks_uri() {
    let fixture = idp().await;
    let idp = &fixture.idp;
    let mut config = config(idp.issuer(), JwksSource::Uri(idp.jwks_uri()));
    config.identity_kind = IdentityKindRule::Service;
    let verifier = verifier(config);
    let mut request = idp.request("ci-job");
    request.algorithm = DevAlgorithm::Es256;
    let identity = verifier
        .verify(&idp.keys().mint(&request).unwrap())
        .await
        .unwrap();
    assert_eq!(identity.subject, "ci-job");
    assert_eq!(identity.kind, IdentityKind::Service);
    assert!(!identity.mfa);
}

/// An Ed25519 issuer whose JWKS is a local file.
struct EdIssuer {
    pair: Ed25519KeyPair,
    kid: &'static str,
    _dir: tempfile::TempDir,
    config: IssuerConfig,
}

impl EdIssuer {
    fn new() -> Self {
        let pair = Ed25519KeyPair::generate().unwrap();
        let kid = "ed-1";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }]});
        std::fs::write(&path, jwks.to_string()).unwrap();
        let config = config("https://ed.example", JwksSource::File(path));
        Self {
            pair,
            kid,
            _dir: dir,
            config,
        }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signature = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": "EdDSA", "kid": self.kid}), claims)
    }
}

#[tokio::test]
async fn accepts_eddsa_from_a_jwks_file() {
    let issuer = EdIssuer::new();
    let verifier = verifier(issuer.config.clone());
    let claims = json!({
        "iss": "https://ed.example", "sub": "svc", "aud": ["other", "postern"],
        "exp": now_secs() + 60, "groups": "readers",
    });
    let identity = verifier.verify(&issuer.token(&claims)).await.unwrap();
    assert_eq!(identity.subject, "svc");
    assert_eq!(identity.groups, ["readers"]);
    // Without a kid, the fitting keys are tried.
    let token = issuer.sign(&json!({"alg": "EdDSA"}), &claims);
    assert_eq!(verifier.verify(&token).await.unwrap().subject, "svc");
}

#[tokio::test]
async fn refuses_bad_tokens_with_actionable_messages() {
    let fixture = idp().await;
    let idp = &fixture.idp;
    let verifier = discovery_verifier(idp);
    let keys = idp.keys();

    let mut expired = idp.request("alice");
    let issued_at = UNIX_EPOCH + Duration::from_secs(now_secs() - 3600);
    expired.issued_at = Some(issued_at);
    expired.ttl = Duration::from_secs(600);
    let expired_at = issued_at + Duration::from_secs(600);
    let expired_message = format!(
        "token expired at {}",
        humantime::format_rfc3339_seconds(expired_at)
    );

    let mut early = idp.request("alice");
    let not_before = UNIX_EPOCH + Duration::from_secs(now_secs() + 3600);
    early.not_before = Some(not_before);
    let early_message = format!(
        "token is not valid before {}",
        humantime::format_rfc3339_seconds(not_before)
    );

    let wrong_audience = TokenRequest::new(idp.issuer(), "alice", "grafana");
    let untrusted = TokenRequest::new("https://evil", "alice", "postern");
    let mut no_exp = idp.request("alice");
    no_exp.extra_claims.insert("exp".into(), Value::Null);
    let mut no_sub = idp.request("alice");
    no_sub.extra_claims.insert("sub".into(), Value::Null);

    let valid = idp.mint("alice", &[]);
    let parts: Vec<&str> = valid.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("postgres");
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    let unsigned_caps = format!("{}.{}.", b64(&json!({"alg": "NONE"})), parts[1]);

    // The classic key-confusion forgery: HS256 keyed with the RSA public key.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(RSA_KID.to_owned());
    let pem = keys.rsa_public_key_pem();
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();

    let issuer = idp.issuer();
    let cases: Vec<(String, String, &str)> = vec![
        (keys.mint(&expired).unwrap(), expired_message, "28P01"),
        (keys.mint(&early).unwrap(), early_message, "28P01"),
        (
            keys.mint(&wrong_audience).unwrap(),
            "audience 'grafana' is not 'postern'".into(),
            "28000",
        ),
        (
            keys.mint(&untrusted).unwrap(),
            "issuer 'https://evil' is not trusted".into(),
            "28000",
        ),
        (
            keys.mint(&no_exp).unwrap(),
            "token has no 'exp' claim".into(),
            "28P01",
        ),
        (
            keys.mint(&no_sub).unwrap(),
            "token has no 'sub' claim".into(),
            "28P01",
        ),
        (tampered, "token signature is invalid".into(), "28P01"),
        (
            unsigned,
            format!("algorithm none is not accepted for issuer '{issuer}'"),
            "28P01",
        ),
        (
            unsigned_caps,
            format!("algorithm NONE is not accepted for issuer '{issuer}'"),
            "28P01",
        ),
        (
            forged,
            format!("algorithm HS256 is not accepted for issuer '{issuer}'"),
            "28P01",
        ),
        (
            "garbage".into(),
            "token is malformed: expected three base64url parts separated by '.'".into(),
            "28P01",
        ),
        (
            format!("{}.{}.!!!", parts[0], parts[1]),
            "token is malformed: signature is not base64url".into(),
            "28P01",
        ),
        (
            "a".repeat(MAX_TOKEN_BYTES + 1),
            format!(
                "token is too large: {} bytes, at most {MAX_TOKEN_BYTES} are accepted",
                MAX_TOKEN_BYTES + 1
            ),
            "28P01",
        ),
    ];
    for (token, message, sqlstate) in cases {
        let err = refused(&verifier, &token).await;
        assert_eq!(err.to_string(), message);
        assert_eq!(err.sqlstate(), sqlstate, "{message}");
    }
    // Every refusal above was decided without fetching keys more than once.
    assert_eq!(idp.jwks_requests(), 1);
}

#[tokio::test]
async fn refuses_a_key_used_for_another_algorithm() {
    let fixture = idp().await;
    let idp = &fixture.idp;
    let verifier = discovery_verifier(idp);
    // Signed by the EC key, but the header names the RSA key.
    let mut request = idp.request("alice");
    request.algorithm = DevAlgorithm::Es256;
    request.kid = Some("dev-rs256-nope".into());
    let token = idp.keys().mint(&request).unwrap();
    let err = refused(&verifier, &token).await;
    assert_eq!(
        err.to_string(),
        format!(
            "signing key 'dev-rs256-nope' is not published by issuer '{}'",
            idp.issuer()
        )
    );

    let header = json!({"alg": "ES256", "kid": RSA_KID});
    let payload = token.split('.').nth(1).unwrap();
    let signature = token.split('.').nth(2).unwrap();
    let token = format!("{}.{payload}.{signature}", b64(&header));
    let err = refused(&verifier, &token).await;
    assert_eq!(
        err.to_string(),
        format!(
            "signing key 'dev-rs256' of issuer '{}' cannot verify ES256 signatures",
            idp.issuer()
        )
    );
    assert_eq!(err.label(), "key_mismatch");
}

#[tokio::test]
async fn unknown_kid_refreshes_once_per_min_refresh_interval() {
    let fixture = idp().await;
    let idp = &fixture.idp;
    let mut config = config(idp.issuer(), JwksSource::Discovery);
    config.min_refresh_interval = Duration::from_secs(1);
    let verifier = Arc::new(verifier(config));
    verifier.verify(&idp.mint("alice", &[])).await.unwrap();
    assert_eq!(idp.jwks_requests(), 1);

    let mut request = idp.request("mallory");
    request.kid = Some("abc".into());
    let token = idp.keys().mint(&request).unwrap();
    let expected = format!(
        "signing key 'abc' is not published by issuer '{}'",
        idp.issuer()
    );

    // Within min_refresh_interval of the last fetch: refused without fetching.
    assert_eq!(refused(&verifier, &token).await.to_string(), expected);
    assert_eq!(idp.jwks_requests(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let verifier = Arc::clone(&verifier);
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for attempt in attempts {
        let err = attempt.await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.sqlstate(), "28P01");
        assert_eq!(err.label(), "unknown_key");
    }
    assert_eq!(
        idp.jwks_requests(),
        2,
        "twenty concurrent unknown kids cause one fetch"
    );
    for _ in 0..5 {
        refused(&verifier, &token).await;
    }
    assert_eq!(idp.jwks_requests(), 2);
}

#[tokio::test]
async fn concurrent_first_use_fetches_once() {
    let fixture = idp().await;
    let idp = &fixture.idp;
    let verifier = Arc::new(discovery_verifier(idp));
    let token = idp.mint("alice", &[]);
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let verifier = Arc::clone(&verifier);
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for attempt in attempts {
        attempt.await.unwrap().unwrap();
    }
    assert_eq!(idp.jwks_requests(), 1);
}

#[tokio::test]
async fn rotated_key_is_accepted_after_one_refresh() {
    let fixture = idp().await;
    let idp = &fixture.idp;
    let mut config = config(idp.issuer(), JwksSource::Discovery);
    config.min_refresh_interval = Duration::ZERO;
    let verifier = verifier(config);
    verifier.verify(&idp.mint("alice", &[])).await.unwrap();
    assert_eq!(idp.jwks_requests(), 1);

    let kid = idp.rotate().await.unwrap();
    let mut request = idp.request("alice");
    request.kid = Some(kid.clone());
    let token = idp.keys().mint(&request).unwrap();
    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.subject, "alice");
    assert_eq!(idp.jwks_requests(), 2);
    verifier.verify(&token).await.unwrap();
    assert_eq!(idp.jwks_requests(), 2);
}

#[tokio::test]
async fn keeps_serving_cached_keys_when_the_provider_goes_away() {
    let fixture = idp().await;
    let mut config = config(fixture.idp.issuer(), JwksSource::Discovery);
    config.refresh_interval = Duration::ZERO; // always stale: every use tries a background refresh
    config.min_refresh_interval = Duration::ZERO;
    let verifier = verifier(config);
    let token = fixture.idp.mint("alice", &[]);
    verifier.verify(&token).await.unwrap();
    drop(fixture);
    for _ in 0..3 {
        assert_eq!(verifier.verify(&token).await.unwrap().subject, "alice");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn unreachable_provider_is_reported_not_hammered() {
    // Bind then close a port so that nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let issuer = format!("http://{closed}");
    let verifier = verifier(config(&issuer, JwksSource::Discovery));
    let dir = tempfile::tempdir().unwrap();
    let keys = DevKeys::load_or_create(dir.path()).unwrap();
    let token = keys
        .mint(&TokenRequest::new(issuer.clone(), "alice", "postern"))
        .unwrap();
    for _ in 0..3 {
        let err = refused(&verifier, &token).await;
        assert_eq!(
            err.to_string(),
            format!(
                "cannot fetch keys of issuer '{issuer}': could not connect (connection refused)"
            )
        );
        assert_eq!(err.sqlstate(), "28000");
        assert_eq!(err.label(), "keys_unavailable");
    }
    let failures = verifier.prefetch_keys().await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "corp");
}

/// A loopback server answering every GET with `body`, counting requests.
async fn serve(body: axum::body::Body) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(std::sync::Mutex::new(Some(body)));
    let app = axum::Router::new().fallback(move || {
        let body = Arc::clone(&body);
        async move {
            body.lock()
                .unwrap()
                .take()
                .unwrap_or_else(axum::body::Body::empty)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/jwks.json")
}

async fn jwks_error(body: axum::body::Body) -> String {
    let uri = serve(body).await;
    let issuer = EdIssuer::new();
    let mut config = issuer.config.clone();
    config.jwks = JwksSource::Uri(uri);
    let verifier = verifier(config);
    let token = issuer.token(
        &json!({"iss": "https://ed.example", "sub": "a", "aud": "postern", "exp": now_secs() + 60}),
    );
    let err = refused(&verifier, &token).await;
    assert_eq!(err.sqlstate(), "28000");
    err.to_string()
}

#[tokio::test]
async fn oversized_jwks_is_refused() {
    let big = format!(
        "{{\"keys\": [], \"pad\": \"{}\"}}",
        "x".repeat(MAX_JWKS_BODY_BYTES)
    );
    let message = jwks_error(axum::body::Body::from(big.clone())).await;
    assert!(
        message.ends_with(&format!(
            "the document is larger than {MAX_JWKS_BODY_BYTES} bytes"
        )),
        "{message}"
    );

    // Without Content-Length (chunked), the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::convert::Infallible>> = big
        .into_bytes()
        .chunks(8 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let message = jwks_error(axum::body::Body::from_stream(futures_util::stream::iter(
        chunks,
    )))
    .await;
    assert!(message.ends_with("bytes"), "{message}");
}

#[tokio::test]
async fn garbage_jwks_is_refused() {
    let message = jwks_error(axum::body::Body::from("<html>")).await;
    assert!(message.ends_with(": the document is not JSON"), "{message}");
    let message = jwks_error(axum::body::Body::from("{\"keys\": 5}")).await;
    assert!(message.ends_with("(no 'keys' array)"), "{message}");
}

#[tokio::test]
async fn plaintext_http_to_remote_hosts_is_refused() {
    let issuer = EdIssuer::new();
    let mut config = issuer.config.clone();
    config.jwks = JwksSource::Uri("http://idp.example.com/jwks.json".into());
    let verifier = verifier(config);
    let token = issuer.token(
        &json!({"iss": "https://ed.example", "sub": "a", "aud": "postern", "exp": now_secs() + 60}),
    );
    let err = refused(&verifier, &token).await;
    assert!(
        err.to_string()
            .ends_with("plain http is allowed only to loopback addresses; use https"),
        "{err}"
    );
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let fixture = idp().await;
    let issuer = format!("{}/", fixture.idp.issuer());
    let verifier = verifier(config(&issuer, JwksSource::Discovery));
    let token = fixture
        .idp
        .keys()
        .mint(&TokenRequest::new(issuer.clone(), "alice", "postern"))
        .unwrap();
    let err = refused(&verifier, &token).await;
    assert!(
        err.to_string()
            .ends_with("the discovery document names a different issuer"),
        "{err}"
    );
}

#[tokio::test]
async fn shared_secret_issuers_accept_hmac_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let secret = "0123456789abcdef0123456789abcdef";
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let mut config = config("https://internal", JwksSource::SharedSecretFile(path));
    config.algorithms = vec!["HS256".into()];
    let verifier = verifier(config);
    let claims = json!({"iss": "https://internal", "sub": "batch", "aud": "postern", "exp": now_secs() + 60});
    let hs256 = |secret: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("any".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(
        verifier.verify(&hs256(secret)).await.unwrap().subject,
        "batch"
    );
    let err = refused(&verifier, &hs256("another secret of thirty-two bytes!")).await;
    assert_eq!(err, AuthError::BadSignature);

    let ed = EdIssuer::new();
    let mut claims_ed = claims.clone();
    claims_ed["iss"] = json!("https://internal");
    let err = refused(&verifier, &ed.token(&claims_ed)).await;
    assert_eq!(
        err.to_string(),
        "algorithm EdDSA is not accepted for issuer 'https://internal'"
    );
}

#[test]
fn unsafe_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny").unwrap();

    let mut hmac_without_secret = config("https://a", JwksSource::Discovery);
    hmac_without_secret.algorithms = vec!["HS256".into()];
    let mut none = config("https://a", JwksSource::Discovery);
    none.algorithms = vec!["none".into()];
    let mut rsa_with_secret = config("https://a", JwksSource::SharedSecretFile(short.clone()));
    rsa_with_secret.algorithms = vec!["RS256".into()];
    let mut short_secret = config("https://a", JwksSource::SharedSecretFile(short));
    short_secret.algorithms = vec!["HS256".into()];
    let mut no_audience = config("https://a", JwksSource::Discovery);
    no_audience.audience.clear();
    let mut huge_skew = config("https://a", JwksSource::Discovery);
    huge_skew.clock_skew = Duration::from_secs(86_400);
    let missing_file = config(
        "https://a",
        JwksSource::File(dir.path().join("absent.json")),
    );

    let cases = [
        (
            hmac_without_secret,
            "issuers.corp: HS256 needs jwks = { shared_secret_file = \"…\" }",
        ),
        (none, "issuers.corp: algorithm 'none' is not supported"),
        (
            rsa_with_secret,
            "issuers.corp: RS256 cannot be verified with a shared secret",
        ),
        (
            short_secret,
            "issuers.corp: cannot load keys: the shared secret is shorter than 32 bytes",
        ),
        (no_audience, "issuers.corp: list at least one audience"),
        (
            huge_skew,
            "issuers.corp: clock_skew of 1day is more than the 1h allowed",
        ),
        (
            missing_file,
            "issuers.corp: cannot load keys: the key file cannot be read (entity not found)",
        ),
    ];
    for (config, message) in cases {
        let err = Verifier::new(&BTreeMap::from([("corp".to_owned(), config)])).unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    let twice = BTreeMap::from([
        (
            "a".to_owned(),
            config("https://same", JwksSource::Discovery),
        ),
        (
            "b".to_owned(),
            config("https://same", JwksSource::Discovery),
        ),
    ]);
    let err = Verifier::new(&twice).unwrap_err();
    assert!(
        matches!(err, IdentityError::DuplicateIssuer { .. }),
        "{err}"
    );
}
