//! Policy conditions on the request's context, each tested both ways through Postern against a
//! real PostgreSQL: the client's address (`context.source_ip`), a second factor in the token
//! (`context.mfa`), the time of day and the day of the week (`context.hour`,
//! `context.weekday`, from a clock the test sets, so no result depends on today's date) and the
//! client's `application_name`.
//!
//! Each condition governs writes of its own group of engineers (role `writer`), written as "only
//! when": a forbid with `unless`. Reads stay allowed throughout. Token validity is checked
//! against the real clock; only policy reads the injected one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::common::assert_db_error;
use postern_testkit::{Stack, StackOptions};
use serde_json::json;

const POLICIES: &str = r#"
@id("writes-from-loopback")
forbid (principal in Group::"loopback-writers", action in [Action::"write"], resource)
unless { context.source_ip.isInRange(ip("127.0.0.0/8")) };

@id("writes-from-office-network")
forbid (principal in Group::"office-network-writers", action in [Action::"write"], resource)
unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("writes-need-mfa")
forbid (principal in Group::"mfa-writers", action in [Action::"write"], resource)
unless { context.mfa };

// Monday (0) to Friday (4), 09:00 to 16:59 UTC.
@id("writes-in-office-hours")
forbid (principal in Group::"office-hours-writers", action in [Action::"write"], resource)
unless { context.weekday <= 4 && context.hour >= 9 && context.hour < 17 };

@id("writes-from-the-orders-app")
forbid (principal in Group::"app-writers", action in [Action::"write"], resource)
unless { context.application_name == "orders-app" };
"#;

/// 2026-11-30T00:00:00Z, a Monday (`date -u -d @1795996800`).
const MONDAY_MIDNIGHT: u64 = 1_795_996_800;
const HOUR: u64 = 3_600;
const DAY: u64 = 24 * HOUR;

/// Seconds since the epoch of `day` days after Monday 2026-11-30, at `hour:minute:second` UTC.
fn at(day: u64, hour: u64, minute: u64, second: u64) -> u64 {
    MONDAY_MIDNIGHT + day * DAY + hour * HOUR + minute * 60 + second
}

const TUESDAY: u64 = 1;
const SATURDAY: u64 = 5;
const SUNDAY: u64 = 6;

/// A clock the test sets: seconds since the epoch.
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn new(seconds: u64) -> Self {
        Self(Arc::new(AtomicU64::new(seconds)))
    }

    fn set(&self, seconds: u64) {
        self.0.store(seconds, Ordering::SeqCst);
    }

    fn clock(&self) -> postern_proxy::Clock {
        let seconds = Arc::clone(&self.0);
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(seconds.load(Ordering::SeqCst)))
    }
}

