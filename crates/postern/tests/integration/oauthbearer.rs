//! PostgreSQL 18's native OAuth: SASL OAUTHBEARER (RFC 7628) between a client and Postern,
//! spoken byte for byte as libpq 18 speaks it (`fe-auth-oauth.c`): the discovery round that
//! sends the client to its identity provider, the bearer token that opens a session, the tokens
//! and messages Postern refuses, and the choice of method per listener and per target.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::common::{Message, RawClient, wait_until};
use bytes::{BufMut, BytesMut};
use postern_config::ClientAuthMethod;
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend::{self, Authentication, ErrorFields};
use postern_wire::{frontend, startup};
use serde_json::Value;

const ANALYST: &str = "alice@example.com";

/// AuthenticationSASL offering OAUTHBEARER alone, as PostgreSQL 18 sends it for an `oauth` line
/// of `pg_hba.conf`: `R`, length 21, code 10, the mechanism, the empty name ending the list.
const SASL_OAUTHBEARER: &[u8] = b"R\0\0\0\x15\0\0\0\x0aOAUTHBEARER\0\0";

/// A stack whose listener offers OAUTHBEARER to every target.
async fn oauth_stack() -> Stack {
    let mut stack = Stack::start(StackOptions::default())
        .await
        .expect("the test stack starts");
    stack.config.listen.client_auth = ClientAuthMethod::OAuthBearer;
    stack.config.validate().expect("the configuration is valid");
    stack.start_proxy().await.expect("Postern restarts");
    stack
}

/// Connects, sends the startup packet for `role` on the demo target, and returns the client
/// with the authentication request Postern answered with, as raw bytes.
async fn start(addr: SocketAddr, role: &str) -> (RawClient, Vec<u8>) {
    let mut client = RawClient::connect(addr).await;
    let mut out = BytesMut::new();
    startup::encode_startup(&[("user", role), ("database", "demo")], &mut out);
    client.send(&out).await;
    let request = client.read().await.expect("an authentication request");
    (client, request.frame.raw().to_vec())
}

/// Connects and checks that Postern asks for OAUTHBEARER, byte for byte.
async fn start_oauth(addr: SocketAddr, role: &str) -> RawClient {
    let (client, request) = start(addr, role).await;
    assert_eq!(
        request,
        SASL_OAUTHBEARER,
        "{}",
        String::from_utf8_lossy(&request)
    );
    client
}

/// libpq 18's initial client response: `n,,` ^A `auth=` [Bearer token] ^A ^A.
fn client_response(token: Option<&str>) -> Vec<u8> {
    let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
    format!("n,,\x01auth={auth}\x01\x01").into_bytes()
}

async fn send_initial(client: &mut RawClient, data: &[u8]) {
    let mut out = BytesMut::new();
    frontend::encode_sasl_initial_response("OAUTHBEARER", data, &mut out);
    client.send(&out).await;
}

async fn send_response(client: &mut RawClient, data: &[u8]) {
    let mut out = BytesMut::new();
    frontend::encode_sasl_response(data, &mut out);
    client.send(&out).await;
}

/// Reads AuthenticationSASLContinue and parses its error result, checking every field libpq
/// reads: `status`, `scope`, and an `openid-configuration` that belongs to the issuer.
async fn read_error_result(client: &mut RawClient, stack: &Stack) -> Value {
    let message = client.read().await.expect("AuthenticationSASLContinue");
    let Ok(Authentication::SaslContinue(data)) = backend::authentication(&message.frame) else {
        panic!("expected AuthenticationSASLContinue, got {message:?}");
    };
    let result: Value = serde_json::from_slice(data).expect("the error result is JSON");
    assert_eq!(result["status"], "invalid_token", "{result}");
    assert_eq!(result["scope"], "openid", "{result}");
    assert_eq!(
        result["openid-configuration"],
        format!("{}/.well-known/openid-configuration", stack.idp.issuer()),
        "{result}"
    );
    result
}

