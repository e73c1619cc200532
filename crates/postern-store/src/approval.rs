//! Just-in-time approvals as plain data: a statement held until approvers approve it, their votes,
//! and the grant an approval makes.
//!
//! The flow: the proxy meets a statement whose policy says `@approval`, and files an
//! [`ApprovalRequest`] naming the [`Requirement`]s (so many people of such a group). Approvers
//! vote; the vote that satisfies every requirement makes a [`Grant`], which the held statement
//! then uses once. What remains of the grant (its budget and TTL, chosen by the approvers) lets the
//! requester run the same statement ([`GrantScope::Statement`]) or the same actions
//! ([`GrantScope::Action`]) again without asking.
//!
//! Nothing here does I/O: [`ApprovalRequest::tally`] (in `approval/tally.rs`) decides a request
//! from its votes, and [`Grant::covers_statement`] / [`Grant::covers_actions`] say what a grant
//! allows at a given time. Reading and writing them is in `approval/table.rs`.
//!
//! Identities match exactly and case-sensitively, as in revocations: an approval for one subject
//! must never be usable by another whose name differs only in case.

mod table;
mod tally;

use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::revocation::check_name;

pub use tally::{GrantTerms, Tally};

/// The longest statement text a request may hold: 64 KiB. The proxy stores the redacted text
/// for display; a longer one should be shortened by the caller rather than refused at approval
/// time, so the limit is generous.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// The longest reason a requester, or comment an approver, may give, in characters.
pub const MAX_JUSTIFICATION_CHARS: usize = 1000;

/// The largest `context` object a request may carry, as JSON.
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;

/// The largest preview ([`Store::set_preview`](crate::Store::set_preview)) a request may carry,
/// as JSON.
pub const MAX_PREVIEW_BYTES: usize = 1024 * 1024;

/// The most `(action, resource)` pairs a request may name.
pub const MAX_ACTIONS: usize = 1024;

/// The most requirements a request may carry.
pub const MAX_REQUIREMENTS: usize = 64;

/// The most groups an approver's vote may record.
pub const MAX_GROUPS: usize = 1024;

/// What an approval is needed for: one `(action, resource)` pair the statement asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionOn {
    /// What the statement does: `"write"`, `"ddl"`, …
    pub action: String,
    /// What it does it to: `"public.orders"`, `"target demo"`, …
    pub resource: String,
}

/// One approval requirement, from a policy's `@approval` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The policy that asked for approval, named in the request so approvers see why.
    pub policy: String,
    /// The group whose members may approve.
    pub group: String,
    /// How many distinct members of `group` must approve (at least 1).
    pub approvers: u32,
    /// How long the grant lasts, in seconds, unless an approver asks for less.
    pub grant_ttl_secs: i64,
    /// Whether approvers should be shown a preview of the statement's effect before voting.
    pub preview: bool,
}

