//! The admin API and the CLI on top of it: callers prove who they are with the same tokens as
//! database clients, policy decides what they may see and do, and ending a session through it
//! reaches the session's client at once and is audited.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common::RawClient;
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend;
use reqwest::StatusCode;
use serde_json::Value;

const OPERATORS: &str = "@id(\"operators\")\npermit (principal in Group::\"operators\", action in [Action::\"view_sessions\", Action::\"end_session\"], resource);\n";

async fn get(
    stack: &Stack,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", stack.admin_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn end(stack: &Stack, id: &str, token: &str, reason: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/sessions/{id}/end", stack.admin_url()))
        .bearer_auth(token)
        .json(&serde_json::json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn cli(stack: &Stack, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(args)
        .env("POSTERN_ADMIN", stack.admin_url())
        .env("POSTERN_TOKEN", token)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn operators_see_and_end_sessions_through_the_api_and_the_cli() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stack = Stack::start(StackOptions {
        policies: vec![OPERATORS.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let operator = stack.token("olga@example.com", &["operators"]);
    let analyst = stack.token("alice@example.com", &["analysts"]);
    let engineer = stack.token("erin@example.com", &["engineers"]);

    let (status, _, body) = get(&stack, "/healthz", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(get(&stack, "/readyz", None).await.0, StatusCode::OK);

    // Who is asking must be proven, and allowed.
    let (status, headers, body) = get(&stack, "/v1/sessions", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(headers[reqwest::header::WWW_AUTHENTICATE], "Bearer");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (status, _, body) = get(&stack, "/v1/sessions", Some("not.a.token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = get(&stack, "/v1/sessions", Some(&analyst)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("alice@example.com may not view_sessions"),
        "{body}"
    );

    let (mut session, _) = RawClient::login(stack.addr, "writer", &engineer).await;
    let (status, _, body) = get(&stack, "/v1/sessions", Some(&operator)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(sessions[0]["subject"], "erin@example.com");
    assert_eq!(sessions[0]["role"], "writer");
    assert_eq!(sessions[0]["state"], "idle");
    let id = sessions[0]["id"].as_str().unwrap().to_owned();

    // The CLI shows the same.
    let (ok, stdout, stderr) = cli(&stack, &operator, &["sessions"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&id) && stdout.contains("erin@example.com"),
        "{stdout}"
    );
    assert!(stdout.contains("(1 sessions)"), "{stdout}");
    let (ok, _, stderr) = cli(&stack, &analyst, &["sessions"]).await;
    assert!(!ok);
    assert!(stderr.contains("403"), "{stderr}");

    // Without view rights a session does not even exist; a reason is required.
    let (status, body) = end(&stack, &id, &analyst, "curious").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = end(&stack, &id, &operator, "  ").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (ok, stdout, stderr) =
        cli(&stack, &operator, &["kill", &id, "--reason", "maintenance"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ended session"), "{stdout}");
    let message = session.read().await.expect("a FATAL");
    assert_eq!(message.tag, backend::ERROR_RESPONSE);
    let fatal = message.error();
    assert_eq!(fatal.code, "57P01");
    assert_eq!(
        fatal.message,
        "terminating connection: your session was ended by olga@example.com: maintenance"
    );
    assert!(session.read_to_end().await.is_empty());

    let events = stack.audit_events();
    let control = events
        .iter()
        .find(|e| e["kind"] == "control")
        .expect("the kill is audited");
    assert_eq!(control["action"], "end_session");
    assert_eq!(control["by"], "olga@example.com");
    assert_eq!(control["details"]["session"], id.as_str());
    assert_eq!(control["details"]["reason"], "maintenance");
}
