//! The admin API's `/metrics`, `/openapi.json` and audit search: counters move as statements
//! are allowed, refused and held and as logins are refused; the OpenAPI document describes
//! exactly the routes served; the audit log can be searched by kind and subject by those
//! allowed `view_audit`, and the search itself is on record.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::RawClient;
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Writers may write, but a DELETE needs one approval from group `dbas`; auditors may search
/// the audit log.
const POLICY: &str = r#"
@id("connect") permit (principal, action == Action::"connect", resource);
@id("read") permit (principal, action == Action::"read", resource);
@id("writes") permit (principal, action == Action::"write", resource)
    unless { context.command == "DELETE" };
@id("deletes-need-a-dba") @approval("dbas")
permit (principal, action == Action::"write", resource) when { context.command == "DELETE" };
@id("approvers") permit (principal in Group::"dbas", action == Action::"approve", resource);
@id("auditors") permit (principal in Group::"auditors", action == Action::"view_audit", resource);
"#;

async fn stack() -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut stack = Stack::start(StackOptions {
        policies: vec![POLICY.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.config.policy.include_defaults = false;
    stack.config.approvals.wait = Duration::from_secs(30);
    stack.start_proxy().await.unwrap();
    stack
}

async fn get(stack: &Stack, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}{path}", stack.admin_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn get_json(stack: &Stack, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let response = get(stack, path, token).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The samples of `/metrics`, by series (`name{labels}`), after checking the content type and
/// that no token is needed.
async fn metrics(stack: &Stack) -> BTreeMap<String, f64> {
    let response = get(stack, "/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP postern_") || line.starts_with("# TYPE postern_"),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        samples.insert(series.to_owned(), value.parse().expect("a number"));
    }
    samples
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// How much each series moved between two scrapes.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    sample(after, series) - sample(before, series)
}

#[tokio::test]
async fn counters_move_with_statements_logins_and_approvals() {
    let stack = stack().await;
    let before = metrics(&stack).await;
    assert_eq!(
        sample(
            &before,
            &format!(
                "postern_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(sample(&before, "postern_sessions"), 0.0);

    // One allowed statement, one the guard refuses.
    let engineer = stack.token("erin@example.com", &["engineers"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &engineer).await;
    client.query("SELECT count(*) FROM orders").await;
    client.read_until_ready().await;
    client.query("SET ROLE postgres").await;
    let replies = client.read_until_ready().await;
    assert!(
        replies.iter().any(|m| m.tag == backend::ERROR_RESPONSE),
        "{replies:?}"
    );

    // A login with a token that does not verify, and one without a token.
    let refused = stack
        .connect("writer", "not.a.token")
        .await
        .expect_err("refused");
    assert_eq!(common::sqlstate(&refused), "28P01");
    let _ = stack.connect("writer", " ").await.expect_err("refused");

    // A DELETE held for approval, and denied.
    let dba = stack.token("dora@example.com", &["dbas"]);
    client.query("DELETE FROM orders WHERE false").await;
    let notice = client.read().await.expect("a notice");
    assert_eq!(notice.tag, backend::NOTICE_RESPONSE, "{notice:?}");
    let message = notice.error().message;
    let id = message
        .trim_start_matches("statement held for approval: request ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/requests/{id}/deny", stack.admin_url()))
        .bearer_auth(&dba)
        .json(&json!({"comment": "not today"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let replies = client.read_until_ready().await;
    assert!(
        replies.iter().any(|m| m.tag == backend::ERROR_RESPONSE
            && m.error().message.contains("denied by dora@example.com")),
        "{replies:?}"
    );

    // A bad token at the admin API.
    let (status, _) = get_json(&stack, "/v1/sessions", Some("not.a.token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let after = metrics(&stack).await;
    assert_eq!(sample(&after, "postern_sessions"), 1.0);
    let moves = [
        ("postern_connections_total{outcome=\"accepted\"}", 1.0),
        (
            "postern_connections_total{outcome=\"refused\",reason=\"malformed\"}",
            1.0,
        ),
        (
            "postern_connections_total{outcome=\"refused\",reason=\"no_token\"}",
            1.0,
        ),
        ("postern_auth_failures_total{reason=\"malformed\"}", 1.0),
        ("postern_auth_failures_total{reason=\"no_token\"}", 1.0),
        (
            "postern_admin_auth_failures_total{reason=\"malformed\"}",
            1.0,
        ),
        ("postern_statements_total{decision=\"allowed\"}", 1.0),
        ("postern_statements_total{decision=\"refused\"}", 1.0),
        ("postern_statements_total{decision=\"held\"}", 1.0),
        ("postern_approval_requests_total{outcome=\"opened\"}", 1.0),
        ("postern_approval_requests_total{outcome=\"denied\"}", 1.0),
        ("postern_approval_requests_total{outcome=\"approved\"}", 0.0),
        (
            "postern_approval_wait_seconds_count{outcome=\"denied\"}",
            1.0,
        ),
        (
            "postern_approval_wait_seconds_bucket{outcome=\"denied\",le=\"+Inf\"}",
            1.0,
        ),
        ("postern_upstream_errors_total{kind=\"connect\"}", 0.0),
    ];
    for (series, by) in moves {
        assert_eq!(moved(&before, &after, series), by, "{series}");
    }
    assert!(
        sample(
            &after,
            "postern_approval_wait_seconds_sum{outcome=\"denied\"}"
        ) > 0.0
    );

    // No label carries a name a client chose.
    let text = get(&stack, "/metrics", None).await.text().await.unwrap();
    for name in ["erin", "dora", "orders", "not.a.token", id.as_str()] {
        assert!(!text.contains(name), "{name} in\n{text}");
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let stack = stack().await;
    let (status, document) = get_json(&stack, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": document["components"]["securitySchemes"]["bearer"]["description"],
        })
    );
    assert_eq!(
        document["components"]["schemas"]["Error"]["required"],
        json!(["error"])
    );

    let served: BTreeSet<(String, String)> = postern_admin::routes()
        .map(|(method, path)| (method.to_ascii_lowercase(), path.to_owned()))
        .collect();
    let mut described = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            described.insert((method.clone(), path.clone()));
            // Every operation that needs a token says it fails without one.
            let open = operation["security"] == json!([]);
            assert_eq!(
                operation["responses"].get("401").is_some(),
                !open,
                "{method} {path}"
            );
        }
    }
    assert_eq!(served, described);

    // And each route is really served: a request reaches a handler (which may refuse it), never
    // the router's 404 or 405.
    let client = reqwest::Client::new();
    for (method, path) in postern_admin::routes() {
        if path == "/v1/events" {
            continue; // A stream: it would stay open.
        }
        let url = format!("{}{}", stack.admin_url(), path.replace("{id}", "x"));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client.request(method.clone(), url).send().await.unwrap();
        assert!(
            !matches!(
                response.status(),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ) || response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .is_some_and(|v| v == "application/json"),
            "{method} {path}: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn auditors_search_the_log_by_kind_and_subject() {
    let stack = stack().await;
    let alice = stack.token("alice@example.com", &["analysts"]);
    let auditor = stack.token("ada@example.com", &["auditors"]);
    let client = stack.connect("reader", &alice).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    client.simple_query("SELECT 2").await.unwrap();
    let bob = stack.token("bob@example.com", &["analysts"]);
    let other = stack.connect("reader", &bob).await.unwrap();
    other.simple_query("SELECT 3").await.unwrap();
    let _ = stack.connect("reader", "not.a.token").await.unwrap_err();

    // Without a token, or without view_audit: no.
    let (status, _) = get_json(&stack, "/v1/audit", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get_json(&stack, "/v1/audit", Some(&alice)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("alice@example.com may not view_audit"),
        "{body}"
    );

    let (status, body) = get_json(
        &stack,
        "/v1/audit?kind=statement&subject=alice@example.com",
        Some(&auditor),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    let sql: Vec<&str> = events.iter().map(|e| e["sql"].as_str().unwrap()).collect();
    assert_eq!(sql, ["SELECT 2", "SELECT 1"], "newest first: {body}");
    assert!(events.iter().all(|e| e["kind"] == "statement"
        && e["subject"] == "alice@example.com"
        && e["prev"].is_string()));
    assert_eq!(body["exhausted"], true);

    // Refused logins are connection events.
    let (_, body) = get_json(&stack, "/v1/audit?kind=connection", Some(&auditor)).await;
    let events = body["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["decision"] == "refused" && e["reason"] == "malformed"),
        "{body}"
    );
    assert!(events.iter().all(|e| e["kind"] == "connection"));

    // A limit, and a window with nothing in it.
    let (_, body) = get_json(&stack, "/v1/audit?limit=1", Some(&auditor)).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["exhausted"], false);
    let (_, body) = get_json(&stack, "/v1/audit?until=1000000000", Some(&auditor)).await;
    assert_eq!(body["events"], json!([]));

    // Wrong searches say what is wrong.
    for query in [
        "limit=0",
        "limit=5000",
        "since=yesterday",
        "kind=Drop%20table",
    ] {
        let (status, body) = get_json(&stack, &format!("/v1/audit?{query}"), Some(&auditor)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, body) = get_json(&stack, "/v1/audit?colour=red", Some(&auditor)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].is_string(), "{body}");

    // Every search is on record, with who searched and for what.
    let (_, body) = get_json(
        &stack,
        "/v1/audit?kind=control&subject=ada@example.com",
        Some(&auditor),
    )
    .await;
    let searches = body["events"].as_array().unwrap();
    assert!(
        searches.iter().any(|e| e["action"] == "search_audit"
            && e["details"]["kind"] == json!(["statement"])
            && e["details"]["subject"] == "alice@example.com"),
        "{body}"
    );
    assert!(
        searches
            .iter()
            .all(|e| e["action"] == "search_audit" && e["by"] == "ada@example.com")
    );

    // A log that cannot be read (renamed away: the writer refuses to continue) is a 503 that
    // says so.
    std::fs::rename(stack.audit_path(), stack.dir().join("moved.jsonl")).unwrap();
    let (status, body) = get_json(&stack, "/v1/audit", Some(&auditor)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("audit log"),
        "{body}"
    );
}
