//! Ways out of the mapped role, each refused by Postern with SQLSTATE 42501 and its own message,
//! after which the same session is still the mapped role: in both upstream modes, through the
//! simple and the extended protocol, inside and outside transaction blocks. Plus what each mode
//! adds: in `set_role` mode the statements that would run SQL Postern cannot see; in
//! `role_login` mode, that even a `RESET ROLE` reaching the database leaves the mapped role.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use crate::common::{RawClient, assert_db_error, current_user, stack};
use bytes::{BufMut, BytesMut};
use postern_config::UpstreamMode;
use postern_testkit::Stack;
use postern_wire::backend;
use serde_json::Value;

/// Refused in every mode, for every role.
const ESCAPES: &[&str] = &[
    "SET ROLE postgres",
    "set role \"postgres\"",
    "SET SESSION ROLE postgres",
    "RESET ROLE",
    "SET SESSION AUTHORIZATION postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET SESSION AUTHORIZATION",
    "RESET ALL",
    "DISCARD ALL",
    "SET postern.claims = 'x'",
    "SET LOCAL postern.claims = 'x'",
    "select set_config('role','postgres',false)",
    "SELECT pg_catalog.set_config('ROLE', 'postgres', false)",
    "select set_config(chr(114)||'ole','postgres',false)",
    "SELECT set_config(E'\\x72ole', 'x', false)",
    "SELECT set_config(U&'\\0072ole', 'x', false)",
    "WITH x AS (SELECT set_config('role','postgres',false)) SELECT * FROM x",
    "SELECT (SELECT set_config('role','postgres',false))",
    "COPY (SELECT set_config('role','postgres',false)) TO STDOUT",
    "EXPLAIN ANALYZE SELECT set_config('role','postgres',false)",
    "PREPARE p AS SELECT set_config('role','postgres',false)",
    "DO $$BEGIN EXECUTE 'SET ROLE postgres'; END$$",
    "ALTER ROLE reader PASSWORD 'x'",
    "ALTER USER reader SET role = 'postgres'",
    "SET standard_conforming_strings = off",
    "SELECT set_config('standard_conforming_strings','off',false)",
    "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
    "SET client_encoding = 'SJIS'",
    "SET NAMES 'GBK'",
    "SELECT 1; SET ROLE postgres",
    "SELECT set_config('postern.claims', 'x', false)",
];

/// Only valid inside a transaction block.
const ESCAPES_IN_TRANSACTION: &[&str] =
    &["DECLARE c CURSOR FOR SELECT set_config('role','postgres',false)"];

both_modes!(
    every_escape_is_refused_and_the_role_stays,
    escapes_through_the_extended_protocol_are_refused,
    a_refusal_inside_a_transaction_block_aborts_it,
    escapes_in_text_that_is_not_utf8_are_refused,
    fastpath_function_calls_are_refused,
);

/// Asserts a refusal by Postern (not a permission error from the database, which would have the
/// same SQLSTATE, but says "permission denied"): 42501 and "not allowed".
#[track_caller]
fn assert_refused_by_postern(error: &tokio_postgres::Error, sql: &str) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: not a database error: {error:?}"));
    assert_eq!(db.code().code(), "42501", "{sql}: {}", db.message());
    assert!(
        db.message().contains("not allowed"),
        "{sql}: not Postern's refusal: {}",
        db.message()
    );
}

