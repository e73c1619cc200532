//! The PostgreSQL protocol through Postern, driven by tokio-postgres: simple and extended queries,
//! pipelining, transactions, COPY in both directions, LISTEN/NOTIFY, notices, and cancellation
//! (including a CancelRequest with a wrong key, which must reach nothing). Each runs in both
//! upstream modes on its own stack.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::time::{Duration, Instant};

use crate::common::{RawClient, assert_db_error, current_user, send_cancel, stack, wait_until};
use bytes::Bytes;
use futures_util::{SinkExt as _, TryStreamExt as _};
use postern_config::UpstreamMode;
use postern_testkit::Stack;
use postern_wire::backend;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

const ANALYST: &str = "alice@example.com";
const ENGINEER: &str = "erin@example.com";

both_modes!(
    identity_is_the_mapped_role_and_the_tokens_subject,
    simple_query_runs_every_statement_of_one_message,
    extended_protocol_prepares_binds_and_reuses,
    pipelined_queries_answer_in_order,
    transactions_commit_and_roll_back,
    copy_in_and_copy_out,
    listen_notify_between_two_sessions,
    notices_reach_the_client,
    cancel_reaches_only_its_own_query,
    cancel_with_a_wrong_secret_cancels_nothing,
);

async fn writer(stack: &Stack) -> tokio_postgres::Client {
    let token = stack.token(ENGINEER, &["engineers"]);
    stack
        .connect("writer", &token)
        .await
        .expect("writer connects")
}

async fn reader(stack: &Stack) -> tokio_postgres::Client {
    let token = stack.token(ANALYST, &["analysts"]);
    stack
        .connect("reader", &token)
        .await
        .expect("reader connects")
}

async fn identity_is_the_mapped_role_and_the_tokens_subject(mode: UpstreamMode) {
    let stack = stack(mode).await;
    for (role, subject, client) in [
        ("reader", ANALYST, reader(&stack).await),
        ("writer", ENGINEER, writer(&stack).await),
    ] {
        let row = client
            .query_one(
                "SELECT current_user::text, session_user::text, postern.subject()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), role);
        let session_user: String = row.get(1);
        match mode {
            UpstreamMode::RoleLogin => assert_eq!(session_user, role),
            UpstreamMode::SetRole => assert_eq!(session_user, "postern_session"),
            other => panic!("this test has no expectation for {other:?}"),
        }
        assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(subject));
    }
}

async fn simple_query_runs_every_statement_of_one_message(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let client = reader(&stack).await;
    let messages = client
        .simple_query(
            "SELECT 1 AS one; SELECT current_user::text AS who; \
             SELECT customer FROM orders WHERE tenant_id = 'acme' ORDER BY id",
        )
        .await
        .unwrap();
    let mut rows = Vec::new();
    let mut completions = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(row.get(0).map(str::to_owned)),
            SimpleQueryMessage::CommandComplete(n) => completions.push(n),
            _ => {}
        }
    }
    assert_eq!(
        rows,
        [
            Some("1".to_owned()),
            Some("reader".to_owned()),
            Some("Ada Lovelace".to_owned()),
            Some("Alan Turing".to_owned()),
        ]
    );
    assert_eq!(completions, [1, 1, 2]);
}

async fn extended_protocol_prepares_binds_and_reuses(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let client = reader(&stack).await;
    let limit = 50.0_f64;
    let customers = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    // One named statement, bound three times with different parameters.
    let statement = client
        .prepare(
            "SELECT customer FROM orders WHERE tenant_id = $1 AND amount::float8 > $2 ORDER BY id",
        )
        .await
        .unwrap();
    let acme = client.query(&statement, &[&"acme", &limit]).await.unwrap();
    assert_eq!(customers(acme), ["Ada Lovelace", "Alan Turing"]);
    let globex = client
        .query(&statement, &[&"globex", &limit])
        .await
        .unwrap();
    assert_eq!(customers(globex), ["Grace Hopper"]);
    let none = client.query(&statement, &[&"initech", &0.0]).await.unwrap();
    assert!(none.is_empty());
    // One-off statements with parameters (unnamed statement).
    let row = client
        .query_one(
            "SELECT $1::int4 + 1, $2::text || current_user",
            &[&41_i32, &"I am "],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "I am reader");
}

