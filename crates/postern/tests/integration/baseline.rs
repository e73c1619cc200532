//! Watching machines end to end: a service identity's statements and networks are learned in
//! its observation window; after it, what is new is an `anomaly` audit event, and where the
//! identity is enforced a statement it never ran before is refused (42501), in the simple and
//! the extended protocol, while what it learned keeps running — across a restart too. People
//! have no baseline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::common::{assert_db_error, wait_until};
use postern_config::{BaselineEnforcement, IdentityKindRule};
use postern_sandbox::demo::{DEMO_TARGET, DEV_ISSUER_NAME, WRITER_ROLE};
use postern_store::{BaselineEntryKind, BaselineKey, Store};
use postern_testkit::{Stack, StackOptions};
use serde_json::Value;

const SERVICE: &str = "system:serviceaccount:billing:reporter";

/// The clock Postern decides with: the real time, plus what the test has moved it on by.
#[derive(Clone)]
struct MovableClock(Arc<AtomicU64>);

impl MovableClock {
    fn new() -> Self {
        Self(Arc::new(AtomicU64::new(0)))
    }

    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    fn clock(&self) -> postern_proxy::Clock {
        let ahead = Arc::clone(&self.0);
        Arc::new(move || SystemTime::now() + Duration::from_secs(ahead.load(Ordering::SeqCst)))
    }
}