/// What the database says the session is: current_user, session_user, the role setting, and the
/// verified subject.
async fn identity(client: &tokio_postgres::Client) -> (String, String, String, Option<String>) {
    let row = client
        .query_one(
            "SELECT current_user::text, session_user::text, current_setting('role'), \
             postern.subject()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

fn expected_identity(mode: UpstreamMode, role: &str) -> (String, String, String, Option<String>) {
    let (session_user, role_setting) = match mode {
        UpstreamMode::RoleLogin => (role, "none"),
        UpstreamMode::SetRole => ("postern_session", role),
        other => panic!("this test has no expectation for {other:?}"),
    };
    (
        role.to_owned(),
        session_user.to_owned(),
        role_setting.to_owned(),
        Some("alice@example.com".to_owned()),
    )
}

async fn reader(stack: &Stack) -> tokio_postgres::Client {
    let token = stack.token("alice@example.com", &["analysts"]);
    stack.connect("reader", &token).await.unwrap()
}

fn refused_statements(stack: &Stack) -> Vec<Value> {
    stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "statement" && e["decision"] == "refused")
        .collect()
}

async fn every_escape_is_refused_and_the_role_stays(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let client = reader(&stack).await;
    let expected = expected_identity(mode, "reader");
    assert_eq!(identity(&client).await, expected);
    for sql in ESCAPES {
        let error = client.simple_query(sql).await.expect_err(sql);
        assert_refused_by_postern(&error, sql);
        assert_eq!(identity(&client).await, expected, "after {sql}");
    }
    for sql in ESCAPES_IN_TRANSACTION {
        client.batch_execute("BEGIN").await.unwrap();
        let error = client.simple_query(sql).await.expect_err(sql);
        assert_refused_by_postern(&error, sql);
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(identity(&client).await, expected, "after {sql}");
    }
    // Nothing of the refused statements ran: `PREPARE p` did not create p.
    let error = client.simple_query("EXECUTE p").await.unwrap_err();
    assert_db_error(&error, "26000", "prepared statement \"p\" does not exist");

    let refused = refused_statements(&stack);
    let expected_sql: Vec<&str> = ESCAPES
        .iter()
        .chain(ESCAPES_IN_TRANSACTION)
        .copied()
        .collect();
    assert_eq!(refused.len(), expected_sql.len(), "{refused:#?}");
    for (event, sql) in refused.iter().zip(&expected_sql) {
        assert_eq!(event["protocol"], "simple", "{sql}");
        assert_eq!(event["role"], "reader", "{sql}");
        assert_eq!(event["subject"], "alice@example.com", "{sql}");
        assert!(event["reason"].is_string(), "{sql}: {event}");
    }
}

async fn escapes_through_the_extended_protocol_are_refused(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let client = reader(&stack).await;
    let expected = expected_identity(mode, "reader");

    let sql = "SELECT set_config('role', $1, false)";
    let error = client.prepare(sql).await.expect_err(sql);
    assert_refused_by_postern(&error, sql);
    assert_eq!(identity(&client).await, expected);
    // Through query() (prepare and execute in one go), with a parameter.
    let error = client
        .query(sql, &[&"postgres"])
        .await
        .expect_err("query() of set_config('role')");
    assert_refused_by_postern(&error, sql);
    assert_eq!(identity(&client).await, expected);
    for sql in ESCAPES.iter().filter(|sql| !sql.contains(';')) {
        let error = client.prepare(sql).await.expect_err(sql);
        assert_refused_by_postern(&error, sql);
    }
    assert_eq!(identity(&client).await, expected);
    // A refused statement name can be used again for an allowed statement.
    let allowed = client.prepare("SELECT count(*) FROM orders").await.unwrap();
    let count: i64 = client.query_one(&allowed, &[]).await.unwrap().get(0);
    assert_eq!(count, 4);

    let refused = refused_statements(&stack);
    assert!(
        refused.iter().all(|e| e["protocol"] == "extended"),
        "{refused:#?}"
    );
    assert!(refused.len() > ESCAPES.len() / 2, "{}", refused.len());
}

async fn a_refusal_inside_a_transaction_block_aborts_it(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let client = reader(&stack).await;
    let expected = expected_identity(mode, "reader");

    // Simple protocol.
    client.batch_execute("BEGIN").await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    let error = client.simple_query("RESET ROLE").await.unwrap_err();
    assert_refused_by_postern(&error, "RESET ROLE");
    let error = client.simple_query("SELECT 1").await.unwrap_err();
    assert_db_error(&error, "25P02", "current transaction is aborted");
    let error = client.query("SELECT 1", &[]).await.unwrap_err();
    assert_db_error(&error, "25P02", "current transaction is aborted");
    client.batch_execute("ROLLBACK").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(identity(&client).await, expected);

    // Extended protocol, within a transaction object.
    let mut client = client;
    let transaction = client.transaction().await.unwrap();
    let sql = "SELECT set_config('role', 'postgres', true)";
    let error = transaction.prepare(sql).await.unwrap_err();
    assert_refused_by_postern(&error, sql);
    let error = transaction.query("SELECT 1", &[]).await.unwrap_err();
    assert_db_error(&error, "25P02", "current transaction is aborted");
    transaction.rollback().await.unwrap();
    assert_eq!(identity(&client).await, expected);
    assert_eq!(current_user(&client).await, "reader");
}

/// In `set_role` mode, only the guard stands between the client and `RESET ROLE`: it also refuses
/// what runs SQL it cannot see (functions, views, procedures, SQL in text). The same statements
/// run in `role_login` mode, which shows that it is Postern, not a missing privilege, refusing.
#[tokio::test]
async fn set_role_mode_refuses_code_it_cannot_check() {
    let set_role = stack(UpstreamMode::SetRole).await;
    let mut role_login = stack(UpstreamMode::RoleLogin).await;
    // `query_to_xml` runs SQL given as text, which Postern cannot see into: a `raw` statement,
    // which the shipped policies leave closed. Here engineers are granted it.
    let grant = role_login.dir().join("engineers-raw.cedar");
    std::fs::write(
        &grant,
        "@id(\"engineers-raw\")\npermit (principal in Group::\"engineers\", action == Action::\"raw\", resource);\n",
    )
    .unwrap();
    role_login.config.policy.files.push(grant);
    role_login.start_proxy().await.unwrap();
    for stack in [&set_role, &role_login] {
        let superuser = stack.direct().await.unwrap();
        superuser
            .batch_execute(
                "GRANT CREATE ON SCHEMA public TO writer;
                 CREATE PROCEDURE public.p() LANGUAGE sql AS 'SELECT 1';",
            )
            .await
            .unwrap();
    }
    let statements = [
        "SELECT query_to_xml('select 1', true, true, '')",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE VIEW public.v AS SELECT 1 AS one",
        "CALL p()",
    ];

    let token = set_role.token("erin@example.com", &["engineers"]);
    let client = set_role.connect("writer", &token).await.unwrap();
    for sql in statements {
        let error = client.simple_query(sql).await.expect_err(sql);
        assert_refused_by_postern(&error, sql);
        assert_eq!(current_user(&client).await, "writer", "after {sql}");
        let error = client.prepare(sql).await.expect_err(sql);
        assert_refused_by_postern(&error, sql);
    }
    let superuser = set_role.direct().await.unwrap();
    let created: i64 = superuser
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname = 'f' AND pronamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 0, "the refused CREATE FUNCTION did not run");

    let token = role_login.token("erin@example.com", &["engineers"]);
    let client = role_login.connect("writer", &token).await.unwrap();
    for sql in statements {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} in role_login mode: {e:?}"));
    }
    assert_eq!(current_user(&client).await, "writer");
}

