//! Session limits per target and role: idle and idle-in-transaction timeouts, a maximum
//! duration, a maximum number of sessions per identity, and a grace period past token expiry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::time::{Duration, SystemTime};

use crate::common::{RawClient, assert_db_error, wait_until};
use postern_config::Limits;
use postern_testkit::Stack;
use postern_wire::backend;

/// Restarts the stack's proxy with the demo target's session limits changed by `change`.
async fn with_limits(stack: &mut Stack, change: impl FnOnce(&mut postern_config::SessionLimits)) {
    stack.stop_proxy().await;
    change(&mut stack.config.targets.get_mut("demo").unwrap().sessions);
    stack.start_proxy().await.unwrap();
}

/// The FATAL that ends the session: (code, message).
async fn fatal(client: &mut RawClient) -> (String, String) {
    loop {
        let message = client.read().await.expect("a FATAL before the end");
        if message.tag == backend::ERROR_RESPONSE {
            let error = message.error();
            assert_eq!(error.severity, "FATAL", "{}", error.message);
            return (error.code, error.message);
        }
    }
}

#[tokio::test]
async fn idle_sessions_and_idle_transactions_end() {
    let mut stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
    with_limits(&mut stack, |limits| {
        limits.limits.idle_timeout = Some(Duration::from_secs(1));
        limits.roles.insert(
            "writer".to_owned(),
            Limits {
                idle_timeout: Some(Duration::from_secs(30)),
                idle_in_transaction_timeout: Some(Duration::from_secs(1)),
                ..Limits::default()
            },
        );
    })
    .await;
    let alice = stack.token("alice@example.com", &["analysts"]);
    let erin = stack.token("erin@example.com", &["engineers"]);

    let (mut reader, _) = RawClient::login(stack.addr, "reader", &alice).await;
    let (code, message) = fatal(&mut reader).await;
    assert_eq!(code, "57P05");
    assert!(message.contains("idle for 1s"), "{message}");

    // The writer's own idle timeout is 30 s, but idle in a transaction it gets 1 s, and the
    // transaction's write is rolled back.
    let (mut writer, _) = RawClient::login(stack.addr, "writer", &erin).await;
    writer
        .query("BEGIN; UPDATE orders SET customer = 'idle' WHERE id = 1")
        .await;
    writer.read_until_ready().await;
    let (code, message) = fatal(&mut writer).await;
    assert_eq!(code, "25P03");
    assert!(
        message.contains("the transaction was rolled back"),
        "{message}"
    );
    let direct = stack.direct().await.unwrap();
    wait_until("the idle transaction's backend to end", || async {
        direct
            .query_one("SELECT customer FROM orders WHERE id = 1", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
            == "Ada Lovelace"
            && direct
                .query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE state = 'idle in transaction'",
                    &[],
                )
                .await
                .unwrap()
                .is_none()
    })
    .await;
}

#[tokio::test]
async fn sessions_last_at_most_their_maximum_and_identities_hold_at_most_their_share() {
    let mut stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
    with_limits(&mut stack, |limits| {
        limits.limits.max_per_identity = Some(1);
        limits.roles.insert(
            "writer".to_owned(),
            Limits {
                max_duration: Some(Duration::from_secs(2)),
                ..Limits::default()
            },
        );
    })
    .await;
    let alice = stack.token("alice@example.com", &["analysts"]);
    let amy = stack.token("amy@example.com", &["analysts"]);
    let erin = stack.token("erin@example.com", &["engineers"]);

    let first = stack.connect("reader", &alice).await.unwrap();
    let error = stack.connect("reader", &alice).await.unwrap_err();
    assert_db_error(
        &error,
        "53300",
        "alice@example.com already has 1 sessions open on target \"demo\"",
    );
    stack.connect("reader", &amy).await.unwrap();
    drop(first);
    wait_until("alice's session to end", || async {
        stack.connect("reader", &alice).await.is_ok()
    })
    .await;

    // Even busy, a writer session ends at its maximum duration, and its statement with it.
    let (mut writer, _) = RawClient::login(stack.addr, "writer", &erin).await;
    writer.query("SELECT pg_sleep(60)").await;
    let (code, message) = fatal(&mut writer).await;
    assert_eq!(code, "57P01");
    assert!(
        message.contains("sessions as writer on target \"demo\" last at most 2s"),
        "{message}"
    );
    let direct = stack.direct().await.unwrap();
    wait_until("the sleeping backend to end", || async {
        direct
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'",
                &[],
            )
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

#[tokio::test]
async fn a_grace_period_lets_a_session_outlive_its_token_briefly() {
    let mut stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
    with_limits(&mut stack, |limits| {
        limits.token_grace = Duration::from_secs(60);
    })
    .await;
    let mut request = stack.request("alice@example.com");
    request.groups = vec!["analysts".to_owned()];
    request.ttl = Duration::from_secs(2);
    let token = stack.mint(&request).unwrap();
    let expires = SystemTime::now() + Duration::from_secs(2);
    let client = stack.connect("reader", &token).await.unwrap();
    wait_until("the token to expire", || async {
        SystemTime::now() > expires + Duration::from_secs(1)
    })
    .await;
    client.simple_query("SELECT 1").await.unwrap();
}

/// `listen.max_connections` counts a client from its first byte to its session's end, in both
/// pool modes: the session runs as a task of its own and takes the place over from the
/// handshake's task, which ends. While the one place is held, the next client is refused as
/// PostgreSQL refuses one (53300); once the session ends, the place is free again.
#[tokio::test]
async fn a_session_holds_its_place_under_the_connection_limit_until_it_ends() {
    for pool_mode in [
        postern_config::PoolMode::Session,
        postern_config::PoolMode::Transaction,
    ] {
        let mut stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
        stack.stop_proxy().await;
        stack.config.listen.max_connections = 1;
        stack.config.targets.get_mut("demo").unwrap().pool.mode = pool_mode;
        stack.start_proxy().await.unwrap();
        let alice = stack.token("alice@example.com", &["analysts"]);

        let first = stack.connect("reader", &alice).await.unwrap();
        let row = first.query_one("SELECT 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
        let error = stack.connect("reader", &alice).await.unwrap_err();
        assert_db_error(&error, "53300", "sorry, too many clients already");
        // Still its session's after the refusal.
        first.query_one("SELECT 1", &[]).await.unwrap();

        drop(first);
        wait_until("the session's place to come free", || async {
            stack.connect("reader", &alice).await.is_ok()
        })
        .await;
    }
}
