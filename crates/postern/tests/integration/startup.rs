//! The startup exchange as a client library drives it, byte by byte: encryption requests,
//! protocol version negotiation, and startup parameters Postern refuses before it asks for a
//! token.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use crate::common::RawClient;
use bytes::{BufMut, BytesMut};
use postern_wire::{backend, startup};
use tokio::io::AsyncReadExt;

fn startup_packet(major: u16, minor: u16, parameters: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u16(major);
    body.put_u16(minor);
    for (key, value) in parameters {
        body.put_slice(key.as_bytes());
        body.put_u8(0);
        body.put_slice(value.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut packet = BytesMut::new();
    packet.put_i32(i32::try_from(body.len() + 4).unwrap());
    packet.put_slice(&body);
    packet
}

async fn one_byte_answer(client: &mut RawClient, request: i32) -> u8 {
    let mut out = BytesMut::new();
    out.put_i32(8);
    out.put_i32(request);
    client.send(&out).await;
    client.stream.read_u8().await.unwrap()
}

#[tokio::test]
async fn startup_exchange() {
    let stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
    let demo = [("user", "reader"), ("database", "demo")];

    // GSSENCRequest is declined; SSLRequest is declined without a certificate; the client then
    // goes on in plaintext on the same connection and is asked for its token.
    let mut client = RawClient::connect(stack.addr).await;
    assert_eq!(
        one_byte_answer(&mut client, startup::GSSENC_REQUEST_CODE).await,
        b'N'
    );
    assert_eq!(
        one_byte_answer(&mut client, startup::SSL_REQUEST_CODE).await,
        b'N'
    );
    client.send(&startup_packet(3, 0, &demo)).await;
    let message = client.read().await.unwrap();
    assert_eq!(message.tag, backend::AUTHENTICATION);
    assert_eq!(
        backend::authentication(&message.frame).unwrap(),
        backend::Authentication::CleartextPassword
    );

    // A newer minor version and `_pq_` options: NegotiateProtocolVersion (3.0, the options
    // Postern does not know), then the session goes on.
    let mut client = RawClient::connect(stack.addr).await;
    client
        .send(&startup_packet(
            3,
            2,
            &[
                ("user", "reader"),
                ("database", "demo"),
                ("_pq_.compression", "on"),
            ],
        ))
        .await;
    let message = client.read().await.unwrap();
    assert_eq!(
        message.tag,
        backend::NEGOTIATE_PROTOCOL_VERSION,
        "{message:?}"
    );
    let body = message.frame.body();
    assert_eq!(
        i32::from_be_bytes(body[0..4].try_into().unwrap()),
        (3 << 16),
        "newest minor version supported"
    );
    assert_eq!(
        i32::from_be_bytes(body[4..8].try_into().unwrap()),
        1,
        "one option not recognised"
    );
    assert_eq!(&body[8..], b"_pq_.compression\0");
    assert_eq!(client.read().await.unwrap().tag, backend::AUTHENTICATION);

    // Protocol 2 is refused with 0A000.
    let mut client = RawClient::connect(stack.addr).await;
    client.send(&startup_packet(2, 0, &demo)).await;
    let refused = client.read().await.unwrap();
    assert_eq!(refused.tag, backend::ERROR_RESPONSE);
    assert_eq!(refused.error().code, "0A000");
    assert!(client.read_to_end().await.is_empty());

    // Startup parameters that would change the role, or that Postern does not pass on, are refused
    // before any token is asked for.
    for (parameters, needle) in [
        (
            vec![
                ("user", "reader"),
                ("database", "demo"),
                ("role", "postgres"),
            ],
            "role",
        ),
        (
            vec![
                ("user", "reader"),
                ("database", "demo"),
                ("options", "-c role=postgres"),
            ],
            "role",
        ),
        (
            vec![
                ("user", "reader"),
                ("database", "demo"),
                ("options", "-c session_authorization=postgres"),
            ],
            "session_authorization",
        ),
        (
            vec![
                ("user", "reader"),
                ("database", "demo"),
                ("postern.claims", "forged"),
            ],
            "postern.claims",
        ),
        (
            vec![
                ("user", "reader"),
                ("database", "demo"),
                ("replication", "true"),
            ],
            "replication",
        ),
        (
            vec![("user", "reader"), ("database", "demo"), ("user", "writer")],
            "user",
        ),
        (
            vec![
                ("user", "reader"),
                ("database", "demo"),
                ("client_encoding", "SJIS"),
            ],
            "SJIS",
        ),
    ] {
        let mut client = RawClient::connect(stack.addr).await;
        client.send(&startup_packet(3, 0, &parameters)).await;
        let refused = client.read().await.unwrap();
        assert_eq!(refused.tag, backend::ERROR_RESPONSE, "{parameters:?}");
        let error = refused.error();
        assert_eq!(error.code, "42501", "{parameters:?}: {}", error.message);
        assert_eq!(error.severity, "FATAL");
        assert!(
            error.message.contains(needle),
            "{parameters:?}: {}",
            error.message
        );
        assert!(client.read_to_end().await.is_empty());
    }

    // A database that is not a target.
    let mut client = RawClient::connect(stack.addr).await;
    client
        .send(&startup_packet(
            3,
            0,
            &[("user", "reader"), ("database", "postgres")],
        ))
        .await;
    let refused = client.read().await.unwrap();
    assert_eq!(refused.error().code, "3D000");
    assert!(
        refused
            .error()
            .message
            .contains("\"postgres\" is not a target")
    );

    // An empty password.
    let mut client = RawClient::connect(stack.addr).await;
    client.send(&startup_packet(3, 0, &demo)).await;
    assert_eq!(client.read().await.unwrap().tag, backend::AUTHENTICATION);
    let mut out = BytesMut::new();
    postern_wire::frontend::encode_password("", &mut out);
    client.send(&out).await;
    let refused = client.read().await.unwrap();
    assert_eq!(refused.error().code, "28P01");
    assert!(refused.error().message.contains("no token given"));

    // Every refusal above that got as far as a request is in the audit log, complete once
    // Postern has stopped.
    let mut stack = stack;
    stack.stop_proxy().await;
    let refusals = stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "connection" && e["decision"] == "refused")
        .count();
    assert!(refusals >= 9, "{refusals} refused connections audited");
}

#[tokio::test]
async fn shutdown_tells_open_sessions_and_waiting_handshakes() {
    let mut stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
    let token = stack.token("alice@example.com", &["analysts"]);
    let (mut session, _) = RawClient::login(stack.addr, "reader", &token).await;
    let mut waiting = RawClient::connect(stack.addr).await;
    waiting
        .send(&startup_packet(
            3,
            0,
            &[("user", "reader"), ("database", "demo")],
        ))
        .await;
    assert_eq!(waiting.read().await.unwrap().tag, backend::AUTHENTICATION);

    stack.stop_proxy().await;
    for client in [&mut session, &mut waiting] {
        let farewell = client
            .read()
            .await
            .expect("a FATAL before the connection closes");
        assert_eq!(farewell.tag, backend::ERROR_RESPONSE);
        let error = farewell.error();
        assert_eq!(
            (error.severity.as_str(), error.code.as_str()),
            ("FATAL", "57P01"),
            "{}",
            error.message
        );
        assert!(error.message.contains("shutting down"));
        assert!(client.read_to_end().await.is_empty());
    }
    let ends: Vec<_> = stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "session_end")
        .collect();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["reason"], "shutdown");
}

#[tokio::test]
async fn a_query_postern_cannot_read_is_never_forwarded() {
    let stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
    let token = stack.token("alice@example.com", &["analysts"]);
    let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;
    // A well-formed query, then one whose text has no terminating NUL, in one write.
    let mut out = BytesMut::new();
    postern_wire::frontend::encode_query("SELECT 1", &mut out);
    let unterminated = b"SELECT 2";
    out.put_u8(b'Q');
    out.put_i32(i32::try_from(4 + unterminated.len()).unwrap());
    out.put_slice(unterminated);
    client.send(&out).await;
    let messages = client.read_to_end().await;
    let tags: Vec<u8> = messages.iter().map(|m| m.tag).collect();
    assert_eq!(
        tags.iter().filter(|t| **t == backend::DATA_ROW).count(),
        1,
        "only the first query ran: {tags:?}"
    );
    let last = messages.last().unwrap();
    assert_eq!(last.tag, backend::ERROR_RESPONSE);
    let error = last.error();
    assert_eq!(
        (error.severity.as_str(), error.code.as_str()),
        ("FATAL", "08P01"),
        "{}",
        error.message
    );
}