/// In `role_login` mode the upstream session logs in as the mapped role itself, so there is no
/// other role to go back to: a `RESET ROLE` that reaches the database (here sent directly, with a
/// password the superuser set) leaves the mapped role. Postern then recovers from the changed
/// password by setting a new one (without a pool, so that every session logs in).
#[tokio::test]
async fn role_login_mode_has_nothing_to_reset_to() {
    let mut stack = stack(UpstreamMode::RoleLogin).await;
    stack.stop_proxy().await;
    stack.config.targets.get_mut("demo").unwrap().pool.mode = postern_config::PoolMode::None;
    stack.start_proxy().await.unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    // Postern sets reader's password on first use.
    let through_postern = stack.connect("reader", &token).await.unwrap();
    assert_eq!(current_user(&through_postern).await, "reader");
    drop(through_postern);

    let superuser = stack.direct().await.unwrap();
    superuser
        .batch_execute("ALTER ROLE reader WITH LOGIN PASSWORD 'known-to-the-test'")
        .await
        .unwrap();
    let direct = stack
        .direct_as("reader", "known-to-the-test")
        .await
        .unwrap();
    let messages = direct
        .simple_query("RESET ROLE; RESET SESSION AUTHORIZATION; SELECT current_user::text, session_user::text")
        .await
        .unwrap();
    let row = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .unwrap();
    assert_eq!(row.get(0), Some("reader"));
    assert_eq!(row.get(1), Some("reader"));
    let error = direct
        .simple_query(&format!("SET ROLE {}", stack.cluster.superuser()))
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", "permission denied to set role");

    // Postern's password for reader no longer works; it sets a new one and logs in.
    let again = stack.connect("reader", &token).await.unwrap();
    assert_eq!(current_user(&again).await, "reader");
    let error = stack
        .direct_as("reader", "known-to-the-test")
        .await
        .expect_err("the password the test set was replaced");
    assert!(
        format!("{error:#}").contains("password authentication failed"),
        "{error:#}"
    );
}

