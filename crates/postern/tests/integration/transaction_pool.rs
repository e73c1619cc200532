//! Transaction pooling: a client holds a server connection only for a transaction. Identities
//! interleaving on one connection each see their own role and claims; prepared statements work
//! whatever connection a transaction lands on (tokio-postgres, pgbench `-M prepared`); what
//! would outlive a transaction is refused with a message naming the pool mode; a full pool
//! refuses a transaction with 53300 and the session carries on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{assert_db_error, stack};
use postern_config::{PoolConfig, PoolMode, UpstreamMode};
use postern_testkit::Stack;

/// A stack whose demo target pools by transaction, its pool changed by `change`.
async fn transaction_stack(mode: UpstreamMode, change: impl FnOnce(&mut PoolConfig)) -> Stack {
    let mut stack = stack(mode).await;
    stack.stop_proxy().await;
    let pool = &mut stack.config.targets.get_mut("demo").unwrap().pool;
    pool.mode = PoolMode::Transaction;
    change(pool);
    stack.start_proxy().await.unwrap();
    stack
}

/// Two identities whose sessions share one pool: in set_role mode every role shares the session
/// login's pool; in role_login mode a pool belongs to one role.
fn two_identities(stack: &Stack, mode: UpstreamMode) -> [(&'static str, String, &'static str); 2] {
    match mode {
        UpstreamMode::SetRole => [
            (
                "writer",
                stack.token("erin@example.com", &["engineers"]),
                "erin@example.com",
            ),
            (
                "reader",
                stack.token("alice@example.com", &["analysts"]),
                "alice@example.com",
            ),
        ],
        _ => [
            (
                "reader",
                stack.token("amy@example.com", &["analysts"]),
                "amy@example.com",
            ),
            (
                "reader",
                stack.token("alice@example.com", &["analysts"]),
                "alice@example.com",
            ),
        ],
    }
}

const WHO: &str = "SELECT current_user::text, postern.subject(), pg_backend_pid()";

/// Two sessions on a pool of one connection, taking turns statement by statement and
/// transaction by transaction: one backend serves both, and each sees its own role and its own
/// signed claims every time.
async fn identities_interleave_on_one_server_connection(mode: UpstreamMode) {
    let stack = transaction_stack(mode, |pool| pool.max_connections = 1).await;
    let identities = two_identities(&stack, mode);
    let mut clients = Vec::new();
    for (role, token, _) in &identities {
        clients.push(stack.connect(role, token).await.unwrap());
    }
    let mut pids = HashSet::new();
    for _ in 0..3 {
        for (client, (role, _, subject)) in clients.iter().zip(&identities) {
            // tokio-postgres prepares the statement in one transaction and runs it in another.
            let row = client.query_one(WHO, &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), *role);
            assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(*subject));
            pids.insert(row.get::<_, i32>(2));
            let simple = client.simple_query(WHO).await.unwrap();
            let row = simple
                .iter()
                .find_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
                    _ => None,
                })
                .unwrap();
            assert_eq!(row.get(0), Some(*role));
            assert_eq!(row.get(1), Some(*subject));
        }
    }
    assert_eq!(pids.len(), 1, "one server connection served both sessions");

    // A transaction block holds the connection: the other session's statement waits for its
    // end, then runs on the same backend as itself.
    let (first, second) = clients.split_at_mut(1);
    let transaction = first[0].transaction().await.unwrap();
    let inside = transaction.query_one(WHO, &[]).await.unwrap();
    let mut waiting = std::pin::pin!(second[0].query_one(WHO, &[]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "the other session ran while the only connection was in a transaction"
    );
    assert_eq!(
        transaction
            .query_one(WHO, &[])
            .await
            .unwrap()
            .get::<_, i32>(2),
        inside.get::<_, i32>(2),
        "a transaction moved between server connections"
    );
    transaction.commit().await.unwrap();
    let row = waiting.await.unwrap();
    assert_eq!(row.get::<_, String>(0), identities[1].0);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some(identities[1].2)
    );
    assert_eq!(row.get::<_, i32>(2), inside.get::<_, i32>(2));
}