/// A request to be filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApprovalRequest {
    /// The verified subject of whoever ran the statement.
    pub requester_subject: String,
    /// Their issuer (the token's `iss`).
    pub requester_issuer: String,
    /// The target (database) the statement is for.
    pub target: String,
    /// The database role the session runs as.
    pub role: String,
    /// The session holding the statement.
    pub session_id: String,
    /// The client's address, for approvers to judge the request.
    pub client_ip: String,
    /// The statement's redacted text, for display.
    pub statement: String,
    /// Hex SHA-256 of the exact text and bound parameters: what a statement-scoped grant covers.
    pub statement_key: String,
    /// The statement's fingerprint (same shape, any constants), to group similar requests.
    pub fingerprint: String,
    /// Hash of the bound parameters, if the statement had any.
    #[serde(default)]
    pub params_hash: Option<String>,
    /// Why the requester needs it.
    #[serde(default)]
    pub reason: Option<String>,
    /// What the statement asks for; an action-scoped grant covers these.
    pub actions: Vec<ActionOn>,
    /// Who must approve.
    pub requirements: Vec<Requirement>,
    /// Free-form facts for approvers (`application_name`, protocol, in transaction…): a JSON
    /// object.
    #[serde(default = "empty_object")]
    pub context: serde_json::Value,
    /// When it was filed, in unix seconds.
    pub created_at: i64,
    /// When it lapses ([`RequestState::Expired`]) if still pending, in unix seconds.
    pub expires_at: i64,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl NewApprovalRequest {
    /// Checks what [`Store::create_request`](crate::Store::create_request) would refuse.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the first field at fault.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_name("requester_subject", &self.requester_subject)?;
        check_name("requester_issuer", &self.requester_issuer)?;
        check_name("target", &self.target)?;
        check_name("role", &self.role)?;
        check_name("session_id", &self.session_id)?;
        check_name("statement_key", &self.statement_key)?;
        check_bounded("client_ip", &self.client_ip)?;
        check_bounded("fingerprint", &self.fingerprint)?;
        if let Some(params_hash) = &self.params_hash {
            check_bounded("params_hash", params_hash)?;
        }
        if self.statement.is_empty() {
            return Err(invalid("statement", "empty"));
        }
        if self.statement.len() > MAX_STATEMENT_BYTES {
            return Err(invalid("statement", "longer than 64 KiB"));
        }
        check_justification("reason", self.reason.as_deref())?;
        if self.actions.len() > MAX_ACTIONS {
            return Err(invalid("actions", "more than 1024"));
        }
        for action in &self.actions {
            check_name("action", &action.action)?;
            check_name("resource", &action.resource)?;
        }
        if self.requirements.is_empty() {
            return Err(invalid(
                "requirements",
                "none: nobody could approve the request",
            ));
        }
        if self.requirements.len() > MAX_REQUIREMENTS {
            return Err(invalid("requirements", "more than 64"));
        }
        for requirement in &self.requirements {
            check_name("policy", &requirement.policy)?;
            check_name("group", &requirement.group)?;
            if requirement.approvers == 0 {
                return Err(invalid("approvers", "0: at least one approver is needed"));
            }
            if requirement.grant_ttl_secs < 1 {
                return Err(invalid("grant_ttl_secs", "less than 1 second"));
            }
        }
        if !self.context.is_object() {
            return Err(invalid("context", "not a JSON object"));
        }
        if self.context.to_string().len() > MAX_CONTEXT_BYTES {
            return Err(invalid("context", "larger than 64 KiB as JSON"));
        }
        if self.expires_at <= self.created_at {
            return Err(invalid(
                "expires_at",
                "not after created_at: the request would lapse at once",
            ));
        }
        Ok(())
    }
}

/// Where a request stands. Every state but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for votes.
    Pending,
    /// Every requirement met; a grant was made.
    Approved,
    /// An eligible approver denied it.
    Denied,
    /// The requester gave up (cancelled the statement, or the session ended).
    Withdrawn,
    /// Still pending at its `expires_at`.
    Expired,
}

impl RequestState {
    /// The name stored in the `state` column and used in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Denied,
            Self::Withdrawn,
            Self::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    /// The name stored in the `verdict` column.
    fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Approve, Self::Deny]
            .into_iter()
            .find(|verdict| verdict.as_str() == name)
    }
}

/// What a grant allows again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// The same statement with the same parameters ([`Grant::statement_key`]) only.
    Statement,
    /// Any statement asking for no more than the request's actions ([`Grant::actions`]).
    Action,
}

impl GrantScope {
    /// The name stored in the `scope` columns.
    fn as_str(self) -> &'static str {
        match self {
            Self::Statement => "statement",
            Self::Action => "action",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Statement, Self::Action]
            .into_iter()
            .find(|scope| scope.as_str() == name)
    }

    /// Uses allowed when no approver set a budget: a statement grant is for the one statement,
    /// an action grant lasts its TTL.
    #[must_use]
    pub fn default_budget(self) -> Option<u32> {
        match self {
            Self::Statement => Some(1),
            Self::Action => None,
        }
    }
}

