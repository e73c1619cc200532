//! The impact preview of a held statement, end to end: Postern runs it as the requester's role
//! inside a transaction it rolls back and shows approvers the rows and the plan, and refuses,
//! saying why, to preview a statement whose effects would escape the rollback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::time::Duration;

use crate::common::{RawClient, count, outcome, wait_until};
use postern_config::UpstreamMode;
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Writers may write, but a DELETE needs one approval from group `dbas`, with a preview.
const POLICY: &str = r#"
@id("connect") permit (principal, action in [Action::"connect"], resource);
@id("read") permit (principal, action == Action::"read", resource);
@id("writes") permit (principal, action == Action::"write", resource)
    unless { context.command == "DELETE" };
@id("deletes-need-a-dba") @approval("group=dbas preview")
permit (principal, action == Action::"write", resource) when { context.command == "DELETE" };
@id("approvers") permit (principal in Group::"dbas", action == Action::"approve", resource);
"#;

async fn preview_stack(mode: UpstreamMode) -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut stack = Stack::start(StackOptions {
        mode,
        policies: vec![POLICY.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.config.policy.include_defaults = false;
    stack.config.approvals.wait = Duration::from_secs(60);
    stack.config.approvals.keepalive = Duration::from_secs(1);
    stack.start_proxy().await.unwrap();
    stack
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

/// Sends `sql` and reads up to the notice that says it is held; returns the request id.
async fn held(client: &mut RawClient, sql: &str) -> String {
    client.query(sql).await;
    let notice = client.read().await.expect("a notice");
    assert_eq!(notice.tag, backend::NOTICE_RESPONSE, "{notice:?}");
    let message = notice.error().message;
    message
        .strip_prefix("statement held for approval: request ")
        .unwrap_or_else(|| panic!("not a hold notice: {message}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Polls the admin API until request `id` carries a preview, and returns it.
async fn preview_of(stack: &Stack, id: &str, token: &str) -> Value {
    let path = format!("/v1/requests/{id}");
    wait_until("the request carries a preview", || {
        let path = path.clone();
        async move {
            let (status, body) = get(stack, &path, token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            !body["request"]["preview"].is_null()
        }
    })
    .await;
    let (_, body) = get(stack, &path, token).await;
    assert_eq!(body["request"]["state"], json!("pending"), "{body}");
    body["request"]["preview"].clone()
}

/// The `previewed` audit event of request `id`, once written.
async fn previewed_event(stack: &Stack, id: &str) -> Value {
    let find = || {
        stack.audit_events().into_iter().find(|e| {
            e["kind"] == "approval" && e["action"] == "previewed" && e["request"] == json!(id)
        })
    };
    wait_until("the previewed event is written", || {
        let found = find().is_some();
        async move { found }
    })
    .await;
    find().unwrap()
}

#[tokio::test]
async fn a_held_delete_shows_its_rows_and_plan_and_leaves_the_table_unchanged() {
    let stack = preview_stack(UpstreamMode::RoleLogin).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;

    let id = held(&mut client, "DELETE FROM orders WHERE tenant_id = 'acme'").await;
    let preview = preview_of(&stack, &id, &dba).await;
    assert_eq!(preview["rows"], json!(2), "{preview}");
    assert_eq!(preview["command_tag"], json!("DELETE 2"), "{preview}");
    let plan = preview["plan"].as_str().expect("a plan");
    assert!(plan.contains("Delete on orders"), "{plan}");
    assert!(preview["ran_at"].as_i64().is_some(), "{preview}");
    assert!(preview.get("note").is_none(), "{preview}");
    // Rolled back: the rows are all still there.
    assert_eq!(count(&stack, "tenant_id = 'acme'").await, 2);
    assert_eq!(count(&stack, "true").await, 4);
    // The preview's connection is not left in a transaction holding the rows' locks.
    let direct = stack.direct().await.unwrap();
    let open: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'postern_preview' \
             AND (state LIKE 'idle in transaction%' OR backend_xid IS NOT NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0);

    let event = previewed_event(&stack, &id).await;
    assert_eq!(event["outcome"], json!("ran"), "{event}");
    assert_eq!(event["rows"], json!(2), "{event}");
    assert_eq!(event["role"], json!("writer"), "{event}");
    assert!(event.get("plan").is_none(), "{event}");

    // Approved, the statement itself runs on the session's own connection.
    let (status, body) = post(
        &stack,
        &format!("/v1/requests/{id}/approve"),
        &dba,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (tags, error) = outcome(&mut client).await;
    assert_eq!(error, None);
    assert_eq!(tags, ["DELETE 2"]);
    assert_eq!(count(&stack, "tenant_id = 'acme'").await, 0);
    assert_eq!(count(&stack, "true").await, 2);

    // Held inside a transaction: the preview says it cannot see that transaction's changes.
    client.query("BEGIN").await;
    assert_eq!(outcome(&mut client).await, (vec!["BEGIN".to_owned()], None));
    let id = held(&mut client, "DELETE FROM orders WHERE tenant_id = 'globex'").await;
    let preview = preview_of(&stack, &id, &dba).await;
    assert_eq!(preview["rows"], json!(2), "{preview}");
    let note = preview["note"].as_str().expect("a note");
    assert!(note.contains("inside a transaction"), "{note}");
    assert_eq!(count(&stack, "true").await, 2);
}

#[tokio::test]
async fn a_statement_calling_nextval_gets_no_preview_and_says_why() {
    let stack = preview_stack(UpstreamMode::RoleLogin).await;
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);
    let direct = stack.direct().await.unwrap();
    let sequence = "SELECT last_value, is_called FROM orders_id_seq";
    let before = direct.query_one(sequence, &[]).await.unwrap();
    let before: (i64, bool) = (before.get(0), before.get(1));
    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;

    let id = held(
        &mut client,
        "DELETE FROM orders WHERE id = nextval('orders_id_seq')",
    )
    .await;
    let preview = preview_of(&stack, &id, &dba).await;
    let why = preview["unavailable"]
        .as_str()
        .expect("no preview, and why");
    assert!(why.starts_with("no preview: "), "{why}");
    assert!(why.contains("nextval"), "{why}");
    assert!(
        preview.get("rows").is_none() && preview.get("plan").is_none(),
        "{preview}"
    );
    let after = direct.query_one(sequence, &[]).await.unwrap();
    assert_eq!(before, (after.get(0), after.get(1)), "the sequence moved");
    let event = previewed_event(&stack, &id).await;
    assert_eq!(event["outcome"], json!("unavailable"), "{event}");
    assert!(
        event["why"].as_str().unwrap().contains("nextval"),
        "{event}"
    );

    // An INSERT into the serial table is held back by what the catalog says: its id comes from
    // the sequence. (Deletes are what this policy holds, so ask through a writable CTE.)
    let mut second = another_session(&stack, &writer).await;
    let id = held(
        &mut second,
        "WITH made AS (INSERT INTO orders (tenant_id, customer, amount) VALUES ('x', 'y', 1) \
         RETURNING id) DELETE FROM orders WHERE id IN (SELECT id FROM made)",
    )
    .await;
    let preview = preview_of(&stack, &id, &dba).await;
    let why = preview["unavailable"]
        .as_str()
        .expect("no preview, and why");
    assert!(
        why.contains("column id of orders takes its value from a sequence"),
        "{why}"
    );
    let after = direct.query_one(sequence, &[]).await.unwrap();
    assert_eq!(before, (after.get(0), after.get(1)), "the sequence moved");
    assert_eq!(count(&stack, "true").await, 4);
}

/// A second session for the same writer (the first one still waits on its held statement).
async fn another_session(stack: &Stack, token: &str) -> RawClient {
    RawClient::login(stack.addr, "writer", token).await.0
}

/// The preview runs as the requester's role, never as Postern's admin login: it sees what the
/// role may see, and is refused what the role is refused.
async fn the_preview_runs_as_the_requesters_role(mode: UpstreamMode) {
    let stack = preview_stack(mode).await;
    let direct = stack.direct().await.unwrap();
    direct
        .batch_execute(
            "CREATE TABLE payroll (id int PRIMARY KEY, amount numeric); \
             INSERT INTO payroll VALUES (1, 10), (2, 20);",
        )
        .await
        .unwrap();
    let writer = stack.token("wes@example.com", &["engineers"]);
    let dba = stack.token("dana@example.com", &["dbas"]);

    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    let id = held(&mut client, "DELETE FROM payroll WHERE id = 1").await;
    let preview = preview_of(&stack, &id, &dba).await;
    let error = preview["error"].as_str().expect("an error");
    assert!(
        error.starts_with("42501: permission denied for table payroll"),
        "{error}"
    );

    let (mut client, _) = RawClient::login(stack.addr, "writer", &writer).await;
    let id = held(&mut client, "DELETE FROM orders WHERE amount > 100").await;
    let preview = preview_of(&stack, &id, &dba).await;
    assert_eq!(preview["rows"], json!(2), "{preview}");
    assert_eq!(count(&stack, "amount > 100").await, 2);
    let payroll: i64 = direct
        .query_one("SELECT count(*) FROM payroll", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(payroll, 2);
}

mod the_preview_runs_as_the_requesters_role {
    use postern_config::UpstreamMode;

    #[tokio::test]
    async fn role_login() {
        super::the_preview_runs_as_the_requesters_role(UpstreamMode::RoleLogin).await;
    }

    #[tokio::test]
    async fn set_role() {
        super::the_preview_runs_as_the_requesters_role(UpstreamMode::SetRole).await;
    }

    #[tokio::test]
    async fn ephemeral_user() {
        super::the_preview_runs_as_the_requesters_role(UpstreamMode::EphemeralUser).await;
    }
}
