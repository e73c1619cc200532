//! Helpers shared by the integration tests: running a test in both upstream modes, waiting for a
//! condition, checking SQLSTATEs, and a raw protocol client for what tokio-postgres will not send.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "each test file uses a different part of this module, and a test fails by panicking"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use postern_wire::backend::{self, ErrorFields};
use postern_wire::frame::Side;
use postern_wire::{Frame, FrameDecoder, frontend, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single network wait in a test may take before the test fails.
pub const NETWORK_WAIT: Duration = Duration::from_secs(10);

/// Generates `mod $name { role_login, set_role }` running `$name(mode)` on a fresh stack per mode.
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn role_login() {
                    super::$name(postern_config::UpstreamMode::RoleLogin).await;
                }

                #[tokio::test]
                async fn set_role() {
                    super::$name(postern_config::UpstreamMode::SetRole).await;
                }
            }
        )*
    };
}

/// A stack in `mode`, otherwise default (plaintext from loopback allowed, claims set up).
pub async fn stack(mode: postern_config::UpstreamMode) -> postern_testkit::Stack {
    postern_testkit::Stack::start(postern_testkit::StackOptions {
        mode,
        ..postern_testkit::StackOptions::default()
    })
    .await
    .expect("the test stack starts")
}

/// The SQLSTATE of a tokio-postgres error, panicking with the error if it has none.
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.code().code().to_owned(),
        None => panic!("expected a database error, got: {error:?}"),
    }
}

/// Asserts that `error` is a database error with `code` whose message contains `needle`.
#[track_caller]
pub fn assert_db_error(error: &tokio_postgres::Error, code: &str, needle: &str) {
    let Some(db) = error.as_db_error() else {
        panic!("expected a database error {code}, got: {error:?}");
    };
    assert_eq!(db.code().code(), code, "{}", db.message());
    assert!(
        db.message().contains(needle),
        "expected {needle:?} in the message {:?}",
        db.message()
    );
}

/// Polls `check` until it returns true, failing the test after `NETWORK_WAIT`. For conditions
/// that something else makes true (a backend starting a query), not a stand-in for ordering.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + NETWORK_WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `current_user` of a session.
pub async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("SELECT current_user")
        .get(0)
}

/// A connection to Postern that speaks the protocol byte by byte.
pub struct RawClient {
    pub stream: TcpStream,
    buffer: BytesMut,
}

/// A backend message read by [`RawClient`].
#[derive(Debug)]
pub struct Message {
    pub tag: u8,
    pub frame: Frame,
}

