//! The live sessions: who each one is, where it comes from, what it is doing — and the way to end
//! one from outside (an operator, a revocation). The relay reports each session's activity here
//! (a statement forwarded, a ReadyForQuery), and watches its end signal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use postern_identity::{Identity, IdentityKind};
use postern_sql::Analysis;
use postern_wire::backend::TransactionStatus;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Longest statement text kept for a session listing.
const MAX_LISTED_STATEMENT: usize = 1024;

/// Every live session of this Postern.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
}

/// One live session.
pub struct LiveSession {
    pub id: String,
    pub identity: Arc<Identity>,
    pub role: String,
    pub target: String,
    pub client: SocketAddr,
    pub application_name: Option<String>,
    pub started_at: SystemTime,
    activity: Mutex<Activity>,
    end: CancellationToken,
    ended_by: Mutex<Option<EndRequest>>,
}

/// What a session is doing, as its relay last reported.
#[derive(Clone)]
struct Activity {
    state: SessionState,
    /// The statement running, or the last one: the classifier's shared analysis, so reporting it
    /// copies nothing; its redacted text is shortened only when listed.
    statement: Option<Arc<Analysis>>,
    statements: u64,
    refused: u64,
    /// When `state` last changed (a statement sent, a ReadyForQuery).
    since: Instant,
}

/// A session's state, as PostgreSQL's `pg_stat_activity` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Idle,
    Active,
    IdleInTransaction,
    /// Inside a transaction block that failed: only ROLLBACK will do.
    IdleInFailedTransaction,
    /// A statement is held until an approver decides on it (no idle limit applies).
    WaitingForApproval,
}

/// Why a session is being ended from outside, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndRequest {
    /// `killed` (an operator ended this session) or `revoked` (the identity's access was).
    pub kind: EndKind,
    /// The verified subject of whoever ended it.
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    Killed,
    Revoked,
    /// The identity provider said the user logged out (OIDC back-channel logout).
    LoggedOut,
}

/// A session as listed by `postern sessions` and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSnapshot {
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub kind: IdentityKind,
    pub groups: Vec<String>,
    pub role: String,
    pub target: String,
    pub client: SocketAddr,
    pub application_name: Option<String>,
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    #[serde(with = "rfc3339")]
    pub token_expires_at: SystemTime,
    pub state: SessionState,
    pub statement: Option<String>,
    pub statements: u64,
    pub refused: u64,
}

mod rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*time))
    }
}

/// Removes its session from the registry when dropped.
pub struct Registered {
    sessions: Arc<Sessions>,
    pub session: Arc<LiveSession>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.session.id);
    }
}

impl Sessions {
    /// Adds a session that has just logged in; it stays listed until the guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        id: String,
        identity: Arc<Identity>,
        role: String,
        target: String,
        client: SocketAddr,
        application_name: Option<String>,
    ) -> Registered {
        let session = Arc::new(LiveSession {
            id,
            identity,
            role,
            target,
            client,
            application_name,
            started_at: SystemTime::now(),
            activity: Mutex::new(Activity {
                state: SessionState::Idle,
                statement: None,
                statements: 0,
                refused: 0,
                since: Instant::now(),
            }),
            end: CancellationToken::new(),
            ended_by: Mutex::new(None),
        });
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session.id.clone(), Arc::clone(&session));
        Registered {
            sessions: Arc::clone(self),
            session,
        }
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<SessionSnapshot> {
        let mut sessions: Vec<SessionSnapshot> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|s| s.snapshot())
            .collect();
        sessions.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        sessions
    }

    /// The live session `id`.
    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// How many live sessions `counted` selects.
    pub fn count(&self, counted: impl Fn(&LiveSession) -> bool) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| counted(s))
            .count()
    }

    /// Ends every live session `covered` selects; returns them as they were.
    pub fn end_where(
        &self,
        covered: impl Fn(&LiveSession) -> bool,
        request: &EndRequest,
    ) -> Vec<SessionSnapshot> {
        self.end_each(|session| covered(session).then(|| request.clone()))
    }

    /// Ends every live session not already ending for which `request_for` gives a request;
    /// returns them as they were.
    pub fn end_each(
        &self,
        request_for: impl Fn(&LiveSession) -> Option<EndRequest>,
    ) -> Vec<SessionSnapshot> {
        let ending: Vec<(Arc<LiveSession>, EndRequest)> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| !s.end.is_cancelled())
            .filter_map(|s| Some((Arc::clone(s), request_for(s)?)))
            .collect();
        ending
            .into_iter()
            .map(|(session, request)| {
                session.end(request);
                session.snapshot()
            })
            .collect()
    }
}

impl LiveSession {
    /// Asks the session's relay to end it (the first request wins).
    pub fn end(&self, request: EndRequest) {
        self.ended_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(request);
        self.end.cancel();
    }

    /// Resolves once someone asked for this session to end; gives the request.
    pub async fn end_requested(&self) -> EndRequest {
        self.end.cancelled().await;
        self.ended_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| EndRequest {
                kind: EndKind::Killed,
                by: "postern".to_owned(),
                reason: "ended".to_owned(),
            })
    }

    /// A statement was forwarded.
    pub fn statement_started(&self, analysis: &Arc<Analysis>) {
        let mut activity = self.activity();
        activity.state = SessionState::Active;
        activity.since = Instant::now();
        activity.statements += 1;
        activity.statement = Some(Arc::clone(analysis));
    }

    /// A statement is held for approval.
    pub fn waiting_for_approval(&self, analysis: &Arc<Analysis>) {
        let mut activity = self.activity();
        activity.state = SessionState::WaitingForApproval;
        activity.since = Instant::now();
        activity.statement = Some(Arc::clone(analysis));
    }

    /// The held statement was decided (it is forwarded or refused next); the session's state is
    /// what the server last said until it says more.
    pub fn approval_decided(&self, status: Option<TransactionStatus>) {
        match status {
            Some(status) => self.ready(status),
            None => self.activity().state = SessionState::Active,
        }
    }

    /// A statement was refused.
    pub fn statement_refused(&self) {
        self.activity().refused += 1;
    }

    /// The server is ready for the next message.
    pub fn ready(&self, status: TransactionStatus) {
        let mut activity = self.activity();
        activity.state = match status {
            TransactionStatus::Idle => SessionState::Idle,
            TransactionStatus::InTransaction => SessionState::IdleInTransaction,
            TransactionStatus::Failed => SessionState::IdleInFailedTransaction,
        };
        activity.since = Instant::now();
    }

    /// The session's state and since when it holds.
    pub fn state_since(&self) -> (SessionState, Instant) {
        let activity = self.activity();
        (activity.state, activity.since)
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        let activity = self.activity().clone();
        SessionSnapshot {
            id: self.id.clone(),
            issuer: self.identity.issuer.clone(),
            subject: self.identity.subject.clone(),
            kind: self.identity.kind,
            groups: self.identity.groups.clone(),
            role: self.role.clone(),
            target: self.target.clone(),
            client: self.client,
            application_name: self.application_name.clone(),
            started_at: self.started_at,
            token_expires_at: self.identity.expires_at,
            state: activity.state,
            statement: activity.statement.map(|analysis| {
                let sql = analysis.redacted.as_str();
                match sql.char_indices().nth(MAX_LISTED_STATEMENT) {
                    Some((end, _)) => format!("{}…", &sql[..end]),
                    None => sql.to_owned(),
                }
            }),
            statements: activity.statements,
            refused: activity.refused,
        }
    }
}
