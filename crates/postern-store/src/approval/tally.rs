//! Deciding a request from its votes, and what grant an approval makes. Pure: the store calls it
//! inside the vote's write transaction, and tests call it directly.
//!
//! Only votes of *eligible* approvers count: someone in at least one requirement's group, who is
//! not the requester. Other votes are kept (they show who tried) but change nothing. Groups are
//! those the approver's token carried when they voted.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{ApprovalRequest, GrantScope, Requirement, Verdict, Vote};

/// Where a request's votes leave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Tally {
    /// Some requirement still wants approvers.
    Pending,
    /// An eligible approver denied it: one "no" is enough, whatever the approvals.
    Denied,
    /// Every requirement met; the grant to make.
    Approved(GrantTerms),
}

/// What the grant of an approved request is, from the approving votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTerms {
    /// [`GrantScope::Statement`] if any approver asked for it: the narrowest wins.
    pub scope: GrantScope,
    /// The shortest TTL any approver asked for, a vote without one meaning the shortest of the
    /// requirements' `grant_ttl_secs`.
    pub ttl_secs: i64,
    /// The smallest budget any approver gave, else the scope's default.
    pub budget: Option<u32>,
    /// The approving subjects, in the order they voted.
    pub approvers: Vec<String>,
}

impl ApprovalRequest {
    /// Decides the request from its votes (whatever its stored state).
    ///
    /// Approved when, for every requirement, at least `approvers` distinct people (by issuer and
    /// subject) in its group voted to approve. One person in several groups counts towards each
    /// of them. Denied as soon as one eligible approver votes to deny.
    #[must_use]
    pub fn tally(&self) -> Tally {
        tally(
            &self.requester_issuer,
            &self.requester_subject,
            &self.requirements,
            &self.votes,
        )
    }
}

