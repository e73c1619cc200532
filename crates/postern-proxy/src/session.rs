//! The relay between a logged-in client and its upstream connection.
//!
//! Two loops run side by side. The *frontend* loop reads the client's messages, has every
//! statement classified and checked by the escape guard, writes its audit event (and waits for
//! it) before forwarding, and passes everything else through untouched. The *backend* loop
//! passes the server's messages back, noting how each statement ended.
//!
//! A refused statement is not simply dropped: the client's protocol state must stay exactly as
//! if the server had rejected it (inside a transaction block: aborted; in the extended protocol:
//! everything up to Sync skipped). So Postern sends the server, in its place, a text that cannot
//! parse — `postern_refused_<nonce>_<n>` — and the server produces the error, the aborted
//! transaction and the skip-to-Sync itself. The backend loop recognises that error by the
//! session's secret nonce and replaces it with Postern's refusal (SQLSTATE 42501 and the reason).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::BytesMut;
use futures_util::future::join_all;
use postern_audit::AuditLog;
use postern_identity::Identity;
use postern_policy::cedar::{
    Action as PolicyAction, Decision, PolicyEngine, RequestContext, Resource, SessionPolicy,
};
use postern_policy::guard::{self, GuardContext, Refusal};
use postern_sql::{Analysis, Classifier, Hazard, PreparedName, StatementFacts};
use postern_wire::backend::{self, Report, Severity, TransactionStatus};
use postern_wire::frame::Side;
use postern_wire::{Frame, FrameDecoder, WireError, frontend, limits, sqlstate};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::events::{self, Outcome, StatementRecord};
use crate::metrics::StatementDecision;
use crate::registry::{EndKind, EndRequest, LiveSession, SessionState};
use crate::upstream::quote_ident;
use crate::{Clock, Policies};
use names::{Names, Namespace};

mod hold;
mod names;

/// Why a session ended, for the log and the audit trail.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client sent Terminate.
    Terminated,
    /// The client closed the connection.
    ClientClosed,
    /// The database closed the connection (after a FATAL error, or a shutdown).
    UpstreamClosed,
    /// The client broke the protocol; it is told so before the connection closes.
    ClientProtocol(WireError),
    /// The database broke the protocol.
    UpstreamProtocol(WireError),
    Io(std::io::Error),
    /// Postern is shutting down; the client is told so.
    Shutdown,
    /// The identity's token expired: a session never outlives it.
    TokenExpired,
    /// An operator ended the session, or the identity's access was revoked.
    Ended(EndRequest),
    /// The session reached the longest a session of its role may last.
    MaxDuration(std::time::Duration),
    /// The session sent nothing for this long outside a transaction.
    IdleTimeout(std::time::Duration),
    /// The session sat this long inside a transaction block.
    IdleInTransactionTimeout(std::time::Duration),
}