/// Answers an error result with the kvsep RFC 7628 section 3.2.3 asks for and returns the
/// ErrorResponse that ends the connection.
async fn acknowledge(client: &mut RawClient) -> ErrorFields {
    send_response(client, b"\x01").await;
    closing_error(client).await
}

/// The FATAL ErrorResponse that ends a connection, checking that nothing follows it.
async fn closing_error(client: &mut RawClient) -> ErrorFields {
    let messages = client.read_to_end().await;
    let [message] = &messages[..] else {
        panic!("expected one ErrorResponse, got {messages:?}");
    };
    assert_eq!(message.tag, backend::ERROR_RESPONSE, "{message:?}");
    let error = message.error();
    assert_eq!(error.severity, "FATAL", "{error:?}");
    error
}

#[track_caller]
fn assert_error(error: &ErrorFields, code: &str, needle: &str) {
    assert_eq!(error.code, code, "{error:?}");
    assert!(
        error.message.contains(needle),
        "{needle:?} not in {error:?}"
    );
}

/// Reads the login's answer after a valid token: AuthenticationOk first (OAUTHBEARER sends no
/// AuthenticationSASLFinal), then the usual messages up to ReadyForQuery.
async fn read_login(client: &mut RawClient) -> Vec<Message> {
    let first = client.read().await.expect("AuthenticationOk");
    assert_eq!(
        backend::authentication(&first.frame).ok(),
        Some(Authentication::Ok),
        "{first:?}"
    );
    client.read_until_ready().await
}

async fn select_current_user(client: &mut RawClient) -> String {
    client.query("SELECT current_user").await;
    let answer = client.read_until_ready().await;
    let row = answer
        .iter()
        .find(|m| m.tag == backend::DATA_ROW)
        .unwrap_or_else(|| panic!("no row: {answer:?}"));
    let values = backend::data_row(&row.frame).unwrap();
    String::from_utf8(values[0].unwrap().to_vec()).unwrap()
}

