//! Holding a statement for just-in-time approval.
//!
//! A statement that only `@approval` permits allow is not forwarded at once. If a live grant
//! covers it already, it uses the grant and goes. Otherwise Postern opens a request, tells the
//! client with a NoticeResponse (psql prints it while it waits), tells the approver groups'
//! webhooks, and waits — while the server holds the session as it was (a transaction stays
//! open) — until one of:
//!
//! - approved: the statement takes one use of the request's grant and is forwarded;
//! - denied: 42501 naming the approver and their comment;
//! - the wait runs out: 42501 naming the request, which stays open (an approval arriving later
//!   makes a grant the requester uses by running the statement again);
//! - the client cancels (CancelRequest), disconnects, or its session is ended: the request is
//!   withdrawn.
//!
//! While it waits, a NoticeResponse keepalive goes to the client every `approvals.keepalive`, so
//! that idle timeouts along the path do not cut the connection. The frontend loop is the only
//! sender upstream, so nothing after the held message reaches the server meanwhile: an
//! extended-protocol batch is held whole from the held Execute to its Sync.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postern_policy::cedar::ApprovalRequirement;
use postern_store::{ApprovalRequest, Grant, RequestState, Verdict};
use postern_wire::backend::{Report, Severity};
use postern_wire::{Frame, sqlstate};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Frontend, SessionEnd, StandIn};
use crate::approvals::{Approvals, Asked};
use crate::events::{self, StatementRecord};
use crate::metrics::{ApprovalOutcome, StatementDecision};

/// Most client bytes read ahead while a statement waits: enough for a pipelined batch; past it
/// Postern stops reading (TCP pushes back) until the held statement is decided.
const MAX_READ_AHEAD: usize = 1 << 20;

/// A statement waiting to be decided by approvers.
pub(super) struct Held {
    pub frame: Frame,
    pub id: u64,
    pub record: StatementRecord,
    pub policies: Vec<String>,
    pub approvals: Vec<ApprovalRequirement>,
    /// A simple-protocol Query; otherwise an Execute.
    pub simple: bool,
    /// The SHA-256 (hex) of the Bind's parameters, for an Execute.
    pub params_hash: Option<String>,
}

/// How a held statement ends.
pub(super) enum Resolved {
    /// Forward it (its audit event is written).
    Forward { frame: Frame, id: u64, simple: bool },
    /// Refuse it with this error.
    Refuse { simple: bool, refusal: StandIn },
}

/// Withdraws the request if the wait is abandoned without a decision — the relay drops the
/// waiting future when the session is ended from outside or Postern shuts down.
struct WithdrawOnDrop {
    approvals: Arc<Approvals>,
    id: Option<String>,
}

impl WithdrawOnDrop {
    /// The request was decided, or stays open on purpose: nothing to withdraw.
    fn disarm(&mut self) {
        self.id = None;
    }

    async fn withdraw(&mut self, why: &str) {
        if let Some(id) = self.id.take() {
            self.approvals.withdraw(&id, why).await;
        }
    }
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let approvals = Arc::clone(&self.approvals);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { approvals.withdraw(&id, "the session ended").await });
            }
        }
    }
}

