//! Transaction pooling: a client session that holds a server connection only while one of its
//! transactions runs.
//!
//! The relay (`session`) works as if it had an upstream connection of its own. With transaction
//! pooling that connection is an in-memory pipe to this module's task, the session's *link*. The
//! link takes a server connection from the pool when the client's next message arrives and gives
//! it back, without any reset, once the server reports the transaction over: a ReadyForQuery
//! saying idle, with every message sent answered. What could outlive a transaction on the
//! connection (session `SET`, `LISTEN`, `WITH HOLD` cursors, ...) the relay refuses in this mode.
//!
//! On every connection it takes, the link writes before the client's first message, in the same
//! write (so in the same round trip):
//! 1. the *upkeep* of the client's named statements, as a cycle of its own ending in Sync, so
//!    that an error there stays its own: Close of the connection's statements no one maps to any
//!    more, then Parse of each statement the client prepared that this connection lacks;
//! 2. the *prelude*: the identity, applied transaction-locally — `set_config('postern.claims',
//!    …, true)`, signed for this backend's pid, and in `set_role` mode `set_config('role', …,
//!    true)` — as an unnamed Parse, Bind and Execute with no Sync. The client's message that
//!    follows runs in the same transaction (PostgreSQL keeps a transaction an unsynced Execute
//!    started open for the next message, a simple Query included), so the settings hold for
//!    exactly that transaction, as PostgREST's do. The prelude also replaces any unnamed
//!    statement an earlier client left behind.
//!
//! Their replies are swallowed: the client sees replies to its own messages only.
//!
//! Prepared statements. A client's statement names are its own; on the server every statement
//! Postern prepares is named `postern_tx_<n>`. A client's Parse is sent under a fresh name of the
//! connection in use; Bind, Describe and Close name whatever that connection holds for the
//! statement. A connection keeps what it prepared by content (SQL text and parameter types), so
//! clients preparing the same text share one server statement, and a pool that has warmed up
//! prepares nothing more. A name the client never prepared is passed on as the client wrote it
//! (no server statement is ever named that way), so the server's error names it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use postern_identity::Identity;
use postern_wire::backend::{self, BackendKeyData, Report, Severity, TransactionStatus};
use postern_wire::frame::Side;
use postern_wire::{Frame, FrameDecoder, WireError, frontend, limits, sqlstate};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use crate::cancel::BackendSlot;
use crate::claims::SigningKey;
use crate::io::BoxedStream;
use crate::pool::{Pool, PoolLease};
use crate::target::Target;
use crate::upstream::{Upstream, quote_literal};

/// What every server-side statement name Postern gives starts with.
const STATEMENT_PREFIX: &str = "postern_tx_";

/// A statement name no connection ever holds. A client's Close of a statement other clients
/// share becomes a Close of this: the server answers CloseComplete and the shared statement
/// stays.
const ABSENT_STATEMENT: &str = "postern_tx_absent";

/// Past this many statements a connection closes them all at its next checkout and prepares
/// again what its clients use.
const MAX_SERVER_STATEMENTS: usize = 1000;

/// Preludes a session keeps, one per backend it met; more than a pool holds means the pool
/// turned over, and they are made again.
const MAX_PRELUDES: usize = 64;

/// Bytes the pipe between relay and link buffers each way.
const PIPE_CAPACITY: usize = 64 * 1024;

/// Output waiting to be written past which the link stops reading the side that produces it.
const HIGH_WATER: usize = 256 * 1024;

/// The statements a server connection holds under Postern's names.
#[derive(Default)]
pub struct ServerStatements {
    /// Prepared by the link's upkeep, by the Parse content they were prepared from.
    by_content: HashMap<Bytes, String>,
    /// Prepared by clients' own Parses, used by their transaction only: closed at the next
    /// checkout.
    unused: Vec<String>,
    next: u64,
}

impl ServerStatements {
    fn fresh_name(&mut self) -> String {
        self.next += 1;
        format!("{STATEMENT_PREFIX}{}", self.next)
    }
}