impl Message {
    /// The fields of an ErrorResponse or NoticeResponse.
    pub fn error(&self) -> ErrorFields {
        backend::error_fields(&self.frame).expect("a well-formed ErrorResponse")
    }
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(NETWORK_WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect to Postern");
        Self {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Connects and logs in as `role` on the demo target with `token`; returns the client, ready
    /// for queries, and the cancel key Postern gave it.
    pub async fn login(addr: SocketAddr, role: &str, token: &str) -> (Self, (i32, i32)) {
        let mut client = Self::connect(addr).await;
        let mut out = BytesMut::new();
        startup::encode_startup(&[("user", role), ("database", "demo")], &mut out);
        client.send(&out).await;
        let message = client.read().await.expect("an authentication request");
        assert_eq!(message.tag, backend::AUTHENTICATION, "{message:?}");
        let mut out = BytesMut::new();
        frontend::encode_password(token, &mut out);
        client.send(&out).await;
        let mut key = None;
        loop {
            let message = client.read().await.expect("login messages");
            match message.tag {
                backend::BACKEND_KEY_DATA => {
                    let data = backend::backend_key_data(&message.frame).expect("BackendKeyData");
                    key = Some((data.process_id, data.secret_key));
                }
                backend::READY_FOR_QUERY => break,
                backend::ERROR_RESPONSE => panic!("login refused: {:?}", message.error()),
                _ => {}
            }
        }
        (client, key.expect("Postern sends BackendKeyData"))
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(NETWORK_WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write to Postern");
    }

    /// Sends a simple Query.
    pub async fn query(&mut self, sql: &str) {
        let mut out = BytesMut::new();
        frontend::encode_query(sql, &mut out);
        self.send(&out).await;
    }

    /// The next backend message; `None` at end of stream (or a reset connection).
    pub async fn read(&mut self) -> Option<Message> {
        let decoder = FrameDecoder::new(Side::Backend, 1 << 20);
        loop {
            if let Some(frame) = decoder
                .decode(&mut self.buffer)
                .expect("a valid backend frame")
            {
                return Some(Message {
                    tag: frame.tag(),
                    frame,
                });
            }
            let read = tokio::time::timeout(NETWORK_WAIT, self.stream.read_buf(&mut self.buffer))
                .await
                .expect("Postern answers or closes in time");
            match read {
                Ok(0) | Err(_) => {
                    assert!(
                        self.buffer.is_empty(),
                        "connection ended inside a message: {:?}",
                        self.buffer
                    );
                    return None;
                }
                Ok(_) => {}
            }
        }
    }

    /// Reads messages until the connection closes; returns them. Fails if it stays open.
    pub async fn read_to_end(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Some(message) = self.read().await {
            messages.push(message);
        }
        messages
    }

    /// Reads until ReadyForQuery; returns the messages before it.
    pub async fn read_until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let message = self.read().await.expect("the session stays open");
            if message.tag == backend::READY_FOR_QUERY {
                return messages;
            }
            messages.push(message);
        }
    }
}

/// A CancelRequest packet, written by hand: length 16, code 80877102, process id, secret key.
pub fn cancel_request(process_id: i32, secret_key: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(16);
    out.put_i32(16);
    out.put_i32(80_877_102);
    out.put_i32(process_id);
    out.put_i32(secret_key);
    out.freeze()
}

/// Sends a CancelRequest to `addr` and waits until Postern closes that connection (which it does
/// once it has handled the request). Returns whatever Postern answered (nothing, normally).
pub async fn send_cancel(addr: SocketAddr, process_id: i32, secret_key: i32) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to Postern");
    stream
        .write_all(&cancel_request(process_id, secret_key))
        .await
        .expect("send the CancelRequest");
    let mut answer = Vec::new();
    tokio::time::timeout(NETWORK_WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("Postern closes the cancel connection in time")
        .expect("read the cancel connection");
    answer
}

// Extended-protocol messages tokio-postgres will not send in these orders.

/// Encodes Bind of the unnamed portal to `statement`, without parameters, text results.
pub fn encode_bind(statement: &str, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    body.put_slice(b"\0");
    body.put_slice(statement.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    body.put_i16(0);
    body.put_i16(0);
    out.put_u8(b'B');
    out.put_i32(i32::try_from(body.len() + 4).unwrap());
    out.put_slice(&body);
}

/// Encodes Execute of the unnamed portal, all rows.
pub fn encode_execute(out: &mut BytesMut) {
    encode_execute_portal("", 0, out);
}

/// Encodes Execute of `portal`, at most `max_rows` rows (0: all).
pub fn encode_execute_portal(portal: &str, max_rows: i32, out: &mut BytesMut) {
    out.put_u8(b'E');
    out.put_i32(i32::try_from(4 + portal.len() + 1 + 4).unwrap());
    out.put_slice(portal.as_bytes());
    out.put_u8(0);
    out.put_i32(max_rows);
}

/// Encodes Close of the prepared statement `name`.
pub fn encode_close_statement(name: &str, out: &mut BytesMut) {
    out.put_u8(b'C');
    out.put_i32(i32::try_from(4 + 1 + name.len() + 1).unwrap());
    out.put_u8(b'S');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

/// Sends `messages` then Sync; returns the answer's error codes and first value.
pub async fn cycle(client: &mut RawClient, messages: BytesMut) -> (Vec<String>, Option<String>) {
    let mut out = messages;
    frontend::encode_sync(&mut out);
    client.send(&out).await;
    let answers = client.read_until_ready().await;
    let errors = answers
        .iter()
        .filter(|m| m.tag == backend::ERROR_RESPONSE)
        .map(|m| m.error().code)
        .collect();
    let value = answers
        .iter()
        .find(|m| m.tag == backend::DATA_ROW)
        .map(|m| {
            let row = backend::data_row(&m.frame).unwrap();
            String::from_utf8(row[0].unwrap().to_vec()).unwrap()
        });
    (errors, value)
}

pub fn parse(name: &str, sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::encode_parse(name, sql, &mut out);
    out
}

pub fn bind_execute(name: &str) -> BytesMut {
    let mut out = BytesMut::new();
    encode_bind(name, &mut out);
    encode_execute(&mut out);
    out
}

/// Reads to ReadyForQuery; returns the command tags and the error, skipping notices.
pub async fn outcome(client: &mut RawClient) -> (Vec<String>, Option<(String, String)>) {
    let mut tags = Vec::new();
    let mut error = None;
    for message in client.read_until_ready().await {
        match message.tag {
            backend::COMMAND_COMPLETE => {
                tags.push(backend::command_tag(&message.frame).unwrap().to_owned());
            }
            backend::ERROR_RESPONSE => {
                let fields = message.error();
                error = Some((fields.code, fields.message));
            }
            _ => {}
        }
    }
    (tags, error)
}

/// The demo table's rows matching `condition`, counted over a direct connection.
pub async fn count(stack: &postern_testkit::Stack, condition: &str) -> i64 {
    let direct = stack.direct().await.unwrap();
    direct
        .query_one(
            &format!("SELECT count(*) FROM orders WHERE {condition}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