impl Frontend<'_> {
    /// Decides a held statement: by a grant, or by approvers while the client waits.
    pub(super) async fn hold<R>(
        &mut self,
        held: Held,
        client: &mut R,
        buffer: &mut BytesMut,
    ) -> Result<Resolved, SessionEnd>
    where
        R: AsyncRead + Unpin,
    {
        let ctx = self.ctx;
        ctx.metrics.statement(StatementDecision::Held);
        let mut waited = ctx.metrics.approval_wait();
        let cancels_seen = ctx.cancel.count();
        let approvals = Arc::clone(&ctx.approvals);
        let identity = &ctx.policy.identity;
        let text = held.record.analysis.text.as_str();
        let reason = reason_comment(text).or_else(|| self.reason.clone());
        let asked = Asked {
            identity,
            target: &ctx.policy.request.target,
            role: &ctx.policy.request.role,
            session_id: &ctx.live.id,
            client_ip: ctx.policy.request.source_ip.to_string(),
            analysis: &held.record.analysis,
            statement_key: statement_key(text, held.params_hash.as_deref()),
            params_hash: held.params_hash.clone(),
            reason,
            requirements: &held.approvals,
            context: json!({
                "protocol": if held.simple { "simple" } else { "extended" },
                "application_name": ctx.policy.request.application_name,
                "in_transaction": self.tracker().last_status != Some(postern_wire::backend::TransactionStatus::Idle),
                "policies": held.policies,
            }),
        };
        match approvals.use_grant(&asked).await {
            Ok(Some(grant)) => {
                waited.end(ApprovalOutcome::Granted);
                return Ok(self.run_approved(held, &grant).await);
            }
            Ok(None) => {}
            Err(error) => {
                waited.end(ApprovalOutcome::Error);
                tracing::error!(error = %error, "control store: cannot look for approval grants");
                return Ok(refuse(
                    &held,
                    sqlstate::IO_ERROR,
                    format!(
                        "this statement needs approval, and Postern's control store cannot be \
                         read to ask for it: {error}"
                    ),
                ));
            }
        }
        let (request, mut waiter) = match approvals.open(&asked).await {
            Ok(opened) => opened,
            Err(error) => {
                waited.end(ApprovalOutcome::Error);
                tracing::error!(error = %error, "control store: cannot open an approval request");
                return Ok(refuse(
                    &held,
                    sqlstate::IO_ERROR,
                    format!(
                        "this statement needs approval, and Postern's control store cannot \
                         record the request: {error}"
                    ),
                ));
            }
        };
        let mut pending = WithdrawOnDrop {
            approvals: Arc::clone(&approvals),
            id: Some(request.id.clone()),
        };
        let mut requested = self.ctx.base_event.fields();
        requested.insert("sql".into(), json!(held.record.sql()));
        requested.insert("statement_id".into(), json!(held.id));
        requested.insert("reason".into(), json!(request.reason));
        requested.insert("needs".into(), json!(request.requirements));
        requested.insert("actions".into(), json!(request.actions));
        if let Err(error) = approvals
            .record_first(
                &request.id,
                "requested",
                serde_json::Value::Object(requested),
            )
            .await
        {
            waited.end(ApprovalOutcome::Error);
            pending.withdraw("the audit log cannot record it").await;
            return Ok(refuse(
                &held,
                sqlstate::IO_ERROR,
                format!(
                    "this statement needs approval, and the request could not be recorded: {}",
                    error.client_message()
                ),
            ));
        }
        ctx.metrics.approval_request_opened();
        approvals.notify_requested(&request);
        if request.requirements.iter().any(|r| r.preview) {
            // In the background, on a connection of its own: the wait does not depend on it.
            crate::preview::spawn(
                self.ctx,
                &request,
                Arc::clone(&held.record.analysis),
                held.params_hash.is_some(),
            );
        }
        self.ctx.live.waiting_for_approval(&held.record.analysis);
        let wait = approvals.config.wait;
        self.notice(&format!(
            "statement held for approval: request {} needs {}. {}. Waiting up to {}.",
            request.id,
            needs(&request),
            approvals.how_to_approve(&request.id),
            humantime::format_duration(wait)
        ));
        let deadline = tokio::time::Instant::now() + wait;
        let keepalive_every = approvals.config.keepalive;
        let mut keepalive = tokio::time::interval_at(
            tokio::time::Instant::now() + keepalive_every,
            keepalive_every,
        );
        let resolved = loop {
            tokio::select! {
                () = waiter.changed() => {
                    let current = match waiter.current().await {
                        Ok(current) => current,
                        Err(error) => {
                            tracing::warn!(request = %request.id, error = %error, "control store: cannot read an approval request; trying again");
                            continue;
                        }
                    };
                    let Some(current) = current else {
                        pending.disarm();
                        break refuse(&held, sqlstate::INSUFFICIENT_PRIVILEGE, format!("approval request {} is gone from the control store", request.id));
                    };
                    match current.state {
                        RequestState::Pending => {}
                        RequestState::Approved => {
                            pending.disarm();
                            waited.end(ApprovalOutcome::Approved);
                            break self.run_approved_request(held, &current).await;
                        }
                        RequestState::Denied => {
                            pending.disarm();
                            waited.end(ApprovalOutcome::Denied);
                            break refuse(&held, sqlstate::INSUFFICIENT_PRIVILEGE, denied_message(&current));
                        }
                        RequestState::Withdrawn | RequestState::Expired => {
                            pending.disarm();
                            let state = if current.state == RequestState::Withdrawn { "withdrawn" } else { "expired" };
                            waited.end(if state == "expired" { ApprovalOutcome::Expired } else { ApprovalOutcome::Withdrawn });
                            break refuse(&held, sqlstate::INSUFFICIENT_PRIVILEGE, format!("approval request {} was {state}; the statement was not run", request.id));
                        }
                    }
                }
                _ = keepalive.tick() => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    self.notice(&format!(
                        "still waiting for approval of request {} ({} left)",
                        request.id,
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    ));
                }
                () = tokio::time::sleep_until(deadline) => {
                    // The request stays open: an approval arriving later makes a grant the
                    // requester uses by running the statement again.
                    pending.disarm();
                    waited.end(ApprovalOutcome::Timeout);
                    approvals.record(&request.id, "wait_ended", json!({"waited_secs": wait.as_secs()})).await;
                    break refuse(&held, sqlstate::INSUFFICIENT_PRIVILEGE, format!(
                        "approval request {} was not decided within {}; the statement was not run. \
                         The request stays open: once it is approved, run the statement again",
                        request.id, humantime::format_duration(wait)
                    ));
                }
                () = self.ctx.cancel.raised_after(cancels_seen) => {
                    pending.withdraw("the client cancelled the statement").await;
                    break refuse(&held, sqlstate::QUERY_CANCELED, format!(
                        "canceling statement due to user request: approval request {} withdrawn",
                        request.id
                    ));
                }
                read = client.read_buf(buffer), if buffer.len() < MAX_READ_AHEAD => match read {
                    Ok(0) => {
                        pending.withdraw("the client disconnected").await;
                        return Err(SessionEnd::ClientClosed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        pending.withdraw("the client's connection failed").await;
                        return Err(SessionEnd::Io(error));
                    }
                },
            }
        };
        drop(waiter);
        let status = self.tracker().last_status;
        self.ctx.live.approval_decided(status);
        Ok(resolved)
    }

    /// The request was approved: take one use of its grant and run the statement.
    async fn run_approved_request(&mut self, held: Held, request: &ApprovalRequest) -> Resolved {
        let approvals = Arc::clone(&self.ctx.approvals);
        let now = approvals.now();
        match approvals
            .store()
            .consume_request_grant(&request.id, now)
            .await
        {
            Ok(Some(grant)) => self.run_approved(held, &grant).await,
            Ok(None) => refuse(
                &held,
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "approval request {} was approved, but its grant is used up, expired or \
                     revoked; the statement was not run",
                    request.id
                ),
            ),
            Err(error) => refuse(
                &held,
                sqlstate::IO_ERROR,
                format!(
                    "approval request {} was approved, but the control store cannot record the \
                     grant's use: {error}",
                    request.id
                ),
            ),
        }
    }

    /// Records the statement as run under `grant` and lets it go.
    async fn run_approved(&mut self, held: Held, grant: &Grant) -> Resolved {
        let protocol = if held.simple { "simple" } else { "extended" };
        let mut event = events::statement(
            &self.ctx.base_event,
            held.id,
            protocol,
            &held.record,
            None,
            &held.policies,
        );
        event.insert(
            "approval",
            json!({
                "request": grant.request_id,
                "grant": grant.id,
                "approved_by": grant.created_by,
                "scope": grant.scope,
                "uses": grant.uses,
                "budget": grant.budget,
            }),
        );
        if let Err(error) = self.ctx.audit.record(event).await {
            tracing::error!(error = %error, "audit log write failed; approved statement refused");
            return refuse(&held, sqlstate::IO_ERROR, error.client_message());
        }
        self.ctx
            .approvals
            .record(
                &grant.request_id,
                "executed",
                json!({
                    "grant": grant.id,
                    "session": self.ctx.live.id,
                    "subject": self.ctx.policy.identity.subject,
                    "statement_id": held.id,
                }),
            )
            .await;
        self.ctx.live.statement_started(&held.record.analysis);
        Resolved::Forward {
            frame: held.frame,
            id: held.id,
            simple: held.simple,
        }
    }

    /// Sends the client a NoticeResponse (between server messages; the backend loop writes it).
    fn notice(&self, message: &str) {
        let mut out = BytesMut::new();
        Report::new(Severity::Notice, "00000", message).encode(&mut out);
        self.notices.send(out);
    }
}

