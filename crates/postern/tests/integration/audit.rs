//! The audit trail of statements: every statement Postern forwards is a `statement` event (who,
//! as which role, on which target, what) followed by a `statement_end` with its outcome, whatever
//! the protocol (simple, extended, pipelined, COPY); refused ones are recorded as refused. And
//! when the log cannot be written, statements are refused (58030) rather than run unrecorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::collections::HashMap;

use crate::common::{
    RawClient, assert_db_error, bind_execute, current_user, cycle, encode_bind,
    encode_close_statement, encode_execute, encode_execute_portal, parse, stack,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt as _;
use postern_config::UpstreamMode;
use postern_testkit::{Stack, StackOptions};
use postern_wire::{backend, frontend};
use serde_json::Value;

const ANALYST: &str = "alice@example.com";
const ENGINEER: &str = "erin@example.com";

both_modes!(every_statement_is_recorded_with_its_outcome);

/// Events of `kind`.
fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// The `statement_end` of every statement, by (session, statement_id); fails on duplicates.
fn ends_by_statement(events: &[Value]) -> HashMap<(String, u64), &Value> {
    let mut ends = HashMap::new();
    for end in of_kind(events, "statement_end") {
        let key = (
            end["session"].as_str().unwrap().to_owned(),
            end["statement_id"].as_u64().unwrap(),
        );
        assert!(ends.insert(key, end).is_none(), "two ends for {end}");
    }
    ends
}

/// The `statement` event whose SQL is `sql`, in the session of `role`.
fn statement<'a>(events: &'a [Value], role: &str, sql: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(events, "statement")
        .into_iter()
        .filter(|e| e["role"] == role && e["sql"] == sql)
        .collect();
    assert_eq!(found.len(), 1, "statement {sql:?} as {role}: {found:#?}");
    found[0]
}