/// What a session's link needs to take connections and make them the identity's.
pub(crate) struct Link {
    pub target: Arc<Target>,
    pub role: String,
    pub identity: Arc<Identity>,
    /// The client's startup parameters as forwarded: they choose the pool.
    pub parameters: Vec<(String, String)>,
    pub signing_key: Option<Arc<SigningKey>>,
    /// Where the session's cancel requests find the backend in use.
    pub backend: BackendSlot,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Starts a session's link and returns the relay's end of the pipe.
pub(crate) fn start(link: Link) -> DuplexStream {
    let (relay_end, link_end) = tokio::io::duplex(PIPE_CAPACITY);
    let pool = link.target.pool_for(&link.role, &link.parameters);
    let session = Session {
        link,
        pool,
        preludes: HashMap::new(),
        statements: HashMap::new(),
        attached: None,
        discarding: false,
    };
    tokio::spawn(run(session, link_end));
    relay_end
}

/// A server connection while a transaction of the session runs on it.
struct Attached {
    read: ReadHalf<BoxedStream>,
    write: WriteHalf<BoxedStream>,
    buffer: BytesMut,
    parameters: Vec<(String, String)>,
    key: BackendKeyData,
    statements: ServerStatements,
    lease: PoolLease,
    /// The upkeep cycle's Parses not yet answered, in order, with the content each prepares;
    /// `None` once the cycle's ReadyForQuery came (or when there was no upkeep).
    upkeep: Option<VecDeque<(Bytes, String)>>,
    /// Replies of the prelude still to come.
    prelude_left: usize,
    /// The client's statement names used in this transaction, and their names here.
    names: HashMap<String, String>,
    cycles_sent: u64,
    cycles_answered: u64,
    /// A message was sent after the last Sync, Query or FunctionCall: a reply is still owed.
    open_cycle: bool,
}

/// Why the link ends the session.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the identity could not be applied to the server connection: {0}")]
    Prelude(String),
}

struct Session {
    link: Link,
    pool: Arc<Pool>,
    /// The prelude as sent, by the backend pid its claims are signed for: a session meets the
    /// same few connections again and again.
    preludes: HashMap<i32, Prelude>,
    /// The client's named statements, by name: the content of their Parse.
    statements: HashMap<String, Bytes>,
    /// Boxed: taken once per transaction, and the link task's future, which holds this, lives
    /// as long as the client, idle or not.
    attached: Option<Box<Attached>>,
    /// A checkout failed in the middle of an extended-protocol cycle: the rest of it, up to
    /// Sync, is dropped, as the server itself would after an error.
    discarding: bool,
}

