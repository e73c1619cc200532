//! The `approval_requests`, `approval_votes` and `grants` tables.
//!
//! A vote is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock *before* reading the
//! request, so two approvers voting at once (in one process or two sharing the file) are
//! serialised, and the second sees the first's outcome; a request can never make two grants (the
//! `UNIQUE (request_id)` on `grants` says so again). Taking a use of a grant is one conditional
//! `UPDATE … RETURNING`, so two sessions racing for a grant's last use cannot both have it.
//! Reads of a request with its votes run in one (deferred) transaction, so they see one snapshot.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row as _, SqliteConnection};

use super::tally::{GrantTerms, Tally, tally};
use super::{
    ActionOn, ApprovalRequest, Grant, GrantScope, MAX_PREVIEW_BYTES, NewApprovalRequest, NewVote,
    RequestState, Verdict, Vote, VoteOutcome,
};
use crate::error::ConflictReason;
use crate::revocation::check_name;
use crate::{Store, StoreError};

/// The request columns read back, in the order [`request_from_row`] expects; `r` is
/// `approval_requests`.
const REQUEST_COLUMNS: &str = "r.id, r.requester_subject, r.requester_issuer, r.target, r.role, \
     r.session_id, r.client_ip, r.statement, r.statement_key, r.fingerprint, r.params_hash, \
     r.reason, r.actions, r.requirements, r.context, r.created_at, r.expires_at, r.state, \
     r.decided_at, r.preview, (SELECT g.id FROM grants g WHERE g.request_id = r.id) AS grant_id";

/// The vote columns read back.
const VOTE_COLUMNS: &str = "request_id, approver_subject, approver_issuer, approver_groups, \
     verdict, comment, scope, ttl_secs, budget, at";

/// The grant columns read back.
const GRANT_COLUMNS: &str = "id, request_id, subject, issuer, target, role, scope, statement_key, \
     actions, budget, uses, created_at, created_by, expires_at, revoked_at, revoked_by";

/// A grant still usable at the time bound to `now` (`"?"` or `"?N"`): the SQL twin of
/// [`Grant::is_active`]. The placeholder is the caller's because sqlx numbers plain `?`s apart from
/// `?N`s, so one statement must not mix them.
fn active(now: &str) -> String {
    format!("revoked_at IS NULL AND expires_at > {now} AND (budget IS NULL OR uses < budget)")
}

/// Random ids are 48 bits; a clash with an existing one is retried this many times in all.
const ID_ATTEMPTS: usize = 4;

/// What went wrong inside an operation, before it is named.
enum Fault {
    Query(sqlx::Error),
    Corrupt(String),
    /// Already a complete error (a conflict found inside the transaction).
    Store(StoreError),
}

impl From<sqlx::Error> for Fault {
    fn from(error: sqlx::Error) -> Self {
        Self::Query(error)
    }
}

