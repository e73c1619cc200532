//! Statement-level policy, table-driven: well over a hundred statements, each run through Postern
//! against a real PostgreSQL by three identities with different policies, in both upstream modes
//! and through both protocols, with the decision each must get:
//!
//! - an analyst (`analysts`, role `reader`), under `analysts-read-only`, which forbids `write`
//!   and `ddl`;
//! - an application (`engineers`, role `writer`), which may read and write but not change the
//!   schema (`ddl-only-for-ddl-engineers`);
//! - a DDL engineer (`engineers` and `ddl-engineers`, role `writer` with `CREATE` on `public`).
//!
//! A row expects the statement to run, to be refused by Postern (by a named forbid policy, for
//! want of a permit, or by the escape guard before policy), or to be let through by Postern and
//! refused by the database. Postern's refusals and the database's own `42501` ("permission
//! denied for table", "must be owner of") are told apart by their messages. Every statement runs
//! inside `BEGIN` ... `ROLLBACK`, and after it the transaction must be exactly as the database
//! would leave it: usable after success, aborted after any error, Postern's included. Every
//! refusal must have its audit event, naming the deciding policy.
//!
//! Beyond the table: a text of several statements whose last is forbidden runs none of them, and
//! `PREPARE`/`EXECUTE` sent in separate messages are decided as what they run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use crate::common::assert_db_error;
use bytes::Bytes;
use futures_util::{SinkExt as _, TryStreamExt as _};
use postern_config::UpstreamMode;
use postern_testkit::{Stack, StackOptions};
use serde_json::Value;

/// The policies under test, in one file.
const POLICIES: &str = r#"
@id("analysts-read-only")
forbid (principal in Group::"analysts", action in [Action::"write", Action::"ddl"], resource);

@id("ddl-only-for-ddl-engineers")
forbid (principal, action == Action::"ddl", resource)
unless { principal in Group::"ddl-engineers" };
"#;

const READ_ONLY: &str = "analysts-read-only";
const NO_DDL: &str = "ddl-only-for-ddl-engineers";

/// What one identity gets for one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum E {
    /// Runs.
    Ok,
    /// Refused by Postern (42501) because this forbid policy applies.
    Forbid(&'static str),
    /// Refused by Postern (42501) because no policy permits it (dcl, admin, raw).
    Unpermitted,
    /// Refused by Postern's escape guard (42501), before policy is asked.
    Guard,
    /// Let through by Postern, refused by the database with this SQLSTATE.
    Db(&'static str),
    /// Depends on the upstream mode: in `set_role` mode the guard refuses statements that run
    /// or store code Postern cannot see, whoever sends them.
    Mode {
        role_login: &'static E,
        set_role: &'static E,
    },
}

use E::{Guard, Ok as OK, Unpermitted as NONE};
const RO: E = E::Forbid(READ_ONLY);
const NODDL: E = E::Forbid(NO_DDL);
/// The database's own permission error: not Postern's.
const DENIED: E = E::Db("42501");
/// Guarded in `set_role` mode, as `e` in `role_login` mode.
const fn guarded(e: &'static E) -> E {
    E::Mode {
        role_login: e,
        set_role: &E::Guard,
    }
}

impl E {
    fn in_mode(self, mode: UpstreamMode) -> Self {
        match (self, mode) {
            (Self::Mode { set_role, .. }, UpstreamMode::SetRole) => *set_role,
            (Self::Mode { role_login, .. }, _) => *role_login,
            (e, _) => e,
        }
    }
}

/// How a row's statement is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Through the simple protocol, then again through the extended protocol.
    Both,
    /// Through the simple protocol only (several statements in one text).
    Simple,
    /// `COPY ... FROM STDIN`: with tokio-postgres's `copy_in` when it is expected to run.
    CopyIn,
    /// `COPY ... TO STDOUT`: with tokio-postgres's `copy_out` when it is expected to run.
    CopyOut,
}

struct Row {
    sql: &'static str,
    how: How,
    analyst: E,
    app: E,
    ddl: E,
}

const fn row(sql: &'static str, analyst: E, app: E, ddl: E) -> Row {
    Row {
        sql,
        how: How::Both,
        analyst,
        app,
        ddl,
    }
}

const fn simple(sql: &'static str, analyst: E, app: E, ddl: E) -> Row {
    Row {
        sql,
        how: How::Simple,
        analyst,
        app,
        ddl,
    }
}

const fn copy(how: How, sql: &'static str, analyst: E, app: E, ddl: E) -> Row {
    Row {
        sql,
        how,
        analyst,
        app,
        ddl,
    }
}

const fn read(sql: &'static str) -> Row {
    row(sql, OK, OK, OK)
}