enum Event {
    Relay(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    RelayWrote(std::io::Result<usize>),
}

/// The link task. Its future lives as long as the client's session, idle or not: the session
/// comes in built (a parameter is stored once, where a local built from it would be a second
/// copy), and the rare long wait, a checkout, is boxed (see `send_client_message`).
async fn run(mut session: Session, pipe: DuplexStream) {
    let (mut from_relay, mut to_relay) = tokio::io::split(pipe);
    let mut relay_in = BytesMut::new();
    let mut relay_out = BytesMut::new();
    let mut server_out = BytesMut::new();
    let client_decoder = FrameDecoder::new(Side::Frontend, limits::MAX_FRONTEND_MESSAGE_LENGTH);
    let server_decoder = FrameDecoder::new(Side::Backend, limits::MAX_BACKEND_MESSAGE_LENGTH);
    'session: loop {
        let event = match session.attached.as_mut() {
            Some(attached) => {
                let Attached {
                    read,
                    write,
                    buffer,
                    ..
                } = &mut **attached;
                tokio::select! {
                    read = from_relay.read_buf(&mut relay_in), if server_out.len() < HIGH_WATER && relay_in.len() < HIGH_WATER => Event::Relay(read),
                    read = read.read_buf(buffer), if relay_out.len() < HIGH_WATER => Event::Server(read),
                    wrote = write.write(&server_out), if !server_out.is_empty() => Event::ServerWrote(wrote),
                    wrote = to_relay.write(&relay_out), if !relay_out.is_empty() => Event::RelayWrote(wrote),
                }
            }
            None => tokio::select! {
                read = from_relay.read_buf(&mut relay_in) => Event::Relay(read),
                wrote = to_relay.write(&relay_out), if !relay_out.is_empty() => Event::RelayWrote(wrote),
            },
        };
        match event {
            Event::Relay(Ok(0) | Err(_)) => break,
            Event::Relay(Ok(_)) => {}
            Event::Server(Ok(0) | Err(_)) => {
                Report::new(
                    Severity::Fatal,
                    sqlstate::CONNECTION_FAILURE,
                    "the database closed the server connection in the middle of a transaction",
                )
                .encode(&mut relay_out);
                session.attached = None;
                break;
            }
            Event::Server(Ok(_)) => {
                while let Some(attached) = session.attached.as_mut() {
                    let frame = match server_decoder.decode(&mut attached.buffer) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(error) => {
                            fatal(&mut relay_out, &LinkError::Wire(error));
                            break 'session;
                        }
                    };
                    match session.handle_server_message(&frame, &mut relay_out) {
                        Ok(false) => {}
                        Ok(true) => {
                            session.release(server_out.is_empty());
                            break;
                        }
                        Err(error) => {
                            fatal(&mut relay_out, &error);
                            break 'session;
                        }
                    }
                }
            }
            Event::ServerWrote(Ok(written)) => {
                server_out.advance(written);
                if server_out.is_empty()
                    && let Some(attached) = session.attached.as_mut()
                    && attached.write.flush().await.is_err()
                {
                    break;
                }
            }
            Event::RelayWrote(Ok(written)) => relay_out.advance(written),
            Event::ServerWrote(Err(_)) | Event::RelayWrote(Err(_)) => break,
        }
        // The relay's messages, up to one that must wait for the server's reply to what was sent.
        while !session.holding(&relay_in) {
            let frame = match client_decoder.decode(&mut relay_in) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    fatal(&mut relay_out, &LinkError::Wire(error));
                    break 'session;
                }
            };
            if frame.tag() == frontend::TERMINATE {
                break 'session;
            }
            if session.attached.is_none() && !session.discarding {
                // The replies of finished transactions go out before a wait for a connection.
                if to_relay.write_all(&relay_out).await.is_err() {
                    break 'session;
                }
                relay_out.clear();
            }
            if let Err(error) = session
                .send_client_message(frame, &mut server_out, &mut relay_out)
                .await
            {
                fatal(&mut relay_out, &error);
                break 'session;
            }
        }
    }
    let _ = to_relay.write_all(&relay_out).await;
    let _ = to_relay.shutdown().await;
    // Ending in the middle of a transaction: closing the connection rolls it back.
    if let Some(attached) = session.attached.take() {
        let (upstream, lease) = attached.into_upstream();
        tokio::spawn(async move {
            upstream.terminate().await;
            drop(lease);
        });
    }
    session.link.backend.set(None);
}

/// Ends the session with a FATAL error the relay passes on.
fn fatal(relay_out: &mut BytesMut, error: &LinkError) {
    tracing::warn!(error = %error, "transaction pooling ended a session");
    let code = match error {
        LinkError::Wire(_) => sqlstate::PROTOCOL_VIOLATION,
        LinkError::Prelude(_) => sqlstate::CONNECTION_FAILURE,
    };
    Report::new(Severity::Fatal, code, &error.to_string()).encode(relay_out);
}