pub(crate) fn tally(
    requester_issuer: &str,
    requester_subject: &str,
    requirements: &[Requirement],
    votes: &[Vote],
) -> Tally {
    let eligible: Vec<&Vote> = votes
        .iter()
        .filter(|vote| {
            !(vote.approver_issuer == requester_issuer
                && vote.approver_subject == requester_subject)
        })
        .filter(|vote| {
            requirements
                .iter()
                .any(|requirement| vote.approver_groups.contains(&requirement.group))
        })
        .collect();
    if eligible.iter().any(|vote| vote.verdict == Verdict::Deny) {
        return Tally::Denied;
    }
    // The store keeps one vote per approver; the set makes the tally right on any input.
    let mut seen = HashSet::new();
    let approving: Vec<&Vote> = eligible
        .into_iter()
        .filter(|vote| vote.verdict == Verdict::Approve)
        .filter(|vote| {
            seen.insert((
                vote.approver_issuer.as_str(),
                vote.approver_subject.as_str(),
            ))
        })
        .collect();
    // No requirement would make anyone an approver: fail closed rather than approve vacuously.
    if requirements.is_empty() {
        return Tally::Pending;
    }
    let met = requirements.iter().all(|requirement| {
        let count = approving
            .iter()
            .filter(|vote| vote.approver_groups.contains(&requirement.group))
            .count();
        count >= usize::try_from(requirement.approvers).unwrap_or(usize::MAX)
    });
    if !met || approving.is_empty() {
        return Tally::Pending;
    }

    let scope = if approving
        .iter()
        .any(|vote| vote.scope == GrantScope::Statement)
    {
        GrantScope::Statement
    } else {
        GrantScope::Action
    };
    let default_ttl = requirements
        .iter()
        .map(|requirement| requirement.grant_ttl_secs)
        .min()
        .unwrap_or(1);
    let ttl_secs = approving
        .iter()
        .map(|vote| vote.ttl_secs.unwrap_or(default_ttl))
        .min()
        .unwrap_or(default_ttl);
    let budget = approving
        .iter()
        .filter_map(|vote| vote.budget)
        .min()
        .or(scope.default_budget());
    Tally::Approved(GrantTerms {
        scope,
        ttl_secs,
        budget,
        approvers: approving
            .iter()
            .map(|vote| vote.approver_subject.clone())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://idp.example.com";

    fn requirement(group: &str, approvers: u32, ttl: i64) -> Requirement {
        Requirement {
            policy: "prod-writes".to_owned(),
            group: group.to_owned(),
            approvers,
            grant_ttl_secs: ttl,
            preview: false,
        }
    }

    fn vote(subject: &str, groups: &[&str], verdict: Verdict) -> Vote {
        Vote {
            approver_subject: subject.to_owned(),
            approver_issuer: ISSUER.to_owned(),
            approver_groups: groups.iter().map(|group| (*group).to_owned()).collect(),
            verdict,
            comment: None,
            scope: GrantScope::Action,
            ttl_secs: None,
            budget: None,
            at: 100,
        }
    }

    fn decide(requirements: &[Requirement], votes: &[Vote]) -> Tally {
        tally(ISSUER, "alice", requirements, votes)
    }

    fn terms(tally: Tally) -> GrantTerms {
        match tally {
            Tally::Approved(terms) => terms,
            other => panic!("expected Approved, got {other:?}"),
        }
    }

    #[test]
    fn counts_distinct_eligible_approvers_per_requirement() {
        use Verdict::Approve;
        let two_dbas = [requirement("dba", 2, 600)];
        assert_eq!(decide(&two_dbas, &[]), Tally::Pending);
        assert_eq!(
            decide(&two_dbas, &[vote("bob", &["dba"], Approve)]),
            Tally::Pending
        );
        let bob_twice = [
            vote("bob", &["dba"], Approve),
            vote("bob", &["dba"], Approve),
        ];
        assert_eq!(decide(&two_dbas, &bob_twice), Tally::Pending, "one person");
        let mut other_issuer = vote("bob", &["dba"], Approve);
        other_issuer.approver_issuer = "https://other.example.com".to_owned();
        assert!(matches!(
            decide(&two_dbas, &[vote("bob", &["dba"], Approve), other_issuer]),
            Tally::Approved(_)
        ));
        let outsider = [
            vote("bob", &["dba"], Approve),
            vote("mallory", &["staff"], Approve),
        ];
        assert_eq!(decide(&two_dbas, &outsider), Tally::Pending);
        let requester = [
            vote("bob", &["dba"], Approve),
            vote("alice", &["dba"], Approve),
        ];
        assert_eq!(decide(&two_dbas, &requester), Tally::Pending);
        let done = terms(decide(
            &two_dbas,
            &[
                vote("bob", &["dba"], Approve),
                vote("mallory", &["staff"], Approve),
                vote("carol", &["staff", "dba"], Approve),
            ],
        ));
        assert_eq!(
            done.approvers,
            ["bob", "carol"],
            "the outsider is not named"
        );
    }

    #[test]
    fn every_requirement_must_be_met_and_one_person_may_meet_several() {
        use Verdict::Approve;
        let both = [requirement("dba", 1, 600), requirement("security", 1, 600)];
        assert_eq!(
            decide(&both, &[vote("bob", &["dba"], Approve)]),
            Tally::Pending
        );
        assert!(matches!(
            decide(
                &both,
                &[
                    vote("bob", &["dba"], Approve),
                    vote("carol", &["security"], Approve)
                ]
            ),
            Tally::Approved(_)
        ));
        assert!(matches!(
            decide(&both, &[vote("dave", &["dba", "security"], Approve)]),
            Tally::Approved(_)
        ));
        assert_eq!(
            decide(&[], &[vote("bob", &["dba"], Approve)]),
            Tally::Pending
        );
    }

    #[test]
    fn one_eligible_deny_denies() {
        use Verdict::{Approve, Deny};
        let one_dba = [requirement("dba", 1, 600)];
        assert_eq!(
            decide(&one_dba, &[vote("bob", &["dba"], Deny)]),
            Tally::Denied
        );
        assert_eq!(
            decide(
                &one_dba,
                &[
                    vote("bob", &["dba"], Approve),
                    vote("carol", &["dba"], Deny)
                ]
            ),
            Tally::Denied,
            "a deny outweighs enough approvals"
        );
        assert_eq!(
            decide(&one_dba, &[vote("mallory", &["staff"], Deny)]),
            Tally::Pending,
            "an outsider cannot deny"
        );
        assert_eq!(
            decide(&one_dba, &[vote("alice", &["dba"], Deny)]),
            Tally::Pending,
            "nor the requester"
        );
    }

    #[test]
    fn grant_terms_take_the_narrowest_of_the_approvers() {
        use Verdict::Approve;
        let reqs = [requirement("dba", 2, 900), requirement("security", 1, 600)];
        let mut bob = vote("bob", &["dba"], Approve);
        let mut carol = vote("carol", &["dba", "security"], Approve);
        let only_action = terms(decide(&reqs, &[bob.clone(), carol.clone()]));
        assert_eq!(only_action.scope, GrantScope::Action);
        assert_eq!(only_action.ttl_secs, 600, "the shortest requirement TTL");
        assert_eq!(only_action.budget, None, "action grants are unlimited");

        carol.scope = GrantScope::Statement;
        carol.ttl_secs = Some(1_200);
        let statement = terms(decide(&reqs, &[bob.clone(), carol.clone()]));
        assert_eq!(statement.scope, GrantScope::Statement);
        assert_eq!(statement.ttl_secs, 600, "bob left the TTL to the policy");
        assert_eq!(statement.budget, Some(1));

        bob.ttl_secs = Some(60);
        bob.budget = Some(5);
        carol.budget = Some(3);
        let narrow = terms(decide(&reqs, &[bob, carol]));
        assert_eq!(
            (narrow.scope, narrow.ttl_secs, narrow.budget),
            (GrantScope::Statement, 60, Some(3))
        );
    }
}
