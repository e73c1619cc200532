//! Revocation: by subject, group or token id, through the admin API and the CLI. Every live
//! session it covers ends at once with a message saying access was revoked, a statement it was
//! running is rolled back, new logins are refused until it is lifted or lapses, and it survives
//! a restart. A revocation written to the store by another Postern reaches this one's sessions
//! within about a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common::{RawClient, assert_db_error, wait_until};
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

const OPERATORS: &str = "@id(\"operators\")\npermit (principal in Group::\"operators\", action in [Action::\"view_sessions\", Action::\"end_session\", Action::\"revoke\"], resource);\n";

async fn stack() -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Stack::start(StackOptions {
        policies: vec![OPERATORS.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap()
}

async fn revoke(stack: &Stack, token: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/revocations", stack.admin_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn lift(stack: &Stack, token: &str, id: &str) -> StatusCode {
    reqwest::Client::new()
        .delete(format!("{}/v1/revocations/{id}", stack.admin_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Reads until the FATAL that ends the session; returns its message.
async fn fatal(client: &mut RawClient) -> String {
    loop {
        let message = client.read().await.expect("a FATAL before the end");
        if message.tag == backend::ERROR_RESPONSE {
            let error = message.error();
            assert_eq!(
                (error.severity.as_str(), error.code.as_str()),
                ("FATAL", "57P01")
            );
            return error.message;
        }
    }
}

#[tokio::test]
async fn revoking_a_subject_ends_its_sessions_and_refuses_it_until_lifted() {
    let mut stack = stack().await;
    let operator = stack.token("olga@example.com", &["operators"]);
    let erin = stack.token("erin@example.com", &["engineers"]);
    let other = stack.token("eve@example.com", &["engineers"]);

    // Only those allowed to revoke may.
    let (status, body) = revoke(
        &stack,
        &erin,
        json!({"scope": {"kind": "subject", "subject": "eve@example.com"}, "reason": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Two sessions of erin's — one running a write and a sleep — and one of someone else.
    let (mut busy, _) = RawClient::login(stack.addr, "writer", &erin).await;
    let (mut idle, _) = RawClient::login(stack.addr, "writer", &erin).await;
    let bystander = stack.connect("writer", &other).await.unwrap();
    busy.query("BEGIN; UPDATE orders SET customer = 'revoked' WHERE id = 1; SELECT pg_sleep(60)")
        .await;
    let direct = stack.direct().await.unwrap();
    wait_until("the sleep to run", || async {
        direct
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(60)'",
                &[],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;

    let (status, body) = revoke(
        &stack,
        &operator,
        json!({"scope": {"kind": "subject", "subject": "erin@example.com"}, "reason": "left the company"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["sessions_ended"], 2, "{body}");
    let id = body["revocation"]["id"].as_str().unwrap().to_owned();

    let expected = "terminating connection: access for erin@example.com was revoked by \
                    olga@example.com: left the company";
    assert_eq!(fatal(&mut busy).await, expected);
    assert_eq!(fatal(&mut idle).await, expected);
    bystander.simple_query("SELECT 1").await.unwrap();
    wait_until("the revoked backend to end", || async {
        direct
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)'",
                &[],
            )
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let customer: String = direct
        .query_one("SELECT customer FROM orders WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(customer, "Ada Lovelace");

    // New logins are refused, with the reason; across a restart too.
    let error = stack.connect("writer", &erin).await.unwrap_err();
    assert_db_error(
        &error,
        "28000",
        "access for erin@example.com was revoked by olga@example.com: left the company",
    );
    stack.stop_proxy().await;
    stack.start_proxy().await.unwrap();
    let error = stack.connect("writer", &erin).await.unwrap_err();
    assert_db_error(&error, "28000", "was revoked");

    // Lifted: erin may log in again.
    assert_eq!(lift(&stack, &operator, &id).await, StatusCode::OK);
    assert_eq!(lift(&stack, &operator, &id).await, StatusCode::NOT_FOUND);
    stack.connect("writer", &erin).await.unwrap();

    // Every step is in the audit trail.
    let events = stack.audit_events();
    let actions: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "control")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "lift_revocation", "lift_revocation"]);
}

#[tokio::test]
async fn groups_and_token_ids_can_be_revoked_and_revocations_lapse() {
    let stack = stack().await;
    let operator = stack.token("olga@example.com", &["operators"]);
    let analyst = stack.token("alice@example.com", &["analysts"]);
    let mut request = stack.request("erin@example.com");
    request.groups = vec!["engineers".to_owned()];
    let first = stack.mint(&request).unwrap();
    let second = stack.mint(&request).unwrap();
    let jti = |token: &str| -> String {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["jti"]
            .as_str()
            .expect("dev tokens carry a jti")
            .to_owned()
    };

    // A token id: that token only.
    let (status, body) = revoke(
        &stack,
        &operator,
        json!({"scope": {"kind": "token_id", "token_id": jti(&first)}, "reason": "leaked in a log"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let error = stack.connect("writer", &first).await.unwrap_err();
    assert_db_error(
        &error,
        "28000",
        "was revoked by olga@example.com: leaked in a log",
    );
    stack.connect("writer", &second).await.unwrap();

    // A group, for a time: everyone in it, until it lapses.
    let (mut session, _) = RawClient::login(stack.addr, "reader", &analyst).await;
    let (status, body) = revoke(
        &stack,
        &operator,
        json!({"scope": {"kind": "group", "group": "analysts"}, "reason": "audit", "lasts": "2s"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        fatal(&mut session)
            .await
            .contains("was revoked by olga@example.com")
    );
    let error = stack.connect("reader", &analyst).await.unwrap_err();
    assert_db_error(&error, "28000", "until");
    wait_until("the group revocation to lapse", || async {
        stack.connect("reader", &analyst).await.is_ok()
    })
    .await;

    // A revocation written to the store by another Postern sharing it reaches this one.
    let (mut session, _) = RawClient::login(stack.addr, "writer", &second).await;
    let other = postern_store::Store::open(&stack.config.store.path)
        .await
        .unwrap();
    other
        .add_revocation(postern_store::NewRevocation {
            scope: postern_store::RevocationScope::Subject {
                subject: "erin@example.com".to_owned(),
            },
            reason: "from the other instance".to_owned(),
            created_by: "olga@example.com".to_owned(),
            created_at: postern_store::unix_seconds(std::time::SystemTime::now()),
            expires_at: None,
        })
        .await
        .unwrap();
    assert!(
        fatal(&mut session)
            .await
            .ends_with("from the other instance")
    );
}
