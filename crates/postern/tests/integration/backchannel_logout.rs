//! OpenID Connect Back-Channel Logout: the identity provider's logout token ends the live
//! sessions of that user, or of that provider session, at once; a replayed, forged or
//! malformed logout token is refused and ends nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common::RawClient;
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// An access token for `subject` whose provider session is `sid`.
fn token_with_sid(stack: &Stack, subject: &str, sid: &str) -> String {
    let mut request = stack.request(subject);
    request.groups = vec!["analysts".into()];
    request.extra_claims.insert("sid".into(), json!(sid));
    stack.mint(&request).unwrap()
}

/// A logout token from the stack's provider with these claims (and no `exp`).
fn logout_token(stack: &Stack, claims: Value) -> String {
    let mut request = stack.request("unused");
    let mut extra: Map<String, Value> = match claims {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    extra.entry("sub").or_insert(Value::Null);
    extra.insert("exp".into(), Value::Null);
    extra.entry("events").or_insert(json!({ EVENT: {} }));
    request.extra_claims = extra;
    stack.mint(&request).unwrap()
}

async fn post_logout(stack: &Stack, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/oidc/backchannel-logout", stack.admin_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Whether the session answers a query (false once Postern ended it).
async fn alive(client: &mut RawClient) -> bool {
    client.query("SELECT 1").await;
    loop {
        match client.read().await {
            None => return false,
            Some(message) if message.tag == backend::READY_FOR_QUERY => return true,
            Some(message) if message.tag == backend::ERROR_RESPONSE => {
                let error = message.error();
                assert_eq!(error.code, "57P01", "{error:?}");
                assert!(
                    error
                        .message
                        .contains("logged out at the identity provider"),
                    "{error:?}"
                );
                assert!(client.read_to_end().await.is_empty());
                return false;
            }
            Some(_) => {}
        }
    }
}

#[tokio::test]
async fn a_logout_token_ends_the_sessions_it_names_once() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let alice_laptop = token_with_sid(&stack, "alice@example.com", "sid-laptop");
    let alice_phone = token_with_sid(&stack, "alice@example.com", "sid-phone");
    let bob = token_with_sid(&stack, "bob@example.com", "sid-bob");
    let (mut laptop, _) = RawClient::login(stack.addr, "reader", &alice_laptop).await;
    let (mut phone, _) = RawClient::login(stack.addr, "reader", &alice_phone).await;
    let (mut bob, _) = RawClient::login(stack.addr, "reader", &bob).await;

    // Refused, ending nothing: no token, a token with a nonce (an ID token, say), one without
    // the logout event, one signed by a key the issuer does not publish, one without sub or sid.
    let (status, body) = post_logout(&stack, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], json!("invalid_request"));
    for (claims, expected) in [
        (
            json!({"sid": "sid-laptop", "jti": "n1", "nonce": "x"}),
            "nonce",
        ),
        (
            json!({"sid": "sid-laptop", "jti": "n2", "events": {"other": {}}}),
            "events",
        ),
        (json!({"jti": "n3"}), "sub or sid"),
        (json!({"sid": "sid-laptop", "jti": null}), "jti"),
    ] {
        let (status, body) = post_logout(&stack, &logout_token(&stack, claims)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{expected}: {body}"
        );
    }
    let forged = {
        let elsewhere = tempfile::tempdir().unwrap();
        let other = postern_sandbox::idp::DevKeys::load_or_create(elsewhere.path()).unwrap();
        let mut request = stack.request("alice@example.com");
        request.extra_claims.insert("jti".into(), json!("forged"));
        request.extra_claims.insert("exp".into(), Value::Null);
        request
            .extra_claims
            .insert("events".into(), json!({ EVENT: {} }));
        other.mint(&request).unwrap()
    };
    let (status, _) = post_logout(&stack, &forged).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Unsigned (alg none), and signed for another audience.
    let unsigned = {
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "logout+jwt"})),
            b64(
                json!({"iss": stack.idp.issuer(), "aud": "postern", "iat": now, "jti": "u1",
                       "sub": "alice@example.com", "events": { EVENT: {} }})
            )
        )
    };
    let (status, body) = post_logout(&stack, &unsigned).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let other_audience = {
        let mut request = stack.request("alice@example.com");
        request.audience = "another-service".into();
        request.extra_claims.insert("jti".into(), json!("a1"));
        request.extra_claims.insert("exp".into(), Value::Null);
        request
            .extra_claims
            .insert("events".into(), json!({ EVENT: {} }));
        stack.mint(&request).unwrap()
    };
    let (status, body) = post_logout(&stack, &other_audience).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("aud"),
        "{body}"
    );
    assert!(alive(&mut laptop).await && alive(&mut phone).await && alive(&mut bob).await);

    // One provider session: only the laptop's Postern session ends.
    let by_sid = logout_token(&stack, json!({"sid": "sid-laptop", "jti": "l1"}));
    let (status, body) = post_logout(&stack, &by_sid).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(&mut laptop).await);
    assert!(alive(&mut phone).await && alive(&mut bob).await);
    // The same token again is a replay.
    let (status, body) = post_logout(&stack, &by_sid).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );

    // The user: every session of alice from this issuer ends; bob's stays.
    let by_subject = logout_token(&stack, json!({"sub": "alice@example.com", "jti": "l2"}));
    let (status, body) = post_logout(&stack, &by_subject).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(&mut phone).await);
    assert!(alive(&mut bob).await);

    let events = stack.audit_events();
    let logouts: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "control" && e["action"] == "backchannel_logout")
        .collect();
    assert_eq!(logouts.len(), 2, "one event per accepted logout token");
    assert_eq!(logouts[0]["details"]["sid"], json!("sid-laptop"));
    assert_eq!(logouts[1]["details"]["subject"], json!("alice@example.com"));
}