async fn stack(clock: &TestClock) -> Stack {
    Stack::start(StackOptions {
        policies: vec![POLICIES.to_owned()],
        clock: Some(clock.clock()),
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts")
}

/// A token for `subject` in `engineers` and `group`, with `amr` when given.
fn token(stack: &Stack, subject: &str, group: &str, amr: Option<&[&str]>) -> String {
    let mut request = stack.request(subject);
    request.groups = vec!["engineers".to_owned(), group.to_owned()];
    if let Some(amr) = amr {
        request.extra_claims.insert("amr".to_owned(), json!(amr));
    }
    stack.mint(&request).unwrap()
}

async fn writer(stack: &Stack, token: &str) -> tokio_postgres::Client {
    stack.connect("writer", token).await.unwrap()
}

const WRITE: &str = "DELETE FROM orders WHERE customer = 'nobody at all'";

/// A write runs, and so does a read.
async fn assert_writes(client: &tokio_postgres::Client, what: &str) {
    client
        .simple_query(WRITE)
        .await
        .unwrap_or_else(|e| panic!("{what}: the write was refused: {e}"));
    client
        .execute("DELETE FROM orders WHERE id = $1", &[&-1i32])
        .await
        .unwrap_or_else(|e| panic!("{what}: the extended write was refused: {e}"));
    client
        .simple_query("SELECT count(*) FROM orders")
        .await
        .unwrap();
}

/// A write is refused by `policy` through both protocols; reads still run, and the session
/// stays usable.
async fn assert_refused(client: &tokio_postgres::Client, policy: &str, subject: &str, what: &str) {
    let needle = format!(
        "permission denied by policy \"{policy}\": write on public.orders is not allowed for \
         {subject} as writer"
    );
    let error = client.simple_query(WRITE).await.expect_err(what);
    assert_db_error(&error, "42501", &needle);
    let error = client
        .execute("DELETE FROM orders WHERE id = $1", &[&-1i32])
        .await
        .expect_err(what);
    assert_db_error(&error, "42501", &needle);
    client
        .simple_query("SELECT count(*) FROM orders")
        .await
        .unwrap();
}

#[tokio::test]
async fn source_address() {
    let clock = TestClock::new(at(TUESDAY, 10, 0, 0));
    let stack = stack(&clock).await;
    // Tests connect from 127.0.0.1.
    let subject = "lou@example.com";
    let client = writer(&stack, &token(&stack, subject, "loopback-writers", None)).await;
    assert_writes(&client, "from 127.0.0.0/8, connected from 127.0.0.1").await;

    let subject = "otto@example.com";
    let client = writer(
        &stack,
        &token(&stack, subject, "office-network-writers", None),
    )
    .await;
    assert_refused(
        &client,
        "writes-from-office-network",
        subject,
        "only from 10.0.0.0/8",
    )
    .await;
}

#[tokio::test]
async fn second_factor() {
    let clock = TestClock::new(at(TUESDAY, 10, 0, 0));
    let stack = stack(&clock).await;
    let subject = "mia@example.com";
    let with_mfa = token(&stack, subject, "mfa-writers", Some(&["pwd", "mfa"]));
    assert_writes(&writer(&stack, &with_mfa).await, "amr pwd+mfa").await;
    let with_otp = token(&stack, subject, "mfa-writers", Some(&["otp"]));
    assert_writes(&writer(&stack, &with_otp).await, "amr otp").await;

    let password_only = token(&stack, subject, "mfa-writers", Some(&["pwd"]));
    let client = writer(&stack, &password_only).await;
    assert_refused(&client, "writes-need-mfa", subject, "amr pwd").await;
    let no_amr = token(&stack, subject, "mfa-writers", None);
    let client = writer(&stack, &no_amr).await;
    assert_refused(&client, "writes-need-mfa", subject, "no amr").await;
    // The refusal says how to get past it: a token that shows a second factor.
    let error = client.simple_query(WRITE).await.expect_err("no amr");
    let detail = error
        .as_db_error()
        .and_then(|e| e.detail())
        .unwrap_or_default();
    assert!(
        detail.contains("no second factor was used")
            && detail.contains("log in again with MFA (postern login --mfa)"),
        "{detail}"
    );
}

#[tokio::test]
async fn office_hours() {
    let clock = TestClock::new(at(TUESDAY, 10, 0, 0));
    let stack = stack(&clock).await;
    let subject = "hugo@example.com";
    let client = writer(
        &stack,
        &token(&stack, subject, "office-hours-writers", None),
    )
    .await;
    let refused = |client, what| assert_refused(client, "writes-in-office-hours", subject, what);

    assert_writes(&client, "Tuesday 10:00").await;
    // The same session, decided again at every statement with the clock as it is then.
    clock.set(at(SATURDAY, 10, 0, 0));
    refused(&client, "Saturday 10:00").await;
    clock.set(at(TUESDAY, 20, 0, 0));
    refused(&client, "Tuesday 20:00").await;
    clock.set(at(SUNDAY, 12, 0, 0));
    refused(&client, "Sunday 12:00").await;
    // The edges: 09:00:00 and 16:59:59 are in, 08:59:59 and 17:00:00 out; Friday is a weekday.
    clock.set(at(TUESDAY, 9, 0, 0));
    assert_writes(&client, "Tuesday 09:00:00").await;
    clock.set(at(TUESDAY, 16, 59, 59));
    assert_writes(&client, "Tuesday 16:59:59").await;
    clock.set(at(TUESDAY, 8, 59, 59));
    refused(&client, "Tuesday 08:59:59").await;
    clock.set(at(TUESDAY, 17, 0, 0));
    refused(&client, "Tuesday 17:00:00").await;
    clock.set(at(4, 16, 0, 0));
    assert_writes(&client, "Friday 16:00").await;
    clock.set(at(0, 9, 30, 0));
    assert_writes(&client, "Monday 09:30").await;

    // A session opened out of hours writes once the hours begin.
    clock.set(at(SATURDAY, 10, 0, 0));
    let weekend = writer(
        &stack,
        &token(&stack, subject, "office-hours-writers", None),
    )
    .await;
    refused(&weekend, "a session opened on Saturday").await;
    clock.set(at(TUESDAY, 11, 0, 0));
    assert_writes(&weekend, "the Saturday session on Tuesday").await;

    // Someone outside the group is not held to office hours.
    clock.set(at(SATURDAY, 23, 0, 0));
    let other = writer(&stack, &stack.token("ida@example.com", &["engineers"])).await;
    assert_writes(&other, "an engineer outside the group on Saturday night").await;
}

/// A statement prepared during office hours is decided again when it runs after them, whether
/// it was prepared with the extended protocol or with SQL `PREPARE`.
#[tokio::test]
async fn prepared_in_hours_executed_after() {
    let clock = TestClock::new(at(TUESDAY, 16, 0, 0));
    let stack = stack(&clock).await;
    let subject = "hugo@example.com";
    let client = writer(
        &stack,
        &token(&stack, subject, "office-hours-writers", None),
    )
    .await;
    let statement = client
        .prepare("DELETE FROM orders WHERE id = $1")
        .await
        .unwrap();
    client
        .simple_query("PREPARE late_delete (int) AS DELETE FROM orders WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(client.execute(&statement, &[&-1i32]).await.unwrap(), 0);
    client
        .simple_query("EXECUTE late_delete(-1)")
        .await
        .unwrap();

    clock.set(at(TUESDAY, 18, 0, 0));
    let needle = format!(
        "permission denied by policy \"writes-in-office-hours\": write on public.orders is not \
         allowed for {subject} as writer"
    );
    let error = client.execute(&statement, &[&-1i32]).await.unwrap_err();
    assert_db_error(&error, "42501", &needle);
    let error = client
        .simple_query("EXECUTE late_delete(-1)")
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", &needle);
    // Inside a transaction block too, which the refusal aborts as an error would.
    client.batch_execute("BEGIN").await.unwrap();
    let error = client
        .simple_query("EXECUTE late_delete(-1)")
        .await
        .unwrap_err();
    assert_db_error(&error, "42501", &needle);
    let error = client.simple_query("SELECT 1").await.unwrap_err();
    assert_db_error(&error, "25P02", "current transaction is aborted");
    client.batch_execute("ROLLBACK").await.unwrap();
    client
        .simple_query("SELECT count(*) FROM orders")
        .await
        .unwrap();
}

#[tokio::test]
async fn application_name() {
    let clock = TestClock::new(at(TUESDAY, 10, 0, 0));
    let stack = stack(&clock).await;
    let subject = "app@example.com";
    let token = token(&stack, subject, "app-writers", None);

    let connect = |name: &str| {
        let mut config = stack.client_config("writer", &token);
        config.application_name(name);
        async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        }
    };
    assert_writes(&connect("orders-app").await, "application_name orders-app").await;
    let client = connect("psql").await;
    assert_refused(
        &client,
        "writes-from-the-orders-app",
        subject,
        "application_name psql",
    )
    .await;
    // Changing application_name inside the session does not change what policy saw at login.
    client
        .simple_query("SET application_name = 'orders-app'")
        .await
        .unwrap();
    assert_refused(&client, "writes-from-the-orders-app", subject, "after SET").await;
}

/// A name prepared for a write during office hours keeps meaning that write after them, however
/// the client tries to give the name another statement in Postern's eyes while the server keeps
/// the first: preparing it again (the server refuses the duplicate), or deallocating it where the
/// server does not run the `DEALLOCATE` (an aborted transaction block, or after an error in the
/// same text).
#[tokio::test]
async fn a_prepared_name_cannot_be_relabelled_to_escape_office_hours() {
    let clock = TestClock::new(at(TUESDAY, 16, 0, 0));
    let stack = stack(&clock).await;
    let subject = "hugo@example.com";
    let client = writer(
        &stack,
        &token(&stack, subject, "office-hours-writers", None),
    )
    .await;
    for name in ["again", "dropped", "skipped"] {
        client
            .simple_query(&format!(
                "PREPARE {name} AS DELETE FROM orders WHERE id = -1"
            ))
            .await
            .unwrap();
    }

    // Still 16:00: each attempt to relabel, each failing in the database.
    let error = client
        .simple_query("PREPARE again AS SELECT 1")
        .await
        .unwrap_err();
    assert_db_error(
        &error,
        "42P05",
        "prepared statement \"again\" already exists",
    );
    client.batch_execute("BEGIN").await.unwrap();
    client.simple_query("SELECT 1 / 0").await.unwrap_err();
    let error = client.simple_query("DEALLOCATE dropped").await.unwrap_err();
    assert_db_error(&error, "25P02", "current transaction is aborted");
    client.batch_execute("ROLLBACK").await.unwrap();
    let error = client
        .simple_query("SELECT 1 / 0; DEALLOCATE skipped; PREPARE skipped AS SELECT 1")
        .await
        .unwrap_err();
    assert_db_error(&error, "22012", "division by zero");
    // A name prepared again after a DEALLOCATE that ran is decided with both statements:
    // stricter than needed, never looser.
    client
        .simple_query("PREPARE reused AS DELETE FROM orders WHERE id = -1; DEALLOCATE reused")
        .await
        .unwrap();
    client
        .simple_query("PREPARE reused AS SELECT 1")
        .await
        .unwrap();
    client.simple_query("EXECUTE reused").await.unwrap();

    clock.set(at(TUESDAY, 18, 0, 0));
    let needle = format!(
        "permission denied by policy \"writes-in-office-hours\": write on public.orders is not \
         allowed for {subject} as writer"
    );
    for name in ["again", "dropped", "skipped", "reused"] {
        let error = client
            .simple_query(&format!("EXECUTE {name}"))
            .await
            .expect_err(name);
        assert_db_error(&error, "42501", &needle);
    }
    // Reads still run, and the same name keeps one statement as often as it is prepared.
    client.simple_query("PREPARE r AS SELECT 1").await.unwrap();
    client.simple_query("DEALLOCATE r").await.unwrap();
    client.simple_query("PREPARE r AS SELECT 1").await.unwrap();
    client.simple_query("EXECUTE r").await.unwrap();
}

/// A session remembers a bounded number of statements per SQL-level prepared name (statements
/// that differ in constants only are one).
#[tokio::test]
async fn a_prepared_name_is_remembered_with_boundedly_many_statements() {
    let clock = TestClock::new(at(TUESDAY, 10, 0, 0));
    let stack = stack(&clock).await;
    let client = writer(&stack, &stack.token("ida@example.com", &["engineers"])).await;
    for n in 0..100 {
        client
            .simple_query(&format!("PREPARE c AS SELECT {n}; DEALLOCATE c"))
            .await
            .unwrap();
    }
    // Sixteen statements on tables that do not exist: the database refuses each.
    for n in 0..16 {
        let error = client
            .simple_query(&format!("PREPARE p AS SELECT * FROM t{n}"))
            .await
            .unwrap_err();
        assert_db_error(
            &error,
            "42P01",
            &format!("relation \"t{n}\" does not exist"),
        );
    }
    let error = client
        .simple_query("PREPARE p AS SELECT * FROM t16")
        .await
        .unwrap_err();
    assert_db_error(
        &error,
        "42501",
        "prepared statement \"p\" was prepared in this session",
    );
    // The same statements again, and other names, still reach the database.
    let error = client
        .simple_query("PREPARE p AS SELECT * FROM t3")
        .await
        .unwrap_err();
    assert_db_error(&error, "42P01", "relation \"t3\" does not exist");
    client
        .simple_query("PREPARE q AS SELECT 16; EXECUTE q")
        .await
        .unwrap();
}