fn refuse(held: &Held, code: &'static str, message: String) -> Resolved {
    Resolved::Refuse {
        simple: held.simple,
        refusal: StandIn {
            code,
            message,
            detail: None,
        },
    }
}

/// `1 approval from group "dbas"`, and more for several groups.
fn needs(request: &ApprovalRequest) -> String {
    let parts: Vec<String> = request
        .requirements
        .iter()
        .map(|r| {
            let noun = if r.approvers == 1 {
                "approval"
            } else {
                "approvals by different people"
            };
            format!("{} {noun} from group \"{}\"", r.approvers, r.group)
        })
        .collect();
    parts.join(" and ")
}

fn denied_message(request: &ApprovalRequest) -> String {
    let denial = request
        .votes
        .iter()
        .rev()
        .find(|vote| vote.verdict == Verdict::Deny);
    match denial {
        Some(vote) => match vote.comment.as_deref().filter(|c| !c.is_empty()) {
            Some(comment) => format!(
                "approval request {} was denied by {}: {comment}",
                request.id, vote.approver_subject
            ),
            None => format!(
                "approval request {} was denied by {}",
                request.id, vote.approver_subject
            ),
        },
        None => format!("approval request {} was denied", request.id),
    }
}

/// What a statement-scoped grant covers: the exact text (without a leading reason comment, which
/// changes nothing it does) and the exact bound parameters. Never a fingerprint: fingerprints
/// ignore literal values, so `set_config('x', …)` and `set_config('role', …)` share one.
pub(crate) fn statement_key(text: &str, params_hash: Option<&str>) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(without_reason_comment(text).as_bytes());
    context.update(&[0]);
    context.update(params_hash.unwrap_or("").as_bytes());
    hex::encode(context.finish().as_ref())
}