async fn pipelined_queries_answer_in_order(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let client = reader(&stack).await;
    let statement = client
        .prepare("SELECT $1::int4 * 10, current_user::text")
        .await
        .unwrap();
    // tokio-postgres writes all of these before reading any answer.
    let queries = (0..16).map(|i| {
        let client = &client;
        let statement = &statement;
        async move { client.query_one(statement, &[&i]).await }
    });
    let results = futures_util::future::join_all(queries).await;
    for (i, result) in (0..16).zip(results) {
        let row = result.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 10);
        assert_eq!(row.get::<_, String>(1), "reader");
    }
    // A failing statement in the middle of a pipeline fails alone.
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1::int4", &[]),
        client.query_one("SELECT 1 / 0", &[]),
        client.query_one("SELECT 3::int4", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_db_error(&b.unwrap_err(), "22012", "division by zero");
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
}

async fn order_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0)
}

async fn transactions_commit_and_roll_back(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let mut client = writer(&stack).await;
    let before = order_count(&client).await;

    client
        .batch_execute(
            "BEGIN; INSERT INTO orders (tenant_id, customer, amount) VALUES ('acme', 'Rolled Back', 1)",
        )
        .await
        .unwrap();
    assert_eq!(order_count(&client).await, before + 1, "visible inside");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(order_count(&client).await, before, "gone after ROLLBACK");

    let transaction = client.transaction().await.unwrap();
    transaction
        .execute(
            "INSERT INTO orders (tenant_id, customer, amount) VALUES ($1, $2, 2)",
            &[&"globex", &"Committed"],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(order_count(&client).await, before + 1, "kept after COMMIT");

    // Another session sees the committed row and not the rolled-back one.
    let other = reader(&stack).await;
    let names: Vec<String> = other
        .query(
            "SELECT customer FROM orders WHERE customer IN ('Rolled Back', 'Committed')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names, ["Committed"]);
    assert_eq!(current_user(&client).await, "writer");
}

async fn copy_in_and_copy_out(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let client = writer(&stack).await;
    let before = order_count(&client).await;
    let sink = client
        .copy_in("COPY orders (tenant_id, customer, amount) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"initech\tPeter Gibbons\t9.99\n"))
        .await
        .unwrap();
    sink.send(Bytes::from_static(
        b"initech\tMichael Bolton\t19.99\ninitech\tSamir N.\t29.99\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);
    assert_eq!(order_count(&client).await, before + 3);

    let stream = client
        .copy_out(
            "COPY (SELECT customer, amount FROM orders WHERE tenant_id = 'initech' ORDER BY amount) TO STDOUT",
        )
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_eq!(
        text,
        "Peter Gibbons\t9.99\nMichael Bolton\t19.99\nSamir N.\t29.99\n"
    );
    // The session is in a clean state afterwards, for both protocols.
    let row = client.query_one("SELECT current_user::text", &[]).await;
    assert_eq!(row.expect("after COPY").get::<_, String>(0), "writer");
    client.simple_query("SELECT 1").await.unwrap();

    // A reader may not COPY in: the database refuses before any data is asked for. (Simple
    // protocol: tokio-postgres's copy_in leaves its own connection unusable after an error, with
    // or without Postern.)
    let reader = reader(&stack).await;
    let error = reader
        .simple_query("COPY orders (tenant_id, customer, amount) FROM STDIN")
        .await
        .expect_err("reader has no INSERT privilege");
    assert_db_error(&error, "42501", "permission denied");
    assert_eq!(current_user(&reader).await, "reader");
}

/// Connects and forwards the connection's asynchronous messages (notices, notifications) to a
/// channel, driving the connection with `poll_message`.
async fn connect_with_messages(
    stack: &Stack,
    role: &str,
    token: &str,
) -> (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<AsyncMessage>,
) {
    let (client, mut connection) = stack
        .client_config(role, token)
        .connect(NoTls)
        .await
        .unwrap();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Ok(Some(message)) = messages.try_next().await {
            if sender.send(message).is_err() {
                break;
            }
        }
    });
    (client, receiver)
}

async fn next_message(receiver: &mut mpsc::UnboundedReceiver<AsyncMessage>) -> AsyncMessage {
    tokio::time::timeout(common::NETWORK_WAIT, receiver.recv())
        .await
        .expect("an asynchronous message in time")
        .expect("the connection is still open")
}

async fn listen_notify_between_two_sessions(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let token = stack.token(ANALYST, &["analysts"]);
    let (listener, mut messages) = connect_with_messages(&stack, "reader", &token).await;
    listener.batch_execute("LISTEN order_events").await.unwrap();

    let notifier = writer(&stack).await;
    notifier
        .batch_execute("NOTIFY order_events, 'order 42 shipped'")
        .await
        .unwrap();
    notifier
        .query(
            "SELECT pg_notify('order_events', $1)",
            &[&"order 43 shipped"],
        )
        .await
        .unwrap();

    for payload in ["order 42 shipped", "order 43 shipped"] {
        match next_message(&mut messages).await {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), "order_events");
                assert_eq!(n.payload(), payload);
            }
            other => panic!("expected a notification, got {other:?}"),
        }
    }
    // The listener is still an ordinary session.
    assert_eq!(current_user(&listener).await, "reader");
}