impl SessionEnd {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Terminated => "terminated",
            Self::ClientClosed => "client_closed",
            Self::UpstreamClosed => "upstream_closed",
            Self::ClientProtocol(_) => "client_protocol_violation",
            Self::UpstreamProtocol(_) => "upstream_protocol_violation",
            Self::Io(_) => "io_error",
            Self::Shutdown => "shutdown",
            Self::TokenExpired => "token_expired",
            Self::Ended(request) => match request.kind {
                EndKind::Killed => "killed",
                EndKind::Revoked => "revoked",
                EndKind::LoggedOut => "logged_out",
            },
            Self::MaxDuration(_) => "max_duration",
            Self::IdleTimeout(_) => "idle_timeout",
            Self::IdleInTransactionTimeout(_) => "idle_in_transaction_timeout",
        }
    }

    /// The error behind an abnormal end, for the log.
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::ClientProtocol(e) | Self::UpstreamProtocol(e) => Some(e.to_string()),
            Self::Io(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// What the relay needs from the rest of Postern.
pub struct SessionContext {
    pub classifier: Arc<Classifier>,
    pub audit: AuditLog,
    /// How the upstream session took on its role: the escape guard refuses more in `set_role`.
    pub mode: postern_config::UpstreamMode,
    /// The fields every event of this session carries.
    pub base_event: Arc<postern_audit::EventBase>,
    /// Who the session is and the policy set to decide its statements with.
    pub policy: SessionPolicyContext,
    /// Where to cancel the upstream backend's running statement when Postern ends the session.
    pub upstream_cancel: (Arc<crate::upstream::Endpoint>, crate::cancel::BackendSlot),
    /// The target, whose admin login ends the backend of a session ended mid-statement.
    pub target: Arc<crate::Target>,
    /// This session in the registry of live sessions: its activity is reported there, and an
    /// end requested there ends it.
    pub live: Arc<LiveSession>,
    /// How long the session may last and idle.
    pub limits: postern_config::Limits,
    /// How long the session may outlive its token.
    pub token_grace: std::time::Duration,
    /// Where statements that need approval are held and granted.
    pub approvals: Arc<crate::approvals::Approvals>,
    /// Raised by the client's CancelRequests: the only way to cancel a held statement, which
    /// the server has not seen.
    pub cancel: Arc<crate::cancel::CancelSignal>,
    /// Counts statements by decision, and approval waits.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// A service identity's baseline on this target; `None` for a person.
    pub baseline: Option<crate::baseline::SessionBaseline>,
    /// The server connection is the client's only for a transaction at a time: what would
    /// outlive a transaction on it is refused.
    pub transaction_pooled: bool,
}

/// How long until `deadline`, zero if it has passed.
fn time_left(deadline: std::time::SystemTime) -> std::time::Duration {
    deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
}

/// What statement decisions need besides the statement.
pub struct SessionPolicyContext {
    pub policies: Arc<Policies>,
    pub identity: Arc<Identity>,
    /// The request as policy sees it; `now` is refreshed for every decision.
    pub request: RequestContext,
    pub clock: Clock,
}

/// The policy set a session last decided with and the session's Cedar view of its identity.
/// Rebuilt when a reload puts another set in force, so the next statement sees the new set.
struct PolicyView {
    engine: Arc<PolicyEngine>,
    session: SessionPolicy,
}

/// A statement the guard or policy refused: why (a label), what the client is told, and the
/// deciding policies.
struct Denied {
    reason: &'static str,
    message: String,
    policies: Vec<String>,
    /// For the ErrorResponse's detail: which policies decided, and where they are written.
    detail: Option<String>,
}

/// The guard's refusals are decided by no policy.
impl From<Refusal> for Denied {
    fn from(refusal: Refusal) -> Self {
        Self {
            reason: refusal.reason.label(),
            message: refusal.message,
            policies: Vec::new(),
            detail: None,
        }
    }
}

/// A statement forwarded and not yet finished.
struct InFlight {
    id: u64,
    /// Index of the ReadyForQuery that closes this statement's message cycle.
    epoch: u64,
    /// A simple Query (possibly several statements) rather than one Execute.
    simple: bool,
    started: Instant,
    outcome: Outcome,
}

/// A refusal whose stand-in error the server has yet to send.
struct PendingRefusal {
    epoch: u64,
    refusal: StandIn,
}

/// A statement policy allows: by which policies, and whether only once approved (`approvals`
/// not empty).
struct Checked {
    policies: Vec<String>,
    approvals: Vec<postern_policy::cedar::ApprovalRequirement>,
}

/// What the client is told in place of the stand-in's error.
struct StandIn {
    code: &'static str,
    message: String,
    /// The ErrorResponse's detail: for a policy refusal, the deciding policies and where they
    /// are written.
    detail: Option<String>,
}

impl From<(&'static str, String)> for StandIn {
    fn from((code, message): (&'static str, String)) -> Self {
        Self {
            code,
            message,
            detail: None,
        }
    }
}

/// What both loops share: refusals to rewrite and statements to account for. Held only for
/// short, non-async sections.
#[derive(Default)]
struct Tracker {
    refusals: HashMap<u64, PendingRefusal>,
    in_flight: VecDeque<InFlight>,
    /// Messages sent that each produce one ReadyForQuery (Query, FunctionCall, Sync).
    cycles_sent: u64,
    /// ReadyForQuery messages seen.
    cycles_done: u64,
    /// The number of the last refusal registered.
    last_refusal: u64,
    /// The client is gone or broke the protocol: the backend loop stops once every cycle sent
    /// has completed.
    draining: bool,
    /// The Syncs sent since the last statement forwarded, in case it was a COPY FROM STDIN.
    open_copy_window: Option<CopyWindow>,
    /// Windows ended by CopyDone or CopyFail, kept until their Syncs are accounted for.
    copy_windows: Vec<CopyWindow>,
    /// What each statement and portal name may hold, settled by the server's replies.
    names: Names,
    /// The transaction status of the last ReadyForQuery.
    last_status: Option<TransactionStatus>,
    /// The session did something a reset cannot undo safely (`LISTEN`: a notification already
    /// queued would reach the next client), so its connection is not reused.
    not_reusable: bool,
}

/// The Syncs a client sent after a statement, up to its CopyDone or CopyFail. In COPY IN mode
/// the server ignores Sync — client libraries send one right after an Execute without knowing
/// it starts a COPY (tokio-postgres and libpq both do) — so those Syncs produce no
/// ReadyForQuery. If the server answered the statement with CopyInResponse, the cycle count
/// skips them; otherwise they were ordinary Syncs.
/// <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-COPY>
///
/// A client that sends Sync in the middle of its copy data after the server has already failed
/// the COPY can still make the count drift; only the audit trail's outcomes suffer from that
/// (refusals are matched by their key, not by cycle).
struct CopyWindow {
    /// The statement after which these Syncs were sent.
    statement: u64,
    /// Their cycle numbers (the value of `cycles_sent` each took).
    syncs: Vec<u64>,
    /// The server answered `statement` with CopyInResponse.
    copy_in: bool,
}

/// Most Syncs one copy window remembers. A COPY needs one or two; a client sending more Syncs
/// than that between two statements is not copying, and its window is dropped.
const MAX_COPY_WINDOW_SYNCS: usize = 16;

impl Tracker {
    /// A statement (Query or Execute) is forwarded: a new copy window opens.
    fn statement_sent(&mut self, statement: u64) {
        self.open_copy_window = Some(CopyWindow {
            statement,
            syncs: Vec::new(),
            copy_in: false,
        });
    }

    /// A Sync is forwarded.
    fn sync_sent(&mut self) {
        let sync = self.cycles_sent;
        self.cycles_sent += 1;
        if let Some(window) = &mut self.open_copy_window {
            window.syncs.push(sync);
            if window.syncs.len() > MAX_COPY_WINDOW_SYNCS {
                self.open_copy_window = None;
            }
        }
    }

    /// A CopyDone or CopyFail is forwarded: the open window closes.
    fn copy_ended(&mut self) {
        if let Some(window) = self.open_copy_window.take()
            && !window.syncs.is_empty()
        {
            self.copy_windows.push(window);
        }
    }

    /// The server answered `statement` with CopyInResponse.
    fn copy_in_started(&mut self, statement: u64) {
        for window in self
            .open_copy_window
            .iter_mut()
            .chain(self.copy_windows.iter_mut())
        {
            if window.statement == statement {
                window.copy_in = true;
            }
        }
    }

    /// The first cycle from `cycle` on that the server answers with ReadyForQuery.
    fn answered(&self, mut cycle: u64) -> u64 {
        while self
            .open_copy_window
            .iter()
            .chain(&self.copy_windows)
            .any(|w| w.copy_in && w.syncs.contains(&cycle))
        {
            cycle += 1;
        }
        cycle
    }

    /// Whether the oldest statement in flight belongs to the cycle the server is answering.
    fn head_is_current(&self) -> bool {
        self.in_flight
            .front()
            .is_some_and(|s| self.answered(s.epoch) == self.answered(self.cycles_done))
    }
}

/// Resolves when one of the session's time limits ends it: its token's expiry (past the grace
/// period), its maximum duration, or an idle limit (outside or inside a transaction block).
/// One timer serves them all: every session waits on this, idle or not, and a timer is a
/// hundred bytes of the session's future.
async fn time_limits(ctx: &SessionContext) -> SessionEnd {
    let limits = ctx.limits;
    let started = std::time::Instant::now();
    // `None`: too far ahead to ever come.
    let token_end = started
        .checked_add(time_left(ctx.policy.identity.expires_at).saturating_add(ctx.token_grace));
    let max_end = limits
        .max_duration
        .and_then(|limit| Some((started.checked_add(limit)?, limit)));
    let shortest_idle = [limits.idle_timeout, limits.idle_in_transaction_timeout]
        .into_iter()
        .flatten()
        .min();
    loop {
        let now = std::time::Instant::now();
        if token_end.is_some_and(|end| now >= end) {
            return SessionEnd::TokenExpired;
        }
        if let Some((end, limit)) = max_end
            && now >= end
        {
            return SessionEnd::MaxDuration(limit);
        }
        let mut wake = [token_end, max_end.map(|(end, _)| end)]
            .into_iter()
            .flatten()
            .min();
        if let Some(shortest) = shortest_idle {
            let (state, since) = ctx.live.state_since();
            let (limit, end): (_, fn(std::time::Duration) -> SessionEnd) = match state {
                SessionState::Idle => (limits.idle_timeout, SessionEnd::IdleTimeout),
                SessionState::IdleInTransaction | SessionState::IdleInFailedTransaction => (
                    limits.idle_in_transaction_timeout,
                    SessionEnd::IdleInTransactionTimeout,
                ),
                SessionState::Active | SessionState::WaitingForApproval => {
                    (None, SessionEnd::IdleTimeout)
                }
            };
            // Look again when this state's limit runs out, or sooner: the state may change to
            // one with a shorter limit meanwhile.
            let mut look = now + shortest;
            if let Some(limit) = limit {
                if since.elapsed() >= limit {
                    return end(limit);
                }
                look = look.min(since + limit);
            }
            wake = Some(wake.map_or(look, |wake| wake.min(look)));
        }
        match wake {
            Some(wake) => tokio::time::sleep_until(wake.into()).await,
            None => return std::future::pending().await,
        }
    }
}

/// How long a session ending on a client's protocol violation waits for the statements already
/// forwarded to finish, so their results reach the client before the FATAL error.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Relays until either side ends. `client_buffer` holds client bytes already read. Returns,
/// besides why it ended, the client's write half (for a farewell) and the upstream connection
/// with its unread bytes if the session left it reusable: the client ended the session, every
/// message was answered, no transaction block is open and nothing was done that a reset cannot
/// undo. Otherwise the upstream has been told to terminate.
pub async fn relay<C, U>(
    ctx: &SessionContext,
    client: C,
    client_buffer: BytesMut,
    upstream: U,
    mut upstream_buffer: BytesMut,
    statements: &mut u64,
    shutdown: &tokio_util::sync::CancellationToken,
) -> (SessionEnd, tokio::io::WriteHalf<C>, Option<(U, BytesMut)>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut nonce = [0u8; 8];
    crate::target::fill_random(&mut nonce);
    let marker = format!("postern_refused_{}_", hex::encode(nonce));
    // The handshake ends on the server's ReadyForQuery, outside any transaction.
    let tracker = Mutex::new(Tracker {
        last_status: Some(TransactionStatus::Idle),
        ..Tracker::default()
    });
    let notices = Notices::default();
    let end = {
        // Borrowed by its loop rather than moved in: a moved-in `self` would be stored twice in
        // the loop's future (as the argument and as the binding), for the session's life.
        let mut frontend = Frontend {
            ctx,
            marker: &marker,
            tracker: &tracker,
            cycle: 0,
            next_id: statements,
            view: None,
            sql_prepared: HashMap::new(),
            request: ctx.policy.request.clone(),
            notices: &notices,
            reason: None,
            bound_params: HashMap::new(),
            anomalies: Vec::new(),
        };
        let client_to_upstream = frontend.run(&mut client_read, client_buffer, &mut upstream_write);
        let upstream_to_client = backend_loop(
            ctx,
            &marker,
            &tracker,
            &mut upstream_read,
            &mut upstream_buffer,
            &mut client_write,
            &notices,
        );
        let mut upstream_to_client = std::pin::pin!(upstream_to_client);
        let end = tokio::select! {
            end = client_to_upstream => end,
            end = &mut upstream_to_client => end,
            () = shutdown.cancelled() => SessionEnd::Shutdown,
            request = ctx.live.end_requested() => SessionEnd::Ended(request),
            end = time_limits(ctx) => end,
        };
        if matches!(end, SessionEnd::ClientProtocol(_)) {
            // What was forwarded before the violation runs to completion, as it would on the
            // server itself: relay its results before saying goodbye.
            let caught_up = {
                let mut tracker = tracker.lock().unwrap_or_else(PoisonError::into_inner);
                tracker.draining = true;
                tracker.answered(tracker.cycles_done) >= tracker.cycles_sent
            };
            if !caught_up {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, &mut upstream_to_client).await;
            }
        }
        end
    };
    if matches!(
        end,
        SessionEnd::Shutdown
            | SessionEnd::TokenExpired
            | SessionEnd::Ended(_)
            | SessionEnd::MaxDuration(_)
            | SessionEnd::IdleTimeout(_)
            | SessionEnd::IdleInTransactionTimeout(_)
    ) {
        // Closing the connection alone would let a running statement, and whatever is queued
        // behind it in the backend's socket, run to the end and commit. When the session's access
        // ended (expiry, kill, revocation) the backend itself is ended through the admin login:
        // a cancel alone would stop the running statement and let the queued ones run. At
        // shutdown, or if that fails, the running statement is cancelled.
        let busy = {
            let tracker = tracker.lock().unwrap_or_else(PoisonError::into_inner);
            tracker.cycles_done < tracker.cycles_sent
        };
        let (endpoint, slot) = &ctx.upstream_cancel;
        // The admin login's and the cancel's futures are boxed: they are large and rarely run,
        // and inline they would be part of every idle session's future.
        if busy && let Some(key) = slot.get() {
            let terminated = match end {
                SessionEnd::Shutdown => false,
                _ => match Box::pin(ctx.target.terminate_backend(key.process_id)).await {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(error = %error, "could not end the backend of an ended session; cancelling its statement");
                        false
                    }
                },
            };
            if !terminated
                && let Err(error) = Box::pin(crate::upstream::cancel(endpoint, key)).await
            {
                tracing::warn!(error = %error, "could not cancel the running statement of an ending session");
            }
        }
    }
    let reusable = matches!(end, SessionEnd::Terminated | SessionEnd::ClientClosed) && {
        let tracker = tracker.lock().unwrap_or_else(PoisonError::into_inner);
        tracker.answered(tracker.cycles_done) >= tracker.cycles_sent
            && tracker.in_flight.is_empty()
            && tracker.open_copy_window.as_ref().is_none_or(|w| !w.copy_in)
            && tracker.last_status == Some(TransactionStatus::Idle)
            && !tracker.not_reusable
    };
    if reusable {
        return (
            end,
            client_write,
            Some((upstream_read.unsplit(upstream_write), upstream_buffer)),
        );
    }
    if !matches!(end, SessionEnd::UpstreamClosed) {
        // Let the database end the backend cleanly rather than log an unexpected EOF.
        let mut out = BytesMut::new();
        frontend::encode_terminate(&mut out);
        let _ = upstream_write.write_all(&out).await;
    }
    let farewell = match &end {
        SessionEnd::ClientProtocol(error) => Some((
            sqlstate::PROTOCOL_VIOLATION,
            format!("protocol violation: {error}"),
        )),
        SessionEnd::Shutdown => Some((
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection because Postern is shutting down".to_owned(),
        )),
        SessionEnd::TokenExpired => {
            let identity = &ctx.policy.identity;
            let at = humantime::format_rfc3339_seconds(identity.expires_at);
            Some((
                sqlstate::ADMIN_SHUTDOWN,
                if identity.is_from_certificate() {
                    format!(
                        "terminating connection because your client certificate expired at \
                         {at}: connect again with your renewed certificate"
                    )
                } else {
                    format!(
                        "terminating connection because your token expired at {at}: log in \
                         again for a new token"
                    )
                },
            ))
        }
        SessionEnd::MaxDuration(limit) => Some((
            sqlstate::ADMIN_SHUTDOWN,
            format!(
                "terminating connection: sessions as {} on target \"{}\" last at most {}; \
                 connect again",
                ctx.policy.request.role,
                ctx.policy.request.target,
                humantime::format_duration(*limit)
            ),
        )),
        SessionEnd::IdleTimeout(limit) => Some((
            sqlstate::IDLE_SESSION_TIMEOUT,
            format!(
                "terminating connection due to idle-session timeout: idle for {}; connect again",
                humantime::format_duration(*limit)
            ),
        )),
        SessionEnd::IdleInTransactionTimeout(limit) => Some((
            sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            format!(
                "terminating connection due to idle-in-transaction timeout: idle in a \
                 transaction for {}; the transaction was rolled back",
                humantime::format_duration(*limit)
            ),
        )),
        SessionEnd::Ended(request) => Some((
            sqlstate::ADMIN_SHUTDOWN,
            match request.kind {
                EndKind::Killed => format!(
                    "terminating connection: your session was ended by {}: {}",
                    request.by, request.reason
                ),
                EndKind::Revoked => format!(
                    "terminating connection: access for {} was revoked by {}: {}",
                    ctx.policy.identity.subject, request.by, request.reason
                ),
                EndKind::LoggedOut => format!(
                    "terminating connection: {} logged out at the identity provider ({}); \
                     log in again for a new token",
                    ctx.policy.identity.subject, request.by
                ),
            },
        )),
        _ => None,
    };
    if let Some((code, message)) = farewell {
        let mut out = BytesMut::new();
        Report::new(Severity::Fatal, code, &message).encode(&mut out);
        let _ = client_write.write_all(&out).await;
    }
    (end, client_write, None)
}

