//! [`Control`]: what the control plane (the admin API, the CLI through it) may do to a running
//! Postern — see and end live sessions, revoke access, decide approval requests
//! (`control/approvals.rs`), take the identity provider's SCIM provisioning (`control/scim.rs`),
//! read, accept into and reset service identities' baselines (`control/baselines.rs`) —
//! with the caller's identity verified by the same rules
//! as clients' and every request decided by the same Cedar policy set, and every change audited.

mod approvals;
mod audit_search;
mod baselines;
pub mod exchange;
pub mod scim;

pub use approvals::Ballot;

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use postern_identity::{AuthError, Identity};
use postern_policy::cedar::{Action, Decision, RequestContext, Resource};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::registry::{EndKind, EndRequest, SessionSnapshot};
use postern_store::{NewRevocation, Revocation, RevocationScope, StoreError, unix_seconds};

/// A handle on a running Postern for its control plane. Cheap to clone. It does not keep
/// Postern alive: once Postern has stopped, every request fails with
/// [`ControlError::Stopped`].
#[derive(Clone)]
pub struct Control {
    shared: Weak<Shared>,
}

/// Why a control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No token, or one that does not verify.
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    /// Policy does not allow it.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (a vote on a request already decided, a second
    /// vote by the same person).
    #[error("{0}")]
    Conflict(String),
    /// The audit log could not record the change, so it was not made.
    #[error("the audit log cannot record this change, so it was not made: {0}")]
    Audit(String),
    #[error("Postern is shutting down")]
    Stopped,
    /// The request itself is wrong (an empty name, a reason too long).
    #[error("{0}")]
    Invalid(String),
    /// The control store failed.
    #[error("the control store failed: {0}")]
    Store(String),
}

impl From<StoreError> for ControlError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid { .. } => Self::Invalid(error.to_string()),
            StoreError::NotFound { .. } => Self::NotFound(error.to_string()),
            StoreError::Conflict { .. } | StoreError::Duplicate { .. } => {
                Self::Conflict(error.to_string())
            }
            other => Self::Store(other.to_string()),
        }
    }
}

/// A revocation made, and how many live sessions it ended at once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revoked {
    pub revocation: Revocation,
    pub sessions_ended: usize,
}

/// What a back-channel logout did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedOut {
    pub subject: Option<String>,
    pub sid: Option<String>,
    pub sessions_ended: usize,
}

/// A verified caller of the control plane, and where the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    pub source_ip: IpAddr,
}

