//! Just-in-time approval end to end: a statement that only an `@approval` permit allows waits
//! for another identity's approval through the admin API, then runs; denials, the wait's end,
//! cancels, budgets, exact-statement grants, expiry, transactions and the extended protocol.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::common::{RawClient, count, outcome, wait_until};
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Writers may write, but a DELETE needs one approval from group `dbas`; `dbas` and `auditors`
/// may approve (auditors are in no approver group, so policy alone is not enough).
const POLICY: &str = r#"
@id("connect") permit (principal, action in [Action::"connect"], resource);
@id("read") permit (principal, action == Action::"read", resource);
@id("writes") permit (principal, action == Action::"write", resource)
    unless { context.command == "DELETE" };
@id("deletes-need-a-dba") @approval("dbas")
permit (principal, action == Action::"write", resource) when { context.command == "DELETE" };
@id("approvers") permit (principal in Group::"dbas", action == Action::"approve", resource);
@id("auditors-may-approve") permit (principal in Group::"auditors", action == Action::"approve", resource);
"#;

/// The same, with two different people needed.
const TWO_PERSON_POLICY: &str = r#"
@id("connect") permit (principal, action in [Action::"connect"], resource);
@id("read") permit (principal, action == Action::"read", resource);
@id("deletes-need-two") @approval("group=dbas approvers=2 ttl=30m")
permit (principal, action == Action::"write", resource) when { context.command == "DELETE" };
@id("approvers") permit (principal in Group::"dbas", action == Action::"approve", resource);
"#;

/// A clock tests can move forward.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    fn clock(&self) -> postern_proxy::Clock {
        let offset = self.0.clone();
        Arc::new(move || SystemTime::now() + Duration::from_secs(offset.load(Ordering::SeqCst)))
    }
}

