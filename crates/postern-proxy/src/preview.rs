//! The impact preview of a held statement: before approvers decide, Postern runs the statement on
//! a connection of its own, as the requester's role, inside a transaction it always rolls back,
//! and stores what it did (rows affected, command tag, `EXPLAIN` plan) on the request.
//!
//! Opt-in per policy (`@approval("… preview")`). The session that holds the statement starts the
//! preview in the background right after the request is recorded; the preview never touches the
//! session's upstream connection and never delays its wait.
//!
//! The run, on a connection opened as the session's would be (`Target::session`: the mapped
//! role's own login in `role_login` mode, the session login plus `SET LOCAL ROLE` in `set_role`
//! mode, the identity's login role in `ephemeral_user` mode — never the admin login), with the
//! requester's signed claims so row-level security sees what it would see for them:
//!
//! ```sql
//! BEGIN; SET LOCAL statement_timeout = …; SET LOCAL lock_timeout = …; [SET LOCAL ROLE …;] …
//! <catalog check: triggers, rules, sequence defaults, functions not PostgreSQL's own>
//! EXPLAIN (FORMAT TEXT) <statement>      -- for the commands EXPLAIN takes
//! <statement>                           -- its command tag gives the rows
//! ROLLBACK                              -- always; if it fails, the connection is closed
//! ```
//!
//! Postern never sends `COMMIT` on this connection, and [`eligibility`] keeps out every statement
//! that could end the transaction itself or act outside it, so the only ways the transaction ends
//! are the `ROLLBACK` and the connection closing — both roll it back. What is stored on the
//! request: `{"rows", "command_tag", "plan", "ran_at"}` after a run, `{"unavailable": "no
//! preview: …"}` when the statement may not be previewed, `{"error": "SQLSTATE: message"}` when
//! it failed. Rows themselves are never shown: approvers would see data their own access may not
//! cover.
//!
//! The preview sees committed data only: when the requester's session is inside a transaction,
//! its uncommitted changes are not there (and its locks make the preview wait `lock_timeout`).
//! It runs with the session's startup `search_path`, not one the session set later. Previews are
//! not drained at shutdown: each is bounded by [`PREVIEW_TIMEOUT`].

mod catalog;
mod eligibility;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postern_config::UpstreamMode;
use postern_identity::Identity;
use postern_sql::Analysis;
use postern_store::{ApprovalRequest, RequestState};
use postern_wire::backend::{self, TransactionStatus};
use postern_wire::{frontend, limits};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::approvals::Approvals;
use crate::error::UpstreamError;
use crate::session::SessionContext;
use crate::upstream::{FrameReader, Upstream, quote_ident, quote_literal};
use eligibility::{Eligible, eligible};

/// How long the statement (and `EXPLAIN`, and the catalog check) may run on the server.
/// <https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-STATEMENT-TIMEOUT>
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the statement may wait for a lock: a preview must not queue behind, and so in front
/// of, the database's real work.
/// <https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-LOCK-TIMEOUT>
const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the server keeps the preview's transaction open while Postern sends nothing: if
/// Postern stops mid-preview, the server ends it on its own.
/// <https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-IDLE-IN-TRANSACTION-SESSION-TIMEOUT>
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long Postern waits for the server's answer to one query of the preview.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// How long a whole preview may take, connecting included. Past it the connection is dropped,
/// which rolls the transaction back.
pub(crate) const PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of `EXPLAIN` output kept; the rest is cut and said to be.
const MAX_PLAN_BYTES: usize = 64 * 1024;

/// Most bytes of catalog-check findings kept.
const MAX_FINDINGS_BYTES: usize = 4 * 1024;

/// The preview connection's `application_name`, so that it can be told apart in
/// `pg_stat_activity` (and pooled apart from client sessions).
const APPLICATION_NAME: &str = "postern_preview";