impl Control {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::downgrade(shared),
        }
    }

    fn shared(&self) -> Result<Arc<Shared>, ControlError> {
        self.shared.upgrade().ok_or(ControlError::Stopped)
    }

    /// Verifies a bearer token as a client's password is verified.
    pub async fn authenticate(
        &self,
        token: &str,
        source_ip: IpAddr,
    ) -> Result<Caller, ControlError> {
        let shared = self.shared()?;
        let identity = shared.verifier.verify(token).await.inspect_err(|e| {
            shared.metrics.admin_auth_failure(e.label());
        })?;
        Ok(Caller {
            identity,
            source_ip,
        })
    }

    /// Whether policy allows `caller` to take `action` on `target`; the refusal says what is
    /// missing.
    pub fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        target: &str,
    ) -> Result<(), ControlError> {
        let shared = self.shared()?;
        let engine = shared.policies.current();
        let session = engine.session(&caller.identity);
        let request = RequestContext {
            source_ip: caller.source_ip,
            now: (shared.clock)(),
            target: target.to_owned(),
            role: String::new(),
            application_name: None,
            search_path: Vec::new(),
        };
        let resource = Resource::Target {
            name: target.to_owned(),
        };
        match session.decide(&engine, &request, action, resource) {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny { .. } => Err(ControlError::Forbidden(format!(
                "{} may not {action} on target \"{target}\": a policy must permit \
                 Action::\"{action}\" for them",
                caller.identity.subject
            ))),
        }
    }

    /// Postern's counters in the Prometheus text format (see `metrics.rs`). Counts only: no
    /// names, so the admin API serves it without a token.
    pub fn metrics_text(&self) -> Result<String, ControlError> {
        let shared = self.shared()?;
        Ok(shared.metrics.render(shared.sessions.count(|_| true)))
    }

    /// The targets of this Postern, by name.
    pub fn targets(&self) -> Result<Vec<String>, ControlError> {
        Ok(self.shared()?.targets.keys().cloned().collect())
    }

    /// The live sessions on targets where `caller` may `view_sessions`; refused if there is
    /// no such target.
    pub fn sessions(&self, caller: &Caller) -> Result<Vec<SessionSnapshot>, ControlError> {
        let targets = self.targets()?;
        let visible: Vec<String> = targets
            .iter()
            .filter(|t| self.authorize(caller, Action::ViewSessions, t).is_ok())
            .cloned()
            .collect();
        if visible.is_empty() {
            return Err(ControlError::Forbidden(format!(
                "{} may not view_sessions on any target: a policy must permit \
                 Action::\"view_sessions\" for them",
                caller.identity.subject
            )));
        }
        Ok(self
            .shared()?
            .sessions
            .list()
            .into_iter()
            .filter(|s| visible.contains(&s.target))
            .collect())
    }

    /// Ends the live session `id`, if `caller` may `end_session` on its target.
    pub async fn end_session(
        &self,
        caller: &Caller,
        id: &str,
        reason: &str,
    ) -> Result<SessionSnapshot, ControlError> {
        let not_found = || ControlError::NotFound(format!("no live session {id:?}"));
        let session = self.shared()?.sessions.get(id).ok_or_else(not_found)?;
        // Without view rights the session's existence is not confirmed either.
        self.authorize(caller, Action::ViewSessions, &session.target)
            .map_err(|_| not_found())?;
        self.authorize(caller, Action::EndSession, &session.target)?;
        let snapshot = session.snapshot();
        self.audit(
            caller,
            "end_session",
            json!({"session": id, "target": session.target, "subject": snapshot.subject, "reason": reason}),
        )
        .await?;
        session.end(EndRequest {
            kind: EndKind::Killed,
            by: caller.identity.subject.clone(),
            reason: reason.to_owned(),
        });
        Ok(snapshot)
    }

    /// `revoke` is about every target, so it must be allowed on each.
    fn authorize_revoke(&self, caller: &Caller) -> Result<(), ControlError> {
        for target in self.targets()? {
            self.authorize(caller, Action::Revoke, &target)?;
        }
        Ok(())
    }

    /// Revokes the identities `scope` covers: new logins are refused and every live session
    /// covered ends now, until the revocation is lifted or lapses (after `lasts`, if given).
    pub async fn revoke(
        &self,
        caller: &Caller,
        scope: RevocationScope,
        reason: &str,
        lasts: Option<std::time::Duration>,
    ) -> Result<Revoked, ControlError> {
        self.authorize_revoke(caller)?;
        let shared = self.shared()?;
        let now = (shared.clock)();
        let created_at = unix_seconds(now);
        let new = NewRevocation {
            scope,
            reason: reason.to_owned(),
            created_by: caller.identity.subject.clone(),
            created_at,
            expires_at: lasts
                .map(|d| created_at.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        };
        new.validate()?;
        self.audit(
            caller,
            "revoke",
            json!({"scope": new.scope, "reason": reason, "expires_at": new.expires_at}),
        )
        .await?;
        let revocation = shared.revocations.store().add_revocation(new).await?;
        let sessions_ended = shared.revocations.refresh(&shared.sessions, now).await?;
        Ok(Revoked {
            revocation,
            sessions_ended,
        })
    }

    /// Every revocation ever made, lifted and lapsed ones included.
    pub async fn revocations(&self, caller: &Caller) -> Result<Vec<Revocation>, ControlError> {
        self.authorize_revoke(caller)?;
        Ok(self.shared()?.revocations.store().all_revocations().await?)
    }

    /// Lifts the revocation `id`: covered identities may log in again.
    pub async fn lift(&self, caller: &Caller, id: &str) -> Result<Revocation, ControlError> {
        self.authorize_revoke(caller)?;
        let shared = self.shared()?;
        self.audit(caller, "lift_revocation", json!({"revocation": id}))
            .await?;
        let now = (shared.clock)();
        let lifted = shared
            .revocations
            .store()
            .lift_revocation(id, &caller.identity.subject, unix_seconds(now))
            .await?
            .ok_or_else(|| {
                ControlError::NotFound(format!("no revocation {id:?} in force to lift"))
            })?;
        shared.revocations.refresh(&shared.sessions, now).await?;
        Ok(lifted)
    }

    /// OpenID Connect Back-Channel Logout: verifies the identity provider's logout token, refuses
    /// a replayed one, and ends every live session of that user (`sub`) or of that provider
    /// session (`sid`, matched against the `sid` claim of the session's token), from that
    /// issuer. Audited before the sessions end. The token is the credential: no bearer token.
    pub async fn backchannel_logout(
        &self,
        logout_token: &str,
        source_ip: IpAddr,
    ) -> Result<LoggedOut, ControlError> {
        let shared = self.shared()?;
        let token = shared.verifier.verify_logout_token(logout_token).await?;
        let now = unix_seconds((shared.clock)());
        let remember_until = unix_seconds(token.remember_until);
        let first = shared
            .revocations
            .store()
            .first_use_of_logout_token(&token.issuer, &token.token_id, remember_until, now)
            .await?;
        if !first {
            return Err(ControlError::Invalid(format!(
                "logout token {} was already used",
                token.token_id
            )));
        }
        let mut event = Map::new();
        event.insert("kind".into(), json!("control"));
        event.insert("action".into(), json!("backchannel_logout"));
        event.insert("by".into(), json!(token.issuer));
        event.insert("source_ip".into(), json!(source_ip.to_string()));
        event.insert(
            "details".into(),
            json!({"subject": token.subject, "sid": token.session_id, "jti": token.token_id}),
        );
        shared
            .audit
            .record(event)
            .await
            .map_err(|e| ControlError::Audit(e.client_message()))?;
        let covered = |session: &crate::registry::LiveSession| {
            let identity = &session.identity;
            identity.issuer == token.issuer
                && token
                    .subject
                    .as_ref()
                    .is_none_or(|subject| *subject == identity.subject)
                && token.session_id.as_ref().is_none_or(|sid| {
                    identity.claims.get("sid").and_then(Value::as_str) == Some(sid.as_str())
                })
        };
        let ended = shared.sessions.end_where(
            covered,
            &EndRequest {
                kind: EndKind::LoggedOut,
                by: token.issuer_name.clone(),
                reason: "logged out at the identity provider".to_owned(),
            },
        );
        Ok(LoggedOut {
            subject: token.subject,
            sid: token.session_id,
            sessions_ended: ended.len(),
        })
    }

    /// Records a control-plane change before it is made; refuses it if the record fails.
    async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        details: Value,
    ) -> Result<(), ControlError> {
        let audit = self.shared()?.audit.clone();
        let mut event = Map::new();
        event.insert("kind".into(), json!("control"));
        event.insert("action".into(), json!(action));
        event.insert("by".into(), json!(caller.identity.subject));
        event.insert("by_issuer".into(), json!(caller.identity.issuer));
        event.insert("source_ip".into(), json!(caller.source_ip.to_string()));
        event.insert("details".into(), details);
        audit
            .record(event)
            .await
            .map(|_| ())
            .map_err(|e| ControlError::Audit(e.client_message()))
    }
}