const fn write(sql: &'static str) -> Row {
    row(sql, RO, OK, OK)
}

const fn admin(sql: &'static str) -> Row {
    row(sql, NONE, NONE, NONE)
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Reads, however the table is named.
    read("SELECT count(*) FROM orders"),
    read("SELECT * FROM public.orders WHERE id = 1"),
    read(r#"SELECT * FROM "public"."orders""#),
    read("SELECT * FROM PUBLIC.ORDERS"),
    read("select customer from Orders where amount > 0"),
    read("SELECT * FROM demo.public.orders"),
    read("TABLE orders"),
    read("VALUES (1), (2)"),
    read("SELECT 1"),
    read("SELECT * FROM orders o JOIN public.orders p ON o.id = p.id"),
    read("SELECT * FROM (SELECT id FROM orders) s"),
    read("SELECT * FROM orders WHERE id IN (SELECT id FROM orders WHERE amount > 0)"),
    read("SELECT count(*) FROM orders GROUP BY tenant_id HAVING count(*) > 0"),
    read("SELECT * FROM orders ORDER BY id LIMIT 1 OFFSET 1"),
    read("WITH t AS (SELECT * FROM orders) SELECT count(*) FROM t"),
    read("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT * FROM n"),
    read("SELECT count(*) FROM pg_catalog.pg_class"),
    read("SELECT table_name FROM information_schema.tables LIMIT 1"),
    read("SELECT current_user, session_user"),
    read("SELECT now(), version()"),
    read("SELECT generate_series(1, 3)"),
    read("SHOW search_path"),
    read("EXPLAIN SELECT * FROM orders"),
    // Statements in strings and comments are not statements.
    read("SELECT $$DELETE FROM orders$$"),
    read("SELECT $body$ '; DELETE FROM orders; $body$"),
    read("SELECT $a$ $b$ DROP TABLE orders $b$ $a$"),
    read("SELECT 'DROP TABLE orders; --'"),
    read("/* DELETE FROM orders */ SELECT 1"),
    read("SELECT 1 /* ; DELETE FROM orders */"),
    read("SELECT 1 -- ; DELETE FROM orders"),
    read("SELECT 1 /* nested /* DELETE FROM orders */ still a comment */"),
    // Reads the database refuses.
    row("SELECT * FROM nosuch_table", E::Db("42P01"), E::Db("42P01"), E::Db("42P01")),
    row("SELECT id FROM orders WHERE id = 1 / 0", E::Db("22012"), E::Db("22012"), E::Db("22012")),
    // A plain EXPLAIN runs nothing, so it is a read; the database still checks privileges.
    row("EXPLAIN DELETE FROM orders", DENIED, OK, OK),
    row("EXPLAIN (ANALYZE false) UPDATE orders SET amount = amount", DENIED, OK, OK),
    // Writes, however the table is named.
    write("INSERT INTO orders (tenant_id, customer, amount) VALUES ('acme', 'Wile E.', 1)"),
    write("insert into public.orders (tenant_id, customer, amount) values ('acme', 'x', 2) returning id"),
    write("UPDATE orders SET amount = amount WHERE id = 1"),
    write(r#"UPDATE "public"."orders" SET amount = amount + 0"#),
    write("DELETE FROM orders WHERE id = -1"),
    write(r#"DELETE FROM "orders" WHERE false"#),
    write("DELETE FROM PUBLIC.ORDERS WHERE false"),
    write("DELETE FROM demo.public.orders WHERE false"),
    write("MERGE INTO orders o USING (VALUES (1)) v(id) ON o.id = v.id WHEN MATCHED THEN UPDATE SET amount = o.amount"),
    write("INSERT INTO orders (tenant_id, customer, amount) SELECT tenant_id, customer, amount FROM orders WHERE false"),
    write("INSERT INTO orders (tenant_id, customer, amount) VALUES ('a', 'b', 1) ON CONFLICT DO NOTHING"),
    write("UPDATE orders SET amount = 0 WHERE id IN (SELECT id FROM orders WHERE false)"),
    write("DELETE FROM orders USING orders o2 WHERE orders.id = o2.id AND false"),
    row(r#"DELETE FROM "ORDERS""#, RO, E::Db("42P01"), E::Db("42P01")),
    // Writes hidden in CTEs.
    write("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"),
    write("WITH u AS (UPDATE orders SET amount = amount RETURNING id) SELECT count(*) FROM u"),
    write("WITH i AS (INSERT INTO orders (tenant_id, customer, amount) VALUES ('a', 'b', 1) RETURNING id) SELECT id FROM i"),
    write("WITH t AS (SELECT 1), d AS (DELETE FROM orders WHERE false RETURNING id) SELECT * FROM t"),
    write("WITH orders AS (SELECT 1 AS id) DELETE FROM orders WHERE false"),
    row("SELECT * FROM (WITH d AS (DELETE FROM orders WHERE false RETURNING id) SELECT id FROM d) s",
        RO, E::Db("0A000"), E::Db("0A000")),
    // Row locks are writes.
    write("SELECT * FROM orders FOR UPDATE"),
    write("SELECT * FROM orders WHERE id = 1 FOR SHARE"),
    write("SELECT id FROM orders FOR NO KEY UPDATE SKIP LOCKED"),
    write("SELECT * FROM (SELECT * FROM orders FOR UPDATE) s"),
    // Functions with side effects inside a SELECT.
    write("SELECT nextval('orders_id_seq')"),
    write("SELECT pg_catalog.NEXTVAL('public.orders_id_seq')"),
    write("SELECT (SELECT nextval('orders_id_seq'))"),
    write("SELECT id FROM orders WHERE id = nextval('orders_id_seq')"),
    row("SELECT setval('orders_id_seq', 1000)", RO, DENIED, DENIED),
    // EXPLAIN ANALYZE runs its statement.
    write("EXPLAIN ANALYZE DELETE FROM orders WHERE false"),
    write("EXPLAIN (ANALYZE, COSTS off) INSERT INTO orders (tenant_id, customer, amount) VALUES ('a', 'b', 1)"),
    write("EXPLAIN ANALYZE WITH d AS (DELETE FROM orders WHERE false RETURNING *) SELECT * FROM d"),
    // Writes behind comments and strings.
    write("-- a comment\nDELETE FROM orders WHERE false"),
    write("/* SELECT */ DELETE FROM orders WHERE false"),
    write("DELETE FROM orders WHERE customer = $$'; SELECT 1; --$$"),
    // CALL runs a procedure Postern cannot see into.
    row("CALL nosuch_procedure()", guarded(&RO), guarded(&E::Db("42883")), guarded(&E::Db("42883"))),
    // COPY: to the client is copy_out (in read), from the client copy_in (in write), to or
    // from the server's files or programs admin.
    copy(How::CopyOut, "COPY orders TO STDOUT", OK, OK, OK),
    copy(How::CopyOut, "COPY (SELECT customer FROM orders) TO STDOUT", OK, OK, OK),
    copy(How::CopyOut, "COPY (DELETE FROM orders WHERE false RETURNING *) TO STDOUT", RO, OK, OK),
    copy(How::CopyIn, "COPY orders (tenant_id, customer, amount) FROM STDIN", RO, OK, OK),
    admin("COPY orders TO PROGRAM 'cat'"),
    admin("COPY orders FROM PROGRAM 'true'"),
    admin("COPY orders TO '/tmp/postern-policy-test'"),
    admin("COPY (SELECT pg_read_file('/etc/passwd')) TO STDOUT"),
    // Schema changes.
    row("CREATE TABLE policy_t1 (id int)", RO, NODDL, OK),
    row("CREATE TABLE public.policy_t2 AS SELECT * FROM orders", RO, NODDL, OK),
    row("SELECT * INTO policy_t3 FROM orders", RO, NODDL, OK),
    row("CREATE TEMP TABLE policy_tmp (id int)", RO, NODDL, OK),
    row("CREATE TABLE policy_t4 (LIKE orders)", RO, NODDL, OK),
    row("CREATE UNLOGGED TABLE policy_t5 (id int PRIMARY KEY)", RO, NODDL, OK),
    row("CREATE SEQUENCE policy_seq", RO, NODDL, OK),
    row("CREATE TYPE policy_mood AS ENUM ('ok', 'not ok')", RO, NODDL, OK),
    row("DROP TABLE IF EXISTS nosuch_table", RO, NODDL, OK),
    row("DROP INDEX IF EXISTS nosuch_index", RO, NODDL, OK),
    row("ALTER TABLE IF EXISTS nosuch_table ADD COLUMN x int", RO, NODDL, OK),
    row("CREATE TABLE orders (id int)", RO, NODDL, E::Db("42P07")),
    row("CREATE INDEX ON orders (customer)", RO, NODDL, DENIED),
    row("ALTER TABLE orders ADD COLUMN note text", RO, NODDL, DENIED),
    row("ALTER TABLE orders RENAME TO orders_old", RO, NODDL, DENIED),
    row("DROP TABLE orders", RO, NODDL, DENIED),
    row("DROP TABLE public.orders CASCADE", RO, NODDL, DENIED),
    row("TRUNCATE orders", RO, NODDL, DENIED),
    row("COMMENT ON TABLE orders IS 'x'", RO, NODDL, DENIED),
    row("CREATE SCHEMA policy_schema", RO, NODDL, DENIED),
    row("ALTER SEQUENCE orders_id_seq RESTART", RO, NODDL, DENIED),
    // Schema changes that store code: guarded in set_role mode.
    row("CREATE VIEW policy_v AS SELECT * FROM orders", guarded(&RO), guarded(&NODDL), guarded(&OK)),
    row("CREATE FUNCTION policy_f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        guarded(&RO), guarded(&NODDL), guarded(&OK)),
    row("CREATE TABLE policy_t6 (id bigint DEFAULT nextval('orders_id_seq'))",
        guarded(&RO), guarded(&NODDL), guarded(&OK)),
    // Privileges: nobody is granted dcl; role management is the guard's.
    admin("GRANT SELECT ON orders TO reader"),
    admin("REVOKE SELECT ON orders FROM reader"),
    admin("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reader"),
    admin("DROP OWNED BY reader"),
    row("CREATE ROLE policy_evil", Guard, Guard, Guard),
    row("GRANT writer TO reader", Guard, Guard, Guard),
    // Administration, as statements and as functions inside a SELECT.
    admin("SELECT pg_terminate_backend(1)"),
    admin("SELECT pg_cancel_backend(pg_backend_pid())"),
    admin("SELECT pg_reload_conf()"),
    admin("SELECT pg_read_file('/etc/passwd')"),
    admin("SELECT 1 FROM orders WHERE pg_terminate_backend(1)"),
    admin("SELECT lo_import('/etc/passwd')"),
    admin("VACUUM orders"),
    admin("ANALYZE orders"),
    admin("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"),
    admin("CHECKPOINT"),
    admin("ALTER SYSTEM SET work_mem = '8MB'"),
    admin("CREATE EXTENSION IF NOT EXISTS pgcrypto"),
    admin("CLUSTER orders"),
    admin("REINDEX TABLE orders"),
    admin("COMMIT PREPARED 'policy-gid'"),
    row("SELECT dblink_exec('dbname=demo', 'DELETE FROM orders')",
        guarded(&NONE), guarded(&NONE), guarded(&NONE)),
    // What Postern cannot check: raw, which nobody is granted.
    row("DO $$BEGIN DELETE FROM orders; END$$", Guard, Guard, Guard),
    row("SELECT query_to_xml('DELETE FROM orders RETURNING *', true, true, '')",
        guarded(&NONE), guarded(&NONE), guarded(&NONE)),
    row("SELEKT 1", Guard, Guard, Guard),
    row("DELETE FROM orders WHERE", Guard, Guard, Guard),
    // Session and transaction statements are not policy matters, unless they name tables.
    read("SET statement_timeout = '5s'"),
    read("SET LOCAL work_mem = '8MB'"),
    read("RESET statement_timeout"),
    read("SHOW statement_timeout"),
    read("SAVEPOINT policy_sp"),
    read("LISTEN policy_channel"),
    read("NOTIFY policy_channel, 'x'"),
    read("SELECT pg_notify('policy_channel', 'x')"),
    read("DISCARD PLANS"),
    read("DECLARE policy_c CURSOR FOR SELECT * FROM orders"),
    row("DECLARE policy_c CURSOR FOR SELECT * FROM orders FOR UPDATE", RO, OK, OK),
    // Several statements in one text: any refused refuses the text.
    simple("SELECT 1; SELECT 2", OK, OK, OK),
    simple("SELECT count(*) FROM orders; DELETE FROM orders WHERE false", RO, OK, OK),
    simple("INSERT INTO orders (tenant_id, customer, amount) VALUES ('a', 'b', 1); CREATE TABLE policy_t7 (id int)",
        RO, NODDL, OK),
    simple("SELECT 1; SELECT pg_terminate_backend(1)", NONE, NONE, NONE),
    simple("SELECT 1; DO $$BEGIN END$$", Guard, Guard, Guard),
    simple("PREPARE policy_p AS SELECT count(*) FROM orders; EXECUTE policy_p; DEALLOCATE policy_p", OK, OK, OK),
    simple("PREPARE policy_p AS DELETE FROM orders WHERE false; EXECUTE policy_p; DEALLOCATE policy_p", RO, OK, OK),
    // A string that ends where a careless reader thinks it goes on.
    simple("SELECT E'\\\\'; DELETE FROM orders WHERE false; --'", RO, OK, OK),
    simple("SELECT 'x\\'; DELETE FROM orders WHERE false; --'", RO, OK, OK),
];

/// One of the three identities, connected.
struct Profile {
    name: &'static str,
    subject: &'static str,
    client: tokio_postgres::Client,
    expect: fn(&Row) -> E,
}

async fn profiles(stack: &Stack) -> Vec<Profile> {
    let connect = |subject: &'static str, groups: &'static [&'static str], role: &'static str| {
        let token = stack.token(subject, groups);
        async move { stack.connect(role, &token).await.unwrap() }
    };
    vec![
        Profile {
            name: "analyst",
            subject: "alice@example.com",
            client: connect("alice@example.com", &["analysts"], "reader").await,
            expect: |row| row.analyst,
        },
        Profile {
            name: "app",
            subject: "orders-app@example.com",
            client: connect("orders-app@example.com", &["engineers"], "writer").await,
            expect: |row| row.app,
        },
        Profile {
            name: "ddl engineer",
            subject: "dora@example.com",
            client: connect(
                "dora@example.com",
                &["engineers", "ddl-engineers"],
                "writer",
            )
            .await,
            expect: |row| row.ddl,
        },
    ]
}

async fn stack(mode: UpstreamMode) -> Stack {
    stack_with(mode, &[POLICIES]).await
}

async fn stack_with(mode: UpstreamMode, policies: &[&str]) -> Stack {
    let stack = Stack::start(StackOptions {
        mode,
        policies: policies.iter().map(|&p| p.to_owned()).collect(),
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts");
    stack
        .direct()
        .await
        .unwrap()
        .batch_execute("GRANT CREATE ON SCHEMA public TO writer")
        .await
        .unwrap();
    stack
}

both_modes!(
    every_statement_gets_its_decision,
    a_forbidden_statement_stops_the_whole_text,
    prepare_and_execute_in_separate_messages,
    a_table_policy_sees_every_statement_naming_the_table,
    a_search_path_does_not_move_a_name_away_from_its_policy,
);

/// Whether an error is Postern's refusal rather than the database's.
fn postern_refusal(message: &str) -> bool {
    message.starts_with("permission denied by policy \"")
        || message.starts_with("permission denied: no policy allows ")
        || message.contains("not allowed through Postern")
        || message.contains("is not allowed on this target")
        || message.starts_with("Postern could not parse")
}

/// Checks one outcome against its expectation; returns a description of the mismatch.
fn judge(
    expected: E,
    result: &Result<(), tokio_postgres::Error>,
    profile: &Profile,
    role: &str,
) -> Result<(), String> {
    let error = match (expected, result) {
        (E::Ok, Ok(())) => return Ok(()),
        (_, Ok(())) => return Err(format!("ran, expected {expected:?}")),
        (_, Err(error)) => error,
    };
    let Some(db) = error.as_db_error() else {
        return Err(format!("not a database error: {error:?}"));
    };
    let (code, message) = (db.code().code(), db.message());
    let by_postern = postern_refusal(message);
    let ok = match expected {
        E::Ok => false,
        E::Forbid(id) => {
            code == "42501"
                && message.starts_with(&format!("permission denied by policy \"{id}\": "))
                && message.ends_with(&format!(
                    " is not allowed for {} as {role}",
                    profile.subject
                ))
        }
        E::Unpermitted => {
            code == "42501"
                && message.starts_with("permission denied: no policy allows ")
                && message.ends_with(&format!(" for {} as {role}", profile.subject))
        }
        E::Guard => code == "42501" && by_postern && !message.starts_with("permission denied"),
        E::Db(expected_code) => code == expected_code && !by_postern,
        E::Mode { .. } => unreachable!("resolved by in_mode"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{code} {message:?}, expected {expected:?}"))
    }
}

/// Runs `row` once as `profile` through `extended` or the simple protocol.
async fn run(
    row: &Row,
    profile: &Profile,
    expected: E,
    extended: bool,
) -> Result<(), tokio_postgres::Error> {
    let client = &profile.client;
    match (row.how, expected) {
        // tokio-postgres cannot take COPY data through simple_query; a refused COPY never
        // gets that far.
        (How::CopyIn, E::Ok) => {
            let sink = client.copy_in::<_, Bytes>(row.sql).await?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from_static(b"policy\tcopied\t1\n"))
                .await?;
            sink.finish().await.map(|_| ())
        }
        (How::CopyOut, E::Ok) => {
            let stream = client.copy_out(row.sql).await?;
            let _: Vec<Bytes> = stream.try_collect().await?;
            Ok(())
        }
        _ if extended => client.query(row.sql, &[]).await.map(|_| ()),
        _ => client.simple_query(row.sql).await.map(|_| ()),
    }
}

fn refused_events(stack: &Stack) -> Vec<Value> {
    stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "statement" && e["decision"] == "refused")
        .collect()
}

/// The audit trail of a refusal: a refused statement event by this subject, with the policy.
fn judge_audit(expected: E, new_refusals: &[Value], profile: &Profile) -> Result<(), String> {
    let by_postern = matches!(expected, E::Forbid(_) | E::Unpermitted | E::Guard);
    match (by_postern, new_refusals) {
        (false, []) => Ok(()),
        (false, events) => Err(format!("unexpected refusal events: {events:?}")),
        (true, [event]) => {
            if event["subject"] != profile.subject {
                return Err(format!("refusal event of someone else: {event}"));
            }
            let policies = event["policies"].as_array().cloned().unwrap_or_default();
            match expected {
                E::Forbid(id) if !policies.iter().any(|p| p == id) => {
                    Err(format!("refusal event without policy {id}: {event}"))
                }
                E::Forbid(_) if event["reason"] != "forbidden" => Err(format!(
                    "refusal event with reason {}: {event}",
                    event["reason"]
                )),
                E::Unpermitted if event["reason"] != "not_permitted" || !policies.is_empty() => {
                    Err(format!(
                        "not the refusal of an unpermitted statement: {event}"
                    ))
                }
                E::Guard if !policies.is_empty() => {
                    Err(format!("a guard refusal names policies: {event}"))
                }
                _ => Ok(()),
            }
        }
        (true, events) => Err(format!("expected one refusal event, got {events:?}")),
    }
}

async fn every_statement_gets_its_decision(mode: UpstreamMode) {
    assert!(ROWS.len() >= 100, "{} rows", ROWS.len());
    let stack = stack(mode).await;
    let profiles = profiles(&stack).await;
    let before: i64 = stack
        .direct()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    let mut failures = Vec::new();
    let mut runs = 0;
    for row in ROWS {
        for profile in &profiles {
            let role = if profile.name == "analyst" {
                "reader"
            } else {
                "writer"
            };
            let expected = (profile.expect)(row).in_mode(mode);
            let passes: &[bool] = match row.how {
                How::Both => &[false, true],
                How::Simple | How::CopyIn | How::CopyOut => &[false],
            };
            for &extended in passes {
                let protocol = if extended { "extended" } else { "simple" };
                let label = format!("{} ({protocol}) {:?}", profile.name, row.sql);
                let refusals_before = refused_events(&stack).len();
                profile.client.batch_execute("BEGIN").await.unwrap();
                let result = run(row, profile, expected, extended).await;
                runs += 1;
                if let Err(problem) = judge(expected, &result, profile, role) {
                    failures.push(format!("{label}: {problem}"));
                }
                // The transaction is where the database would have left it: usable after
                // success, aborted after any error.
                let after = profile.client.simple_query("SELECT 1").await;
                match (&result, after) {
                    (Ok(()), Err(error)) => {
                        failures.push(format!(
                            "{label}: transaction unusable after success: {error}"
                        ));
                    }
                    (Err(_), Ok(_)) => {
                        failures.push(format!("{label}: transaction not aborted by the error"))
                    }
                    (Err(_), Err(error)) => {
                        if error.code().map(|c| c.code()) != Some("25P02") {
                            failures.push(format!("{label}: after the error: {error}"));
                        }
                    }
                    (Ok(()), Ok(_)) => {}
                }
                profile.client.batch_execute("ROLLBACK").await.unwrap();
                let refusals = refused_events(&stack);
                if let Err(problem) = judge_audit(expected, &refusals[refusals_before..], profile) {
                    failures.push(format!("{label}: audit: {problem}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Everything ran inside rolled-back transactions; the sessions are their roles still.
    let after: i64 = stack
        .direct()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before);
    for profile in &profiles {
        let user = common::current_user(&profile.client).await;
        let role = if profile.name == "analyst" {
            "reader"
        } else {
            "writer"
        };
        assert_eq!(user, role, "{}", profile.name);
    }
}

async fn order_count(stack: &Stack) -> i64 {
    stack
        .direct()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0)
}

async fn table_exists(stack: &Stack, name: &str) -> bool {
    stack
        .direct()
        .await
        .unwrap()
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// Outside any transaction block, where the database would commit the first statements of a
/// text before failing a later one, Postern refuses the text before anything of it runs.
async fn a_forbidden_statement_stops_the_whole_text(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let profiles = profiles(&stack).await;
    let [analyst, app, _] = &profiles[..] else {
        unreachable!()
    };
    let before = order_count(&stack).await;

    let sql = "INSERT INTO orders (tenant_id, customer, amount) VALUES ('acme', 'first', 1); \
               COMMIT; CREATE TABLE policy_never (id int)";
    let error = app.client.simple_query(sql).await.expect_err(sql);
    assert_db_error(
        &error,
        "42501",
        &format!("permission denied by policy \"{NO_DDL}\""),
    );
    assert_eq!(order_count(&stack).await, before, "the INSERT ran");
    assert!(!table_exists(&stack, "public.policy_never").await);

    let sql = "SELECT count(*) FROM orders; INSERT INTO orders (tenant_id, customer, amount) \
               VALUES ('acme', 'second', 1); DELETE FROM orders WHERE customer = 'nobody'";
    let error = analyst.client.simple_query(sql).await.expect_err(sql);
    assert_db_error(
        &error,
        "42501",
        &format!("permission denied by policy \"{READ_ONLY}\""),
    );
    assert_eq!(order_count(&stack).await, before);

    // The same texts without their forbidden part run, and the sessions are usable.
    app.client
        .simple_query(
            "INSERT INTO orders (tenant_id, customer, amount) VALUES ('acme', 'first', 1); COMMIT",
        )
        .await
        .unwrap();
    assert_eq!(order_count(&stack).await, before + 1);
    analyst
        .client
        .simple_query("SELECT count(*) FROM orders")
        .await
        .unwrap();
}

/// `PREPARE` and `EXECUTE` in separate messages: the `PREPARE` is decided as what it prepares,
/// so a refused one leaves nothing to execute; through the extended protocol, a refused Parse
/// leaves nothing to bind.
async fn prepare_and_execute_in_separate_messages(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let profiles = profiles(&stack).await;
    let [analyst, app, _] = &profiles[..] else {
        unreachable!()
    };
    let before = order_count(&stack).await;
    let read_only = format!("permission denied by policy \"{READ_ONLY}\"");

    let error = analyst
        .client
        .simple_query("PREPARE del AS DELETE FROM orders")
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", &read_only);
    let error = analyst
        .client
        .simple_query("EXECUTE del")
        .await
        .unwrap_err();
    assert_db_error(&error, "26000", "prepared statement \"del\" does not exist");

    analyst
        .client
        .simple_query("PREPARE cnt AS SELECT count(*) FROM orders")
        .await
        .unwrap();
    let rows = analyst.client.simple_query("EXECUTE cnt").await.unwrap();
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
            if r.get(0) == Some(before.to_string().as_str()))),
        "{rows:?}"
    );

    // The extended protocol: a refused Parse, then the same text allowed to the app.
    let sql = "DELETE FROM orders WHERE id = $1";
    let error = analyst.client.prepare(sql).await.unwrap_err();
    assert_db_error(&error, "42501", &read_only);
    let statement = app.client.prepare(sql).await.unwrap();
    assert_eq!(app.client.execute(&statement, &[&-1i32]).await.unwrap(), 0);

    app.client
        .simple_query("PREPARE del (int) AS DELETE FROM orders WHERE id = $1")
        .await
        .unwrap();
    app.client.simple_query("EXECUTE del(-1)").await.unwrap();
    assert_eq!(order_count(&stack).await, before);
    assert_eq!(common::current_user(&analyst.client).await, "reader");
}

/// A policy about one table: its schema may not change, whoever asks.
const ORDERS_FROZEN: &str = r#"
@id("orders-schema-frozen")
forbid (principal, action == Action::"ddl", resource == Table::"public.orders");
"#;

/// Statements that change `public.orders`, in every way a statement can name it (a relation,
/// an object name in `DROP` or `COMMENT`, the table of a trigger, rule, policy, column or
/// constraint), refused by a policy on that table; and schema changes elsewhere, allowed.
async fn a_table_policy_sees_every_statement_naming_the_table(mode: UpstreamMode) {
    let stack = stack_with(mode, &[POLICIES, ORDERS_FROZEN]).await;
    let profiles = profiles(&stack).await;
    let ddl = &profiles[2];
    let frozen = E::Forbid("orders-schema-frozen");
    let rows = [
        "DROP TABLE orders",
        "DROP TABLE IF EXISTS public.orders",
        r#"DROP TABLE "public"."orders" CASCADE"#,
        "DROP TABLE demo.public.orders",
        "DROP TABLE IF EXISTS policy_scratch, orders",
        "DROP VIEW IF EXISTS orders",
        "DROP TRIGGER IF EXISTS policy_trigger ON orders",
        "DROP POLICY IF EXISTS policy_rls ON public.orders",
        "DROP RULE IF EXISTS policy_rule ON orders",
        "ALTER TABLE orders ADD COLUMN note text",
        "ALTER TABLE orders RENAME TO orders_old",
        "ALTER TABLE orders RENAME COLUMN amount TO total",
        "ALTER TABLE orders OWNER TO reader",
        "ALTER TABLE public.orders SET SCHEMA pg_catalog",
        "TRUNCATE orders",
        "CREATE INDEX ON orders (customer)",
        "COMMENT ON TABLE orders IS 'x'",
        "COMMENT ON TABLE public.orders IS NULL",
        "COMMENT ON COLUMN orders.amount IS 'x'",
        "COMMENT ON COLUMN public.orders.amount IS 'x'",
        "COMMENT ON TRIGGER policy_trigger ON orders IS 'x'",
        "COMMENT ON CONSTRAINT orders_pkey ON orders IS 'x'",
    ]
    .map(|sql| row(sql, E::Ok, E::Ok, frozen));
    let allowed = [
        row("CREATE TABLE policy_scratch (id int)", E::Ok, E::Ok, E::Ok),
        row("DROP TABLE IF EXISTS policy_scratch", E::Ok, E::Ok, E::Ok),
        simple(
            "CREATE TABLE policy_owned (id int); COMMENT ON TABLE policy_owned IS 'x'; \
             COMMENT ON COLUMN policy_owned.id IS 'x'; DROP TABLE policy_owned",
            E::Ok,
            E::Ok,
            E::Ok,
        ),
    ];
    let mut failures = Vec::new();
    for row in rows.iter().chain(&allowed) {
        let passes: &[bool] = match row.how {
            How::Both => &[false, true],
            _ => &[false],
        };
        for &extended in passes {
            ddl.client.batch_execute("BEGIN").await.unwrap();
            let result = run(row, ddl, row.ddl, extended).await;
            if let Err(problem) = judge(row.ddl, &result, ddl, "writer") {
                failures.push(format!("{:?} (extended: {extended}): {problem}", row.sql));
            }
            ddl.client.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(table_exists(&stack, "public.orders").await);
}

/// Policies on one table and on one catalog view.
const ONE_TABLE: &str = r#"
@id("orders-frozen")
forbid (principal, action in [Action::"write"], resource == Table::"public.orders");

@id("no-activity")
forbid (principal, action == Action::"read", resource == Table::"pg_catalog.pg_stat_activity");
"#;

/// The client chooses its startup `search_path`; a name written without a schema is decided
/// in every schema the server may find it in, so no path takes `orders` away from the policy
/// on `public.orders`, nor `pg_stat_activity` from the one on the catalog's view.
async fn a_search_path_does_not_move_a_name_away_from_its_policy(mode: UpstreamMode) {
    let stack = stack_with(mode, &[ONE_TABLE]).await;
    stack
        .direct()
        .await
        .unwrap()
        .batch_execute(
            "CREATE SCHEMA archive; CREATE TABLE archive.orders (LIKE public.orders); \
             GRANT USAGE ON SCHEMA archive TO writer; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON archive.orders TO writer",
        )
        .await
        .unwrap();
    let token = stack.token("orders-app@example.com", &["engineers"]);
    let connect = |search_path: Option<&str>| {
        let mut config = stack.client_config("writer", &token);
        if let Some(path) = search_path {
            config.options(format!("-c search_path={path}"));
        }
        async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        }
    };
    let frozen = "permission denied by policy \"orders-frozen\": write on public.orders";
    let activity =
        "permission denied by policy \"no-activity\": read on pg_catalog.pg_stat_activity";
    for path in [
        None,
        Some("public"),
        Some("nosuch,public"),
        Some("\"$user\",nosuch,public"),
    ] {
        let client = connect(path).await;
        for sql in [
            "DELETE FROM orders WHERE false",
            "UPDATE orders SET amount = amount WHERE false",
            "WITH d AS (DELETE FROM orders WHERE false RETURNING id) SELECT * FROM d",
        ] {
            let error = client.simple_query(sql).await.expect_err(sql);
            assert_db_error(&error, "42501", frozen);
            let error = client.query(sql, &[]).await.expect_err(sql);
            assert_db_error(&error, "42501", frozen);
        }
        for sql in [
            "SELECT count(*) FROM pg_stat_activity",
            "SELECT count(*) FROM pg_catalog.pg_stat_activity",
        ] {
            let error = client.simple_query(sql).await.expect_err(sql);
            assert_db_error(&error, "42501", activity);
        }
        client
            .simple_query("SELECT count(*) FROM orders")
            .await
            .unwrap();
        client
            .simple_query("DELETE FROM archive.orders WHERE false")
            .await
            .unwrap();
    }
    // With archive first, the server would find archive.orders; Postern cannot tell, and asks
    // about both: stricter than needed, never looser.
    let client = connect(Some("archive,public")).await;
    let error = client
        .simple_query("DELETE FROM orders WHERE false")
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", frozen);
    // Without public in the path, `orders` can only be archive.orders.
    let client = connect(Some("archive")).await;
    client
        .simple_query("DELETE FROM orders WHERE false")
        .await
        .unwrap();
    let error = client
        .simple_query("DELETE FROM public.orders WHERE false")
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", frozen);
}