async fn notices_reach_the_client(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let token = stack.token(ANALYST, &["analysts"]);
    let (client, mut messages) = connect_with_messages(&stack, "reader", &token).await;
    client
        .batch_execute("SET client_min_messages = notice; DROP TABLE IF EXISTS no_such_table")
        .await
        .unwrap();
    match next_message(&mut messages).await {
        AsyncMessage::Notice(notice) => {
            assert_eq!(notice.code().code(), "00000");
            assert!(
                notice.message().contains("no_such_table"),
                "{}",
                notice.message()
            );
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    assert_eq!(current_user(&client).await, "reader");
}

/// Waits until the database runs `sql` as an active query.
async fn wait_until_running(stack: &Stack, sql: &'static str) {
    let superuser = stack.direct().await.unwrap();
    wait_until(&format!("the database runs {sql}"), || {
        let superuser = &superuser;
        async move {
            superuser
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1",
                    &[&sql],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                > 0
        }
    })
    .await;
}

async fn cancel_reaches_only_its_own_query(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let victim = reader(&stack).await;
    let bystander = reader(&stack).await;

    let long = "SELECT pg_sleep(30)";
    let short = "SELECT pg_sleep(1)";
    let started = Instant::now();
    let long_query = victim.simple_query(long);
    let short_query = bystander.simple_query(short);
    let cancel = async {
        wait_until_running(&stack, long).await;
        wait_until_running(&stack, short).await;
        victim.cancel_token().cancel_query(NoTls).await.unwrap();
    };
    let (long_result, short_result, ()) = tokio::join!(long_query, short_query, cancel);

    let error = long_result.expect_err("the cancelled query fails");
    assert_db_error(&error, "57014", "canceling statement due to user request");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cancelled quickly, not after the 30 s sleep"
    );
    short_result.expect("the other session's query is not cancelled");
    // Both sessions carry on.
    assert_eq!(current_user(&victim).await, "reader");
    assert_eq!(current_user(&bystander).await, "reader");
}

async fn cancel_with_a_wrong_secret_cancels_nothing(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let token = stack.token(ANALYST, &["analysts"]);
    let (mut victim, (process_id, secret_key)) =
        RawClient::login(stack.addr, "reader", &token).await;

    let sql = "SELECT pg_sleep(2)";
    victim.query(sql).await;
    wait_until_running(&stack, sql).await;
    // Right process id, wrong secret; then a made-up process id. Postern closes each connection
    // after handling it, so once these return nothing more is on its way to the database.
    assert!(
        send_cancel(stack.addr, process_id, secret_key.wrapping_add(1))
            .await
            .is_empty()
    );
    assert!(
        send_cancel(stack.addr, process_id ^ 0x0101, secret_key)
            .await
            .is_empty()
    );
    let messages = victim.read_until_ready().await;
    assert!(
        messages.iter().all(|m| m.tag != backend::ERROR_RESPONSE),
        "the query was not cancelled: {messages:?}"
    );
    assert!(messages.iter().any(|m| m.tag == backend::COMMAND_COMPLETE));

    // The right key does cancel: the same session, the same way.
    let sql = "SELECT pg_sleep(30)";
    victim.query(sql).await;
    wait_until_running(&stack, sql).await;
    assert!(
        send_cancel(stack.addr, process_id, secret_key)
            .await
            .is_empty()
    );
    let messages = victim.read_until_ready().await;
    let error = messages
        .iter()
        .find(|m| m.tag == backend::ERROR_RESPONSE)
        .expect("the query was cancelled")
        .error();
    assert_eq!(error.code, "57014", "{error:?}");
}
