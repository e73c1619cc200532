//! The device authorization grant, refresh tokens and second-factor sign-ins, over HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::tests::{exchange, exchange_body, http, pkce, sign_in, verify};
use super::*;

async fn start() -> (tempfile::TempDir, DevIdentityProvider) {
    let dir = tempfile::tempdir().unwrap();
    let idp = DevIdentityProvider::start(dir.path()).await.unwrap();
    idp.set_device_poll_interval(Duration::from_secs(1));
    (dir, idp)
}

async fn post(idp: &DevIdentityProvider, path: &str, body: &str) -> (u16, Value) {
    let (status, head, body) = http(&format!("{}{path}", idp.issuer()), Some(body)).await;
    assert!(head.contains("cache-control: no-store"), "{head}");
    (status, serde_json::from_str(&body).unwrap())
}

async fn start_device(idp: &DevIdentityProvider, extra: &str) -> Value {
    let (status, answer) = post(
        idp,
        DEVICE_AUTHORIZATION_PATH,
        &format!("client_id=postern-cli&scope=openid+offline_access{extra}"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn poll(idp: &DevIdentityProvider, device_code: &str, client_id: &str) -> (u16, Value) {
    post(
        idp,
        TOKEN_PATH,
        &format!(
            "grant_type={}&device_code={}&client_id={client_id}",
            form::encode(DEVICE_CODE_GRANT),
            form::encode(device_code)
        ),
    )
    .await
}

/// Submits the device form; returns the status and the page.
async fn decide(idp: &DevIdentityProvider, fields: &str) -> (u16, String) {
    let (status, _, page) = http(&format!("{}{DEVICE_PATH}", idp.issuer()), Some(fields)).await;
    (status, page)
}

async fn jwks(idp: &DevIdentityProvider) -> Value {
    let (_, _, body) = http(&idp.jwks_uri(), None).await;
    serde_json::from_str(&body).unwrap()
}

async fn refresh(idp: &DevIdentityProvider, token: &str, client_id: &str) -> (u16, Value) {
    post(
        idp,
        TOKEN_PATH,
        &format!(
            "grant_type=refresh_token&refresh_token={}&client_id={client_id}",
            form::encode(token)
        ),
    )
    .await
}

#[tokio::test]
async fn discovery_advertises_the_device_grant_and_refresh_tokens() {
    let (_dir, idp) = start().await;
    let (_, _, body) = http(&format!("{}{DISCOVERY_PATH}", idp.issuer()), None).await;
    let document: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        document["device_authorization_endpoint"],
        format!("{}/device_authorization", idp.issuer())
    );
    assert_eq!(
        document["grant_types_supported"],
        json!([
            "authorization_code",
            "urn:ietf:params:oauth:grant-type:device_code",
            "refresh_token"
        ])
    );
    assert_eq!(document["acr_values_supported"], json!([MFA_ACR]));
}

#[tokio::test]
async fn a_device_signs_in_with_a_user_code() {
    let (_dir, idp) = start().await;
    let device = start_device(&idp, "").await;
    let user_code = device["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9, "{device}");
    assert_eq!(&user_code[4..5], "-");
    assert_eq!(
        device["verification_uri"],
        format!("{}/device", idp.issuer())
    );
    assert_eq!(
        device["verification_uri_complete"],
        format!("{}/device?user_code={user_code}", idp.issuer())
    );
    assert_eq!(device["expires_in"], DEVICE_CODE_TTL.as_secs());
    assert_eq!(device["interval"], 1);
    let device_code = device["device_code"].as_str().unwrap();

    let (status, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("authorization_pending"))
    );

    // The page of verification_uri_complete shows the code filled in, escaped, on a form that
    // posts to the provider only.
    let (status, head, page) =
        http(device["verification_uri_complete"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("value=\"{user_code}\"")), "{page}");
    assert!(page.contains("name=\"subject\""));
    assert!(
        page.contains("name=\"mfa\" type=\"checkbox\" value=\"1\">"),
        "{page}"
    );
    assert!(head.contains("form-action 'self';"), "{head}");

    // Typed as a person might: lower case, without the dash.
    let typed = user_code.replace('-', " ").to_ascii_lowercase();
    let (status, page) = decide(
        &idp,
        &format!(
            "user_code={}&subject=alice%40example.com&groups=analysts+ops&mfa=1&decision=approve",
            form::encode(&typed)
        ),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Your device is signed in"), "{page}");
    // A code signs one device in.
    let (status, page) = decide(
        &idp,
        &format!("user_code={user_code}&subject=mallory&decision=approve"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        page.contains("unknown, was already used or has expired"),
        "{page}"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, tokens) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["refresh_token"].as_str().unwrap().len() >= 43);
    let jwks = jwks(&idp).await;
    let access = verify(
        tokens["access_token"].as_str().unwrap(),
        &jwks,
        Algorithm::RS256,
    );
    assert_eq!(access["sub"], "alice@example.com");
    assert_eq!(access["groups"], json!(["analysts", "ops"]));
    assert_eq!(access["amr"], json!(["pwd", "otp"]));

    // The device code is spent.
    let (status, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn polling_too_fast_slows_the_device_down() {
    let (_dir, idp) = start().await;
    let device = start_device(&idp, "").await;
    let device_code = device["device_code"].as_str().unwrap();
    assert_eq!(
        poll(&idp, device_code, "postern-cli").await.1["error"],
        "authorization_pending"
    );
    let (status, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("slow_down")));
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("every 6 seconds"),
        "{answer}"
    );
    // The longer interval holds from now on: a poll after the old one is still too soon.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(answer["error"], "slow_down");
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("every 11 seconds")
    );
}

#[tokio::test]
async fn a_denied_an_expired_and_a_foreign_device_code_end_properly() {
    let (_dir, idp) = start().await;

    let device = start_device(&idp, "").await;
    let (status, page) = decide(
        &idp,
        &format!(
            "user_code={}&decision=deny",
            device["user_code"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("denied"), "{page}");
    let device_code = device["device_code"].as_str().unwrap();
    let (status, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("access_denied"))
    );
    let (_, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(
        answer["error"], "invalid_grant",
        "a denial ends the device code"
    );

    let device = start_device(&idp, "").await;
    let device_code = device["device_code"].as_str().unwrap();
    let (_, answer) = poll(&idp, device_code, "someone-else").await;
    assert_eq!(answer["error"], "invalid_grant");
    if let Some(pending) = idp.devices.pending.lock().unwrap().get_mut(device_code) {
        pending.expires = Instant::now();
    }
    let (_, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(answer["error"], "expired_token");
    let (_, answer) = poll(&idp, device_code, "postern-cli").await;
    assert_eq!(answer["error"], "invalid_grant");

    // Hostile or incomplete requests.
    let (status, answer) = post(&idp, DEVICE_AUTHORIZATION_PATH, "scope=openid").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, answer) = post(
        &idp,
        DEVICE_AUTHORIZATION_PATH,
        &format!("client_id={}", "x".repeat(300)),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, page) = decide(&idp, "user_code=BCDF-GHJK&subject=x&decision=approve").await;
    assert_eq!(status, 400, "{page}");
    let (status, page) = decide(&idp, "user_code=BCDF-GHJK&subject=x&decision=maybe").await;
    assert_eq!(status, 400, "{page}");
    let device = start_device(&idp, "").await;
    let (status, page) = decide(
        &idp,
        &format!(
            "user_code={}&subject=&decision=approve",
            device["user_code"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("subject is missing"), "{page}");
}

#[tokio::test]
async fn asking_for_mfa_ticks_the_box_and_the_box_sets_amr() {
    let (_dir, idp) = start().await;
    let device = start_device(&idp, &format!("&acr_values={}", form::encode(MFA_ACR))).await;
    let (_, _, page) = http(device["verification_uri_complete"].as_str().unwrap(), None).await;
    assert!(page.contains("value=\"1\" checked>"), "{page}");

    let (verifier, challenge) = pkce();
    let query = format!(
        "response_type=code&client_id=postern-cli&redirect_uri={}&state=s&nonce=n\
         &code_challenge={challenge}&code_challenge_method=S256&prompt=login&acr_values={}",
        form::encode("http://127.0.0.1:9/callback"),
        form::encode(MFA_ACR)
    );
    let (status, _, page) = http(&format!("{}{AUTHORIZE_PATH}?{query}", idp.issuer()), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("value=\"1\" checked>"), "{page}");
    let (status, head, _) = http(
        &format!("{}{AUTHORIZE_PATH}", idp.issuer()),
        Some(&format!("{query}&subject=dana&mfa=1")),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    let location = head
        .lines()
        .find_map(|line| line.strip_prefix("location: "))
        .unwrap();
    let code = form::Params::parse(location.split_once('?').unwrap().1)
        .unwrap()
        .get("code")
        .unwrap()
        .to_owned();
    let body = format!(
        "grant_type=authorization_code&code={}&code_verifier={verifier}&redirect_uri={}\
         &client_id=postern-cli",
        form::encode(&code),
        form::encode("http://127.0.0.1:9/callback")
    );
    let (status, tokens) = exchange(&idp, &body).await;
    assert_eq!(status, 200, "{tokens}");
    let jwks = jwks(&idp).await;
    for token in ["access_token", "id_token"] {
        let claims = verify(tokens[token].as_str().unwrap(), &jwks, Algorithm::RS256);
        assert_eq!(claims["amr"], json!(["pwd", "otp"]), "{token}");
    }

    // Without the box: a password alone.
    let code = sign_in(&idp, &challenge, "erin", "").await;
    let (_, tokens) = exchange(&idp, &exchange_body(&code, &verifier)).await;
    let claims = verify(
        tokens["access_token"].as_str().unwrap(),
        &jwks,
        Algorithm::RS256,
    );
    assert_eq!(claims["amr"], json!(["pwd"]));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let (_dir, idp) = start().await;
    let (verifier, challenge) = pkce();
    let code = sign_in(&idp, &challenge, "dana@example.com", "dbas").await;
    let (_, tokens) = exchange(&idp, &exchange_body(&code, &verifier)).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();

    let (status, renewed) = refresh(&idp, &first, "postern-console").await;
    assert_eq!(status, 200, "{renewed}");
    let second = renewed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let jwks = jwks(&idp).await;
    let access = verify(
        renewed["access_token"].as_str().unwrap(),
        &jwks,
        Algorithm::RS256,
    );
    assert_eq!(access["sub"], "dana@example.com");
    assert_eq!(access["groups"], json!(["dbas"]));
    assert_eq!(renewed["expires_in"], DEFAULT_TTL.as_secs());
    assert_eq!(idp.refresh_requests(), 1);

    // Another client cannot use it, and the try spends it.
    let (_, other) = exchange(
        &idp,
        &exchange_body(&sign_in(&idp, &challenge, "x", "").await, &verifier),
    )
    .await;
    let third = other["refresh_token"].as_str().unwrap();
    let (status, answer) = refresh(&idp, third, "someone-else").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(refresh(&idp, third, "postern-console").await.0, 400);

    // The first token again: refused, and the one that replaced it is revoked with it.
    let (status, answer) = refresh(&idp, &first, "postern-console").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{answer}"
    );
    let (status, answer) = refresh(&idp, &second, "postern-console").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // An ended session.
    let code = sign_in(&idp, &challenge, "erin", "").await;
    let (_, tokens) = exchange(&idp, &exchange_body(&code, &verifier)).await;
    idp.end_sessions();
    let (_, answer) = refresh(
        &idp,
        tokens["refresh_token"].as_str().unwrap(),
        "postern-console",
    )
    .await;
    assert_eq!(answer["error_description"], "the refresh token has expired");

    let (status, answer) = refresh(&idp, "nonsense", "postern-console").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, answer) = post(&idp, TOKEN_PATH, "grant_type=refresh_token&client_id=x").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(idp.refresh_requests(), 8);
}