/// Starts the preview of the statement `request` holds, in the background.
pub(crate) fn spawn(
    ctx: &SessionContext,
    request: &ApprovalRequest,
    analysis: Arc<Analysis>,
    bound_parameters: bool,
) {
    let job = Job {
        approvals: Arc::clone(&ctx.approvals),
        target: Arc::clone(&ctx.target),
        role: ctx.policy.request.role.clone(),
        identity: ctx.policy.identity.clone(),
        search_path: ctx.policy.request.search_path.clone(),
        request_id: request.id.clone(),
        in_transaction: request.context["in_transaction"] == json!(true),
        analysis,
        bound_parameters,
    };
    tokio::spawn(job.run());
}

/// One preview to run.
struct Job {
    approvals: Arc<Approvals>,
    target: Arc<crate::Target>,
    /// The role the requester's session runs as.
    role: String,
    /// The requester, for the login (`ephemeral_user`) and the signed claims.
    identity: Arc<Identity>,
    /// The session's startup `search_path`, so unqualified names resolve as they did for it.
    search_path: Vec<String>,
    request_id: String,
    /// The requester's session was inside a transaction, whose changes the preview cannot see.
    in_transaction: bool,
    analysis: Arc<Analysis>,
    /// The statement came with parameters bound through the extended protocol.
    bound_parameters: bool,
}

/// What a preview found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The statement ran and was rolled back.
    Ran {
        tag: String,
        plan: Option<String>,
        note: Option<String>,
    },
    /// No preview, and why (starting "no preview: ").
    Unavailable(String),
    /// The statement, or the preview around it, failed: `SQLSTATE: message` for a server error.
    Failed { error: String, plan: Option<String> },
}

impl Outcome {
    /// What is stored on the request for approvers.
    fn stored(&self, ran_at: i64) -> Value {
        match self {
            Self::Ran { tag, plan, note } => {
                let mut value = json!({
                    "rows": crate::events::rows_of(tag),
                    "command_tag": tag,
                    "plan": plan,
                    "ran_at": ran_at,
                });
                if let (Some(note), Value::Object(map)) = (note, &mut value) {
                    map.insert("note".into(), json!(note));
                }
                value
            }
            Self::Unavailable(why) => json!({ "unavailable": why }),
            Self::Failed { error, plan } => json!({
                "error": error,
                "plan": plan,
                "ran_at": ran_at,
            }),
        }
    }

    /// The audit event's details: what happened, without the plan.
    fn audited(&self, role: &str) -> Value {
        match self {
            Self::Ran { tag, .. } => json!({
                "outcome": "ran",
                "role": role,
                "command_tag": tag,
                "rows": crate::events::rows_of(tag),
            }),
            Self::Unavailable(why) => json!({ "outcome": "unavailable", "why": why }),
            Self::Failed { error, .. } => json!({
                "outcome": "error",
                "role": role,
                "error": error,
            }),
        }
    }
}

/// Why a preview's connection can no longer be trusted to be between queries: it is closed, not
/// rolled back (closing it rolls the transaction back).
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the database did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the statement started a COPY")]
    Copy,
}

impl Broken {
    /// What approvers are told: server errors as they are, nothing about hosts or addresses.
    fn client_message(&self) -> String {
        match self {
            Self::Upstream(UpstreamError::Server { code, message, .. }) => {
                format!("{code}: {message}")
            }
            Self::Upstream(_) => {
                "the preview's connection to the database failed; the operator's log has the \
                 details. Nothing was committed"
                    .to_owned()
            }
            Self::Timeout(_) | Self::Copy => {
                format!("{self}; the preview's connection was closed, so nothing was committed")
            }
        }
    }
}