/// A statement prepared on one server connection runs on another: the pool's other connection
/// prepares it before the client's Bind, in the same round trip.
async fn prepared_statements_follow_the_client(mode: UpstreamMode) {
    let stack = transaction_stack(mode, |pool| pool.max_connections = 2).await;
    let [(a_role, a_token, a_subject), (b_role, b_token, _)] = two_identities(&stack, mode);
    let a = stack.connect(a_role, &a_token).await.unwrap();
    let mut b = stack.connect(b_role, &b_token).await.unwrap();

    let statement = a.prepare(WHO).await.unwrap();
    let prepared_on: i32 = a.query_one(&statement, &[]).await.unwrap().get(2);
    // The other session holds the connection just used (the pool hands out the most recently
    // returned one) for the length of its transaction.
    let transaction = b.transaction().await.unwrap();
    let held: i32 = transaction
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, prepared_on);
    let row = a.query_one(&statement, &[]).await.unwrap();
    assert_ne!(
        row.get::<_, i32>(2),
        prepared_on,
        "expected the other connection"
    );
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(a_subject));
    // Statements with parameters, and a statement closed and prepared again.
    let with_parameter = a
        .prepare("SELECT count(*) FROM orders WHERE tenant_id = $1")
        .await
        .unwrap();
    let count: i64 = a
        .query_one(&with_parameter, &[&"acme"])
        .await
        .unwrap()
        .get(0);
    assert!(count > 0);
    drop(with_parameter);
    transaction.commit().await.unwrap();
    for _ in 0..4 {
        let again = a
            .prepare("SELECT count(*) FROM orders WHERE tenant_id = $1")
            .await
            .unwrap();
        let recount: i64 = a.query_one(&again, &[&"acme"]).await.unwrap().get(0);
        assert_eq!(recount, count);
        assert_eq!(
            a.query_one(&statement, &[])
                .await
                .unwrap()
                .get::<_, Option<String>>(1)
                .as_deref(),
            Some(a_subject)
        );
    }
    // A name the client never prepared is the server's error, named as the client wrote it.
    let error = a
        .simple_query("SELECT name FROM pg_prepared_statements")
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", "pg_prepared_statements");
}

/// pgbench in each protocol, with more clients than server connections and a transaction
/// block in every transaction.
async fn pgbench_runs_through_transaction_pooling(mode: UpstreamMode) {
    let stack = transaction_stack(mode, |pool| pool.max_connections = 2).await;
    let [(role, token, _), _] = two_identities(&stack, mode);
    let script = stack.dir().join("transaction_pool.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 4)\n\
         SELECT count(*) FROM orders WHERE id = :id;\n\
         BEGIN;\n\
         SELECT postern.subject();\n\
         END;\n",
    )
    .unwrap();
    for protocol in ["prepared", "extended", "simple"] {
        let output = tokio::process::Command::new("pgbench")
            // A thread per client: pgbench prepares synchronously, and a thread waiting for a
            // connection would stall its other client holding one in a transaction block.
            .args(["-n", "-c", "4", "-j", "4", "-t", "25", "-M", protocol, "-f"])
            .arg(&script)
            .arg(format!(
                "host=127.0.0.1 port={} dbname=demo user={role}",
                stack.addr.port()
            ))
            .env("PGPASSWORD", &token)
            .env_remove("PGSSLMODE")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "pgbench -M {protocol}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 100/100"),
            "pgbench -M {protocol}: {stdout}"
        );
    }
}

/// What would outlive a transaction is refused, naming the pool mode; its transaction-scoped
/// forms work and leave nothing for the next transaction.
async fn session_state_is_refused(mode: UpstreamMode) {
    let stack = transaction_stack(mode, |pool| pool.max_connections = 1).await;
    let [(role, token, _), (other_role, other_token, _)] = two_identities(&stack, mode);
    let client = stack.connect(role, &token).await.unwrap();
    for (sql, named) in [
        ("SET statement_timeout = '7s'", "setting statement_timeout"),
        ("LISTEN jobs", "LISTEN"),
        ("SELECT pg_advisory_lock(42)", "pg_advisory_lock"),
        ("PREPARE leftover AS SELECT 1", "PREPARE"),
        ("CREATE TEMP TABLE scratch (x int)", "temporary object"),
        (
            "SELECT set_config('app.tenant', 'acme', false)",
            "set_config(app.tenant)",
        ),
    ] {
        let error = client.simple_query(sql).await.unwrap_err();
        assert_db_error(&error, "42501", named);
        assert_db_error(&error, "42501", "transaction pooling");
    }
    client
        .batch_execute(
            "BEGIN; SET LOCAL statement_timeout = '7s'; \
             SELECT set_config('app.tenant', 'acme', true); \
             CREATE TEMP TABLE scratch (x int) ON COMMIT DROP; \
             SELECT pg_advisory_xact_lock(42); COMMIT",
        )
        .await
        .unwrap();
    let other = stack.connect(other_role, &other_token).await.unwrap();
    let row = other
        .query_one(
            "SELECT current_setting('statement_timeout'), \
                    coalesce(current_setting('app.tenant', true), ''), \
                    to_regclass('pg_temp.scratch') IS NULL, \
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0");
    assert_eq!(row.get::<_, String>(1), "");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, i64>(3), 0);
}