async fn approval_stack(policy: &str, wait: Duration, clock: Option<&TestClock>) -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut stack = Stack::start(StackOptions {
        policies: vec![policy.to_owned()],
        clock: clock.map(TestClock::clock),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.config.policy.include_defaults = false;
    stack.config.approvals.wait = wait;
    stack.config.approvals.keepalive = Duration::from_secs(1);
    stack.start_proxy().await.unwrap();
    stack
}

async fn post(stack: &Stack, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", stack.admin_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(stack: &Stack, path: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", stack.admin_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `sql` and reads up to the notice that says it is held; returns the request id.
async fn held(client: &mut RawClient, sql: &str) -> String {
    client.query(sql).await;
    let notice = client.read().await.expect("a notice");
    assert_eq!(notice.tag, backend::NOTICE_RESPONSE, "{notice:?}");
    let message = notice.error().message;
    assert!(
        message.starts_with("statement held for approval: request "),
        "{message}"
    );
    assert!(message.contains("postern approve"), "{message}");
    assert!(
        message.contains("1 approval from group \"dbas\"") || message.contains("2 approvals"),
        "{message}"
    );
    message
        .trim_start_matches("statement held for approval: request ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

async fn request_state(stack: &Stack, id: &str, token: &str) -> String {
    let (status, body) = get(stack, &format!("/v1/requests/{id}"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["request"]["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_held_delete_runs_once_another_identity_approves() {
    let stack = approval_stack(POLICY, Duration::from_secs(60), None).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;

    let id = held(
        &mut client,
        "-- reason: INC-42 duplicate order\nDELETE FROM orders WHERE customer = 'Alan Turing'",
    )
    .await;
    // While it waits, nothing has run and the request is pending, with what approvers need.
    assert_eq!(count(&stack, "customer = 'Alan Turing'").await, 1);
    let (status, body) = get(&stack, "/v1/requests?state=pending", &dba).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let request = &body["requests"][0];
    assert_eq!(request["id"], json!(id));
    assert_eq!(request["requester_subject"], json!("wes@example.com"));
    assert_eq!(request["role"], json!("writer"));
    assert_eq!(request["reason"], json!("INC-42 duplicate order"));
    assert_eq!(request["requirements"][0]["group"], json!("dbas"));
    assert_eq!(request["actions"][0]["action"], json!("write"));
    let sessions = stack.sessions().unwrap().list();
    assert!(sessions.iter().any(|s| s.subject == "wes@example.com"
        && s.state == postern_proxy::registry::SessionState::WaitingForApproval),);

    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({"comment": "checked the duplicate"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], json!("approved"));
    assert_eq!(body["grant"]["created_by"], json!(["dana@example.com"]));

    let (tags, error) = outcome(&mut client).await;
    assert_eq!(error, None);
    assert_eq!(tags, ["DELETE 1"]);
    assert_eq!(count(&stack, "customer = 'Alan Turing'").await, 0);
    // The single-use grant is spent: the same statement waits again.
    let again = held(
        &mut client,
        "DELETE FROM orders WHERE customer = 'Alan Turing'",
    )
    .await;
    assert_ne!(again, id);

    // The whole trail, under both names, each event carrying the request id.
    wait_until("the executed event is written", || {
        let events = stack.audit_events();
        let id = id.clone();
        async move {
            events.iter().any(|e| {
                e["kind"] == "approval" && e["action"] == "executed" && e["request"] == json!(id)
            })
        }
    })
    .await;
    let events = stack.audit_events();
    let trail: Vec<&Value> = events
        .iter()
        .filter(|e| e["request"] == json!(id) || e["details"]["request"] == json!(id))
        .collect();
    let actions: Vec<&str> = trail
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    for expected in ["requested", "vote", "approved", "executed"] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let requested = trail.iter().find(|e| e["action"] == "requested").unwrap();
    assert_eq!(requested["subject"], json!("wes@example.com"));
    let approved = trail.iter().find(|e| e["action"] == "approved").unwrap();
    assert_eq!(approved["by"], json!(["dana@example.com"]));
    let statement = events
        .iter()
        .find(|e| e["kind"] == "statement" && e["approval"]["request"] == json!(id))
        .expect("the statement event names its approval");
    assert_eq!(statement["subject"], json!("wes@example.com"));
}

#[tokio::test]
async fn approvers_are_checked_and_two_of_two_needs_two_people() {
    let stack = approval_stack(TWO_PERSON_POLICY, Duration::from_secs(60), None).await;
    let writer = stack.token("wes@example.com", &["engineers", "dbas"]);
    let dana = stack.token("dana@example.com", &["dbas"]);
    let dave = stack.token("dave@example.com", &["dbas"]);
    let outsider = stack.token("otto@example.com", &["engineers"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    let id = held(
        &mut client,
        "DELETE FROM orders WHERE customer = 'Ada Lovelace'",
    )
    .await;
    let approve = |token: String| {
        let path = format!("/v1/requests/{id}/approve");
        let stack = &stack;
        async move { post(stack, &path, &token, json!({})).await }
    };

    // The requester is a dba, and still may not approve their own request.
    let (status, body) = approve(writer.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("own request"),
        "{body}"
    );
    // Someone policy does not allow to approve cannot even see the request.
    let (status, body) = approve(outsider.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = approve(dana.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], json!("recorded"));
    // The same person twice does not make two.
    let (status, body) = approve(dana.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(request_state(&stack, &id, &dana).await, "pending");
    assert_eq!(count(&stack, "customer = 'Ada Lovelace'").await, 1);

    let (status, body) = approve(dave).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], json!("approved"));
    let (tags, error) = outcome(&mut client).await;
    assert_eq!((tags, error), (vec!["DELETE 1".to_owned()], None));
}

#[tokio::test]
async fn an_approver_outside_the_group_and_a_denial() {
    let stack = approval_stack(POLICY, Duration::from_secs(60), None).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let auditor = stack.token("ann@example.com", &["auditors"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    let id = held(&mut client, "DELETE FROM orders").await;

    // Policy lets auditors approve, but this request needs a member of dbas.
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &auditor,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not in group \"dbas\""),
        "{body}"
    );
    // A denial needs a comment, and the requester is told who denied it and why.
    let (status, _) = post(
        &stack,
        &format!("/v1/requests/{id}/deny"),
        &dba,
        json!({"comment": " "}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/deny"),
        &dba,
        json!({"comment": "use a WHERE clause"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (tags, error) = outcome(&mut client).await;
    assert!(tags.is_empty());
    let (code, message) = error.unwrap();
    assert_eq!(code, "42501");
    assert_eq!(
        message,
        format!("approval request {id} was denied by dana@example.com: use a WHERE clause")
    );
    assert_eq!(count(&stack, "true").await, 4);
    // The session is otherwise unaffected.
    client.query("SELECT count(*) FROM orders").await;
    let (tags, error) = outcome(&mut client).await;
    assert_eq!((tags, error), (vec!["SELECT 1".to_owned()], None));
}

#[tokio::test]
async fn statement_grants_cover_the_exact_statement_within_their_budget_and_time() {
    let clock = TestClock::default();
    let stack = approval_stack(POLICY, Duration::from_secs(2), Some(&clock)).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;

    // Not decided within the wait: an error naming the request, which stays open.
    let delete_ada = "DELETE FROM orders WHERE customer = 'Ada Lovelace'";
    let id = held(&mut client, delete_ada).await;
    let (tags, error) = outcome(&mut client).await;
    assert!(tags.is_empty());
    let (code, message) = error.unwrap();
    assert_eq!(code, "42501");
    assert!(
        message.contains(&format!("approval request {id} was not decided within 2s")),
        "{message}"
    );
    assert!(message.contains("stays open"), "{message}");
    assert_eq!(request_state(&stack, &id, &dba).await, "pending");

    // Approved later, for two uses within ten minutes: running it again uses the grant.
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({"budget": 2, "ttl": "10m"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    client.query(delete_ada).await;
    let (tags, error) = outcome(&mut client).await;
    assert_eq!((tags, error), (vec!["DELETE 1".to_owned()], None));

    // Other literal values are another statement: held, not covered.
    let other = held(
        &mut client,
        "DELETE FROM orders WHERE customer = 'Grace Hopper'",
    )
    .await;
    assert_ne!(other, id);
    let (_, error) = outcome(&mut client).await;
    assert!(error.unwrap().1.contains("was not decided"));
    assert_eq!(count(&stack, "customer = 'Grace Hopper'").await, 1);

    // The second use (nothing left to delete, but it runs).
    client.query(delete_ada).await;
    let (tags, error) = outcome(&mut client).await;
    assert_eq!((tags, error), (vec!["DELETE 0".to_owned()], None));
    // The budget is spent.
    held(&mut client, delete_ada).await;
    let (_, error) = outcome(&mut client).await;
    assert!(error.unwrap().1.contains("was not decided"));

    // A new grant, and then its time runs out.
    let delete_alan = "DELETE FROM orders WHERE customer = 'Alan Turing'";
    let id = held(&mut client, delete_alan).await;
    let (_, error) = outcome(&mut client).await;
    assert!(error.is_some());
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({"ttl": "5m", "budget": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Longer than the policy allows (1h by default) is refused.
    let id2 = held(&mut client, "DELETE FROM orders WHERE id = 999").await;
    let (_, _) = outcome(&mut client).await;
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id2}/approve"),
        &dba,
        json!({"ttl": "2h"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    clock.advance(Duration::from_secs(6 * 60));
    held(&mut client, delete_alan).await;
    let (_, error) = outcome(&mut client).await;
    assert!(error.unwrap().1.contains("was not decided"));
    assert_eq!(count(&stack, "customer = 'Alan Turing'").await, 1);
}

#[tokio::test]
async fn a_cancelled_client_withdraws_its_request() {
    let stack = approval_stack(POLICY, Duration::from_secs(60), None).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, (pid, secret)) = RawClient::login(stack.addr, "writer", &writer).await;
    let id = held(&mut client, "DELETE FROM orders").await;
    common::send_cancel(stack.addr, pid, secret).await;
    let (tags, error) = outcome(&mut client).await;
    assert!(tags.is_empty());
    let (code, message) = error.unwrap();
    assert_eq!(code, "57014");
    assert!(
        message.contains(&format!("approval request {id} withdrawn")),
        "{message}"
    );
    assert_eq!(request_state(&stack, &id, &dba).await, "withdrawn");
    // An approval arriving now changes nothing.
    let (status, _) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(count(&stack, "true").await, 4);

    // A client that disconnects withdraws too.
    let id = held(&mut client, "DELETE FROM orders").await;
    drop(client);
    wait_until("the request is withdrawn", || {
        let stack = &stack;
        let (id, dba) = (id.clone(), dba.clone());
        async move { request_state(stack, &id, &dba).await == "withdrawn" }
    })
    .await;
}

#[tokio::test]
async fn a_held_statement_keeps_its_transaction_and_extended_batches_wait_at_sync() {
    let stack = approval_stack(POLICY, Duration::from_secs(60), None).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);

    // Inside BEGIN … COMMIT: the transaction stays open while it waits, and commits whole.
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    client
        .query("BEGIN; INSERT INTO orders (tenant_id, customer, amount) VALUES ('acme', 'Barbara Liskov', 1)")
        .await;
    let _ = outcome(&mut client).await;
    let id = held(
        &mut client,
        "DELETE FROM orders WHERE customer = 'Ada Lovelace'",
    )
    .await;
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (tags, error) = outcome(&mut client).await;
    assert_eq!((tags, error), (vec!["DELETE 1".to_owned()], None));
    client.query("COMMIT").await;
    let (tags, error) = outcome(&mut client).await;
    assert_eq!((tags, error), (vec!["COMMIT".to_owned()], None));
    assert_eq!(count(&stack, "customer = 'Barbara Liskov'").await, 1);
    assert_eq!(count(&stack, "customer = 'Ada Lovelace'").await, 0);

    // tokio-postgres: Parse/Bind/Execute/Sync held until approved; parameters are part of
    // what a statement grant covers.
    let pg = stack.connect("writer", &writer).await.unwrap();
    let pending = tokio::spawn(async move {
        let deleted = pg
            .execute("DELETE FROM orders WHERE customer = $1", &[&"Grace Hopper"])
            .await;
        (pg, deleted)
    });
    let found = Arc::new(std::sync::Mutex::new(None));
    wait_until("the extended-protocol request is pending", || {
        let stack = &stack;
        let dba = dba.clone();
        let found = found.clone();
        async move {
            let (_, body) = get(stack, "/v1/requests?state=pending", &dba).await;
            let id = body["requests"][0]["id"].as_str().map(str::to_owned);
            let pending = id.is_some();
            *found.lock().unwrap() = id;
            pending
        }
    })
    .await;
    let id = found.lock().unwrap().clone().unwrap();
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({"budget": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (pg, deleted) = pending.await.unwrap();
    assert_eq!(deleted.unwrap(), 1);
    // The same text with another parameter is not covered by the grant.
    let other = tokio::time::timeout(
        Duration::from_secs(1),
        pg.execute(
            "DELETE FROM orders WHERE customer = $1",
            &[&"Edsger Dijkstra"],
        ),
    )
    .await;
    assert!(
        other.is_err(),
        "another parameter must wait for its own approval"
    );
    assert_eq!(count(&stack, "customer = 'Edsger Dijkstra'").await, 1);
}

/// One HTTP request as a test receiver saw it: lower-cased headers and the raw body.
struct Received {
    headers: std::collections::HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on loopback: answers 200 and hands each request over.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/dbas", listener.local_addr().unwrap());
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    data.extend_from_slice(&chunk[..n]);
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while data.len() < head_end + length {
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the body ended early");
                    data.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                    .collect();
                let body = data[head_end..head_end + length].to_vec();
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await
                    .unwrap();
                let _ = sender.send(Received { headers, body });
            });
        }
    });
    (url, received)
}

#[tokio::test]
async fn the_approver_group_webhook_receives_a_signed_slack_message() {
    let (url, mut received) = webhook_receiver().await;
    let mut stack = approval_stack(POLICY, Duration::from_secs(60), None).await;
    let secret = "a-webhook-secret-of-at-least-32-bytes!!";
    let secret_file = stack.dir().join("dbas-hook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    stack.config.approvals.webhooks.insert(
        "dbas".to_owned(),
        postern_config::WebhookConfig {
            url,
            secret_file: Some(secret_file),
            secret_env: None,
        },
    );
    stack.start_proxy().await.unwrap();
    let writer = stack.token("wes@example.com", &["engineers"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    let id = held(
        &mut client,
        "-- reason: INC-7\nDELETE FROM orders WHERE customer = 'Grace Hopper'",
    )
    .await;

    let delivery = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the webhook is called")
        .unwrap();
    let timestamp = &delivery.headers[postern_notify::TIMESTAMP_HEADER];
    let signature = &delivery.headers[postern_notify::SIGNATURE_HEADER];
    assert!(postern_notify::verify_signature(
        secret.as_bytes(),
        timestamp,
        &delivery.body,
        signature,
        SystemTime::now(),
        postern_notify::DEFAULT_SIGNATURE_TOLERANCE,
    ));
    assert!(!postern_notify::verify_signature(
        b"another secret of at least thirty-two bytes",
        timestamp,
        &delivery.body,
        signature,
        SystemTime::now(),
        postern_notify::DEFAULT_SIGNATURE_TOLERANCE,
    ));
    let body: Value = serde_json::from_slice(&delivery.body).unwrap();
    // What Slack's incoming webhooks read, and the structured facts for everyone else.
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("wes@example.com"), "{text}");
    assert!(text.contains(&format!("postern approve {id}")), "{text}");
    assert!(body["blocks"].is_array());
    assert_eq!(body["postern"]["request_id"], json!(id));
    assert_eq!(body["postern"]["event"], json!("approval.requested"));
    assert_eq!(body["postern"]["fields"]["reason"], json!("INC-7"));
    assert!(
        body["postern"]["fields"]["statement"]
            .as_str()
            .unwrap()
            .contains("DELETE FROM orders WHERE customer ="),
        "{body}"
    );
    wait_until("the delivery is audited", || {
        let events = stack.audit_events();
        let id = id.clone();
        async move {
            events.iter().any(|e| {
                e["kind"] == "approval" && e["action"] == "notified" && e["request"] == json!(id)
            })
        }
    })
    .await;
}

#[tokio::test]
async fn keepalives_while_waiting_and_an_ended_session_withdraws() {
    let stack = approval_stack(POLICY, Duration::from_secs(60), None).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    let id = held(&mut client, "DELETE FROM orders").await;
    // Keepalive notices every second (approvals.keepalive) while it waits.
    for _ in 0..2 {
        let notice = client.read().await.expect("a keepalive");
        assert_eq!(notice.tag, backend::NOTICE_RESPONSE);
        let message = notice.error().message;
        assert!(
            message.starts_with(&format!("still waiting for approval of request {id}")),
            "{message}"
        );
    }
    // An operator ends the session: the client is told, the request is withdrawn.
    let session = stack
        .sessions()
        .unwrap()
        .list()
        .into_iter()
        .find(|s| s.subject == "wes@example.com")
        .unwrap();
    stack
        .sessions()
        .unwrap()
        .get(&session.id)
        .unwrap()
        .end(postern_proxy::registry::EndRequest {
            kind: postern_proxy::registry::EndKind::Killed,
            by: "olga@example.com".into(),
            reason: "maintenance".into(),
        });
    let fatal = client
        .read_to_end()
        .await
        .into_iter()
        .find(|m| m.tag == backend::ERROR_RESPONSE)
        .expect("a FATAL error");
    assert_eq!(fatal.error().code, "57P01");
    wait_until("the request is withdrawn", || {
        let stack = &stack;
        let (id, dba) = (id.clone(), dba.clone());
        async move { request_state(stack, &id, &dba).await == "withdrawn" }
    })
    .await;
    assert_eq!(count(&stack, "true").await, 4);
}

#[tokio::test]
async fn action_grants_cover_the_action_on_the_table_until_revoked() {
    let stack = approval_stack(POLICY, Duration::from_secs(60), None).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;

    // Live updates: an approver's event stream sees the request appear.
    let events = reqwest::Client::new()
        .get(format!("{}/v1/events", stack.admin_url()))
        .bearer_auth(&dba)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = events;

    let id = held(
        &mut client,
        "DELETE FROM orders WHERE customer = 'Ada Lovelace'",
    )
    .await;
    let mut seen = String::new();
    while !seen.contains(&format!("\"id\":\"{id}\"")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: request"), "{seen}");

    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({"scope": "action", "ttl": "10m"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grant = body["grant"]["id"].as_str().unwrap().to_owned();
    assert_eq!(outcome(&mut client).await.0, ["DELETE 1"]);
    // Another DELETE on the same table is covered, with no new request.
    client
        .query("DELETE FROM orders WHERE customer = 'Alan Turing'")
        .await;
    assert_eq!(
        outcome(&mut client).await,
        (vec!["DELETE 1".to_owned()], None)
    );
    // The requester may see their grant; revoked, it covers nothing.
    let (status, body) = get(&stack, "/v1/grants", &writer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["grants"][0]["id"], json!(grant));
    let (status, _) = reqwest::Client::new()
        .delete(format!("{}/v1/grants/{grant}", stack.admin_url()))
        .bearer_auth(&writer)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "the requester cannot revoke");
    let response = reqwest::Client::new()
        .delete(format!("{}/v1/grants/{grant}", stack.admin_url()))
        .bearer_auth(&dba)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    held(
        &mut client,
        "DELETE FROM orders WHERE customer = 'Grace Hopper'",
    )
    .await;
    assert_eq!(count(&stack, "customer = 'Grace Hopper'").await, 1);
}

#[tokio::test]
async fn open_requests_and_grants_lapse_and_are_audited() {
    let clock = TestClock::default();
    let stack = approval_stack(POLICY, Duration::from_secs(1), Some(&clock)).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    // One request left open after its wait, one approved for ten minutes.
    let open = held(&mut client, "DELETE FROM orders WHERE id = 1").await;
    assert!(outcome(&mut client).await.1.is_some());
    let granted = held(&mut client, "DELETE FROM orders WHERE id = 2").await;
    assert!(outcome(&mut client).await.1.is_some());
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{granted}/approve"),
        &dba,
        json!({"ttl": "10m"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grant = body["grant"]["id"].as_str().unwrap().to_owned();

    // A day later: the open request lapsed (approving it now is refused), the grant expired.
    clock.advance(Duration::from_secs(25 * 60 * 60));
    wait_until("the open request lapses", || {
        let stack = &stack;
        let (open, dba) = (open.clone(), dba.clone());
        async move { request_state(stack, &open, &dba).await == "expired" }
    })
    .await;
    let (status, _) = post(
        &stack,
        &format!("/v1/requests/{open}/approve"),
        &dba,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    wait_until("both lapses are audited", || {
        let events = stack.audit_events();
        let (open, granted, grant) = (open.clone(), granted.clone(), grant.clone());
        async move {
            let expired = |request: &str| {
                events
                    .iter()
                    .filter(|e| {
                        e["kind"] == "approval"
                            && e["action"] == "expired"
                            && e["request"] == json!(request)
                    })
                    .cloned()
                    .collect::<Vec<Value>>()
            };
            expired(&open).len() == 1
                && expired(&granted)
                    .iter()
                    .any(|e| e["what"] == "grant" && e["grant"] == json!(grant))
        }
    })
    .await;
}