impl Session {
    /// Whether the relay's next message must wait. A message that begins a new cycle while the
    /// last one is unanswered could begin a new transaction, which needs the prelude again (the
    /// last one ended with the transaction it was in); whether it does, only the server's
    /// ReadyForQuery tells. So it waits for that: an idle one gives the connection back and the
    /// message takes one afresh, prelude first. (COPY data belongs to the cycle already sent.)
    fn holding(&self, relay_in: &BytesMut) -> bool {
        let Some(attached) = &self.attached else {
            return false;
        };
        let copy_data = matches!(
            relay_in.first(),
            Some(&(frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL))
        );
        attached.cycles_answered < attached.cycles_sent && !attached.open_cycle && !copy_data
    }

    /// Sends on one of the relay's messages, taking a connection first between transactions.
    async fn send_client_message(
        &mut self,
        frame: Frame,
        server_out: &mut BytesMut,
        relay_out: &mut BytesMut,
    ) -> Result<(), LinkError> {
        let ends_cycle = matches!(
            frame.tag(),
            frontend::SYNC | frontend::QUERY | frontend::FUNCTION_CALL
        );
        if self.discarding {
            if frame.tag() == frontend::SYNC {
                backend::encode_ready_for_query(TransactionStatus::Idle, relay_out);
                self.discarding = false;
            }
            return Ok(());
        }
        if self.attached.is_none() {
            // Boxed: the checkout's state is large and needed once per transaction; inline, it
            // would be part of every idle session's link task.
            match Box::pin(self.attach(server_out)).await {
                Ok(attached) => self.attached = Some(Box::new(attached)),
                Err(refused) => {
                    Report::new(Severity::Error, refused.code, &refused.message).encode(relay_out);
                    if ends_cycle {
                        backend::encode_ready_for_query(TransactionStatus::Idle, relay_out);
                    } else {
                        self.discarding = true;
                    }
                    return Ok(());
                }
            }
        }
        let Some(attached) = self.attached.as_mut() else {
            return Ok(());
        };
        match frame.tag() {
            frontend::PARSE => {
                let parse = frontend::parse(&frame)?;
                if parse.statement.is_empty() {
                    server_out.extend_from_slice(frame.raw());
                } else if self.statements.contains_key(parse.statement) {
                    // The server refuses a Parse of a name in use: let it, naming what it holds.
                    let name = resolve(&self.statements, attached, parse.statement);
                    frontend::encode_renamed(&frame, &name, server_out)?;
                } else {
                    let name = attached.statements.fresh_name();
                    frontend::encode_renamed(&frame, &name, server_out)?;
                    attached.statements.unused.push(name.clone());
                    let content = Bytes::copy_from_slice(frontend::parse_content(&frame)?);
                    self.statements.insert(parse.statement.to_owned(), content);
                    attached.names.insert(parse.statement.to_owned(), name);
                }
            }
            frontend::BIND => {
                let (_, statement) = frontend::bind_names(&frame)?;
                if statement.is_empty() {
                    server_out.extend_from_slice(frame.raw());
                } else {
                    let name = resolve(&self.statements, attached, statement);
                    frontend::encode_renamed(&frame, &name, server_out)?;
                }
            }
            frontend::DESCRIBE => match frontend::target(&frame)? {
                (b'S', statement) if !statement.is_empty() => {
                    let name = resolve(&self.statements, attached, statement);
                    frontend::encode_renamed(&frame, &name, server_out)?;
                }
                _ => server_out.extend_from_slice(frame.raw()),
            },
            frontend::CLOSE => match frontend::target(&frame)? {
                (b'S', statement) if !statement.is_empty() => {
                    // Only a statement this transaction prepared is the client's alone to close.
                    let name = match attached.names.remove(statement) {
                        Some(own) if attached.statements.unused.contains(&own) => own,
                        _ => ABSENT_STATEMENT.to_owned(),
                    };
                    self.statements.remove(statement);
                    frontend::encode_renamed(&frame, &name, server_out)?;
                }
                _ => server_out.extend_from_slice(frame.raw()),
            },
            _ => server_out.extend_from_slice(frame.raw()),
        }
        if ends_cycle {
            attached.cycles_sent += 1;
            attached.open_cycle = false;
        } else if !matches!(
            frame.tag(),
            // Part of the cycle already counted (COPY data follows the statement that asked
            // for it), or owing no reply.
            frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL | frontend::FLUSH
        ) {
            attached.open_cycle = true;
        }
        Ok(())
    }