/// The SHA-256 (hex) of bound parameters, as the Bind message carries them.
pub(crate) fn params_hash(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Longest reason kept (the store refuses longer).
const MAX_REASON_CHARS: usize = 1000;

/// The reason a client gave in a leading `-- reason: …` comment.
pub(crate) fn reason_comment(text: &str) -> Option<String> {
    let first = text.trim_start().lines().next()?;
    let rest = first.strip_prefix("--")?.trim_start();
    let reason = rest
        .get(..7)
        .filter(|word| word.eq_ignore_ascii_case("reason:"))
        .map(|_| rest[7..].trim())?;
    (!reason.is_empty()).then(|| reason.chars().take(MAX_REASON_CHARS).collect())
}

/// What `SET postern.reason` is replaced with upstream: a harmless setting of Postern's own
/// placeholder, so the client still gets the server's own answer (`SET`, or the error of an
/// aborted transaction block) while the reason itself never reaches the server.
pub(crate) const NOTED_REASON_SQL: &str = "SET postern_reason.noted TO DEFAULT";

/// The reason in `SET [SESSION] postern.reason {=|TO} '…'`, if that is the whole text.
pub(crate) fn reason_setting(sql: &str) -> Option<String> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let rest = strip_keyword(text, "set")?;
    let rest = strip_keyword(rest, "session").unwrap_or(rest);
    let rest = rest
        .get(..14)
        .filter(|name| name.eq_ignore_ascii_case("postern.reason"))
        .map(|_| rest[14..].trim_start())?;
    let rest = match rest.strip_prefix('=') {
        Some(rest) => rest.trim_start(),
        None => strip_keyword(rest, "to")?,
    };
    let body = rest.strip_prefix('\'')?.strip_suffix('\'')?;
    // Inside, a quote only as the doubled '' escape.
    if body.replace("''", "").contains('\'') {
        return None;
    }
    let reason = body.replace("''", "'");
    let reason = reason.trim();
    (!reason.is_empty()).then(|| reason.chars().take(MAX_REASON_CHARS).collect())
}