/// A message of `tag` whose body is `parts`, each followed by a NUL, then `tail`.
fn raw_message(tag: u8, parts: &[&[u8]], tail: &[u8]) -> BytesMut {
    let mut body = BytesMut::new();
    for part in parts {
        body.put_slice(part);
        body.put_u8(0);
    }
    body.put_slice(tail);
    let mut out = BytesMut::new();
    out.put_u8(tag);
    out.put_i32(i32::try_from(body.len() + 4).unwrap());
    out.put_slice(&body);
    out
}

/// What a raw session's `SELECT current_user` says.
async fn raw_current_user(client: &mut RawClient) -> String {
    client.query("SELECT current_user").await;
    let messages = client.read_until_ready().await;
    let row = messages
        .iter()
        .find(|m| m.tag == backend::DATA_ROW)
        .unwrap_or_else(|| panic!("no row: {messages:?}"));
    let values = backend::data_row(&row.frame).unwrap();
    String::from_utf8(values[0].unwrap().to_vec()).unwrap()
}

/// The error codes among `messages`.
fn error_codes(messages: &[common::Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.tag == backend::ERROR_RESPONSE)
        .map(|m| m.error().code)
        .collect()
}

/// With `client_encoding` LATIN1 (allowed: ASCII-safe), any byte string is valid text for the
/// server, but not UTF-8. A statement carrying one such byte must still be checked, not passed
/// through unread.
async fn escapes_in_text_that_is_not_utf8_are_refused(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let token = stack.token("alice@example.com", &["analysts"]);
    let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;
    client.query("SET client_encoding = 'LATIN1'").await;
    assert!(error_codes(&client.read_until_ready().await).is_empty());

    // Simple protocol: 0xE9 is "é" in LATIN1 and invalid UTF-8.
    let query = raw_message(
        b'Q',
        &[b"SELECT 'caf\xe9'; RESET ROLE; SET ROLE writer"],
        b"",
    );
    client.send(&query).await;
    let messages = client.read_until_ready().await;
    assert_eq!(error_codes(&messages), ["42501"], "{messages:?}");
    assert_eq!(raw_current_user(&mut client).await, "reader");

    // Extended protocol: the same in a Parse.
    let mut out = raw_message(
        b'P',
        &[b"", b"SELECT set_config('role', 'none', false), 'caf\xe9'"],
        &0_i16.to_be_bytes(),
    );
    out.extend_from_slice(&raw_message(b'S', &[], b""));
    client.send(&out).await;
    let messages = client.read_until_ready().await;
    assert_eq!(error_codes(&messages), ["42501"], "{messages:?}");
    assert_eq!(raw_current_user(&mut client).await, "reader");

    // Harmless LATIN1 text still works, and comes back as LATIN1.
    client
        .send(&raw_message(b'Q', &[b"SELECT 'caf\xe9'"], b""))
        .await;
    let messages = client.read_until_ready().await;
    assert!(error_codes(&messages).is_empty(), "{messages:?}");
    let row = messages
        .iter()
        .find(|m| m.tag == backend::DATA_ROW)
        .unwrap();
    assert_eq!(
        backend::data_row(&row.frame).unwrap()[0],
        Some(&b"caf\xe9"[..])
    );
}

/// The fastpath FunctionCall message calls a function by OID, with no SQL for the guard to read:
/// here `set_config('role', 'writer', false)` (OID 2078).
async fn fastpath_function_calls_are_refused(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let token = stack.token("alice@example.com", &["analysts"]);
    let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;
    let mut body = BytesMut::new();
    body.put_i32(2078);
    body.put_i16(0);
    body.put_i16(3);
    for arg in [&b"role"[..], b"writer", b"false"] {
        body.put_i32(i32::try_from(arg.len()).unwrap());
        body.put_slice(arg);
    }
    body.put_i16(0);
    let mut out = BytesMut::new();
    out.put_u8(b'F');
    out.put_i32(i32::try_from(body.len() + 4).unwrap());
    out.put_slice(&body);
    client.send(&out).await;
    let messages = client.read_until_ready().await;
    let errors: Vec<_> = messages
        .iter()
        .filter(|m| m.tag == backend::ERROR_RESPONSE)
        .map(common::Message::error)
        .collect();
    assert_eq!(errors.len(), 1, "{messages:?}");
    assert_eq!(errors[0].code, "42501");
    assert!(
        errors[0].message.contains("fastpath"),
        "{}",
        errors[0].message
    );
    assert_eq!(raw_current_user(&mut client).await, "reader");
}