async fn every_statement_is_recorded_with_its_outcome(mode: UpstreamMode) {
    let mut stack = stack(mode).await;
    let reader_token = stack.token(ANALYST, &["analysts"]);
    let reader = stack.connect("reader", &reader_token).await.unwrap();
    let writer = stack
        .connect("writer", &stack.token(ENGINEER, &["engineers"]))
        .await
        .unwrap();

    // Simple protocol: two statements in one message, an error, a refusal.
    reader
        .simple_query("SELECT 1 AS one; SELECT count(*) FROM orders")
        .await
        .unwrap();
    reader.simple_query("SELECT 1 / 0").await.unwrap_err();
    reader.simple_query("SET ROLE postgres").await.unwrap_err();
    // Extended protocol: a prepared statement executed twice, and a refused Parse.
    let by_tenant = reader
        .prepare("SELECT customer FROM orders WHERE tenant_id = $1")
        .await
        .unwrap();
    assert_eq!(reader.query(&by_tenant, &[&"acme"]).await.unwrap().len(), 2);
    assert_eq!(reader.query(&by_tenant, &[&"none"]).await.unwrap().len(), 0);
    reader
        .prepare("SELECT set_config('role', $1, false)")
        .await
        .unwrap_err();
    // COPY FROM STDIN through the extended protocol, then more statements on the same session.
    let sink = writer
        .copy_in("COPY orders (tenant_id, customer, amount) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(
        b"initech\tPeter\t1\ninitech\tSamir\t2\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let count: i64 = writer
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 6);
    writer
        .simple_query("DELETE FROM orders WHERE tenant_id = 'initech'")
        .await
        .unwrap();
    writer.query("SELECT 1 / 0", &[]).await.unwrap_err();
    writer
        .execute(
            "UPDATE orders SET amount = amount WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .unwrap();

    // A pipeline of two Executes before one Sync, the first failing: the second never runs.
    let (mut raw, _) = RawClient::login(stack.addr, "reader", &reader_token).await;
    let mut out = BytesMut::new();
    frontend::encode_parse("", "SELECT 1 / 0 AS fails", &mut out);
    encode_bind("", &mut out);
    encode_execute(&mut out);
    frontend::encode_parse("", "SELECT 2 AS skipped", &mut out);
    encode_bind("", &mut out);
    encode_execute(&mut out);
    frontend::encode_sync(&mut out);
    raw.send(&out).await;
    let answers = raw.read_until_ready().await;
    let errors: Vec<_> = answers
        .iter()
        .filter(|m| m.tag == backend::ERROR_RESPONSE)
        .map(|m| m.error().code)
        .collect();
    assert_eq!(errors, ["22012"]);
    raw.query("SELECT 3 AS after").await;
    raw.read_until_ready().await;

    assert_eq!(current_user(&reader).await, "reader");
    drop((reader, writer, raw));
    // Stopping waits for every session's events to be written.
    stack.stop_proxy().await;
    let events = stack.audit_events();
    let ends = ends_by_statement(&events);
    let end_of = |event: &Value| {
        let key = (
            event["session"].as_str().unwrap().to_owned(),
            event["statement_id"].as_u64().unwrap(),
        );
        *ends
            .get(&key)
            .unwrap_or_else(|| panic!("no statement_end for {event}"))
    };

    // Who, as what, where: on every statement event.
    for event in of_kind(&events, "statement") {
        let (subject, role) = match event["role"].as_str().unwrap() {
            "reader" => (ANALYST, "reader"),
            "writer" => (ENGINEER, "writer"),
            other => panic!("unexpected role {other}"),
        };
        assert_eq!(event["subject"], subject, "{event}");
        assert_eq!(event["role"], role, "{event}");
        assert_eq!(event["target"], "demo", "{event}");
        assert_eq!(event["issuer"], stack.idp.issuer(), "{event}");
        assert!(event["session"].is_string(), "{event}");
        assert!(event["fingerprint"].is_string(), "{event}");
        match event["decision"].as_str().unwrap() {
            "allowed" => {
                let end = end_of(event);
                assert_eq!(end["subject"], subject, "{end}");
                assert_eq!(end["role"], role, "{end}");
            }
            "refused" => {
                assert!(
                    !ends.contains_key(&(
                        event["session"].as_str().unwrap().to_owned(),
                        event["statement_id"].as_u64().unwrap()
                    )),
                    "a refused statement has no end: {event}"
                );
            }
            other => panic!("decision {other}: {event}"),
        }
    }

    let two = statement(
        &events,
        "reader",
        "SELECT 1 AS one; SELECT count(*) FROM orders",
    );
    assert_eq!(two["protocol"], "simple");
    assert_eq!(two["decision"], "allowed");
    let end = end_of(two);
    assert_eq!(end["outcome"], "ok", "{end}");
    assert_eq!(end["command_tag"], "SELECT 1; SELECT 1", "{end}");
    assert_eq!(end["rows"], 2, "{end}");

    let end = end_of(statement(&events, "reader", "SELECT 1 / 0"));
    assert_eq!(end["outcome"], "error", "{end}");
    assert_eq!(end["sqlstate"], "22012", "{end}");

    let refused = statement(&events, "reader", "SET ROLE postgres");
    assert_eq!(refused["decision"], "refused");
    assert_eq!(refused["reason"], "role_change");
    assert_eq!(refused["protocol"], "simple");
    let refused = statement(&events, "reader", "SELECT set_config('role', $1, false)");
    assert_eq!(refused["decision"], "refused");
    assert_eq!(refused["protocol"], "extended");

    // Each Execute of the prepared statement is its own statement.
    let executions: Vec<&Value> = of_kind(&events, "statement")
        .into_iter()
        .filter(|e| e["sql"] == "SELECT customer FROM orders WHERE tenant_id = $1")
        .collect();
    assert_eq!(executions.len(), 2);
    let rows: Vec<&Value> = executions.iter().map(|e| &end_of(e)["rows"]).collect();
    assert_eq!(rows, [2, 0]);
    assert!(executions.iter().all(|e| e["protocol"] == "extended"));

    let copy = end_of(statement(
        &events,
        "writer",
        "COPY orders (tenant_id, customer, amount) FROM STDIN",
    ));
    assert_eq!(copy["outcome"], "ok", "{copy}");
    assert_eq!(copy["command_tag"], "COPY 2", "{copy}");
    // After the COPY, outcomes still belong to the right statements.
    let count = end_of(statement(&events, "writer", "SELECT count(*) FROM orders"));
    assert_eq!(count["outcome"], "ok", "{count}");
    assert_eq!(count["command_tag"], "SELECT 1", "{count}");
    let delete = end_of(statement(
        &events,
        "writer",
        "DELETE FROM orders WHERE tenant_id = 'initech'",
    ));
    assert_eq!(delete["command_tag"], "DELETE 2", "{delete}");
    let failed = end_of(statement(&events, "writer", "SELECT 1 / 0"));
    assert_eq!(failed["outcome"], "error", "{failed}");
    assert_eq!(failed["sqlstate"], "22012", "{failed}");
    let update = end_of(statement(
        &events,
        "writer",
        "UPDATE orders SET amount = amount WHERE tenant_id = 'acme'",
    ));
    assert_eq!(update["outcome"], "ok", "{update}");
    assert_eq!(update["command_tag"], "UPDATE 2", "{update}");

    let fails = end_of(statement(&events, "reader", "SELECT 1 / 0 AS fails"));
    assert_eq!(fails["outcome"], "error", "{fails}");
    let skipped = end_of(statement(&events, "reader", "SELECT 2 AS skipped"));
    assert_eq!(skipped["outcome"], "skipped", "{skipped}");
    let after = end_of(statement(&events, "reader", "SELECT 3 AS after"));
    assert_eq!(after["outcome"], "ok", "{after}");

    // Sessions: each accepted connection has one end.
    let accepted = of_kind(&events, "connection")
        .into_iter()
        .filter(|e| e["decision"] == "accepted")
        .count();
    assert_eq!(accepted, 3);
    assert_eq!(of_kind(&events, "session_end").len(), 3);
}

#[tokio::test]
async fn statements_are_refused_when_the_audit_log_cannot_be_written() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token(ANALYST, &["analysts"]);
    let client = stack.connect("reader", &token).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    // The log is deleted under Postern's feet: nothing more may run unrecorded.
    std::fs::remove_file(stack.audit_path()).unwrap();
    let error = client.simple_query("SELECT 2").await.unwrap_err();
    assert_db_error(&error, "58030", "could not be recorded");
    assert_db_error(&error, "58030", "was removed or replaced");
    let error = client
        .query("SELECT $1::int4", &[&3_i32])
        .await
        .unwrap_err();
    assert_db_error(&error, "58030", "could not be recorded");
    // The session itself is intact: its transaction state is what the server says it is.
    client.batch_execute("BEGIN").await.unwrap_err();
    let error = client.simple_query("ROLLBACK").await.unwrap_err();
    assert_db_error(&error, "58030", "could not be recorded");

    // A new connection is refused, saying why.
    let error = stack.connect("reader", &token).await.unwrap_err();
    assert_db_error(&error, "58030", "was removed or replaced");
    let message = error.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("connection"),
        "a refused connection should not be called a refused statement: {message}"
    );

    // Postern itself still runs, and a restart starts a new log.
    drop(client);
    stack.stop_proxy().await;
    stack.start_proxy().await.unwrap();
    let client = stack.connect("reader", &token).await.unwrap();
    assert_eq!(current_user(&client).await, "reader");
    drop(client);
    stack.stop_proxy().await;
    let events = stack.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "statement" && e["sql"] == "SELECT current_user::text"),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["sql"] == "SELECT 2"),
        "the refused statement was recorded nowhere it could be read"
    );
}

