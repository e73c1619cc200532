//! Token exchange (RFC 8693) and Postern as an issuer: an accepted token is exchanged on the
//! admin API for a short-lived Postern token that clients log in with; down-scoped tokens work
//! only where they were scoped to; Postern's keys are published with discovery, survive a
//! restart and rotate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_testkit::{Stack, StackOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ISSUER: &str = "http://127.0.0.1:9/postern-test-issuer";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

async fn exchange_stack(offset: Arc<AtomicU64>) -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let clock: postern_proxy::Clock =
        Arc::new(move || SystemTime::now() + Duration::from_secs(offset.load(Ordering::SeqCst)));
    let mut stack = Stack::start(StackOptions {
        clock: Some(clock),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.config.token_exchange = Some(postern_config::TokenExchangeConfig {
        issuer: ISSUER.to_owned(),
        audience: "postern".to_owned(),
        lifetime: Duration::from_secs(600),
        rotate_every: Duration::from_secs(24 * 60 * 60),
        accept: Vec::new(),
    });
    stack.start_proxy().await.unwrap();
    stack
}

async fn exchange(stack: &Stack, token: &str, scope: Option<&str>) -> (StatusCode, Value) {
    let mut form = format!(
        "grant_type={}&subject_token={token}&subject_token_type={}",
        urlencode(EXCHANGE),
        urlencode(JWT)
    );
    if let Some(scope) = scope {
        form.push_str(&format!("&scope={}", urlencode(scope)));
    }
    post_form(stack, &form).await
}

async fn post_form(stack: &Stack, form: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/token", stack.admin_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn get(stack: &Stack, path: &str) -> Value {
    let response = reqwest::get(format!("{}{path}", stack.admin_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// The header and claims of a JWT, unverified.
fn decode(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part =
        || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (part(), part())
}

/// Verifies `token` with the published JWKS, as any relying party would.
fn verify_with(jwks: &Value, token: &str) -> Value {
    let (header, _) = decode(token);
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        key["x"].as_str().unwrap(),
        key["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["postern"]);
    validation.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn exchanged_tokens_log_in_down_scoped_and_verifiable_by_anyone() {
    let offset = Arc::new(AtomicU64::new(0));
    let mut stack = exchange_stack(offset.clone()).await;

    let discovery = get(&stack, "/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], json!(ISSUER));
    assert_eq!(
        discovery["jwks_uri"],
        json!(format!("{ISSUER}/.well-known/jwks.json"))
    );
    assert_eq!(discovery["grant_types_supported"], json!([EXCHANGE]));
    let jwks = get(&stack, "/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["alg"], json!("ES256"));

    // A person's token for a Postern token: same subject and groups, short-lived, from Postern.
    let alice = stack.token("alice@example.com", &["analysts", "engineers"]);
    let (status, body) = exchange(&stack, &alice, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], json!("Bearer"));
    assert_eq!(body["issued_token_type"], json!(JWT));
    let issued = body["access_token"].as_str().unwrap().to_owned();
    let claims = verify_with(&jwks, &issued);
    assert_eq!(claims["sub"], json!("alice@example.com"));
    assert_eq!(claims["groups"], json!(["analysts", "engineers"]));
    assert_eq!(claims["src_iss"], json!(stack.idp.issuer()));
    let lasts = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(
        lasts <= 600 && body["expires_in"].as_u64().unwrap() <= 600,
        "{claims}"
    );
    // It logs in like any token, under Postern's issuer.
    let client = stack.connect("writer", &issued).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "writer");
    drop(client);
    assert!(
        stack
            .audit_events()
            .iter()
            .any(|e| e["kind"] == "connection"
                && e["issuer"] == json!(ISSUER)
                && e["subject"] == json!("alice@example.com"))
    );

    // Down-scoped to reader: refused as writer, with the reason.
    let (status, body) = exchange(&stack, &alice, Some("target:demo role:reader")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], json!("target:demo role:reader"));
    let reader_only = body["access_token"].as_str().unwrap().to_owned();
    assert!(stack.connect("reader", &reader_only).await.is_ok());
    let error = stack.connect("writer", &reader_only).await.err().unwrap();
    common::assert_db_error(&error, "28000", "exchanged for role \"reader\" only");

    // What exchange refuses.
    let analyst = stack.token("ann@example.com", &["analysts"]);
    let (status, body) = exchange(&stack, &analyst, Some("role:writer")).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_target")),
        "{body}"
    );
    let (status, body) = exchange(&stack, &alice, Some("target:nowhere")).await;
    assert_eq!(body["error"], json!("invalid_target"), "{status} {body}");
    let (status, body) = exchange(&stack, &issued, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("cannot be exchanged again")
    );
    let (status, body) = exchange(&stack, "not.a.token", None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
    let (status, body) = post_form(
        &stack,
        &format!("grant_type=password&subject_token={alice}"),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_request"))
    );
    // Never beyond the token it came from.
    let mut short = stack.request("bob@example.com");
    short.ttl = Duration::from_secs(90);
    let short = stack.mint(&short).unwrap();
    let (status, body) = exchange(&stack, &short, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["expires_in"].as_u64().unwrap() <= 90, "{body}");

    // The keys live in the store: after a restart the same key signs and old tokens still work.
    let kid = decode(&issued).0["kid"].clone();
    stack.start_proxy().await.unwrap();
    assert_eq!(
        get(&stack, "/.well-known/jwks.json").await["keys"][0]["kid"],
        kid
    );
    assert!(stack.connect("writer", &issued).await.is_ok());
    // A day later a new key signs; the old one is still published for the tokens it signed.
    offset.store(25 * 60 * 60, Ordering::SeqCst);
    let mut lasting = stack.request("alice@example.com");
    lasting.ttl = Duration::from_secs(48 * 60 * 60);
    let lasting = stack.mint(&lasting).unwrap();
    let (status, body) = exchange(&stack, &lasting, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rotated = decode(body["access_token"].as_str().unwrap()).0["kid"].clone();
    assert_ne!(rotated, kid);
    let kids: Vec<Value> = get(&stack, "/.well-known/jwks.json").await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, [rotated, kid]);
    // A token the retired key signed still logs in until that key is withdrawn.
    assert!(stack.connect("writer", &issued).await.is_ok());
    let events = stack.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "control" && e["action"] == "token_exchange")
    );
}

#[tokio::test]
async fn without_configuration_there_is_no_issuer() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ] {
        let response = reqwest::get(format!("{}{path}", stack.admin_url()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let alice = stack.token("alice@example.com", &["analysts"]);
    let (status, body) = exchange(&stack, &alice, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not configured")
    );
}

/// A workload's exchanged token is held to the same workload policies as the token it came from:
/// the exchange carries `principal.workload` over, so a `forbid` written for GitHub Actions jobs
/// of other branches still matches.
#[tokio::test]
async fn an_exchanged_workload_token_keeps_its_workload_for_policy() {
    let mut stack = exchange_stack(Arc::new(AtomicU64::new(0))).await;
    let policy = stack.dir().join("workload.cedar");
    std::fs::write(
        &policy,
        r#"
@id("ci-only-from-main")
forbid (principal, action == Action::"connect", resource)
when { principal.workload.kind == "github_actions" }
unless { principal.workload.ref == "refs/heads/main" };
"#,
    )
    .unwrap();
    stack.config.policy.files.push(policy);
    let table = format!(
        "preset = \"github_actions\"\nissuer = \"{}\"\naudience = [\"postern\"]\n",
        stack.idp.issuer()
    );
    stack.config.issuers.insert(
        postern_sandbox::demo::DEV_ISSUER_NAME.to_owned(),
        toml::from_str(&table).unwrap(),
    );
    stack.config.validate().unwrap();
    stack.start_proxy().await.unwrap();

    let job = |git_ref: &str| {
        let mut request = stack.request(&format!("repo:acme/app:ref:{git_ref}"));
        request.groups = vec!["engineers".to_owned()];
        for (name, value) in [
            ("repository", "acme/app"),
            ("ref", git_ref),
            ("workflow", "migrate"),
            ("actor", "octocat"),
        ] {
            request.extra_claims.insert(name.to_owned(), json!(value));
        }
        stack.mint(&request).unwrap()
    };
    let main = job("refs/heads/main");
    let feature = job("refs/heads/feature");
    stack.connect("writer", &main).await.unwrap();
    let direct = stack.connect("writer", &feature).await.unwrap_err();
    common::assert_db_error(&direct, "28000", "ci-only-from-main");

    for (token, allowed) in [(main, true), (feature, false)] {
        let (status, body) = exchange(&stack, &token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let exchanged = body["access_token"].as_str().unwrap();
        let claims = decode(exchanged).1;
        assert_eq!(claims["postern_workload"]["kind"], "github_actions");
        let connected = stack.connect("writer", exchanged).await;
        if allowed {
            let client = connected.unwrap();
            let row = client
                .query_one("SELECT postern.subject()", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "repo:acme/app:ref:refs/heads/main");
        } else {
            let error = connected.unwrap_err();
            common::assert_db_error(&error, "28000", "ci-only-from-main");
        }
    }
}