/// Per-session memory of the extended protocol, to name what an Execute runs.
struct Frontend<'a> {
    ctx: &'a SessionContext,
    marker: &'a str,
    tracker: &'a Mutex<Tracker>,
    /// The message cycle of the message being decided: the number of Syncs, Queries and
    /// FunctionCalls before it (what `Tracker::cycles_sent` will be when it is forwarded).
    cycle: u64,
    next_id: &'a mut u64,
    view: Option<PolicyView>,
    /// SQL-level prepared statements (`PREPARE name AS ...`) by name, with the facts of every
    /// statement prepared under the name in this session: an `EXECUTE name` is decided with all
    /// of them. Postern cannot tell which one the server holds (a `PREPARE` of a name in use
    /// fails there, a `DEALLOCATE` in an aborted transaction block does nothing), so it forgets
    /// none: an `EXECUTE` of a name the server no longer has fails there anyway.
    sql_prepared: HashMap<String, Vec<StatementFacts>>,
    /// The request as policy sees it, kept for the session so a statement only refreshes
    /// `now`. Its `search_path` is every schema any path of this session has named, starting
    /// with the startup path: a table written without a schema is asked about in each (a path
    /// set inside a transaction that rolls back, or in a statement that fails, may or may not be
    /// in force, so the union is what surely covers the server's choice).
    request: RequestContext,
    /// NoticeResponses for the client (a held statement's notices); the backend loop writes
    /// them between the server's messages.
    notices: &'a Notices,
    /// The reason given with `SET postern.reason = '…'`, for the approval requests it makes.
    reason: Option<String>,
    /// The parameter bytes last bound to each portal (a view into the Bind frame, not a copy):
    /// a statement-scoped grant covers one statement with exactly these values. Hashed only
    /// when a statement is held, never on the way of every Bind.
    bound_params: HashMap<String, bytes::Bytes>,
    /// `anomaly` events the baseline raised while deciding the current message, recorded with
    /// its own events.
    anomalies: Vec<Map<String, Value>>,
}