/// A vote to be cast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVote {
    /// The approver's verified subject.
    pub approver_subject: String,
    /// Their issuer.
    pub approver_issuer: String,
    /// Their verified groups when voting: what decides whether the vote counts. Kept with the
    /// vote, so the tally does not change when someone's groups do later.
    pub approver_groups: Vec<String>,
    pub verdict: Verdict,
    /// What the approver says to the requester.
    #[serde(default)]
    pub comment: Option<String>,
    /// What the approver grants if this vote completes the approval.
    pub scope: GrantScope,
    /// How long the grant lasts, in seconds; `None`: the requirements' `grant_ttl_secs`.
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    /// Uses allowed; `None`: [`GrantScope::default_budget`].
    #[serde(default)]
    pub budget: Option<u32>,
    /// When, in unix seconds.
    pub at: i64,
}

impl NewVote {
    /// Checks what [`Store::vote`](crate::Store::vote) would refuse whatever the request.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the first field at fault.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_name("approver_subject", &self.approver_subject)?;
        check_name("approver_issuer", &self.approver_issuer)?;
        if self.approver_groups.len() > MAX_GROUPS {
            return Err(invalid("approver_groups", "more than 1024"));
        }
        for group in &self.approver_groups {
            check_name("approver_groups", group)?;
        }
        check_justification("comment", self.comment.as_deref())?;
        if self.ttl_secs.is_some_and(|ttl| ttl < 1) {
            return Err(invalid("ttl_secs", "less than 1 second"));
        }
        if self.budget == Some(0) {
            return Err(invalid("budget", "0: the grant could never be used"));
        }
        Ok(())
    }
}

/// A vote cast: the fields of the [`NewVote`] that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver_subject: String,
    pub approver_issuer: String,
    pub approver_groups: Vec<String>,
    pub verdict: Verdict,
    pub comment: Option<String>,
    pub scope: GrantScope,
    pub ttl_secs: Option<i64>,
    pub budget: Option<u32>,
    pub at: i64,
}

impl From<NewVote> for Vote {
    fn from(new: NewVote) -> Self {
        Self {
            approver_subject: new.approver_subject,
            approver_issuer: new.approver_issuer,
            approver_groups: new.approver_groups,
            verdict: new.verdict,
            comment: new.comment,
            scope: new.scope,
            ttl_secs: new.ttl_secs,
            budget: new.budget,
            at: new.at,
        }
    }
}

/// A stored request, with its votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// 12 lowercase hex digits, random.
    pub id: String,
    pub requester_subject: String,
    pub requester_issuer: String,
    pub target: String,
    pub role: String,
    pub session_id: String,
    pub client_ip: String,
    pub statement: String,
    pub statement_key: String,
    pub fingerprint: String,
    pub params_hash: Option<String>,
    pub reason: Option<String>,
    pub actions: Vec<ActionOn>,
    pub requirements: Vec<Requirement>,
    pub context: serde_json::Value,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: RequestState,
    /// When it left `Pending`, in unix seconds.
    pub decided_at: Option<i64>,
    /// Every vote cast, oldest first, those that do not count included.
    pub votes: Vec<Vote>,
    /// The grant its approval made.
    pub grant_id: Option<String>,
    /// What the statement would do, for approvers; set by
    /// [`Store::set_preview`](crate::Store::set_preview).
    pub preview: Option<serde_json::Value>,
}

impl ApprovalRequest {
    /// Whether `(issuer, subject)` filed this request.
    #[must_use]
    pub fn is_requester(&self, issuer: &str, subject: &str) -> bool {
        self.requester_issuer == issuer && self.requester_subject == subject
    }
}

