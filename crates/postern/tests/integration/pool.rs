//! Session pooling: a server connection is reset and handed to the next client session — same
//! backend process, nothing of the last session left — unless the session left something a
//! reset cannot undo; a full pool makes clients wait, then refuses them with 53300; idle
//! connections are checked before use and closed after their idle timeout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::time::Duration;

use crate::common::{assert_db_error, stack, wait_until};
use postern_config::UpstreamMode;
use postern_testkit::Stack;

/// Restarts the stack's proxy with its demo target's pool changed by `change`.
async fn with_pool(stack: &mut Stack, change: impl FnOnce(&mut postern_config::PoolConfig)) {
    stack.stop_proxy().await;
    change(&mut stack.config.targets.get_mut("demo").unwrap().pool);
    stack.start_proxy().await.unwrap();
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Two sessions in a row on a pool of one connection: one backend, and the second sees nothing
/// of the first — not its role, settings, prepared statements, cursors, temporary tables,
/// advisory locks or claims.
async fn the_next_session_gets_a_clean_connection(mode: UpstreamMode) {
    let mut stack = stack(mode).await;
    with_pool(&mut stack, |pool| pool.max_connections = 1).await;
    // In set_role mode every role shares the session login's pool; in role_login mode a pool
    // belongs to one role, shared by the identities mapped to it.
    let (first_role, first, second_role, second) = match mode {
        UpstreamMode::SetRole => (
            "writer",
            stack.token("erin@example.com", &["engineers"]),
            "reader",
            stack.token("alice@example.com", &["analysts"]),
        ),
        _ => (
            "reader",
            stack.token("amy@example.com", &["analysts"]),
            "reader",
            stack.token("alice@example.com", &["analysts"]),
        ),
    };

    let client = stack.connect(first_role, &first).await.unwrap();
    let pid = backend_pid(&client).await;
    client
        .batch_execute(
            "SET statement_timeout = '7s'; \
             PREPARE leftover AS SELECT 1; \
             CREATE TEMP TABLE scratch (x int); \
             SELECT pg_advisory_lock(42); \
             BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT 1; COMMIT",
        )
        .await
        .unwrap();
    drop(client);

    // The pool has one connection: this session waits for the reset, then gets it.
    let client = stack.connect(second_role, &second).await.unwrap();
    assert_eq!(
        backend_pid(&client).await,
        pid,
        "the connection was not reused"
    );
    let row = client
        .query_one(
            "SELECT current_user::text, current_setting('statement_timeout'), \
                    (SELECT count(*) FROM pg_prepared_statements WHERE name = 'leftover'), \
                    to_regclass('pg_temp.scratch') IS NULL, \
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'), \
                    (SELECT count(*) FROM pg_cursors WHERE name = 'held'), \
                    postern.subject()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), second_role);
    assert_eq!(row.get::<_, String>(1), "0");
    assert_eq!(row.get::<_, i64>(2), 0, "prepared statement survived");
    assert!(row.get::<_, bool>(3), "temporary table survived");
    assert_eq!(row.get::<_, i64>(4), 0, "advisory lock survived");
    assert_eq!(row.get::<_, i64>(5), 0, "cursor survived");
    assert_eq!(
        row.get::<_, Option<String>>(6).as_deref(),
        Some("alice@example.com")
    );
}

/// A session that ends inside a transaction block, or after `LISTEN`, does not hand its
/// connection on: its work is rolled back with the backend, and the next session gets another.
async fn a_session_left_unclean_is_not_reused(mode: UpstreamMode) {
    let mut stack = stack(mode).await;
    with_pool(&mut stack, |pool| pool.max_connections = 1).await;
    let token = stack.token("erin@example.com", &["engineers"]);

    let client = stack.connect("writer", &token).await.unwrap();
    let in_transaction = backend_pid(&client).await;
    client
        .batch_execute("BEGIN; INSERT INTO orders (id, tenant_id, customer, amount) VALUES (100, 'acme', 'x', 1)")
        .await
        .unwrap();
    drop(client);

    let client = stack.connect("writer", &token).await.unwrap();
    let listened = backend_pid(&client).await;
    assert_ne!(listened, in_transaction);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE id = 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the open transaction's insert survived");
    client
        .batch_execute("LISTEN postern_pool_test")
        .await
        .unwrap();
    drop(client);

    let client = stack.connect("writer", &token).await.unwrap();
    assert_ne!(backend_pid(&client).await, listened);
}

/// When every connection of a pool is busy, a new session waits for one, and is refused with
/// 53300 when none comes free in time; once one does, sessions are served again.
async fn a_full_pool_refuses_after_the_checkout_timeout(mode: UpstreamMode) {
    let mut stack = stack(mode).await;
    with_pool(&mut stack, |pool| {
        pool.max_connections = 1;
        pool.checkout_timeout = Duration::from_millis(300);
    })
    .await;
    let token = stack.token("alice@example.com", &["analysts"]);
    let busy = stack.connect("reader", &token).await.unwrap();
    let error = stack.connect("reader", &token).await.unwrap_err();
    assert_db_error(&error, "53300", "all 1 connections to target \"demo\"");
    drop(busy);
    let client = stack.connect("reader", &token).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}

/// An idle connection the database ended meanwhile fails its health check and is replaced; an
/// idle connection past its idle timeout is closed.
async fn idle_connections_are_checked_and_closed(mode: UpstreamMode) {
    let mut stack = stack(mode).await;
    with_pool(&mut stack, |pool| {
        pool.health_check_after = Duration::ZERO;
        pool.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let token = stack.token("alice@example.com", &["analysts"]);
    let direct = stack.direct().await.unwrap();

    let client = stack.connect("reader", &token).await.unwrap();
    let first = backend_pid(&client).await;
    drop(client);
    // Wait until the connection is back in the pool (reset and idle), then end its backend.
    wait_until("the connection is idle in the pool", || async {
        let state: Option<String> = direct
            .query_opt(
                "SELECT state FROM pg_stat_activity WHERE pid = $1 AND query = 'DISCARD ALL'",
                &[&first],
            )
            .await
            .unwrap()
            .map(|row| row.get(0));
        state.as_deref() == Some("idle")
    })
    .await;
    direct
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .await
        .unwrap();
    let client = stack.connect("reader", &token).await.unwrap();
    let second = backend_pid(&client).await;
    assert_ne!(second, first);
    drop(client);

    // Past its idle timeout, the pool closes it.
    wait_until("the idle connection is closed", || async {
        direct
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&second])
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

both_modes!(
    the_next_session_gets_a_clean_connection,
    a_session_left_unclean_is_not_reused,
    a_full_pool_refuses_after_the_checkout_timeout,
    idle_connections_are_checked_and_closed,
);