/// Most distinct statements one SQL-level prepared statement name is remembered with: a
/// `PREPARE` that would add another is refused (the name's `EXECUTE` is decided with all of
/// them, so this bounds both memory and the work of each `EXECUTE`).
const MAX_STATEMENTS_PER_PREPARED_NAME: usize = 16;

/// Most SQL-level prepared statement names a session remembers; a `PREPARE` of another is
/// refused. The server keeps each prepared statement too, at a greater cost.
const MAX_PREPARED_NAMES: usize = 4096;

/// What to do with one client message.
enum Action {
    Forward(Frame),
    /// A simple Query or FunctionCall, refused (42501, this message): stand in a Query that
    /// fails to parse.
    RefuseQuery(String, Option<String>),
    /// An extended-protocol message, refused: stand in a Parse (of `statement`) that fails.
    RefuseExtended {
        statement: String,
        code: &'static str,
        message: String,
        detail: Option<String>,
    },
    /// Forward after the audit event at `event` is written; refuse if it cannot be.
    AuditThenForward {
        frame: Frame,
        event: usize,
        id: u64,
        simple: bool,
    },
    /// Allowed only once approved: hold it (see `session/hold.rs`).
    Hold(Box<hold::Held>),
}

impl<'a> Frontend<'a> {
    async fn run<R, W>(
        &mut self,
        client: &mut R,
        mut buffer: BytesMut,
        upstream: &mut W,
    ) -> SessionEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let decoder = FrameDecoder::new(Side::Frontend, limits::MAX_FRONTEND_MESSAGE_LENGTH);
        loop {
            let mut frames = Vec::new();
            let mut violation = None;
            loop {
                match decoder.decode(&mut buffer) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(error) => {
                        violation = Some(error);
                        break;
                    }
                }
            }
            // A message Postern cannot read is never forwarded: what the guard cannot read, it
            // cannot check, and an Execute whose portal it cannot name it cannot record.
            // Everything before it still goes through.
            if let Some((index, error)) = frames
                .iter()
                .enumerate()
                .find_map(|(i, f)| unreadable(f).map(|e| (i, e)))
            {
                frames.truncate(index);
                violation = Some(error);
            }
            if frames.is_empty() && violation.is_none() {
                // Read only when no whole message is buffered: a held statement reads ahead.
                match client.read_buf(&mut buffer).await {
                    Ok(0) => return SessionEnd::ClientClosed,
                    Ok(_) => {}
                    Err(error) => return SessionEnd::Io(error),
                }
                continue;
            }
            let terminated = frames.iter().any(|f| f.tag() == frontend::TERMINATE);
            if !frames.is_empty() {
                // Boxed: deciding a batch has a large state, needed only while it runs; inline,
                // every idle session's future would carry it.
                let out = match Box::pin(self.process(frames, client, &mut buffer, upstream)).await
                {
                    Ok(out) => out,
                    Err(end) => return end,
                };
                if let Err(error) = upstream.write_all(&out).await {
                    return SessionEnd::Io(error);
                }
            }
            if let Some(error) = violation {
                return SessionEnd::ClientProtocol(error);
            }
            if terminated {
                return SessionEnd::Terminated;
            }
        }
    }

    /// Decides on a batch of messages, writes their audit events (together), and returns the
    /// bytes to send upstream. A statement held for approval is waited on in its place: what
    /// comes before it is sent first, what comes after waits with it.
    async fn process<R, W>(
        &mut self,
        frames: Vec<Frame>,
        client: &mut R,
        buffer: &mut BytesMut,
        upstream: &mut W,
    ) -> Result<BytesMut, SessionEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut actions = Vec::with_capacity(frames.len());
        let mut audit_events = Vec::new();
        // Only this loop sends, so the count cannot move while the batch is decided.
        self.cycle = self.tracker().cycles_sent;
        for frame in frames {
            let tag = frame.tag();
            if tag == frontend::TERMINATE {
                // Not forwarded: the relay ends the upstream connection itself, or keeps it for
                // the next session.
                break;
            }
            actions.push(self.decide(frame, &mut audit_events));
            audit_events.extend(self.anomalies.drain(..).map(postern_audit::Event::from));
            if matches!(
                tag,
                frontend::QUERY | frontend::SYNC | frontend::FUNCTION_CALL
            ) {
                self.cycle += 1;
            }
        }
        let results = join_all(
            audit_events
                .into_iter()
                .map(|event| self.ctx.audit.record(event)),
        )
        .await;

        let mut out = BytesMut::new();
        for action in actions {
            match action {
                Action::Hold(held) => {
                    if !out.is_empty() {
                        upstream.write_all(&out).await.map_err(SessionEnd::Io)?;
                        out.clear();
                    }
                    // Boxed: a wait for approval is rare, and inline its state would sit in every
                    // session's future for as long as the session lasts.
                    let resolved = Box::pin(self.hold(*held, client, buffer)).await?;
                    let mut tracker = self.tracker();
                    match resolved {
                        hold::Resolved::Forward { frame, id, simple } => {
                            Self::send_statement(&mut tracker, frame, id, simple, &mut out);
                        }
                        hold::Resolved::Refuse { simple, refusal } => {
                            self.ctx.live.statement_refused();
                            if simple {
                                self.stand_in_query(&mut tracker, refusal, &mut out);
                            } else {
                                let name = self.stand_in_name();
                                self.stand_in_parse(&mut tracker, &name, refusal, &mut out);
                            }
                        }
                    }
                }
                other => {
                    let mut tracker = self.tracker();
                    self.apply(&mut tracker, other, &results, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// A forwarded Query or Execute: accounted for, then sent.
    fn send_statement(
        tracker: &mut Tracker,
        frame: Frame,
        id: u64,
        simple: bool,
        out: &mut BytesMut,
    ) {
        tracker.statement_sent(id);
        let epoch = tracker.cycles_sent;
        tracker.in_flight.push_back(InFlight {
            id,
            epoch,
            simple,
            started: Instant::now(),
            outcome: Outcome::default(),
        });
        if simple {
            tracker.cycles_sent += 1;
        }
        out.extend_from_slice(frame.raw());
    }

    /// Turns one decided message into bytes for the server.
    fn apply(
        &self,
        tracker: &mut Tracker,
        action: Action,
        results: &[Result<postern_audit::EventReceipt, postern_audit::AuditError>],
        out: &mut BytesMut,
    ) {
        match action {
            Action::Forward(frame) => {
                match frame.tag() {
                    frontend::SYNC => tracker.sync_sent(),
                    frontend::COPY_DONE | frontend::COPY_FAIL => tracker.copy_ended(),
                    _ => {}
                }
                out.extend_from_slice(frame.raw());
            }
            Action::AuditThenForward {
                frame,
                event,
                id,
                simple,
            } => {
                let written = results.get(event).map(|r| r.as_ref().map(|_| ()));
                match written {
                    Some(Ok(())) => Self::send_statement(tracker, frame, id, simple, out),
                    other => {
                        let message = match other {
                            Some(Err(error)) => {
                                tracing::error!(error = %error, "audit log write failed; statement refused");
                                error.client_message()
                            }
                            _ => "the audit log could not record this statement".to_owned(),
                        };
                        let refusal = StandIn::from((sqlstate::IO_ERROR, message));
                        if simple {
                            self.stand_in_query(tracker, refusal, out);
                        } else {
                            self.stand_in_parse(tracker, "postern_refused", refusal, out);
                        }
                    }
                }
            }
            Action::RefuseQuery(message, detail) => {
                self.ctx.live.statement_refused();
                self.ctx.metrics.statement(StatementDecision::Refused);
                let refusal = StandIn {
                    code: sqlstate::INSUFFICIENT_PRIVILEGE,
                    message,
                    detail,
                };
                self.stand_in_query(tracker, refusal, out);
            }
            Action::RefuseExtended {
                statement,
                code,
                message,
                detail,
            } => {
                self.ctx.live.statement_refused();
                self.ctx.metrics.statement(StatementDecision::Refused);
                let refusal = StandIn {
                    code,
                    message,
                    detail,
                };
                self.stand_in_parse(tracker, &statement, refusal, out);
            }
            Action::Hold(_) => {
                // `process` waits on held statements itself.
            }
        }
    }

    fn decide(&mut self, frame: Frame, audit_events: &mut Vec<postern_audit::Event>) -> Action {
        match frame.tag() {
            frontend::QUERY => {
                // `run` has already ended the session on a Query it cannot read.
                let Ok(sql) = frontend::query_text(&frame) else {
                    return Action::RefuseQuery(unreadable_refusal().message, None);
                };
                if let Some(reason) = hold::reason_setting(&sql) {
                    return self.take_reason(reason, frame, audit_events);
                }
                let analysis = self.ctx.classifier.analyze(&sql);
                let record = record_of(&analysis);
                let verdict = self.check(&analysis);
                let id = self.next_statement_id();
                match verdict {
                    Ok(checked) if !checked.approvals.is_empty() => {
                        self.forget_changed_names(&analysis);
                        self.remember_prepared(&analysis);
                        Action::Hold(Box::new(hold::Held {
                            frame,
                            id,
                            record,
                            policies: checked.policies,
                            approvals: checked.approvals,
                            simple: true,
                            params_hash: None,
                        }))
                    }
                    Ok(checked) => {
                        self.forget_changed_names(&analysis);
                        self.remember_prepared(&analysis);
                        self.allowed(frame, id, &record, &checked.policies, true, audit_events)
                    }
                    Err(denied) => {
                        audit_events.push(events::statement(
                            &self.ctx.base_event,
                            id,
                            "simple",
                            &record,
                            Some((denied.reason, denied.message.as_str())),
                            &denied.policies,
                        ));
                        Action::RefuseQuery(denied.message, denied.detail)
                    }
                }
            }
            frontend::PARSE => {
                // `run` has already ended the session on a Parse it cannot read.
                let Ok(parse) = frontend::parse(&frame) else {
                    return Action::RefuseExtended {
                        statement: self.stand_in_name(),
                        code: sqlstate::PROTOCOL_VIOLATION,
                        message: unreadable_refusal().message,
                        detail: None,
                    };
                };
                let statement = parse.statement.to_owned();
                let analysis = self.ctx.classifier.analyze(&parse.sql);
                let record = Arc::new(record_of(&analysis));
                let verdict = self.check(&analysis).map(|_| ()).map_err(|denied| {
                    (
                        denied.reason,
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        denied.message,
                        denied.policies,
                        denied.detail,
                    )
                });
                let verdict = verdict.and_then(|()| {
                    let held = self.tracker().names.candidates(
                        Namespace::Statement,
                        &statement,
                        self.cycle,
                    );
                    // Prepared again under the same name with another text: the server
                    // refuses that if the name still holds the first one, and then runs the
                    // first text under this name; Postern refuses too, so that what runs under
                    // the name stays what it records.
                    if !statement.is_empty() && held.may_hold_other_than(&[record.sql()]) {
                        Err((
                            NAME_REUSED,
                            sqlstate::DUPLICATE_PREPARED_STATEMENT,
                            format!(
                                "prepared statement \"{}\" was already prepared in this session \
                                 with another text: close it before preparing it again",
                                echo_name(&statement)
                            ),
                            Vec::new(),
                            None,
                        ))
                    } else {
                        Ok(())
                    }
                });
                match verdict {
                    Ok(()) => {
                        self.forget_changed_names(&analysis);
                        self.tracker().names.sent(
                            Namespace::Statement,
                            &statement,
                            self.cycle,
                            vec![record],
                        );
                        Action::Forward(frame)
                    }
                    Err((reason, code, message, policies, detail)) => {
                        // A named statement keeps its text on the server; the unnamed one is
                        // dropped by the stand-in Parse if it runs, and what it held stays a
                        // candidate in case it does not.
                        let id = self.next_statement_id();
                        audit_events.push(events::statement(
                            &self.ctx.base_event,
                            id,
                            "extended",
                            &record,
                            Some((reason, message.as_str())),
                            &policies,
                        ));
                        Action::RefuseExtended {
                            statement,
                            code,
                            message,
                            detail,
                        }
                    }
                }
            }
            frontend::BIND => {
                let Ok((portal, statement)) = frontend::bind_names(&frame) else {
                    return Action::RefuseExtended {
                        statement: self.stand_in_name(),
                        code: sqlstate::PROTOCOL_VIOLATION,
                        message: unreadable_refusal().message,
                        detail: None,
                    };
                };
                let (held, bound) = {
                    let tracker = self.tracker();
                    let held =
                        tracker
                            .names
                            .candidates(Namespace::Statement, statement, self.cycle);
                    let bound = tracker
                        .names
                        .candidates(Namespace::Portal, portal, self.cycle);
                    (held, bound)
                };
                let mut records = held.records;
                // A statement this session did not Parse: one made by SQL `PREPARE` (the
                // namespaces are shared), or none at all.
                if records.is_empty() || self.sql_prepared.contains_key(statement) {
                    records.push(self.described(&format!("EXECUTE {}", quote_ident(statement))));
                }
                let texts: Vec<&str> = records.iter().map(|r| r.sql()).collect();
                // As for statements: the server refuses a named portal that still exists
                // (within a transaction block) and would run the first one under this name.
                let reused = !portal.is_empty() && bound.may_hold_other_than(&texts);
                drop(texts);
                match records.last() {
                    Some(record) if reused => {
                        let record = Arc::clone(record);
                        let message = format!(
                            "portal \"{}\" was already bound in this session to another \
                             statement: close it before binding it again",
                            echo_name(portal)
                        );
                        let id = self.next_statement_id();
                        audit_events.push(events::statement(
                            &self.ctx.base_event,
                            id,
                            "extended",
                            &record,
                            Some((NAME_REUSED, message.as_str())),
                            &[],
                        ));
                        Action::RefuseExtended {
                            statement: self.stand_in_name(),
                            code: sqlstate::DUPLICATE_CURSOR,
                            message,
                            detail: None,
                        }
                    }
                    _ => {
                        self.tracker()
                            .names
                            .sent(Namespace::Portal, portal, self.cycle, records);
                        // The parameters follow the two names in the Bind's body.
                        let skip = 5 + portal.len() + 1 + statement.len() + 1;
                        let params = frame.raw().slice(skip.min(frame.raw().len())..);
                        if self.bound_params.len() >= MAX_PREPARED_NAMES
                            && !self.bound_params.contains_key(portal)
                        {
                            self.bound_params.clear();
                        }
                        self.bound_params.insert(portal.to_owned(), params);
                        Action::Forward(frame)
                    }
                }
            }
            frontend::CLOSE => {
                if let Ok((kind, name)) = frontend::target(&frame) {
                    let namespace = if kind == b'S' {
                        Namespace::Statement
                    } else {
                        Namespace::Portal
                    };
                    self.tracker()
                        .names
                        .sent(namespace, name, self.cycle, Vec::new());
                }
                Action::Forward(frame)
            }
            frontend::EXECUTE => {
                // Every Execute is recorded, whatever it names: a portal this session did not
                // Bind may be a cursor made by SQL `DECLARE` (the namespaces are shared).
                let (portal, max_rows) = frontend::execute(&frame)
                    .map(|e| (e.portal, e.max_rows))
                    .unwrap_or_default();
                let mut records = self
                    .tracker()
                    .names
                    .candidates(Namespace::Portal, portal, self.cycle)
                    .records;
                // What runs, unless an unanswered message failed: the latest candidate, or the
                // FETCH an Execute of a portal this session did not Bind is.
                let latest = match records.last() {
                    Some(latest) => Arc::clone(latest),
                    None => {
                        let count = if max_rows > 0 {
                            max_rows.to_string()
                        } else {
                            "ALL".to_owned()
                        };
                        let fetch =
                            self.described(&format!("FETCH {count} FROM {}", quote_ident(portal)));
                        records.push(Arc::clone(&fetch));
                        fetch
                    }
                };
                let id = self.next_statement_id();
                // Decided again at every execution: the policy set may have been reloaded, or
                // a condition (time of day) may have changed since the Parse. When the portal
                // may hold one of several statements, each must be allowed.
                let mut policies = Vec::new();
                let mut approvals = Vec::new();
                for candidate in &records {
                    match self.check(&candidate.analysis) {
                        Ok(checked) => {
                            policies.extend(checked.policies);
                            approvals.extend(checked.approvals);
                        }
                        Err(denied) => {
                            audit_events.push(events::statement(
                                &self.ctx.base_event,
                                id,
                                "extended",
                                candidate,
                                Some((denied.reason, denied.message.as_str())),
                                &denied.policies,
                            ));
                            return Action::RefuseExtended {
                                statement: self.stand_in_name(),
                                code: sqlstate::INSUFFICIENT_PRIVILEGE,
                                message: denied.message,
                                detail: denied.detail,
                            };
                        }
                    }
                }
                policies.sort_unstable();
                policies.dedup();
                for candidate in &records {
                    self.remember_prepared(&candidate.analysis);
                }
                if !approvals.is_empty() {
                    // Parameters Postern did not see bound (a cursor made by SQL `DECLARE`, a
                    // portal forgotten past the bound) match no statement-scoped grant.
                    let params_hash = self.bound_params.get(portal).map_or_else(
                        || {
                            let mut nonce = [0u8; 16];
                            crate::target::fill_random(&mut nonce);
                            format!("unknown-{}", hex::encode(nonce))
                        },
                        |params| hold::params_hash(params),
                    );
                    return Action::Hold(Box::new(hold::Held {
                        frame,
                        id,
                        record: StatementRecord {
                            analysis: Arc::clone(&latest.analysis),
                        },
                        policies,
                        approvals,
                        simple: false,
                        params_hash: Some(params_hash),
                    }));
                }
                self.allowed(frame, id, &latest, &policies, false, audit_events)
            }
            frontend::FUNCTION_CALL => Action::RefuseQuery(guard::check_fastpath().message, None),
            _ => Action::Forward(frame),
        }
    }

    /// `SET postern.reason = '…'`: kept for the approval requests of this session, never sent
    /// to the server; a harmless stand-in answers the client as the server would.
    fn take_reason(
        &mut self,
        reason: String,
        frame: Frame,
        audit_events: &mut Vec<postern_audit::Event>,
    ) -> Action {
        let mut bytes = BytesMut::new();
        frontend::encode_query(hold::NOTED_REASON_SQL, &mut bytes);
        let decoder = FrameDecoder::new(Side::Frontend, limits::MAX_FRONTEND_MESSAGE_LENGTH);
        let Ok(Some(stand_in)) = decoder.decode(&mut bytes) else {
            return Action::RefuseQuery(unreadable_refusal().message, None);
        };
        self.reason = Some(reason);
        let sql = frontend::query_text(&frame).unwrap_or_default();
        let analysis = self.ctx.classifier.analyze(&sql);
        let id = self.next_statement_id();
        self.allowed(stand_in, id, &record_of(&analysis), &[], true, audit_events)
    }

    /// An allowed Query or Execute: reported to the registry, its audit event queued, forwarded
    /// once that is written.
    fn allowed(
        &self,
        frame: Frame,
        id: u64,
        record: &StatementRecord,
        policies: &[String],
        simple: bool,
        audit_events: &mut Vec<postern_audit::Event>,
    ) -> Action {
        self.ctx.live.statement_started(&record.analysis);
        self.ctx.metrics.statement(StatementDecision::Allowed);
        let protocol = if simple { "simple" } else { "extended" };
        audit_events.push(events::statement(
            &self.ctx.base_event,
            id,
            protocol,
            record,
            None,
            policies,
        ));
        Action::AuditThenForward {
            frame,
            event: audit_events.len() - 1,
            id,
            simple,
        }
    }

    /// The escape guard, then policy. The guard is the floor: policy lifts it only by granting
    /// `raw` (unparseable text, `DO`, code the guard cannot see into) or `dcl` (role management)
    /// on the target, asked at the moment the guard would refuse, so that conditions on time or
    /// address hold for those grants too.
    fn check(&mut self, analysis: &Analysis) -> Result<Checked, Denied> {
        self.follow_search_path(analysis);
        self.request.now = (self.ctx.policy.clock)();
        let mode = self.ctx.mode;
        // `EXECUTE name` is decided with what every `PREPARE name` prepared, `FETCH` with the
        // query of every `DECLARE` the cursor may be open on.
        let mut executed: Vec<StatementFacts> = Vec::new();
        for statement in &analysis.statements {
            match &statement.prepared {
                Some(PreparedName::Execute(name)) => {
                    executed.extend(self.sql_prepared.get(name).into_iter().flatten().cloned());
                }
                Some(PreparedName::Fetch(name)) => {
                    executed.extend(self.tracker().names.cursor_queries(name).cloned());
                }
                _ => {}
            }
        }
        self.check_prepared_bounds(analysis)?;
        if self.ctx.transaction_pooled {
            guard::check_transaction_pooling(analysis).map_err(Denied::from)?;
        }
        let view = policy_view(&mut self.view, self.ctx);
        let request = &self.request;
        let floor = GuardContext {
            mode,
            may_dcl: false,
            may_raw: false,
        };
        if let Err(refusal) = guard::check(analysis, &floor) {
            let target = || Resource::Target {
                name: request.target.clone(),
            };
            let grants = |action| {
                view.session
                    .decide(&view.engine, request, action, target())
                    .is_allowed()
            };
            let lifted = GuardContext {
                mode,
                may_dcl: grants(PolicyAction::Dcl),
                may_raw: grants(PolicyAction::Raw),
            };
            if lifted == floor {
                return Err(refusal.into());
            }
            guard::check(analysis, &lifted).map_err(Denied::from)?;
        }
        let (mut allowed, mut approvals) =
            match view
                .session
                .decide_analysis(&view.engine, request, analysis)
            {
                Decision::Allow {
                    policies,
                    approvals,
                } => (policies, approvals),
                Decision::Deny {
                    reason,
                    message,
                    policies,
                    ..
                } => {
                    let detail = Some(policy_detail(
                        &view.engine,
                        &policies,
                        &self.ctx.policy.identity,
                    ));
                    return Err(Denied {
                        reason: reason.label(),
                        message,
                        policies,
                        detail,
                    });
                }
            };
        for prepared in &executed {
            match view
                .session
                .decide_statement(&view.engine, request, prepared)
            {
                Decision::Allow {
                    policies,
                    approvals: more,
                } => {
                    allowed.extend(policies);
                    approvals.extend(more);
                }
                Decision::Deny {
                    reason,
                    message,
                    policies,
                    ..
                } => {
                    let detail = Some(policy_detail(
                        &view.engine,
                        &policies,
                        &self.ctx.policy.identity,
                    ));
                    return Err(Denied {
                        reason: reason.label(),
                        message,
                        policies,
                        detail,
                    });
                }
            }
        }
        // Last, and only for what the guard and policy allowed: the baseline narrows, never
        // widens.
        if let Some(baseline) = &self.ctx.baseline {
            let seen = baseline.statement(analysis, self.request.now, &self.ctx.base_event);
            if let Some(anomaly) = seen.anomaly {
                self.ctx.metrics.anomaly("statement");
                self.anomalies.push(anomaly);
            }
            if let Some(message) = seen.refusal {
                return Err(Denied {
                    reason: "baseline",
                    message,
                    policies: allowed,
                    detail: None,
                });
            }
        }
        Ok(Checked {
            policies: allowed,
            approvals,
        })
    }

    /// Refuses a `PREPARE` that would make [`Self::sql_prepared`] outgrow its bounds.
    fn check_prepared_bounds(&self, analysis: &Analysis) -> Result<(), Denied> {
        let mut new_names = 0;
        for statement in &analysis.statements {
            if let Some(PreparedName::Declare { name, .. }) = &statement.prepared {
                let (queries, known, names) = self.tracker().names.cursor_count(name, statement);
                let message = if queries >= MAX_STATEMENTS_PER_PREPARED_NAME && !known {
                    format!(
                        "cursor \"{}\" was declared in this transaction with \
                         {MAX_STATEMENTS_PER_PREPARED_NAME} other queries, and Postern decides \
                         its FETCH with each of them: declare this one under another name",
                        echo_name(name)
                    )
                } else if queries == 0 && names >= MAX_PREPARED_NAMES {
                    format!(
                        "this session has {MAX_PREPARED_NAMES} cursors open, the most Postern \
                         remembers: close some or end the transaction"
                    )
                } else {
                    continue;
                };
                return Err(Denied {
                    reason: NAME_REUSED,
                    message,
                    policies: Vec::new(),
                    detail: None,
                });
            }
            let Some(PreparedName::Prepare(name)) = &statement.prepared else {
                continue;
            };
            let message = match self.sql_prepared.get(name) {
                Some(known)
                    if known.len() >= MAX_STATEMENTS_PER_PREPARED_NAME
                        && !known.contains(statement) =>
                {
                    format!(
                        "prepared statement \"{}\" was prepared in this session with \
                         {MAX_STATEMENTS_PER_PREPARED_NAME} other statements, and Postern decides \
                         its EXECUTE with each of them: prepare this one under another name",
                        echo_name(name)
                    )
                }
                Some(_) => continue,
                None if self.sql_prepared.len() + new_names < MAX_PREPARED_NAMES => {
                    new_names += 1;
                    continue;
                }
                None => format!(
                    "this session has prepared {MAX_PREPARED_NAMES} statement names, the most \
                     Postern remembers: reuse a name for the same statement, or open another \
                     session"
                ),
            };
            return Err(Denied {
                reason: NAME_REUSED,
                message,
                policies: Vec::new(),
                detail: None,
            });
        }
        Ok(())
    }

    /// Adds the schemas a text sets `search_path` to (before it is decided: a later statement of
    /// the same text already resolves names with them). A computed path is the guard's to refuse.
    fn follow_search_path(&mut self, analysis: &Analysis) {
        for hazard in analysis.hazards() {
            let Hazard::SearchPath {
                schemas: Some(schemas),
            } = hazard
            else {
                continue;
            };
            if self.request.search_path.is_empty() && !schemas.is_empty() {
                // The path in force so far was the server's default, which policy reads as public.
                self.request
                    .search_path
                    .push(postern_policy::cedar::DEFAULT_SCHEMA.to_owned());
            }
            for schema in schemas {
                if schema != "$user" && !self.request.search_path.contains(schema) {
                    self.request.search_path.push(schema.clone());
                }
            }
        }
    }

    /// Remembers what an allowed text prepares under SQL-level names (`DEALLOCATE` forgets
    /// nothing: see [`Self::sql_prepared`]), the queries it opens cursors on, and whether it
    /// listens for notifications (the connection is then not reused).
    fn remember_prepared(&mut self, analysis: &Analysis) {
        for statement in &analysis.statements {
            if statement.command == "LISTEN" {
                self.tracker().not_reusable = true;
            }
            match &statement.prepared {
                Some(PreparedName::Prepare(name)) => {
                    let known = self.sql_prepared.entry(name.clone()).or_default();
                    if !known.contains(statement) {
                        known.push(statement.clone());
                    }
                }
                Some(PreparedName::Declare { name, hold }) => {
                    self.tracker()
                        .names
                        .declared(name, statement, *hold, self.cycle);
                }
                _ => {}
            }
        }
    }

    /// A statement name for stand-in Parses that refuse something other than a Parse: no client
    /// statement has it, and the failing Parse creates or drops nothing.
    fn stand_in_name(&self) -> String {
        self.marker.trim_end_matches('_').to_owned()
    }

    /// The record of SQL equivalent to a protocol message whose own text Postern did not see.
    fn described(&self, sql: &str) -> Arc<StatementRecord> {
        Arc::new(record_of(&self.ctx.classifier.analyze(sql)))
    }

    /// Forgets portals after an allowed `DECLARE` or `CLOSE`, which make and remove them (the
    /// extended protocol shares their names): Executes of them are then recorded as `FETCH`.
    /// Statement names are kept even after `DEALLOCATE`: a name Postern still knows cannot be
    /// prepared again with another text until the client closes it (see the Parse refusal).
    fn forget_changed_names(&mut self, analysis: &Analysis) {
        if analysis
            .statements
            .iter()
            .any(|s| matches!(s.command.as_str(), "DECLARE CURSOR" | "CLOSE CURSOR"))
        {
            self.tracker().names.forget_portals();
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'a, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_statement_id(&mut self) -> u64 {
        *self.next_id += 1;
        *self.next_id
    }

    /// Sends a Query that cannot parse in place of a refused Query or FunctionCall.
    fn stand_in_query(&self, tracker: &mut Tracker, refusal: StandIn, out: &mut BytesMut) {
        let key = self.register_refusal(tracker, refusal);
        frontend::encode_query(&format!("{}{key}", self.marker), out);
        tracker.open_copy_window = None;
        tracker.cycles_sent += 1;
    }

    /// Sends a Parse that cannot succeed in place of a refused extended-protocol message.
    fn stand_in_parse(
        &self,
        tracker: &mut Tracker,
        statement: &str,
        refusal: StandIn,
        out: &mut BytesMut,
    ) {
        let key = self.register_refusal(tracker, refusal);
        frontend::encode_parse(statement, &format!("{}{key}", self.marker), out);
    }

    fn register_refusal(&self, tracker: &mut Tracker, refusal: StandIn) -> u64 {
        tracker.last_refusal += 1;
        let key = tracker.last_refusal;
        tracker.refusals.insert(
            key,
            PendingRefusal {
                epoch: tracker.cycles_sent,
                refusal,
            },
        );
        key
    }
}

/// The policy view for the set in force, rebuilt after a reload. Takes the session's slot rather
/// than the whole frontend, so the caller can still read its other fields.
fn policy_view<'v>(slot: &'v mut Option<PolicyView>, ctx: &SessionContext) -> &'v PolicyView {
    let current = ctx.policy.policies.current();
    let view = match slot.take() {
        Some(view) if Arc::ptr_eq(&view.engine, &current) => view,
        _ => PolicyView {
            session: current.session(&ctx.policy.identity),
            engine: current,
        },
    };
    slot.insert(view)
}

/// The ErrorResponse detail of a policy refusal: the deciding policies and where each is
/// written, or that no permit applied.
fn policy_detail(engine: &PolicyEngine, policies: &[String], identity: &Identity) -> String {
    // The engine cannot say which condition failed; when a policy looks at MFA and this token
    // shows none, the likely way forward is worth a sentence.
    let mfa = if engine.asks_for_mfa() && !identity.mfa {
        ". Your token says no second factor was used: if a policy requires MFA, log in again \
         with MFA (postern login --mfa)"
    } else {
        ""
    };
    if policies.is_empty() {
        return format!(
            "no permit policy applies to this request; grants are made in the [policy] files{mfa}"
        );
    }
    let named: Vec<String> = policies
        .iter()
        .map(|id| match engine.origin_of(id) {
            Some(origin) => format!("\"{id}\" ({origin})"),
            None => format!("\"{id}\""),
        })
        .collect();
    format!("decided by policy {}{mfa}", named.join(", "))
}

/// The decoding error of a message Postern inspects and cannot read: a Query or Parse text,
/// or the statement and portal names of Bind, Close and Execute.
fn unreadable(frame: &Frame) -> Option<WireError> {
    match frame.tag() {
        frontend::QUERY => frontend::query_text(frame).err(),
        frontend::PARSE => frontend::parse(frame).err(),
        frontend::BIND => frontend::bind_names(frame).err(),
        frontend::CLOSE => frontend::target(frame).err(),
        frontend::EXECUTE => frontend::execute(frame).err(),
        _ => None,
    }
}

/// The audit reason of a refused Parse or Bind that reuses a name for something else.
const NAME_REUSED: &str = "name_reused";

/// Longest statement or portal name repeated back to the client.
const MAX_ECHOED_NAME: usize = 64;

/// A client-chosen name, shortened for a message.
fn echo_name(name: &str) -> String {
    match name.char_indices().nth(MAX_ECHOED_NAME) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_owned(),
    }
}

/// Refuses a message that cannot be read (never reached: `run` ends the session first).
fn unreadable_refusal() -> Refusal {
    Refusal {
        reason: guard::RefusalReason::ParseError,
        message: "Postern could not read this message, so it cannot check it".to_owned(),
    }
}

fn record_of(analysis: &Arc<Analysis>) -> StatementRecord {
    StatementRecord {
        analysis: Arc::clone(analysis),
    }
}

/// NoticeResponses Postern itself sends the client (a held statement's): queued by the frontend,
/// written by the backend loop between whole server messages. Every session has one, idle or
/// not, and an empty queue allocates nothing (a channel would hold a block of slots).
#[derive(Default)]
struct Notices {
    queue: Mutex<Vec<BytesMut>>,
    queued: tokio::sync::Notify,
}

impl Notices {
    fn send(&self, notice: BytesMut) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(notice);
        self.queued.notify_one();
    }

    /// Every notice queued, in order, once there is at least one. Cancel safe: the queue is
    /// taken only in the poll that returns it, and a wake-up lost to a dropped wait leaves the
    /// notices queued, for the next call to find before it waits.
    async fn next(&self) -> Vec<BytesMut> {
        loop {
            let queued =
                std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
            if !queued.is_empty() {
                return queued;
            }
            self.queued.notified().await;
        }
    }
}