/// With every connection in a transaction, another session's transaction waits for the
/// checkout timeout and is refused with 53300; the session itself goes on.
async fn a_full_pool_refuses_a_transaction_not_the_session(mode: UpstreamMode) {
    let stack = transaction_stack(mode, |pool| {
        pool.max_connections = 1;
        pool.checkout_timeout = Duration::from_millis(300);
    })
    .await;
    let [(role, token, _), (other_role, other_token, _)] = two_identities(&stack, mode);
    let mut holder = stack.connect(role, &token).await.unwrap();
    let waiter = stack.connect(other_role, &other_token).await.unwrap();
    let transaction = holder.transaction().await.unwrap();
    transaction.simple_query("SELECT 1").await.unwrap();

    let error = waiter.simple_query("SELECT 1").await.unwrap_err();
    assert_db_error(&error, "53300", "all 1 connections to target \"demo\"");
    let error = waiter.query_one("SELECT 2", &[]).await.unwrap_err();
    assert_db_error(&error, "53300", "are busy");

    transaction.commit().await.unwrap();
    let row = waiter.query_one("SELECT 3::int", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
}

/// A session that ends inside a transaction takes the transaction with it: its connection is
/// closed, not handed on, and what it wrote is gone.
async fn a_session_ending_mid_transaction_rolls_back(mode: UpstreamMode) {
    let stack = transaction_stack(mode, |pool| pool.max_connections = 1).await;
    let token = stack.token("erin@example.com", &["engineers"]);
    let client = stack.connect("writer", &token).await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(
            "BEGIN; INSERT INTO orders (id, tenant_id, customer, amount) \
             VALUES (100, 'acme', 'x', 1)",
        )
        .await
        .unwrap();
    drop(client);

    let client = stack.connect("writer", &token).await.unwrap();
    let row = client
        .query_one(
            "SELECT pg_backend_pid(), (SELECT count(*) FROM orders WHERE id = 100)",
            &[],
        )
        .await
        .unwrap();
    assert_ne!(row.get::<_, i32>(0), pid);
    assert_eq!(row.get::<_, i64>(1), 0);
}

/// A cancel request reaches the backend running the session's statement, whichever it is.
async fn cancel_reaches_the_backend_in_use(mode: UpstreamMode) {
    let stack = transaction_stack(mode, |pool| pool.max_connections = 2).await;
    let [(role, token, _), _] = two_identities(&stack, mode);
    let client = stack.connect(role, &token).await.unwrap();
    let cancel = client.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (client, result)
    });
    let direct = stack.direct().await.unwrap();
    crate::common::wait_until("the statement runs", || async {
        direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' \
                 AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (client, result) = sleeping.await.unwrap();
    assert_db_error(&result.unwrap_err(), "57014", "canceling statement");
    client.simple_query("SELECT 1").await.unwrap();
}

/// Another client's statements on the shared connection are out of reach: a Bind naming
/// Postern's server-side names runs nothing, and SQL-level `EXECUTE` is refused. (Both clients
/// send the same startup parameters, so they share one pool and its one connection.)
async fn another_clients_statements_are_out_of_reach(mode: UpstreamMode) {
    use crate::common::{RawClient, bind_execute, cycle, parse};
    let stack = transaction_stack(mode, |pool| pool.max_connections = 1).await;
    let [(a_role, a_token, _), (b_role, b_token, _)] = two_identities(&stack, mode);
    let (mut a, _) = RawClient::login(stack.addr, a_role, &a_token).await;
    let (errors, _) = cycle(&mut a, parse("mine", "SELECT 'secret of a'::text")).await;
    assert!(errors.is_empty(), "{errors:?}");
    // Run in a transaction of its own: the statement is prepared again under the connection's
    // lasting name.
    let (errors, value) = cycle(&mut a, bind_execute("mine")).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value.as_deref(), Some("secret of a"));

    let (mut b, _) = RawClient::login(stack.addr, b_role, &b_token).await;
    for n in 1..=8 {
        let name = format!("postern_tx_{n}");
        let (errors, value) = cycle(&mut b, bind_execute(&name)).await;
        assert_eq!(value, None, "{name} ran another client's statement");
        assert_eq!(errors, ["26000"], "{name}");
    }
    let error = stack
        .connect(b_role, &b_token)
        .await
        .unwrap()
        .simple_query("EXECUTE postern_tx_1")
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", "SQL-level EXECUTE");
    // The owner's statement still works.
    let (errors, value) = cycle(&mut a, bind_execute("mine")).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value.as_deref(), Some("secret of a"));
}

both_modes!(
    another_clients_statements_are_out_of_reach,
    identities_interleave_on_one_server_connection,
    prepared_statements_follow_the_client,
    pgbench_runs_through_transaction_pooling,
    session_state_is_refused,
    a_full_pool_refuses_a_transaction_not_the_session,
    a_session_ending_mid_transaction_rolls_back,
    cancel_reaches_the_backend_in_use,
);