/// `text` after a leading keyword and the whitespace that must follow it.
fn strip_keyword<'t>(text: &'t str, keyword: &str) -> Option<&'t str> {
    let head = text.get(..keyword.len())?;
    let rest = &text[keyword.len()..];
    (head.eq_ignore_ascii_case(keyword) && rest.starts_with(char::is_whitespace))
        .then(|| rest.trim_start())
}

fn without_reason_comment(text: &str) -> &str {
    if reason_comment(text).is_none() {
        return text;
    }
    let trimmed = text.trim_start();
    match trimmed.find('\n') {
        Some(end) => &trimmed[end + 1..],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::{reason_comment, reason_setting, statement_key};

    #[test]
    fn reasons_come_from_the_postern_reason_setting() {
        assert_eq!(
            reason_setting("SET postern.reason = 'INC-7: it''s broken';").as_deref(),
            Some("INC-7: it's broken")
        );
        assert_eq!(
            reason_setting("set session POSTERN.REASON to 'x'").as_deref(),
            Some("x")
        );
        assert_eq!(
            reason_setting("SET postern.reason = 'a'; DELETE FROM t"),
            None
        );
        assert_eq!(reason_setting("SET postern.reason = 'a' 'b'"), None);
        assert_eq!(reason_setting("SET postern.reasonable = 'a'"), None);
        assert_eq!(reason_setting("SET postern.role = 'a'"), None);
        assert_eq!(reason_setting("SELECT 'SET postern.reason = ''a'''"), None);
    }

    #[test]
    fn reasons_come_from_a_leading_comment() {
        assert_eq!(
            reason_comment("-- reason: INC-42 clean-up\nDELETE FROM t").as_deref(),
            Some("INC-42 clean-up")
        );
        assert_eq!(
            reason_comment("  --Reason:x\nDELETE FROM t").as_deref(),
            Some("x")
        );
        assert_eq!(reason_comment("DELETE FROM t -- reason: late"), None);
        assert_eq!(reason_comment("-- reasons\nDELETE FROM t"), None);
        assert_eq!(reason_comment("-- reason:\nDELETE FROM t"), None);
    }

    #[test]
    fn keys_are_exact_but_ignore_the_reason() {
        let plain = statement_key("DELETE FROM t WHERE id = 1", None);
        assert_eq!(
            plain,
            statement_key("-- reason: because\nDELETE FROM t WHERE id = 1", None)
        );
        assert_ne!(plain, statement_key("DELETE FROM t WHERE id = 2", None));
        assert_ne!(
            plain,
            statement_key("DELETE FROM t WHERE id = 1", Some("ab"))
        );
        assert_ne!(
            statement_key("SELECT set_config('x', 'a', false)", None),
            statement_key("SELECT set_config('role', 'a', false)", None)
        );
    }
}