impl Job {
    async fn run(self) {
        let store = self.approvals.store();
        match store.approval_request(&self.request_id).await {
            Ok(Some(request)) if request.state == RequestState::Pending => {}
            // Decided or withdrawn already: nobody needs the preview.
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(request = %self.request_id, error = %error, "control store: cannot read an approval request; previewing anyway");
            }
        }
        let outcome = match eligible(&self.analysis, self.bound_parameters) {
            Err(unavailable) => Outcome::Unavailable(unavailable.0),
            Ok(eligible) => {
                match tokio::time::timeout(PREVIEW_TIMEOUT, self.execute(&eligible)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::Failed {
                        error: format!(
                            "the preview took longer than {}; its connection was closed, so \
                             nothing was committed",
                            humantime::format_duration(PREVIEW_TIMEOUT)
                        ),
                        plan: None,
                    },
                }
            }
        };
        let ran_at = self.approvals.now();
        if let Err(error) = store
            .set_preview(&self.request_id, outcome.stored(ran_at))
            .await
        {
            tracing::error!(request = %self.request_id, error = %error, "control store: cannot store an impact preview");
            return;
        }
        self.approvals
            .record(&self.request_id, "previewed", outcome.audited(&self.role))
            .await;
        match store.approval_request(&self.request_id).await {
            Ok(Some(request)) => self.approvals.changed(&request),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(request = %self.request_id, error = %error, "control store: cannot read an approval request after its preview");
            }
        }
    }

    /// Opens the connection, runs the preview, and rolls back.
    async fn execute(&self, eligible: &Eligible) -> Outcome {
        let parameters = [
            ("application_name".to_owned(), APPLICATION_NAME.to_owned()),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
        ];
        let (mut upstream, lease) = match self
            .target
            .session(&self.role, &self.identity, &parameters)
            .await
        {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(request = %self.request_id, target = %self.target.name, role = %self.role, error = %error, "impact preview: cannot connect");
                return Outcome::Failed {
                    error: connect_failure(&error, &self.role),
                    plan: None,
                };
            }
        };
        let outcome = match self.in_transaction(&mut upstream, eligible).await {
            Ok(outcome) => outcome,
            Err(broken) => {
                tracing::warn!(request = %self.request_id, error = %broken, "impact preview: connection broken; closing it");
                upstream.terminate().await;
                lease.release(None);
                return Outcome::Failed {
                    error: broken.client_message(),
                    plan: None,
                };
            }
        };
        match ask(&mut upstream, "ROLLBACK", 0).await {
            Ok(answer)
                if answer.error.is_none() && answer.status == Some(TransactionStatus::Idle) =>
            {
                lease.release(Some(upstream));
            }
            other => {
                let why = match other {
                    Ok(answer) => answer
                        .error
                        .unwrap_or_else(|| "not idle after it".to_owned()),
                    Err(broken) => broken.to_string(),
                };
                tracing::warn!(request = %self.request_id, why, "impact preview: ROLLBACK failed; closing the connection");
                upstream.terminate().await;
                lease.release(None);
            }
        }
        outcome
    }

    /// Everything between `BEGIN` and the `ROLLBACK` the caller sends.
    async fn in_transaction(
        &self,
        upstream: &mut Upstream,
        eligible: &Eligible,
    ) -> Result<Outcome, Broken> {
        let failed = |error: String, plan: Option<String>| Ok(Outcome::Failed { error, plan });
        let mut setup = vec![
            "BEGIN".to_owned(),
            format!(
                "SET LOCAL statement_timeout = {}",
                STATEMENT_TIMEOUT.as_millis()
            ),
            format!("SET LOCAL lock_timeout = {}", LOCK_TIMEOUT.as_millis()),
            format!(
                "SET LOCAL idle_in_transaction_session_timeout = {}",
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ),
        ];
        if self.target.config.mode == UpstreamMode::SetRole {
            setup.push(format!("SET LOCAL ROLE {}", quote_ident(&self.role)));
        }
        if let Some(key) = self.target.signing_key().await {
            let claims = key.sign(&self.identity, upstream.key.process_id);
            setup.push(format!(
                "SET LOCAL postern.claims = {}",
                quote_literal(&claims)
            ));
        }
        if !self.search_path.is_empty() {
            let schemas: Vec<String> = self.search_path.iter().map(|s| quote_ident(s)).collect();
            setup.push(format!("SET LOCAL search_path TO {}", schemas.join(", ")));
        }
        let answer = ask(upstream, &setup.join("; "), 0).await?;
        if answer.status != Some(TransactionStatus::InTransaction) {
            let error = answer
                .error
                .unwrap_or_else(|| "the preview's transaction did not start".to_owned());
            return failed(error, None);
        }
        if let Some(sql) = catalog::findings_query(eligible) {
            let answer = ask(upstream, &sql, MAX_FINDINGS_BYTES).await?;
            if let Some(error) = answer.error {
                return failed(
                    format!("Postern could not check what the statement would set off: {error}"),
                    None,
                );
            }
            if !answer.lines.is_empty() {
                return Ok(Outcome::Unavailable(format!(
                    "no preview: {}",
                    answer.lines.join("; ")
                )));
            }
        }
        let text = self.analysis.text.as_str();
        let plan = if eligible.explain {
            let answer = ask(
                upstream,
                &format!("EXPLAIN (FORMAT TEXT) {text}"),
                MAX_PLAN_BYTES,
            )
            .await?;
            if let Some(error) = answer.error {
                return failed(error, None);
            }
            Some(plan_text(&answer))
        } else {
            None
        };
        let answer = ask(upstream, text, 0).await?;
        if let Some(error) = answer.error {
            return failed(error, plan);
        }
        if answer.status != Some(TransactionStatus::InTransaction) {
            // Eligibility keeps out every statement that ends a transaction; if one got through,
            // say so loudly rather than show a preview.
            tracing::error!(request = %self.request_id, status = ?answer.status, "impact preview: the statement ended the preview's transaction");
            return failed(
                "the statement ended the preview's transaction; tell the operator".to_owned(),
                plan,
            );
        }
        let Some(tag) = answer.tags.last().cloned() else {
            return failed("the statement returned no command tag".to_owned(), plan);
        };
        let note = self.in_transaction.then(|| {
            "the requester's session was inside a transaction: the preview ran on its own \
             connection and did not see that transaction's uncommitted changes"
                .to_owned()
        });
        Ok(Outcome::Ran { tag, plan, note })
    }
}