    /// Takes a connection from the pool and writes its upkeep and the prelude to `out`.
    async fn attach(&mut self, out: &mut BytesMut) -> Result<Attached, crate::error::Refused> {
        let link = &self.link;
        let (upstream, lease) = link
            .target
            .checkout_from(&self.pool, &link.role, &link.identity, &link.parameters)
            .await
            .map_err(|error| {
                tracing::warn!(target = %link.target.name, role = %link.role, error = %error, "no server connection for a transaction");
                link.metrics.upstream_error(&error);
                crate::handshake::upstream_refusal(&link.target.name, &link.role, &error)
            })?;
        let Upstream {
            stream,
            buffer,
            parameters,
            key,
            mut statements,
        } = upstream;
        let (read, write) = tokio::io::split(stream);

        let upkeep_start = out.len();
        if statements.by_content.len() > MAX_SERVER_STATEMENTS {
            let held = std::mem::take(&mut statements.by_content);
            statements.unused.extend(held.into_values());
        }
        for name in statements.unused.drain(..) {
            frontend::encode_close(b'S', &name, out);
        }
        let mut parses = VecDeque::new();
        for content in self.statements.values() {
            // Also skips a content two of the client's names share, once it is planned here.
            if statements.by_content.contains_key(content) {
                continue;
            }
            let name = statements.fresh_name();
            frontend::encode_parse_content(&name, content, out);
            // Counted as held already: the client's messages that follow in this write name it.
            statements.by_content.insert(content.clone(), name.clone());
            parses.push_back((content.clone(), name));
        }
        let upkeep = (out.len() > upkeep_start).then(|| {
            frontend::encode_sync(out);
            parses
        });

        if self.preludes.len() >= MAX_PRELUDES && !self.preludes.contains_key(&key.process_id) {
            self.preludes.clear();
        }
        let prelude = self
            .preludes
            .entry(key.process_id)
            .or_insert_with(|| Prelude::for_backend(link, key.process_id));
        out.extend_from_slice(&prelude.messages);
        let prelude_left = prelude.replies;
        link.backend.set(Some(key));
        Ok(Attached {
            read,
            write,
            buffer,
            parameters,
            key,
            statements,
            lease,
            upkeep,
            prelude_left,
            names: HashMap::new(),
            cycles_sent: 0,
            cycles_answered: 0,
            open_cycle: false,
        })
    }

    /// Handles one server message: swallowed if it answers the upkeep or the prelude, else
    /// passed on. True when the transaction is over and the connection can go back.
    fn handle_server_message(
        &mut self,
        frame: &Frame,
        relay_out: &mut BytesMut,
    ) -> Result<bool, LinkError> {
        let Some(attached) = self.attached.as_mut() else {
            return Ok(false);
        };
        if frame.tag() == backend::PARAMETER_STATUS {
            let (name, value) = backend::parameter_status(frame)?;
            crate::upstream::record_parameter(&mut attached.parameters, name, value);
            relay_out.extend_from_slice(frame.raw());
            return Ok(false);
        }
        if let Some(parses) = attached.upkeep.as_mut() {
            match frame.tag() {
                backend::PARSE_COMPLETE => {
                    parses.pop_front();
                }
                backend::ERROR_RESPONSE => {
                    // The rest of the upkeep is skipped: what it would have prepared is not held
                    // (a client's Bind of it gets the server's error) and is tried again at a
                    // later checkout.
                    for (content, _) in parses.drain(..) {
                        attached.statements.by_content.remove(&content);
                    }
                    let fields = backend::error_fields(frame)?;
                    if fields.severity == "FATAL" {
                        relay_out.extend_from_slice(frame.raw());
                    }
                    tracing::debug!(message = ?fields.message, "a statement could not be prepared again on a pooled connection");
                }
                backend::READY_FOR_QUERY => attached.upkeep = None,
                _ => {}
            }
            return Ok(false);
        }
        if attached.prelude_left > 0 {
            match frame.tag() {
                backend::ERROR_RESPONSE => {
                    let fields = backend::error_fields(frame)?;
                    return Err(LinkError::Prelude(fields.message));
                }
                backend::NOTICE_RESPONSE => {}
                _ => attached.prelude_left -= 1,
            }
            return Ok(false);
        }
        relay_out.extend_from_slice(frame.raw());
        if frame.tag() == backend::READY_FOR_QUERY {
            attached.cycles_answered += 1;
            let status = backend::ready_for_query(frame)?;
            return Ok(status == TransactionStatus::Idle
                && attached.cycles_answered >= attached.cycles_sent
                && !attached.open_cycle);
        }
        Ok(false)
    }

