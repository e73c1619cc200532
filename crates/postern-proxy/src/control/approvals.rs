//! The approvers' side of just-in-time approval: list requests, vote on them, see and revoke
//! grants. An approver is verified like any client, must be allowed `approve` on the request's
//! target by policy, must belong to a group the request needs, and is never its requester.

use std::time::Duration;

use postern_policy::cedar::Action;
use postern_store::{
    ApprovalRequest, Grant, GrantScope, NewVote, RequestState, Verdict, VoteOutcome,
};
use serde_json::json;

use super::{Caller, Control, ControlError};

/// What an approver says.
#[derive(Debug, Clone)]
pub struct Ballot {
    pub verdict: Verdict,
    pub comment: Option<String>,
    /// The grant's lifetime; at most what the request's policy allows, which is the default.
    pub ttl: Option<Duration>,
    /// `statement` (the default: this exact text and parameters) or `action`.
    pub scope: Option<GrantScope>,
    /// How many times the grant may be used; statement grants default to once.
    pub budget: Option<u32>,
}

impl Control {
    /// Requests on targets where `caller` may `approve`, and the caller's own, newest first.
    pub async fn requests(
        &self,
        caller: &Caller,
        state: Option<RequestState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, ControlError> {
        let shared = self.shared()?;
        let requests = shared
            .approvals
            .store()
            .approval_requests(state, limit.clamp(1, 1000))
            .await?;
        Ok(requests
            .into_iter()
            .filter(|r| self.may_see(caller, r))
            .collect())
    }

    /// One request, if `caller` may see it.
    pub async fn request(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ApprovalRequest, ControlError> {
        let not_found = || ControlError::NotFound(format!("no approval request {id:?}"));
        let request = self
            .shared()?
            .approvals
            .store()
            .approval_request(id)
            .await?
            .ok_or_else(not_found)?;
        if !self.may_see(caller, &request) {
            return Err(not_found());
        }
        Ok(request)
    }

    /// Whether `caller` may see `request`: its requester, or someone who may approve there.
    pub fn may_see(&self, caller: &Caller, request: &ApprovalRequest) -> bool {
        request.is_requester(&caller.identity.issuer, &caller.identity.subject)
            || self
                .authorize(caller, Action::Approve, &request.target)
                .is_ok()
    }

    /// Approves or denies request `id` on behalf of `caller`.
    pub async fn vote(
        &self,
        caller: &Caller,
        id: &str,
        ballot: Ballot,
    ) -> Result<VoteOutcome, ControlError> {
        let request = self.request(caller, id).await?;
        let subject = &caller.identity.subject;
        if request.is_requester(&caller.identity.issuer, subject) {
            return Err(ControlError::Forbidden(format!(
                "{subject} asked for request {id}: a requester can never approve or deny their \
                 own request"
            )));
        }
        self.authorize(caller, Action::Approve, &request.target)?;
        let groups = &caller.identity.groups;
        if !request
            .requirements
            .iter()
            .any(|r| groups.contains(&r.group))
        {
            let needed: Vec<String> = request
                .requirements
                .iter()
                .map(|r| format!("\"{}\"", r.group))
                .collect();
            return Err(ControlError::Forbidden(format!(
                "{subject} is not in group {}, whose members decide request {id}",
                needed.join(" or ")
            )));
        }
        if request.state != RequestState::Pending {
            return Err(ControlError::Conflict(format!(
                "request {id} is {}, no longer pending",
                request.state.as_str()
            )));
        }
        let longest = request
            .requirements
            .iter()
            .map(|r| r.grant_ttl_secs)
            .min()
            .unwrap_or(0);
        let ttl_secs = match ballot.ttl {
            Some(ttl) => {
                let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
                if secs < 1 || secs > longest {
                    return Err(ControlError::Invalid(format!(
                        "ttl: the policy of request {id} allows grants of at most {}",
                        humantime::format_duration(Duration::from_secs(
                            u64::try_from(longest).unwrap_or(0)
                        ))
                    )));
                }
                Some(secs)
            }
            None => None,
        };
        if ballot.budget == Some(0) {
            return Err(ControlError::Invalid(
                "budget: a grant must allow at least one use".into(),
            ));
        }
        let shared = self.shared()?;
        let approvals = &shared.approvals;
        let verdict = match ballot.verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        };
        let scope = ballot.scope.unwrap_or(GrantScope::Statement);
        self.audit(
            caller,
            "vote",
            json!({
                "request": id,
                "verdict": verdict,
                "comment": ballot.comment,
                "scope": scope,
                "ttl_secs": ttl_secs,
                "budget": ballot.budget,
                "requester": request.requester_subject,
                "target": request.target,
            }),
        )
        .await?;
        let vote = NewVote {
            approver_subject: subject.clone(),
            approver_issuer: caller.identity.issuer.clone(),
            approver_groups: groups.clone(),
            verdict: ballot.verdict,
            comment: ballot.comment.clone(),
            scope,
            ttl_secs,
            budget: ballot.budget,
            at: approvals.now(),
        };
        let outcome = approvals.store().vote(id, vote).await?;
        match &outcome {
            VoteOutcome::Approved(request, grant) => {
                approvals
                    .record(
                        id,
                        "approved",
                        json!({
                            "by": grant.created_by,
                            "comment": ballot.comment,
                            "grant": grant.id,
                            "scope": grant.scope,
                            "budget": grant.budget,
                            "expires_at": grant.expires_at,
                            "requester": request.requester_subject,
                        }),
                    )
                    .await;
                approvals.changed(request);
            }
            VoteOutcome::Denied(request) => {
                approvals
                    .record(
                        id,
                        "denied",
                        json!({
                            "by": subject,
                            "comment": ballot.comment,
                            "requester": request.requester_subject,
                        }),
                    )
                    .await;
                approvals.changed(request);
            }
            VoteOutcome::Recorded(request) => approvals.changed(request),
        }
        Ok(outcome)
    }

    /// Grants on targets where `caller` may `approve`, and the caller's own.
    pub async fn grants(
        &self,
        caller: &Caller,
        include_inactive: bool,
    ) -> Result<Vec<Grant>, ControlError> {
        let shared = self.shared()?;
        let now = shared.approvals.now();
        let grants = shared
            .approvals
            .store()
            .grants(include_inactive, now)
            .await?;
        Ok(grants
            .into_iter()
            .filter(|g| {
                (g.issuer == caller.identity.issuer && g.subject == caller.identity.subject)
                    || self.authorize(caller, Action::Approve, &g.target).is_ok()
            })
            .collect())
    }

    /// Revokes grant `id`: it covers nothing from now on.
    pub async fn revoke_grant(&self, caller: &Caller, id: &str) -> Result<Grant, ControlError> {
        let shared = self.shared()?;
        let store = shared.approvals.store();
        let not_found = || ControlError::NotFound(format!("no active grant {id:?}"));
        let grant = store.grant(id).await?.ok_or_else(not_found)?;
        self.authorize(caller, Action::Approve, &grant.target)?;
        self.audit(
            caller,
            "revoke_grant",
            json!({"grant": id, "request": grant.request_id, "subject": grant.subject}),
        )
        .await?;
        let revoked = store
            .revoke_grant(id, &caller.identity.subject, shared.approvals.now())
            .await?
            .ok_or_else(not_found)?;
        shared
            .approvals
            .record(
                &revoked.request_id,
                "grant_revoked",
                json!({"grant": id, "by": caller.identity.subject}),
            )
            .await;
        Ok(revoked)
    }

    /// Every change of a request from now on (the caller filters with [`Self::may_see`]).
    pub fn request_changes(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<ApprovalRequest>, ControlError> {
        Ok(self.shared()?.approvals.subscribe())
    }

    /// The webhook deliveries tried lately, for approvers (anyone allowed `approve` somewhere).
    pub fn deliveries(
        &self,
        caller: &Caller,
    ) -> Result<Vec<postern_notify::Delivery>, ControlError> {
        let targets = self.targets()?;
        if !targets
            .iter()
            .any(|t| self.authorize(caller, Action::Approve, t).is_ok())
        {
            return Err(ControlError::Forbidden(format!(
                "{} may not approve on any target, so may not see webhook deliveries",
                caller.identity.subject
            )));
        }
        Ok(self.shared()?.approvals.deliveries())
    }
}
