//! Hostile bytes on Postern's port: oversized, negative and garbage lengths before and after
//! login, unknown message types, and the wrong message at the password prompt. Each connection is
//! answered with one ErrorResponse (08P01, or 0A000 for an unknown protocol version, as
//! PostgreSQL answers) and closed, while a healthy session on the same Postern carries on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use crate::common::RawClient;
use bytes::{BufMut, BytesMut};
use postern_testkit::{Stack, StackOptions};
use postern_wire::{backend, startup};
use tokio::io::AsyncWriteExt;

/// A startup packet header: length and protocol code.
fn header(length: i32, code: i32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out
}

/// A frontend message header: type byte and length.
fn message_header(tag: u8, length: i32) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&length.to_be_bytes());
    out
}

const PROTOCOL_3_0: i32 = 3 << 16;

/// Sends `bytes` (ignoring a write that fails because Postern already closed), then expects one
/// ErrorResponse with `code` and the end of the connection.
async fn expect_refusal(client: &mut RawClient, bytes: &[u8], code: &str, what: &str) {
    eprintln!("case: {what}");
    let _ = client.stream.write_all(bytes).await;
    let messages = client.read_to_end().await;
    let [message] = messages.as_slice() else {
        panic!("{what}: expected one ErrorResponse, got {messages:?}");
    };
    assert_eq!(message.tag, backend::ERROR_RESPONSE, "{what}: {message:?}");
    let error = message.error();
    assert_eq!(error.code, code, "{what}: {error:?}");
    assert_eq!(error.severity, "FATAL", "{what}: {error:?}");
}

async fn assert_healthy(client: &tokio_postgres::Client, after: &str) {
    let row = client
        .query_one("SELECT current_user::text, 1 + 1", &[])
        .await
        .unwrap_or_else(|e| panic!("the healthy session broke after {after}: {e:?}"));
    assert_eq!(row.get::<_, String>(0), "reader");
    assert_eq!(row.get::<_, i32>(1), 2);
}

#[tokio::test]
async fn malformed_startup_packets_are_refused_and_closed() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    let healthy = stack.connect("reader", &token).await.unwrap();

    let mut long_startup = BytesMut::new();
    startup::encode_startup(
        &[
            ("user", "reader"),
            ("database", "demo"),
            ("application_name", &"x".repeat(12_000)),
        ],
        &mut long_startup,
    );
    assert!(long_startup.len() > 10_000);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // Refused on the length alone, without waiting for the body.
        (
            "a startup packet announcing 20,000 bytes",
            header(20_000, PROTOCOL_3_0),
            "08P01",
        ),
        (
            "a whole startup packet over 10,000 bytes",
            long_startup.to_vec(),
            "08P01",
        ),
        ("a negative length", header(-16, PROTOCOL_3_0), "08P01"),
        (
            "a length shorter than a header",
            header(4, PROTOCOL_3_0),
            "08P01",
        ),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
            "08P01",
        ),
        ("garbage", vec![0xff; 64], "08P01"),
        (
            "a CancelRequest without its secret key",
            [header(12, 80_877_102), 42_i32.to_be_bytes().to_vec()].concat(),
            "08P01",
        ),
        (
            "a startup packet without its terminator",
            [header(20, PROTOCOL_3_0), b"user\0reader\0".to_vec()].concat(),
            "08P01",
        ),
        // An unknown protocol version, answered as PostgreSQL does.
        ("protocol 9.9", header(8, (9 << 16) | 9), "0A000"),
        (
            "data after an SSLRequest",
            [header(8, 80_877_103), header(8, PROTOCOL_3_0)].concat(),
            "08P01",
        ),
    ];
    for (what, bytes, code) in cases {
        let mut client = RawClient::connect(stack.addr).await;
        expect_refusal(&mut client, &bytes, code, what).await;
        assert_healthy(&healthy, what).await;
    }

    // A client that sends part of a packet and leaves gets no answer, and costs nothing.
    let mut client = RawClient::connect(stack.addr).await;
    client.stream.write_all(&[0, 0]).await.unwrap();
    client.stream.shutdown().await.unwrap();
    assert!(client.read_to_end().await.is_empty());
    assert_healthy(&healthy, "half a length").await;
}

#[tokio::test]
async fn malformed_password_messages_are_refused_and_closed() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    let healthy = stack.connect("reader", &token).await.unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a negative length", message_header(b'p', -1)),
        (
            "a password message over 65,535 bytes",
            message_header(b'p', 100_000),
        ),
        ("an unknown message type", message_header(b'?', 4)),
        ("a query instead of the token", {
            let mut out = BytesMut::new();
            postern_wire::frontend::encode_query("SELECT 1", &mut out);
            out.to_vec()
        }),
        ("a password without its terminator", {
            let mut out = message_header(b'p', 8);
            out.extend_from_slice(b"abcd");
            out
        }),
    ];
    for (what, bytes) in cases {
        let mut client = RawClient::connect(stack.addr).await;
        let mut out = BytesMut::new();
        startup::encode_startup(&[("user", "reader"), ("database", "demo")], &mut out);
        client.send(&out).await;
        let request = client.read().await.expect("a password request");
        assert_eq!(request.tag, backend::AUTHENTICATION);
        expect_refusal(&mut client, &bytes, "08P01", what).await;
        assert_healthy(&healthy, what).await;
    }
}

#[tokio::test]
async fn malformed_messages_in_a_session_end_it_with_a_protocol_violation() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    let healthy = stack.connect("reader", &token).await.unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown message type", message_header(b'?', 4)),
        ("a backend message type", message_header(b'Z', 5)),
        ("a zero byte", vec![0; 16]),
        ("a negative length", message_header(b'Q', -1)),
        ("a length below 4", message_header(b'Q', 3)),
        ("a message over 64 MiB", message_header(b'Q', i32::MAX)),
        // Postern could not name the portal, so it could not record what runs.
        ("an Execute whose portal name is not UTF-8", {
            let mut out = message_header(b'E', 4 + 2 + 4);
            out.extend_from_slice(b"\xe9\0");
            out.extend_from_slice(&0_i32.to_be_bytes());
            out
        }),
        ("a good query, then garbage", {
            let mut out = BytesMut::new();
            postern_wire::frontend::encode_query("SELECT 1", &mut out);
            out.put_slice(&message_header(b'?', 4));
            out.to_vec()
        }),
    ];
    for (what, bytes) in cases {
        let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;
        client.query("SELECT 1").await;
        client.read_until_ready().await;
        let _ = client.stream.write_all(&bytes).await;
        let messages = client.read_to_end().await;
        let error = messages
            .last()
            .filter(|m| m.tag == backend::ERROR_RESPONSE)
            .unwrap_or_else(|| panic!("{what}: expected a final ErrorResponse, got {messages:?}"))
            .error();
        assert_eq!(error.code, "08P01", "{what}: {error:?}");
        assert_eq!(error.severity, "FATAL", "{what}: {error:?}");
        // Only what came before the violation was answered.
        let answered = messages
            .iter()
            .filter(|m| m.tag == backend::ERROR_RESPONSE)
            .count();
        assert_eq!(answered, 1, "{what}: {messages:?}");
        assert_healthy(&healthy, what).await;
    }

    // The upstream backends of those sessions were ended, not left behind.
    let superuser = stack.direct().await.unwrap();
    common::wait_until("the broken sessions' backends have ended", || {
        let superuser = &superuser;
        async move {
            let count: i64 = superuser
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename IN ('reader', 'postern_session') AND datname = 'demo'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            count == 1
        }
    })
    .await;
    assert_healthy(&healthy, "all of them").await;
}