/// A stack whose development issuer vouches for services, with a one-hour observation window
/// and `enforce` switched on for [`SERVICE`] if asked.
async fn service_stack(clock: &MovableClock, enforce: bool) -> Stack {
    let mut stack = Stack::start(StackOptions {
        clock: Some(clock.clock()),
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts");
    stack
        .config
        .issuers
        .get_mut(DEV_ISSUER_NAME)
        .unwrap()
        .identity_kind = IdentityKindRule::Service;
    stack.config.baselines.observation_window = Duration::from_secs(3600);
    if enforce {
        stack.config.baselines.enforce = vec![BaselineEnforcement {
            subject: SERVICE.to_owned(),
            issuer: Some(DEV_ISSUER_NAME.to_owned()),
            target: Some(DEMO_TARGET.to_owned()),
            observation_window: None,
        }];
    }
    stack.config.validate().unwrap();
    stack.start_proxy().await.unwrap();
    stack
}

async fn service(stack: &Stack) -> tokio_postgres::Client {
    let token = stack.token(SERVICE, &["engineers"]);
    stack.connect(WRITER_ROLE, &token).await.unwrap()
}

/// A session of [`SERVICE`] from `source`, a loopback address other than 127.0.0.1.
async fn service_from(stack: &Stack, source: &str) -> tokio_postgres::Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(stack.addr).await.unwrap();
    let token = stack.token(SERVICE, &["engineers"]);
    let (client, connection) = stack
        .client_config(WRITER_ROLE, &token)
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn anomalies(stack: &Stack) -> Vec<Value> {
    stack
        .audit_events()
        .into_iter()
        .filter(|event| event["kind"] == "anomaly")
        .collect()
}

fn key(stack: &Stack) -> BaselineKey {
    BaselineKey {
        issuer: stack.idp.issuer().to_owned(),
        subject: SERVICE.to_owned(),
        target: DEMO_TARGET.to_owned(),
    }
}

/// Waits until the store holds `count` fingerprints for [`SERVICE`]: what is first seen is
/// written in the background.
async fn wait_for_stored_fingerprints(stack: &Stack, count: usize) {
    let store = Store::open(&stack.config.store.path).await.unwrap();
    let key = key(stack);
    wait_until("the baseline is in the store", || {
        let store = store.clone();
        let key = key.clone();
        async move {
            let baseline = store.baseline(&key).await.unwrap();
            baseline.is_some_and(|b| {
                b.entries
                    .iter()
                    .filter(|e| e.kind == BaselineEntryKind::Fingerprint)
                    .count()
                    == count
            })
        }
    })
    .await;
    store.close().await;
}

const LEARNED_SIMPLE: &str = "SELECT count(*) FROM orders WHERE customer = 'Ada Lovelace'";
const LEARNED_EXTENDED: &str = "SELECT amount FROM orders WHERE id = $1";
const NEW_STATEMENT: &str = "SELECT customer FROM orders ORDER BY amount DESC LIMIT 1";

#[tokio::test]
async fn an_enforced_service_runs_what_it_learned_and_is_refused_anything_new() {
    let clock = MovableClock::new();
    let mut stack = service_stack(&clock, true).await;

    // The observation window: everything runs and is learned, nothing is an anomaly.
    let client = service(&stack).await;
    client.simple_query(LEARNED_SIMPLE).await.unwrap();
    client.query(LEARNED_EXTENDED, &[&1_i32]).await.unwrap();
    assert!(anomalies(&stack).is_empty(), "{:?}", anomalies(&stack));
    drop(client);

    clock.advance(Duration::from_secs(2 * 3600));
    let client = service(&stack).await;
    // Learned statements run, with other values too (the same fingerprint).
    let rows = client
        .simple_query("SELECT count(*) FROM orders WHERE customer = 'Grace Hopper'")
        .await
        .unwrap();
    assert!(!rows.is_empty());
    client.query(LEARNED_EXTENDED, &[&3_i32]).await.unwrap();

    // A statement it never ran is refused, in either protocol.
    let error = client.simple_query(NEW_STATEMENT).await.unwrap_err();
    assert_db_error(
        &error,
        "42501",
        "held to the statements it was seen running",
    );
    let error = client.prepare("SELECT 2 + $1::int").await.unwrap_err();
    assert_db_error(&error, "42501", "observation window");
    // The session goes on, and what was learned still runs.
    client.simple_query(LEARNED_SIMPLE).await.unwrap();
    // The same new statement again: refused again, but reported once.
    client.simple_query(NEW_STATEMENT).await.unwrap_err();

    let reported = anomalies(&stack);
    let statements: Vec<&Value> = reported
        .iter()
        .filter(|e| e["anomaly"] == "statement")
        .collect();
    assert_eq!(
        statements.len(),
        2,
        "one event per new statement: {reported:?}"
    );
    let first = statements[0];
    assert_eq!(first["subject"], SERVICE);
    assert_eq!(first["identity_kind"], "service");
    assert_eq!(first["target"], DEMO_TARGET);
    assert_eq!(first["action"], "refused");
    assert_eq!(first["enforced"], true);
    assert_eq!(first["sql"], NEW_STATEMENT);
    assert!(first["fingerprint"].as_str().is_some_and(|f| !f.is_empty()));
    let refused: Vec<Value> = stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "statement" && e["reason"] == "baseline")
        .collect();
    assert_eq!(
        refused.len(),
        3,
        "each refusal is a refused statement: {refused:?}"
    );
    assert!(refused.iter().all(|e| e["decision"] == "refused"));
    drop(client);

    // The baseline is in the control store: after a restart the same holds.
    wait_for_stored_fingerprints(&stack, 4).await;
    stack.start_proxy().await.unwrap();
    let client = service(&stack).await;
    client.simple_query(LEARNED_SIMPLE).await.unwrap();
    let error = client.simple_query(NEW_STATEMENT).await.unwrap_err();
    assert_db_error(&error, "42501", "held to the statements");
    assert_eq!(
        anomalies(&stack)
            .iter()
            .filter(|e| e["anomaly"] == "statement")
            .count(),
        2,
        "a statement reported before the restart is not reported again"
    );
}

#[tokio::test]
async fn an_unenforced_service_is_reported_not_refused_and_new_networks_are_reported() {
    let clock = MovableClock::new();
    let stack = service_stack(&clock, false).await;
    let client = service(&stack).await;
    client.simple_query(LEARNED_SIMPLE).await.unwrap();
    drop(client);

    clock.advance(Duration::from_secs(2 * 3600));
    let client = service(&stack).await;
    client.simple_query(NEW_STATEMENT).await.unwrap();
    let reported = anomalies(&stack);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0]["anomaly"], "statement");
    assert_eq!(reported[0]["action"], "allowed");
    assert_eq!(reported[0]["enforced"], false);
    // Seen once, it is no longer new.
    client.simple_query(NEW_STATEMENT).await.unwrap();
    assert_eq!(anomalies(&stack).len(), 1);

    // 127.0.0.1 was learned in the window; 127.0.0.2 is a network first seen after it.
    let other = service_from(&stack, "127.0.0.2").await;
    other.simple_query(LEARNED_SIMPLE).await.unwrap();
    let networks: Vec<Value> = anomalies(&stack)
        .into_iter()
        .filter(|e| e["anomaly"] == "network")
        .collect();
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert_eq!(networks[0]["network"], "127.0.0.2/32");
    assert!(
        networks[0]["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.2:"))
    );
    drop(other);
    let again = service_from(&stack, "127.0.0.2").await;
    again.simple_query(LEARNED_SIMPLE).await.unwrap();
    let network_events = anomalies(&stack)
        .iter()
        .filter(|e| e["anomaly"] == "network")
        .count();
    assert_eq!(network_events, 1, "a network is reported once");
}

#[tokio::test]
async fn people_have_no_baseline() {
    let clock = MovableClock::new();
    let stack = Stack::start(StackOptions {
        clock: Some(clock.clock()),
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts");
    let client = stack
        .connect(
            WRITER_ROLE,
            &stack.token("alice@example.com", &["engineers"]),
        )
        .await
        .unwrap();
    client.simple_query(LEARNED_SIMPLE).await.unwrap();
    clock.advance(Duration::from_secs(30 * 24 * 3600));
    client.simple_query(NEW_STATEMENT).await.unwrap();
    assert!(anomalies(&stack).is_empty());
    let store = Store::open(&stack.config.store.path).await.unwrap();
    assert!(store.baselines().await.unwrap().is_empty());
    store.close().await;
    // The statements did run: the clock moved a month and nothing was in the way.
    assert!(
        stack
            .audit_events()
            .iter()
            .filter(|e| e["kind"] == "statement_end" && e["outcome"] == "ok")
            .count()
            >= 2
    );
}