/// A stored grant: what an approval allows its requester to run without asking again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// 12 lowercase hex digits, random.
    pub id: String,
    /// The request whose approval made it.
    pub request_id: String,
    /// The requester: only they may use it.
    pub subject: String,
    pub issuer: String,
    /// Only on this target, as this role.
    pub target: String,
    pub role: String,
    pub scope: GrantScope,
    /// For [`GrantScope::Statement`]: the statement and parameters covered.
    pub statement_key: Option<String>,
    /// The request's actions: what a [`GrantScope::Action`] grant covers (for a statement grant,
    /// shown only).
    pub actions: Vec<ActionOn>,
    /// Uses allowed; `None`: unlimited until it expires.
    pub budget: Option<u32>,
    /// Uses taken.
    pub uses: u32,
    /// When it was made, in unix seconds.
    pub created_at: i64,
    /// The subjects of the approvers whose votes made it.
    pub created_by: Vec<String>,
    /// When it lapses, in unix seconds: usable up to, not at, this time.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// The verified subject of whoever revoked it.
    pub revoked_by: Option<String>,
}

impl Grant {
    /// Not revoked, not expired at `now`, and not used up.
    #[must_use]
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none()
            && now < self.expires_at
            && self.budget.is_none_or(|budget| self.uses < budget)
    }

    /// Whether this grant, at `now`, lets `(issuer, subject)` run the statement whose key is
    /// `statement_key` on `target` as `role`.
    #[must_use]
    pub fn covers_statement(
        &self,
        subject: &str,
        issuer: &str,
        target: &str,
        role: &str,
        statement_key: &str,
        now: i64,
    ) -> bool {
        self.scope == GrantScope::Statement
            && self.statement_key.as_deref() == Some(statement_key)
            && self.is_for(subject, issuer, target, role)
            && self.is_active(now)
    }

    /// Whether this grant, at `now`, lets `(issuer, subject)` do every one of `asked` on `target`
    /// as `role`. Asking for nothing is covered by nothing: a caller that found no actions has not
    /// classified the statement, and must not run it on a grant.
    #[must_use]
    pub fn covers_actions(
        &self,
        subject: &str,
        issuer: &str,
        target: &str,
        role: &str,
        asked: &[ActionOn],
        now: i64,
    ) -> bool {
        self.scope == GrantScope::Action
            && !asked.is_empty()
            && asked.iter().all(|pair| self.actions.contains(pair))
            && self.is_for(subject, issuer, target, role)
            && self.is_active(now)
    }

    fn is_for(&self, subject: &str, issuer: &str, target: &str, role: &str) -> bool {
        self.subject == subject
            && self.issuer == issuer
            && self.target == target
            && self.role == role
    }
}

/// What a vote did to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per vote, moved once to the caller: boxing the grant would only make matching \
              clumsier"
)]
pub enum VoteOutcome {
    /// Recorded; the request is still pending.
    Recorded(ApprovalRequest),
    /// The vote completed the approval, which made the grant.
    Approved(ApprovalRequest, Grant),
    /// The vote denied the request.
    Denied(ApprovalRequest),
}

impl VoteOutcome {
    /// The request as it now stands.
    #[must_use]
    pub fn request(&self) -> &ApprovalRequest {
        match self {
            Self::Recorded(request) | Self::Approved(request, _) | Self::Denied(request) => request,
        }
    }

    /// The grant, if the vote made one.
    #[must_use]
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Self::Approved(_, grant) => Some(grant),
            Self::Recorded(_) | Self::Denied(_) => None,
        }
    }
}

fn invalid(field: &'static str, problem: &'static str) -> StoreError {
    StoreError::Invalid { field, problem }
}

/// A value that may be empty, but bounded like a name.
fn check_bounded(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.len() > crate::MAX_NAME_BYTES {
        return Err(invalid(field, "longer than 1024 bytes"));
    }
    Ok(())
}

/// A reason or comment: optional, bounded in characters (what a person types, not bytes).
fn check_justification(field: &'static str, value: Option<&str>) -> Result<(), StoreError> {
    if value.is_some_and(|text| text.chars().count() > MAX_JUSTIFICATION_CHARS) {
        return Err(invalid(field, "longer than 1000 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