impl From<StoreError> for Fault {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl Store {
    /// Files a new request, pending, and returns it with its id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for what [`NewApprovalRequest::validate`] refuses,
    /// [`StoreError::Query`] if it could not be written.
    pub async fn create_request(
        &self,
        new: NewApprovalRequest,
    ) -> Result<ApprovalRequest, StoreError> {
        const OPERATION: &str = "file an approval request";
        new.validate()?;
        let actions = to_json(&new.actions);
        let requirements = to_json(&new.requirements);
        let context = new.context.to_string();
        let sql = "INSERT INTO approval_requests \
             (id, requester_subject, requester_issuer, target, role, session_id, client_ip, \
              statement, statement_key, fingerprint, params_hash, reason, actions, requirements, \
              context, created_at, expires_at) \
             VALUES (lower(hex(randomblob(6))), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING id";
        let mut attempt = 1;
        let id: String = loop {
            let inserted = sqlx::query_scalar(sql)
                .bind(&new.requester_subject)
                .bind(&new.requester_issuer)
                .bind(&new.target)
                .bind(&new.role)
                .bind(&new.session_id)
                .bind(&new.client_ip)
                .bind(&new.statement)
                .bind(&new.statement_key)
                .bind(&new.fingerprint)
                .bind(&new.params_hash)
                .bind(&new.reason)
                .bind(&actions)
                .bind(&requirements)
                .bind(&context)
                .bind(new.created_at)
                .bind(new.expires_at)
                .fetch_one(&self.pool)
                .await;
            match inserted {
                Err(sqlx::Error::Database(error))
                    if error.is_unique_violation() && attempt < ID_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => break other.map_err(|source| self.query_error(OPERATION, source))?,
            }
        };
        let NewApprovalRequest {
            requester_subject,
            requester_issuer,
            target,
            role,
            session_id,
            client_ip,
            statement,
            statement_key,
            fingerprint,
            params_hash,
            reason,
            actions,
            requirements,
            context,
            created_at,
            expires_at,
        } = new;
        Ok(ApprovalRequest {
            id,
            requester_subject,
            requester_issuer,
            target,
            role,
            session_id,
            client_ip,
            statement,
            statement_key,
            fingerprint,
            params_hash,
            reason,
            actions,
            requirements,
            context,
            created_at,
            expires_at,
            state: RequestState::Pending,
            decided_at: None,
            votes: Vec::new(),
            grant_id: None,
            preview: None,
        })
    }

    /// Request `id` with its votes, if there is one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if it could not be read.
    pub async fn approval_request(&self, id: &str) -> Result<Option<ApprovalRequest>, StoreError> {
        const OPERATION: &str = "read an approval request";
        let read = async {
            let mut tx = self.pool.begin().await?;
            let found = request_by_id(&mut tx, id).await?;
            tx.commit().await?;
            Ok(found)
        };
        read.await.map_err(|fault| self.fault(OPERATION, fault))
    }

    /// Requests with their votes, newest first, at most `limit`; only those in `state` if given.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if they could not be read.
    pub async fn approval_requests(
        &self,
        state: Option<RequestState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        const OPERATION: &str = "list the approval requests";
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests r \
             WHERE ?1 IS NULL OR r.state = ?1 ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?2"
        );
        let read = async {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(&sql)
                .bind(state.map(RequestState::as_str))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            let requests = with_votes(&mut tx, &rows).await?;
            tx.commit().await?;
            Ok(requests)
        };
        read.await.map_err(|fault| self.fault(OPERATION, fault))
    }