/// What approvers are told when the preview's connection could not be opened.
fn connect_failure(error: &UpstreamError, role: &str) -> String {
    match error {
        UpstreamError::Server { code, message, .. } => format!("{code}: {message}"),
        UpstreamError::PoolBusy { max } => {
            format!("all {max} connections for role \"{role}\" are busy; the preview was not run")
        }
        _ => "Postern could not connect to the database for the preview; the operator's log has \
              the details"
            .to_owned(),
    }
}

/// The plan's lines, cut at [`MAX_PLAN_BYTES`], with secrets redacted as in the audit log (the
/// plan quotes the statement's constants).
fn plan_text(answer: &Answer) -> String {
    let mut plan = answer.lines.join("\n");
    if answer.truncated {
        plan.push_str("\n… (plan cut at 64 KiB)");
    }
    let redacted = postern_sql::redact(&plan);
    if redacted == postern_sql::REDACTED_PLACEHOLDER {
        "(plan withheld: Postern could not scan it for secrets)".to_owned()
    } else {
        redacted
    }
}

/// What one simple Query answered.
#[derive(Debug, Default)]
struct Answer {
    /// The first column of the rows, as text, as long as they fit the query's byte budget.
    lines: Vec<String>,
    /// Rows or bytes were left out.
    truncated: bool,
    /// The CommandComplete tags, in order.
    tags: Vec<String>,
    /// The first ErrorResponse, as `SQLSTATE: message`.
    error: Option<String>,
    /// The transaction status of the closing ReadyForQuery.
    status: Option<TransactionStatus>,
}

/// Sends `sql` as one simple Query and reads to ReadyForQuery within [`REPLY_WAIT`], keeping at
/// most `keep` bytes of the rows' first column. Not cancel safe: dropped midway, the connection
/// is between messages and must be closed.
async fn ask(upstream: &mut Upstream, sql: &str, keep: usize) -> Result<Answer, Broken> {
    tokio::time::timeout(REPLY_WAIT, query(upstream, sql, keep))
        .await
        .map_err(|_| Broken::Timeout(REPLY_WAIT))?
}