async fn backend_loop<R, W>(
    ctx: &SessionContext,
    marker: &str,
    tracker: &Mutex<Tracker>,
    upstream: &mut R,
    buffer: &mut BytesMut,
    client: &mut W,
    notices: &Notices,
) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let decoder = FrameDecoder::new(Side::Backend, limits::MAX_BACKEND_MESSAGE_LENGTH);
    // Grows to what the session's replies need and keeps that; an idle session holds none.
    let mut out = BytesMut::new();
    let mut finished = Vec::new();
    let mut drained = false;
    loop {
        loop {
            let frame = match decoder.decode(buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => return SessionEnd::UpstreamProtocol(error),
            };
            let mut tracker = tracker.lock().unwrap_or_else(PoisonError::into_inner);
            match frame.tag() {
                backend::ERROR_RESPONSE => {
                    let fields = backend::error_fields(&frame).ok();
                    let refusal = fields
                        .as_ref()
                        .and_then(|f| refusal_key(&f.message, marker))
                        .and_then(|key| tracker.refusals.remove(&key));
                    if let Some(PendingRefusal { refusal, .. }) = refusal {
                        let mut report =
                            Report::new(Severity::Error, refusal.code, &refusal.message);
                        if let Some(detail) = &refusal.detail {
                            report = report.detail(detail);
                        }
                        report.encode(&mut out);
                        continue;
                    }
                    let code = fields.map(|f| f.code).unwrap_or_default();
                    let current = tracker.head_is_current();
                    if let Some(head) = tracker.in_flight.front_mut().filter(|_| current) {
                        head.outcome.sqlstate = Some(code);
                        if !head.simple {
                            finished.extend(tracker.in_flight.pop_front());
                        }
                    }
                }
                backend::COMMAND_COMPLETE
                | backend::EMPTY_QUERY_RESPONSE
                | backend::PORTAL_SUSPENDED => {
                    let tag = if frame.tag() == backend::COMMAND_COMPLETE {
                        backend::command_tag(&frame).ok().map(str::to_owned)
                    } else {
                        None
                    };
                    let current = tracker.head_is_current();
                    if let Some(head) = tracker.in_flight.front_mut().filter(|_| current) {
                        if let Some(tag) = tag {
                            if let Some(rows) = events::rows_of(&tag) {
                                *head.outcome.rows.get_or_insert(0) += rows;
                            }
                            head.outcome.command_tags.push(tag);
                        }
                        if !head.simple {
                            finished.extend(tracker.in_flight.pop_front());
                        }
                    }
                }
                backend::COPY_IN_RESPONSE => {
                    let head = tracker
                        .in_flight
                        .front()
                        .filter(|_| tracker.head_is_current())
                        .map(|s| s.id);
                    if let Some(statement) = head {
                        tracker.copy_in_started(statement);
                    }
                }
                backend::PARSE_COMPLETE | backend::BIND_COMPLETE | backend::CLOSE_COMPLETE => {
                    tracker.names.completed();
                }
                backend::READY_FOR_QUERY => {
                    let done = tracker.answered(tracker.cycles_done) + 1;
                    tracker.cycles_done = done;
                    let status = backend::ready_for_query(&frame).ok();
                    tracker.last_status = status;
                    if let Some(status) = status {
                        ctx.live.ready(status);
                    }
                    let in_transaction = status != Some(TransactionStatus::Idle);
                    let mut names = std::mem::take(&mut tracker.names);
                    names.cycle_ended(|cycle| tracker.answered(cycle) < done, in_transaction);
                    tracker.names = names;
                    while tracker
                        .in_flight
                        .front()
                        .is_some_and(|s| tracker.answered(s.epoch) < done)
                    {
                        if let Some(mut statement) = tracker.in_flight.pop_front() {
                            if !statement.simple
                                && statement.outcome.command_tags.is_empty()
                                && statement.outcome.sqlstate.is_none()
                            {
                                statement.outcome.skipped = true;
                            }
                            finished.push(statement);
                        }
                    }
                    tracker.refusals.retain(|_, r| r.epoch >= done);
                    tracker
                        .copy_windows
                        .retain(|w| w.syncs.iter().any(|&sync| sync >= done));
                    if tracker.draining && tracker.answered(done) >= tracker.cycles_sent {
                        drained = true;
                    }
                }
                _ => {}
            }
            drop(tracker);
            out.extend_from_slice(frame.raw());
        }
        // Outcomes are queued before the client sees the results: once it has them it may end
        // the session, and the relay stops this loop at once.
        for statement in finished.drain(..) {
            let event = events::statement_end(
                &ctx.base_event,
                statement.id,
                &statement.outcome,
                statement.started.elapsed(),
            );
            if let Err(error) = ctx.audit.record_detached(event) {
                tracing::error!(error = %error, "audit log: cannot record a statement's outcome");
            }
        }
        if !out.is_empty() {
            if let Err(error) = client.write_all(&out).await {
                return SessionEnd::Io(error);
            }
            out.clear();
        }
        if drained {
            return SessionEnd::UpstreamClosed;
        }
        // Notices from Postern go out here, between whole server messages.
        tokio::select! {
            read = upstream.read_buf(buffer) => match read {
                Ok(0) => return SessionEnd::UpstreamClosed,
                Ok(_) => {}
                Err(error) => return SessionEnd::Io(error),
            },
            queued = notices.next() => {
                for notice in queued {
                    if let Err(error) = client.write_all(&notice).await {
                        return SessionEnd::Io(error);
                    }
                }
            }
        }
    }
}

/// The refusal number in a server error caused by one of this session's stand-in texts.
fn refusal_key(message: &str, marker: &str) -> Option<u64> {
    let start = message.find(marker)? + marker.len();
    let digits: String = message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
