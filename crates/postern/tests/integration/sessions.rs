//! The registry of live sessions: each session is listed with its identity, role, target and
//! what it is doing, and ending one from outside gives its client a FATAL naming who ended it
//! and why, ends its backend — so that neither the running statement nor one queued behind it
//! commits — and leaves every other session alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use crate::common::{RawClient, wait_until};
use postern_config::UpstreamMode;
use postern_proxy::registry::{EndKind, EndRequest, SessionState};
use postern_wire::backend;

async fn sessions_are_listed_and_can_be_ended(mode: UpstreamMode) {
    let stack = common::stack(mode).await;
    let registry = stack.sessions().unwrap();
    let alice = stack.token("alice@example.com", &["analysts"]);
    let erin = stack.token("erin@example.com", &["engineers"]);

    let reader = stack.connect("reader", &alice).await.unwrap();
    reader
        .simple_query("SELECT count(*) FROM orders")
        .await
        .unwrap();
    let (mut writer, _) = RawClient::login(stack.addr, "writer", &erin).await;

    let listed = registry.list();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let alice_session = listed
        .iter()
        .find(|s| s.subject == "alice@example.com")
        .unwrap();
    assert_eq!(alice_session.role, "reader");
    assert_eq!(alice_session.target, "demo");
    assert_eq!(alice_session.groups, ["analysts"]);
    assert_eq!(alice_session.state, SessionState::Idle);
    assert_eq!(alice_session.statements, 1);
    assert_eq!(
        alice_session.statement.as_deref(),
        Some("SELECT count(*) FROM orders")
    );
    let erin_session = listed
        .iter()
        .find(|s| s.subject == "erin@example.com")
        .unwrap()
        .id
        .clone();

    // A write in its own transaction, a sleep, and behind them in the backend's socket an
    // autocommit write: ending the session must leave neither committed.
    writer
        .query("UPDATE orders SET customer = 'ended early' WHERE id = 1; SELECT pg_sleep(60)")
        .await;
    writer
        .query("UPDATE orders SET customer = 'queued' WHERE id = 2")
        .await;
    let direct = stack.direct().await.unwrap();
    wait_until("the sleep to run", || async {
        direct
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(60)'",
                &[],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert_eq!(
        registry.get(&erin_session).unwrap().snapshot().state,
        SessionState::Active
    );

    let ended = registry.end_where(
        |s| s.id == erin_session,
        &EndRequest {
            kind: EndKind::Killed,
            by: "ops@example.com".to_owned(),
            reason: "runaway query".to_owned(),
        },
    );
    assert_eq!(ended.len(), 1);

    let fatal = loop {
        let message = writer.read().await.expect("a FATAL");
        if message.tag == backend::ERROR_RESPONSE {
            break message.error();
        }
    };
    assert_eq!(
        (fatal.severity.as_str(), fatal.code.as_str()),
        ("FATAL", "57P01")
    );
    assert_eq!(
        fatal.message,
        "terminating connection: your session was ended by ops@example.com: runaway query"
    );
    writer.read_to_end().await;

    wait_until("the ended session's backend to go", || async {
        direct
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)'",
                &[],
            )
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let customers: Vec<String> = direct
        .query(
            "SELECT customer FROM orders WHERE id IN (1, 2) ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(customers, ["Ada Lovelace", "Alan Turing"]);

    // The other session is untouched, and the ended one is no longer listed.
    reader.simple_query("SELECT 1").await.unwrap();
    wait_until("the ended session to leave the registry", || async {
        registry.get(&erin_session).is_none()
    })
    .await;
    assert_eq!(registry.list().len(), 1);

    // The audit trail says how it ended.
    drop(reader);
    let events = stack.audit_events();
    let end = events
        .iter()
        .find(|e| e["kind"] == "session_end" && e["subject"] == "erin@example.com")
        .expect("a session_end event");
    assert_eq!(end["reason"], "killed", "{end}");
    assert_eq!(end["ended_by"], "ops@example.com", "{end}");
    assert_eq!(end["end_reason"], "runaway query", "{end}");
}

both_modes!(sessions_are_listed_and_can_be_ended);