/// Waits until the audit log holds an event matching `check`.
async fn audited(stack: &Stack, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    wait_until(what, || {
        found = stack.audit_events().into_iter().find(|e| check(e));
        std::future::ready(found.is_some())
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn discovery_then_a_token_opens_a_session() {
    let stack = oauth_stack().await;

    // The discovery request libpq 18 sends when it has no token yet.
    let mut client = start_oauth(stack.addr, "reader").await;
    send_initial(&mut client, &client_response(None)).await;
    read_error_result(&mut client, &stack).await;
    let error = acknowledge(&mut client).await;
    assert_error(&error, "28000", "no token given: get one from ");
    assert!(error.message.contains(stack.idp.issuer()), "{error:?}");

    // What libpq does next: the discovery document belongs to the issuer it was given.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let url = format!("{}/.well-known/openid-configuration", stack.idp.issuer());
    let document: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(document["issuer"], stack.idp.issuer());

    // It comes back with the token, in an initial response written here byte by byte.
    let token = stack.token(ANALYST, &["analysts"]);
    let mut client = start_oauth(stack.addr, "reader").await;
    let data = client_response(Some(&token));
    let mut raw = BytesMut::new();
    raw.put_u8(b'p');
    raw.put_i32(i32::try_from(4 + b"OAUTHBEARER\0".len() + 4 + data.len()).unwrap());
    raw.put_slice(b"OAUTHBEARER\0");
    raw.put_i32(i32::try_from(data.len()).unwrap());
    raw.put_slice(&data);
    client.send(&raw).await;
    let login = read_login(&mut client).await;
    assert!(
        login.iter().any(|m| m.tag == backend::BACKEND_KEY_DATA),
        "{login:?}"
    );
    assert_eq!(select_current_user(&mut client).await, "reader");

    // The audit log has the session under the token's subject, and the discovery round.
    let accepted = audited(&stack, "the session is audited", |e| {
        e["kind"] == "connection" && e["decision"] == "accepted"
    })
    .await;
    assert_eq!(accepted["subject"], ANALYST, "{accepted}");
    assert_eq!(accepted["client_auth"], "oauthbearer", "{accepted}");
    let statement = audited(&stack, "the statement is audited", |e| {
        e["kind"] == "statement" && e["sql"] == "SELECT current_user"
    })
    .await;
    assert_eq!(statement["subject"], ANALYST, "{statement}");
    let discovery = audited(&stack, "the discovery round is audited", |e| {
        e["kind"] == "connection" && e["reason"] == "oauth_discovery"
    })
    .await;
    assert_eq!(discovery["decision"], "refused", "{discovery}");

    // A client that leaves the initial response out gets an empty challenge and sends it next.
    let mut client = start_oauth(stack.addr, "reader").await;
    let mut out = BytesMut::new();
    out.put_u8(b'p');
    out.put_i32(4 + 12 + 4);
    out.put_slice(b"OAUTHBEARER\0");
    out.put_i32(-1);
    client.send(&out).await;
    let challenge = client.read().await.expect("an empty challenge");
    assert_eq!(challenge.frame.raw().as_ref(), b"R\0\0\0\x08\0\0\0\x0b");
    send_response(&mut client, &client_response(Some(&token))).await;
    read_login(&mut client).await;
    assert_eq!(select_current_user(&mut client).await, "reader");
}

#[tokio::test]
async fn refusals() {
    let stack = oauth_stack().await;
    let addr = stack.addr;

    // Tokens that fail: the error result first, so the client can find its provider, then
    // FATAL 28000 saying why, as PostgreSQL answers every OAuth failure.
    let mut expired = stack.request(ANALYST);
    expired.groups = vec!["analysts".to_owned()];
    expired.issued_at = Some(SystemTime::now() - Duration::from_secs(7200));
    expired.ttl = Duration::from_secs(3600);
    let expired = stack.mint(&expired).unwrap();
    let good = stack.token(ANALYST, &["analysts"]);
    let mut parts: Vec<&str> = good.split('.').collect();
    let other = stack.token("mallory@example.com", &["analysts"]);
    parts[1] = other.split('.').nth(1).unwrap();
    let forged = parts.join(".");
    for (what, data, needle, reason) in [
        (
            "expired",
            client_response(Some(&expired)),
            "token expired at ",
            "expired",
        ),
        (
            "forged",
            client_response(Some(&forged)),
            "token signature is invalid",
            "bad_signature",
        ),
        (
            "not a bearer token",
            b"n,,\x01auth=Basic YWxpY2U6c2VjcmV0\x01\x01".to_vec(),
            "is not a bearer token",
            "not_bearer",
        ),
    ] {
        let mut client = start_oauth(addr, "reader").await;
        send_initial(&mut client, &data).await;
        read_error_result(&mut client, &stack).await;
        let error = acknowledge(&mut client).await;
        assert_error(&error, "28000", needle);
        assert!(!error.message.contains("eyJ"), "{what}: {error:?}");
        let refused = audited(&stack, what, |e| {
            e["kind"] == "connection" && e["client_auth"] == "oauthbearer" && e["reason"] == reason
        })
        .await;
        assert_eq!(refused["decision"], "refused", "{what}: {refused}");
    }

    // A valid token for a role its identity may not assume: authenticated, then refused at
    // once (no error result: the token is fine).
    let mut client = start_oauth(addr, "writer").await;
    send_initial(&mut client, &client_response(Some(&good))).await;
    let error = closing_error(&mut client).await;
    assert_error(&error, "28000", "may not assume role \"writer\"");

    // Channel binding (`p=`) and an authorization identity (`a=`): refused as PostgreSQL does,
    // without an error result.
    for (data, code, needle) in [
        (
            format!("p=tls-server-end-point,,\x01auth=Bearer {good}\x01\x01"),
            "08P01",
            "channel binding",
        ),
        (
            format!("n,a=alice,\x01auth=Bearer {good}\x01\x01"),
            "0A000",
            "authorization identity",
        ),
        (
            format!("n,,\x01auth=Bearer {good}\x01"),
            "08P01",
            "malformed OAUTHBEARER message",
        ),
    ] {
        let mut client = start_oauth(addr, "reader").await;
        send_initial(&mut client, data.as_bytes()).await;
        let error = closing_error(&mut client).await;
        assert_error(&error, code, needle);
        assert!(!error.message.contains(&good), "{error:?}");
    }

    // After an error result, anything but a single kvsep is a protocol violation.
    let mut client = start_oauth(addr, "reader").await;
    send_initial(&mut client, &client_response(None)).await;
    read_error_result(&mut client, &stack).await;
    send_response(&mut client, &client_response(Some(&good))).await;
    let error = closing_error(&mut client).await;
    assert_error(&error, "08P01", "a single 0x01");

    // Another mechanism.
    let mut client = start_oauth(addr, "reader").await;
    let mut out = BytesMut::new();
    frontend::encode_sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", &mut out);
    client.send(&out).await;
    let error = closing_error(&mut client).await;
    assert_error(&error, "08P01", "offers only OAUTHBEARER");

    // A client that sends its token as a password is told what to do instead.
    let mut client = start_oauth(addr, "reader").await;
    let mut out = BytesMut::new();
    frontend::encode_password(&good, &mut out);
    client.send(&out).await;
    let error = closing_error(&mut client).await;
    assert_error(&error, "28000", "takes tokens through SASL OAUTHBEARER");
    assert!(error.message.contains(stack.idp.issuer()), "{error:?}");
    assert!(!error.message.contains(&good), "{error:?}");

    // A driver without OAUTHBEARER stops at the request itself, on its own side.
    let error = stack.connect("reader", &good).await.unwrap_err();
    assert!(error.as_db_error().is_none(), "{error:?}");
    let cause = std::error::Error::source(&error).map(ToString::to_string);
    assert_eq!(
        cause.as_deref(),
        Some("unsupported SASL mechanism"),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_method_is_chosen_per_target() {
    let mut stack = Stack::start(StackOptions::default())
        .await
        .expect("the test stack starts");
    let token = stack.token(ANALYST, &["analysts"]);

    // The default: the token as a password, for every client.
    let (_, request) = start(stack.addr, "reader").await;
    assert_eq!(request, b"R\0\0\0\x08\0\0\0\x03");
    let client = stack.connect("reader", &token).await.unwrap();
    assert_eq!(common::current_user(&client).await, "reader");

    // One target switched to OAUTHBEARER on a password listener.
    let demo = stack.config.targets.get_mut("demo").unwrap();
    demo.client_auth = Some(ClientAuthMethod::OAuthBearer);
    demo.oauth_scope = Some("openid postern".to_owned());
    stack.config.validate().expect("the configuration is valid");
    stack.start_proxy().await.expect("Postern restarts");
    let mut client = start_oauth(stack.addr, "reader").await;
    send_initial(&mut client, &client_response(None)).await;
    let message = client.read().await.expect("AuthenticationSASLContinue");
    let Ok(Authentication::SaslContinue(data)) = backend::authentication(&message.frame) else {
        panic!("expected AuthenticationSASLContinue, got {message:?}");
    };
    let result: Value = serde_json::from_slice(data).unwrap();
    assert_eq!(result["scope"], "openid postern", "{result}");
    let error = acknowledge(&mut client).await;
    assert_error(&error, "28000", "scope \"openid postern\"");
    let mut client = start_oauth(stack.addr, "reader").await;
    send_initial(&mut client, &client_response(Some(&token))).await;
    read_login(&mut client).await;
    assert_eq!(select_current_user(&mut client).await, "reader");
}