/// SQL-level prepared statements and cursors share their namespaces with the extended protocol's
/// statements and portals: a Bind of a statement made by `PREPARE`, or an Execute of a cursor made
/// by `DECLARE`, runs SQL Postern saw only when it was prepared. Each execution is still recorded.
#[tokio::test]
async fn executions_of_sql_prepared_statements_and_cursors_are_recorded() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token(ANALYST, &["analysts"]);
    let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;
    client
        .query("PREPARE counted AS SELECT count(*) FROM orders")
        .await;
    client.read_until_ready().await;

    let mut out = BytesMut::new();
    encode_bind("counted", &mut out);
    encode_execute(&mut out);
    frontend::encode_sync(&mut out);
    client.send(&out).await;
    let answers = client.read_until_ready().await;
    assert!(
        answers.iter().any(|m| m.tag == backend::DATA_ROW),
        "{answers:?}"
    );

    client
        .query("BEGIN; DECLARE c CURSOR FOR SELECT customer FROM orders ORDER BY id")
        .await;
    client.read_until_ready().await;
    let mut out = BytesMut::new();
    encode_execute_portal("c", 3, &mut out);
    frontend::encode_sync(&mut out);
    client.send(&out).await;
    let answers = client.read_until_ready().await;
    let rows = answers
        .iter()
        .filter(|m| m.tag == backend::DATA_ROW)
        .count();
    assert_eq!(rows, 3, "{answers:?}");
    client.query("COMMIT").await;
    client.read_until_ready().await;
    drop(client);
    stack.stop_proxy().await;

    let events = stack.audit_events();
    let ends = ends_by_statement(&events);
    let extended: Vec<&Value> = of_kind(&events, "statement")
        .into_iter()
        .filter(|e| e["protocol"] == "extended")
        .collect();
    assert_eq!(extended.len(), 2, "{events:#?}");
    let sql: Vec<&str> = extended
        .iter()
        .map(|e| e["sql"].as_str().unwrap())
        .collect();
    assert_eq!(sql, ["EXECUTE \"counted\"", "FETCH 3 FROM \"c\""]);
    for event in extended {
        assert_eq!(event["decision"], "allowed");
        let key = (
            event["session"].as_str().unwrap().to_owned(),
            event["statement_id"].as_u64().unwrap(),
        );
        let end = ends[&key];
        assert_eq!(end["outcome"], "ok", "{end}");
    }
}