async fn query(upstream: &mut Upstream, sql: &str, keep: usize) -> Result<Answer, Broken> {
    let mut out = BytesMut::new();
    frontend::encode_query(sql, &mut out);
    upstream
        .stream
        .write_all(&out)
        .await
        .map_err(UpstreamError::from)?;
    let mut reader = FrameReader::new(limits::MAX_BACKEND_MESSAGE_LENGTH);
    reader.buffer = std::mem::take(&mut upstream.buffer);
    let mut answer = Answer::default();
    let mut kept = 0;
    let result = loop {
        let frame = match reader.next(&mut upstream.stream).await {
            Ok(frame) => frame,
            Err(error) => break Err(Broken::from(error)),
        };
        match frame.tag() {
            backend::DATA_ROW => {
                let row = backend::data_row(&frame).map_err(UpstreamError::from)?;
                let line = row
                    .first()
                    .copied()
                    .flatten()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                if keep > 0 && kept + line.len() <= keep {
                    kept += line.len() + 1;
                    answer.lines.push(line.into_owned());
                } else {
                    answer.truncated = true;
                }
            }
            backend::COMMAND_COMPLETE => {
                let tag = backend::command_tag(&frame).map_err(UpstreamError::from)?;
                answer.tags.push(tag.to_owned());
            }
            backend::ERROR_RESPONSE if answer.error.is_none() => {
                answer.error = Some(match crate::upstream::server_error(&frame) {
                    UpstreamError::Server { code, message, .. } => format!("{code}: {message}"),
                    other => return Err(Broken::from(other)),
                });
            }
            backend::COPY_IN_RESPONSE
            | backend::COPY_OUT_RESPONSE
            | backend::COPY_BOTH_RESPONSE => {
                break Err(Broken::Copy);
            }
            backend::READY_FOR_QUERY => {
                answer.status =
                    Some(backend::ready_for_query(&frame).map_err(UpstreamError::from)?);
                break Ok(answer);
            }
            // RowDescription, NoticeResponse, ParameterStatus, EmptyQueryResponse, a second
            // ErrorResponse: nothing the preview needs.
            _ => {}
        }
    };
    upstream.buffer = reader.buffer;
    result
}

#[cfg(test)]
mod tests {
    use super::{Answer, Outcome, plan_text};

    #[test]
    fn stored_previews_have_the_documented_shape() {
        let ran = Outcome::Ran {
            tag: "DELETE 2".to_owned(),
            plan: Some("Delete on orders".to_owned()),
            note: None,
        };
        assert_eq!(
            ran.stored(7),
            serde_json::json!({"rows": 2, "command_tag": "DELETE 2", "plan": "Delete on orders", "ran_at": 7})
        );
        let ddl = Outcome::Ran {
            tag: "ALTER TABLE".to_owned(),
            plan: None,
            note: Some("n".to_owned()),
        };
        assert_eq!(ddl.stored(1)["rows"], serde_json::Value::Null);
        assert_eq!(ddl.stored(1)["note"], "n");
        let unavailable = Outcome::Unavailable("no preview: x".to_owned());
        assert_eq!(
            unavailable.stored(1),
            serde_json::json!({"unavailable": "no preview: x"})
        );
        let failed = Outcome::Failed {
            error: "55P03: lock timeout".to_owned(),
            plan: None,
        };
        assert_eq!(failed.stored(1)["error"], "55P03: lock timeout");
        assert_eq!(failed.audited("writer")["outcome"], "error");
        assert!(ran.audited("writer").get("plan").is_none());
    }

    #[test]
    fn plans_are_cut_and_redacted() {
        let answer = Answer {
            lines: vec![
                "Seq Scan on t".to_owned(),
                "  Filter: (dsn = 'host=db password=hunter2'::text)".to_owned(),
            ],
            truncated: true,
            ..Answer::default()
        };
        let plan = plan_text(&answer);
        assert!(!plan.contains("hunter2"), "{plan}");
        assert!(plan.starts_with("Seq Scan on t\n"), "{plan}");
        assert!(plan.ends_with("(plan cut at 64 KiB)"), "{plan}");
    }
}