    /// Casts a vote on request `request_id`: records it, decides the request from its votes, and
    /// if that approves it, makes the grant — all in one write transaction.
    ///
    /// A vote from someone outside every requirement's group is recorded but does not count. A
    /// pending request whose `expires_at` is not after the vote's `at` is marked expired (that
    /// change is kept) and the vote refused.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for what [`NewVote::validate`] refuses or a vote by the requester,
    /// [`StoreError::NotFound`] for no such request, [`StoreError::Conflict`] if it is no longer
    /// pending or this approver already voted, [`StoreError::Query`] if it could not be written.
    pub async fn vote(&self, request_id: &str, new: NewVote) -> Result<VoteOutcome, StoreError> {
        const OPERATION: &str = "vote on an approval request";
        new.validate()?;
        let write = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let Some(request) = request_by_id(&mut tx, request_id).await? else {
                return Err(StoreError::NotFound {
                    what: "approval request",
                    id: request_id.to_owned(),
                }
                .into());
            };
            if request.state == RequestState::Pending && request.expires_at <= new.at {
                sqlx::query(
                    "UPDATE approval_requests SET state = 'expired', decided_at = ? \
                     WHERE id = ? AND state = 'pending'",
                )
                .bind(new.at)
                .bind(request_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Err(not_pending(request_id, RequestState::Expired).into());
            }
            check_vote(&request, &new)?;
            insert_vote(&mut tx, request_id, &new).await?;

            let mut votes = request.votes.clone();
            votes.push(Vote::from(new.clone()));
            let decision = tally(
                &request.requester_issuer,
                &request.requester_subject,
                &request.requirements,
                &votes,
            );
            let state = match &decision {
                Tally::Pending => RequestState::Pending,
                Tally::Denied => RequestState::Denied,
                Tally::Approved(_) => RequestState::Approved,
            };
            let grant = if let Tally::Approved(terms) = &decision {
                Some(insert_grant(&mut tx, &request, terms, new.at).await?)
            } else {
                None
            };
            if state != RequestState::Pending {
                sqlx::query("UPDATE approval_requests SET state = ?, decided_at = ? WHERE id = ?")
                    .bind(state.as_str())
                    .bind(new.at)
                    .bind(request_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let request = request_by_id(&mut tx, request_id)
                .await?
                .ok_or_else(|| Fault::Corrupt(format!("request {request_id} vanished")))?;
            tx.commit().await?;
            Ok(match grant {
                Some(grant) => VoteOutcome::Approved(request, grant),
                None if state == RequestState::Denied => VoteOutcome::Denied(request),
                None => VoteOutcome::Recorded(request),
            })
        };
        write.await.map_err(|fault| self.fault(OPERATION, fault))
    }

    /// Moves request `id` from `from` to `to` at `at` (unix seconds), only if it is in `from`
    /// now: for withdrawing or expiring a pending request. `false` if it was not (or there is no
    /// such request).
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for `to` pending or approved (approval happens only through votes,
    /// which make the grant), [`StoreError::Query`] if it could not be written.
    pub async fn set_request_state(
        &self,
        id: &str,
        from: RequestState,
        to: RequestState,
        at: i64,
    ) -> Result<bool, StoreError> {
        const OPERATION: &str = "change an approval request's state";
        if matches!(to, RequestState::Pending | RequestState::Approved) {
            return Err(StoreError::Invalid {
                field: "to",
                problem: "a request becomes pending only when filed, and approved only by votes",
            });
        }
        let done = sqlx::query(
            "UPDATE approval_requests SET state = ?, decided_at = ? WHERE id = ? AND state = ?",
        )
        .bind(to.as_str())
        .bind(at)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await
        .map_err(|source| self.query_error(OPERATION, source))?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks every request still pending at `now` (unix seconds) whose `expires_at` is not after
    /// it as expired (`decided_at` = `now`), and returns them: each is returned once, by whichever
    /// caller expired it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if they could not be written or read.
    pub async fn expire_requests(&self, now: i64) -> Result<Vec<ApprovalRequest>, StoreError> {
        const OPERATION: &str = "expire approval requests";
        let write = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let ids: Vec<String> = sqlx::query_scalar(
                "UPDATE approval_requests SET state = 'expired', decided_at = ?1 \
                 WHERE state = 'pending' AND expires_at <= ?1 RETURNING id",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM approval_requests r \
                 WHERE r.id IN (SELECT value FROM json_each(?)) \
                 ORDER BY r.created_at DESC, r.rowid DESC"
            );
            let rows = sqlx::query(&sql)
                .bind(to_json(&ids))
                .fetch_all(&mut *tx)
                .await?;
            let requests = with_votes(&mut tx, &rows).await?;
            tx.commit().await?;
            Ok(requests)
        };
        write.await.map_err(|fault| self.fault(OPERATION, fault))
    }

    /// Attaches a preview (what the statement would do) to request `id`, replacing any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a preview larger than [`MAX_PREVIEW_BYTES`] as JSON,
    /// [`StoreError::NotFound`] for no such request, [`StoreError::Query`] if it could not be
    /// written.
    pub async fn set_preview(
        &self,
        id: &str,
        preview: serde_json::Value,
    ) -> Result<(), StoreError> {
        const OPERATION: &str = "set an approval request's preview";
        let preview = preview.to_string();
        if preview.len() > MAX_PREVIEW_BYTES {
            return Err(StoreError::Invalid {
                field: "preview",
                problem: "larger than 1 MiB as JSON",
            });
        }
        let done = sqlx::query("UPDATE approval_requests SET preview = ? WHERE id = ?")
            .bind(preview)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "approval request",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Takes one use of a statement-scoped grant that lets `(issuer, subject)` run the statement
    /// keyed `statement_key` on `target` as `role` at `now`, and returns the grant after the use.
    /// Of several, the one expiring first is used. `None` if no grant covers it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if it could not be written or read.
    pub async fn consume_statement_grant(
        &self,
        subject: &str,
        issuer: &str,
        target: &str,
        role: &str,
        statement_key: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        const OPERATION: &str = "use a statement grant";
        // One statement, so the choice and the use are atomic under the write lock.
        let sql = format!(
            "UPDATE grants SET uses = uses + 1 WHERE id = ( \
                 SELECT id FROM grants \
                 WHERE subject = ?1 AND issuer = ?2 AND target = ?3 AND role = ?4 \
                   AND scope = 'statement' AND statement_key = ?5 \
                   AND {} \
                 ORDER BY expires_at, rowid LIMIT 1) \
             RETURNING {GRANT_COLUMNS}",
            active("?6")
        );
        let row = sqlx::query(&sql)
            .bind(subject)
            .bind(issuer)
            .bind(target)
            .bind(role)
            .bind(statement_key)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        row.map(|row| self.grant_row(OPERATION, &row)).transpose()
    }

    /// Takes one use of an action-scoped grant that lets `(issuer, subject)` do every one of
    /// `asked` on `target` as `role` at `now`, and returns the grant after the use. Of several,
    /// the one expiring first is used. `None` if no grant covers them all (or `asked` is empty).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if it could not be written or read.
    pub async fn consume_action_grant(
        &self,
        subject: &str,
        issuer: &str,
        target: &str,
        role: &str,
        asked: &[ActionOn],
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        const OPERATION: &str = "use an action grant";
        if asked.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM grants \
             WHERE subject = ? AND issuer = ? AND target = ? AND role = ? AND scope = 'action' \
               AND {} \
             ORDER BY expires_at, rowid",
            active("?")
        );
        let rows = sqlx::query(&sql)
            .bind(subject)
            .bind(issuer)
            .bind(target)
            .bind(role)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        let take = format!(
            "UPDATE grants SET uses = uses + 1 WHERE id = ? AND {} RETURNING {GRANT_COLUMNS}",
            active("?")
        );
        for row in &rows {
            let candidate = self.grant_row(OPERATION, row)?;
            if !candidate.covers_actions(subject, issuer, target, role, asked, now) {
                continue;
            }
            // Another session may have taken the last use, or the grant been revoked, since the
            // read: then this matches nothing and the next candidate is tried.
            let taken = sqlx::query(&take)
                .bind(&candidate.id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(|source| self.query_error(OPERATION, source))?;
            if let Some(row) = taken {
                return self.grant_row(OPERATION, &row).map(Some);
            }
        }
        Ok(None)
    }

    /// Takes one use of the grant made by approving request `request_id`, if it is still active at
    /// `now`: what the statement held for that request runs on.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if it could not be written or read.
    pub async fn consume_request_grant(
        &self,
        request_id: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        const OPERATION: &str = "use a request's grant";
        let sql = format!(
            "UPDATE grants SET uses = uses + 1 WHERE request_id = ? AND {} \
             RETURNING {GRANT_COLUMNS}",
            active("?")
        );
        let row = sqlx::query(&sql)
            .bind(request_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        row.map(|row| self.grant_row(OPERATION, &row)).transpose()
    }

    /// Grants, newest first: only those active at `now` (unix seconds) unless `include_inactive`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if they could not be read.
    pub async fn grants(&self, include_inactive: bool, now: i64) -> Result<Vec<Grant>, StoreError> {
        const OPERATION: &str = "list the grants";
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE ? OR ({}) \
             ORDER BY created_at DESC, rowid DESC",
            active("?")
        );
        let rows = sqlx::query(&sql)
            .bind(include_inactive)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        rows.iter()
            .map(|row| self.grant_row(OPERATION, row))
            .collect()
    }

    /// Grant `id`, active or not, if there is one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if it could not be read.
    pub async fn grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        const OPERATION: &str = "read a grant";
        let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        row.map(|row| self.grant_row(OPERATION, &row)).transpose()
    }

    /// Revokes grant `id` at `at` (unix seconds) on behalf of `by` (a verified subject), and
    /// returns it as it now stands. `None` if there is no such grant active at `at` (revoked,
    /// expired or used up already).
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or oversized `by`, [`StoreError::Query`] if it could
    /// not be written.
    pub async fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        at: i64,
    ) -> Result<Option<Grant>, StoreError> {
        const OPERATION: &str = "revoke a grant";
        check_name("revoked_by", by)?;
        let sql = format!(
            "UPDATE grants SET revoked_at = ?1, revoked_by = ?2 \
             WHERE id = ?3 AND {} RETURNING {GRANT_COLUMNS}",
            active("?1")
        );
        let row = sqlx::query(&sql)
            .bind(at)
            .bind(by)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        row.map(|row| self.grant_row(OPERATION, &row)).transpose()
    }

    /// The grants that have expired by `now` (unix seconds) and were not reported yet, marked
    /// reported: each expiry is returned once, to whichever caller (of any process) saw it first,
    /// so it is audited once. Revoked grants are not reported: their end was audited when they
    /// were revoked. Used-up grants are, when they expire.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if they could not be written or read.
    pub async fn lapse_grants(&self, now: i64) -> Result<Vec<Grant>, StoreError> {
        const OPERATION: &str = "report lapsed grants";
        let sql = format!(
            "UPDATE grants SET lapse_reported = 1 \
             WHERE lapse_reported = 0 AND revoked_at IS NULL AND expires_at <= ? \
             RETURNING {GRANT_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        let mut grants = rows
            .iter()
            .map(|row| self.grant_row(OPERATION, row))
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order.
        grants.sort_by_key(|grant| grant.expires_at);
        Ok(grants)
    }

    fn fault(&self, operation: &'static str, fault: Fault) -> StoreError {
        match fault {
            Fault::Query(source) => self.query_error(operation, source),
            Fault::Corrupt(detail) => self.corrupt(operation, detail),
            Fault::Store(error) => error,
        }
    }

    fn corrupt(&self, operation: &'static str, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.location(),
            operation,
            detail,
        }
    }

    fn grant_row(&self, operation: &'static str, row: &SqliteRow) -> Result<Grant, StoreError> {
        grant_from_row(row).map_err(|detail| self.corrupt(operation, detail))
    }
}

/// The checks on a vote that need the request: pending, not the requester's own, not twice.
fn check_vote(request: &ApprovalRequest, new: &NewVote) -> Result<(), StoreError> {
    if request.state != RequestState::Pending {
        return Err(not_pending(&request.id, request.state));
    }
    if request.is_requester(&new.approver_issuer, &new.approver_subject) {
        return Err(StoreError::Invalid {
            field: "approver",
            problem: match new.verdict {
                Verdict::Approve => "a requester cannot approve their own request",
                Verdict::Deny => "a requester cannot deny their own request: withdraw it instead",
            },
        });
    }
    let voted = request.votes.iter().any(|vote| {
        vote.approver_issuer == new.approver_issuer && vote.approver_subject == new.approver_subject
    });
    if voted {
        return Err(already_voted(&request.id, new));
    }
    Ok(())
}

fn not_pending(request_id: &str, state: RequestState) -> StoreError {
    StoreError::Conflict {
        request_id: request_id.to_owned(),
        reason: ConflictReason::NotPending { state },
    }
}

fn already_voted(request_id: &str, new: &NewVote) -> StoreError {
    StoreError::Conflict {
        request_id: request_id.to_owned(),
        reason: ConflictReason::AlreadyVoted {
            approver_subject: new.approver_subject.clone(),
            approver_issuer: new.approver_issuer.clone(),
        },
    }
}

async fn request_by_id(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<ApprovalRequest>, Fault> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM approval_requests r WHERE r.id = ?");
    let rows = sqlx::query(&sql).bind(id).fetch_all(&mut *conn).await?;
    Ok(with_votes(conn, &rows).await?.pop())
}

/// The requests in `rows`, in order, each with its votes (oldest first), read in one query.
async fn with_votes(
    conn: &mut SqliteConnection,
    rows: &[SqliteRow],
) -> Result<Vec<ApprovalRequest>, Fault> {
    let mut requests = rows
        .iter()
        .map(request_from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Fault::Corrupt)?;
    if requests.is_empty() {
        return Ok(requests);
    }
    let ids: Vec<&str> = requests.iter().map(|request| request.id.as_str()).collect();
    let sql = format!(
        "SELECT {VOTE_COLUMNS} FROM approval_votes \
         WHERE request_id IN (SELECT value FROM json_each(?)) ORDER BY at, rowid"
    );
    let vote_rows = sqlx::query(&sql)
        .bind(to_json(&ids))
        .fetch_all(&mut *conn)
        .await?;
    let mut votes: HashMap<String, Vec<Vote>> = HashMap::new();
    for row in &vote_rows {
        let (request_id, vote) = vote_from_row(row).map_err(Fault::Corrupt)?;
        votes.entry(request_id).or_default().push(vote);
    }
    for request in &mut requests {
        request.votes = votes.remove(&request.id).unwrap_or_default();
    }
    Ok(requests)
}

async fn insert_vote(
    conn: &mut SqliteConnection,
    request_id: &str,
    new: &NewVote,
) -> Result<(), Fault> {
    let inserted = sqlx::query(
        "INSERT INTO approval_votes \
         (request_id, approver_subject, approver_issuer, approver_groups, verdict, comment, \
          scope, ttl_secs, budget, at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(request_id)
    .bind(&new.approver_subject)
    .bind(&new.approver_issuer)
    .bind(to_json(&new.approver_groups))
    .bind(new.verdict.as_str())
    .bind(&new.comment)
    .bind(new.scope.as_str())
    .bind(new.ttl_secs)
    .bind(new.budget.map(i64::from))
    .bind(new.at)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        // Checked before under the same write lock; kept so a hand-edited file fails clearly.
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            Err(already_voted(request_id, new).into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Makes the grant for `request`, approved at `at` on `terms`.
async fn insert_grant(
    conn: &mut SqliteConnection,
    request: &ApprovalRequest,
    terms: &GrantTerms,
    at: i64,
) -> Result<Grant, Fault> {
    let statement_key = match terms.scope {
        GrantScope::Statement => Some(request.statement_key.as_str()),
        GrantScope::Action => None,
    };
    let sql = format!(
        "INSERT INTO grants \
         (id, request_id, subject, issuer, target, role, scope, statement_key, actions, budget, \
          created_at, created_by, expires_at) \
         VALUES (lower(hex(randomblob(6))), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         RETURNING {GRANT_COLUMNS}"
    );
    let mut attempt = 1;
    let row = loop {
        // A failed statement is undone alone; the transaction goes on.
        let inserted = sqlx::query(&sql)
            .bind(&request.id)
            .bind(&request.requester_subject)
            .bind(&request.requester_issuer)
            .bind(&request.target)
            .bind(&request.role)
            .bind(terms.scope.as_str())
            .bind(statement_key)
            .bind(to_json(&request.actions))
            .bind(terms.budget.map(i64::from))
            .bind(at)
            .bind(to_json(&terms.approvers))
            .bind(at.saturating_add(terms.ttl_secs))
            .fetch_one(&mut *conn)
            .await;
        match inserted {
            Err(sqlx::Error::Database(error))
                if error.is_unique_violation() && attempt < ID_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => break other?,
        }
    };
    grant_from_row(&row).map_err(Fault::Corrupt)
}

/// Lists and objects as JSON text. Serialising these plain types cannot fail.
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|error| format!("column {column}: {error}"))
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, String>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(|error| error.to_string())
}

fn json_column<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, String> {
    let text: String = get(row, column)?;
    from_json(column, &text)
}

fn count(column: &str, value: i64) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("column {column}: {value} is out of range"))
}

fn request_from_row(row: &SqliteRow) -> Result<ApprovalRequest, String> {
    let id: String = get(row, "id")?;
    let state: String = get(row, "state")?;
    let state = RequestState::parse(&state)
        .ok_or_else(|| format!("request {id}: state {state:?} is not one this Postern knows"))?;
    let preview: Option<String> = get(row, "preview")?;
    Ok(ApprovalRequest {
        requester_subject: get(row, "requester_subject")?,
        requester_issuer: get(row, "requester_issuer")?,
        target: get(row, "target")?,
        role: get(row, "role")?,
        session_id: get(row, "session_id")?,
        client_ip: get(row, "client_ip")?,
        statement: get(row, "statement")?,
        statement_key: get(row, "statement_key")?,
        fingerprint: get(row, "fingerprint")?,
        params_hash: get(row, "params_hash")?,
        reason: get(row, "reason")?,
        actions: json_column(row, "actions")?,
        requirements: json_column(row, "requirements")?,
        context: json_column(row, "context")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        state,
        decided_at: get(row, "decided_at")?,
        votes: Vec::new(),
        grant_id: get(row, "grant_id")?,
        preview: preview
            .map(|text| from_json("preview", &text))
            .transpose()?,
        id,
    })
}

fn vote_from_row(row: &SqliteRow) -> Result<(String, Vote), String> {
    let request_id: String = get(row, "request_id")?;
    let verdict: String = get(row, "verdict")?;
    let scope: String = get(row, "scope")?;
    let budget: Option<i64> = get(row, "budget")?;
    let vote = Vote {
        approver_subject: get(row, "approver_subject")?,
        approver_issuer: get(row, "approver_issuer")?,
        approver_groups: json_column(row, "approver_groups")?,
        verdict: Verdict::parse(&verdict).ok_or_else(|| {
            format!("vote on {request_id}: verdict {verdict:?} is not one this Postern knows")
        })?,
        comment: get(row, "comment")?,
        scope: GrantScope::parse(&scope).ok_or_else(|| {
            format!("vote on {request_id}: scope {scope:?} is not one this Postern knows")
        })?,
        ttl_secs: get(row, "ttl_secs")?,
        budget: budget.map(|budget| count("budget", budget)).transpose()?,
        at: get(row, "at")?,
    };
    Ok((request_id, vote))
}

fn grant_from_row(row: &SqliteRow) -> Result<Grant, String> {
    let id: String = get(row, "id")?;
    let scope: String = get(row, "scope")?;
    let scope = GrantScope::parse(&scope)
        .ok_or_else(|| format!("grant {id}: scope {scope:?} is not one this Postern knows"))?;
    let budget: Option<i64> = get(row, "budget")?;
    Ok(Grant {
        request_id: get(row, "request_id")?,
        subject: get(row, "subject")?,
        issuer: get(row, "issuer")?,
        target: get(row, "target")?,
        role: get(row, "role")?,
        scope,
        statement_key: get(row, "statement_key")?,
        actions: json_column(row, "actions")?,
        budget: budget.map(|budget| count("budget", budget)).transpose()?,
        uses: count("uses", get(row, "uses")?)?,
        created_at: get(row, "created_at")?,
        created_by: json_column(row, "created_by")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        revoked_by: get(row, "revoked_by")?,
        id,
    })
}