    /// Gives the connection back between transactions; closes it instead if anything of it is
    /// still unread or unsent.
    fn release(&mut self, nothing_unsent: bool) {
        let Some(attached) = self.attached.take() else {
            return;
        };
        self.link.backend.set(None);
        let clean = nothing_unsent && attached.buffer.is_empty();
        let (upstream, lease) = attached.into_upstream();
        if clean {
            lease.give_back_clean(upstream);
        } else {
            tokio::spawn(async move {
                upstream.terminate().await;
                drop(lease);
            });
        }
    }
}

impl Attached {
    fn into_upstream(self) -> (Upstream, PoolLease) {
        let upstream = Upstream {
            stream: self.read.unsplit(self.write),
            buffer: self.buffer,
            parameters: self.parameters,
            key: self.key,
            statements: self.statements,
        };
        (upstream, self.lease)
    }
}

/// The messages that apply the identity to a backend, transaction-locally, and how many replies
/// they draw.
struct Prelude {
    messages: Bytes,
    replies: usize,
}

impl Prelude {
    /// The prelude for backend `pid`: the identity's settings, its claims signed for that pid.
    /// With nothing to set it still closes the unnamed statement, which may be an earlier
    /// client's.
    fn for_backend(link: &Link, pid: i32) -> Self {
        let mut settings = Vec::new();
        if link.target.config.mode == postern_config::UpstreamMode::SetRole {
            settings.push(format!(
                "set_config('role', {}, true)",
                quote_literal(&link.role)
            ));
        }
        if let Some(signing_key) = &link.signing_key {
            let claims = signing_key.sign(&link.identity, pid);
            settings.push(format!(
                "set_config('postern.claims', {}, true)",
                quote_literal(&claims)
            ));
        }
        let mut out = BytesMut::new();
        let replies = if settings.is_empty() {
            frontend::encode_close(b'S', "", &mut out);
            // CloseComplete.
            1
        } else {
            frontend::encode_parse("", &format!("SELECT {}", settings.join(", ")), &mut out);
            frontend::encode_bind_unnamed("", &mut out);
            frontend::encode_execute("", &mut out);
            // ParseComplete, BindComplete, DataRow, CommandComplete.
            4
        };
        Self {
            messages: out.freeze(),
            replies,
        }
    }
}

/// The name on the attached connection of the client's statement `statement`.
fn resolve(
    statements: &HashMap<String, Bytes>,
    attached: &mut Attached,
    statement: &str,
) -> String {
    if let Some(name) = attached.names.get(statement) {
        return name.clone();
    }
    if let Some(name) = statements
        .get(statement)
        .and_then(|content| attached.statements.by_content.get(content))
    {
        attached.names.insert(statement.to_owned(), name.clone());
        return name.clone();
    }
    // Never prepared by the client (or not here): a name no server statement has, so that the
    // server's "does not exist" names it as the client wrote it.
    if statement.starts_with(STATEMENT_PREFIX) {
        ABSENT_STATEMENT.to_owned()
    } else {
        statement.to_owned()
    }
}