/// A prepared statement's name maps to the text Postern records for its executions. Preparing
/// the same name again with another text must not change what is recorded while the server may
/// still run the first text: the server refuses a duplicate name, and so does Postern when it
/// cannot tell whether the first Parse succeeded.
#[tokio::test]
async fn a_reused_statement_name_cannot_relabel_what_runs() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token(ANALYST, &["analysts"]);
    let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;

    // The first text is prepared; preparing the name again fails; the first text runs.
    let (errors, _) = cycle(&mut client, parse("n", "SELECT 'first text'")).await;
    assert!(errors.is_empty(), "{errors:?}");
    let (errors, _) = cycle(&mut client, parse("n", "SELECT 'second text'")).await;
    assert_eq!(errors, ["42P05"]);
    let (errors, value) = cycle(&mut client, bind_execute("n")).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value.as_deref(), Some("first text"));

    // A Parse the server rejected leaves the name free (the server's answer says so), and a
    // Close then Parse in one cycle reuses a name: both run if the Parse does.
    let (errors, _) = cycle(&mut client, parse("m", "SELECT * FROM no_such_table")).await;
    assert_eq!(errors, ["42P01"]);
    let (errors, _) = cycle(&mut client, parse("m", "SELECT 'retried text'")).await;
    assert!(errors.is_empty(), "{errors:?}");
    let (errors, value) = cycle(&mut client, bind_execute("m")).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value.as_deref(), Some("retried text"));
    let mut close_then_parse = BytesMut::new();
    encode_close_statement("m", &mut close_then_parse);
    close_then_parse.extend_from_slice(&parse("m", "SELECT 'third text'"));
    let (errors, _) = cycle(&mut client, close_then_parse).await;
    assert!(errors.is_empty(), "{errors:?}");
    let (errors, value) = cycle(&mut client, bind_execute("m")).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value.as_deref(), Some("third text"));

    // The same for a named portal, which lives until the end of the transaction block.
    client.query("BEGIN").await;
    client.read_until_ready().await;
    let bind_portal = |statement: &str| {
        let mut out = BytesMut::new();
        let mut body = BytesMut::new();
        body.put_slice(b"p\0");
        body.put_slice(statement.as_bytes());
        body.put_slice(&[0, 0, 0, 0, 0, 0, 0]);
        out.put_u8(b'B');
        out.put_i32(i32::try_from(body.len() + 4).unwrap());
        out.put_slice(&body);
        out
    };
    let mut first = parse("a", "SELECT 'portal text'");
    first.extend_from_slice(&bind_portal("a"));
    let (errors, _) = cycle(&mut client, first).await;
    assert!(errors.is_empty(), "{errors:?}");
    let mut second = parse("b", "SELECT 'other portal text'");
    second.extend_from_slice(&bind_portal("b"));
    let (errors, _) = cycle(&mut client, second).await;
    assert_eq!(errors, ["42P03"]);
    client.query("ROLLBACK").await;
    client.read_until_ready().await;
    client.query("BEGIN").await;
    client.read_until_ready().await;
    let (errors, _) = cycle(&mut client, bind_portal("a")).await;
    assert!(errors.is_empty(), "{errors:?}");
    let mut execute = BytesMut::new();
    encode_execute_portal("p", 0, &mut execute);
    let (errors, value) = cycle(&mut client, execute).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value.as_deref(), Some("portal text"));

    drop(client);
    stack.stop_proxy().await;
    let events = stack.audit_events();
    let executed: Vec<&str> = of_kind(&events, "statement")
        .into_iter()
        .filter(|e| e["protocol"] == "extended" && e["decision"] == "allowed")
        .map(|e| e["sql"].as_str().unwrap())
        .collect();
    assert_eq!(
        executed,
        [
            "SELECT 'first text'",
            "SELECT 'retried text'",
            "SELECT 'third text'",
            "SELECT 'portal text'"
        ]
    );
    let refused: Vec<&str> = of_kind(&events, "statement")
        .into_iter()
        .filter(|e| e["reason"] == "name_reused")
        .map(|e| e["sql"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        ["SELECT 'second text'", "SELECT 'other portal text'"]
    );
}
