//! Approval requests, votes and grants against real SQLite files.

use super::open;
use crate::*;

const ISSUER: &str = "https://idp.example.com";
const KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const OTHER_KEY: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

fn pair(action: &str, resource: &str) -> ActionOn {
    ActionOn {
        action: action.to_owned(),
        resource: resource.to_owned(),
    }
}

fn requirement(group: &str, approvers: u32) -> Requirement {
    Requirement {
        policy: "prod-writes".to_owned(),
        group: group.to_owned(),
        approvers,
        grant_ttl_secs: 600,
        preview: false,
    }
}

/// Alice's request to write `public.orders` on `prod` at 1000, lapsing at 1300.
fn request(requirements: Vec<Requirement>) -> NewApprovalRequest {
    NewApprovalRequest {
        requester_subject: "alice".to_owned(),
        requester_issuer: ISSUER.to_owned(),
        target: "prod".to_owned(),
        role: "app_rw".to_owned(),
        session_id: "s-1".to_owned(),
        client_ip: "10.0.0.7".to_owned(),
        statement: "DELETE FROM orders WHERE id = $1".to_owned(),
        statement_key: KEY.to_owned(),
        fingerprint: "a0b1c2d3".to_owned(),
        params_hash: Some("ff00".to_owned()),
        reason: Some("refund ticket 42".to_owned()),
        actions: vec![
            pair("write", "public.orders"),
            pair("read", "public.orders"),
        ],
        requirements,
        context: serde_json::json!({"application_name": "psql", "in_transaction": false}),
        created_at: 1_000,
        expires_at: 1_300,
    }
}

fn approve(subject: &str, groups: &[&str], scope: GrantScope, at: i64) -> NewVote {
    NewVote {
        approver_subject: subject.to_owned(),
        approver_issuer: ISSUER.to_owned(),
        approver_groups: groups.iter().map(|group| (*group).to_owned()).collect(),
        verdict: Verdict::Approve,
        comment: Some("looks fine".to_owned()),
        scope,
        ttl_secs: None,
        budget: None,
        at,
    }
}

fn deny(subject: &str, groups: &[&str], at: i64) -> NewVote {
    NewVote {
        verdict: Verdict::Deny,
        comment: Some("not during the freeze".to_owned()),
        ..approve(subject, groups, GrantScope::Statement, at)
    }
}

fn recorded(outcome: VoteOutcome) -> ApprovalRequest {
    match outcome {
        VoteOutcome::Recorded(request) => request,
        other => panic!("expected Recorded, got {other:?}"),
    }
}

fn approved(outcome: VoteOutcome) -> (ApprovalRequest, Grant) {
    match outcome {
        VoteOutcome::Approved(request, grant) => (request, grant),
        other => panic!("expected Approved, got {other:?}"),
    }
}

fn conflict(error: &StoreError) -> &ConflictReason {
    match error {
        StoreError::Conflict { reason, .. } => reason,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// A store with one approved request of `scope` (1 of `dba`, approved by bob at 1100 with
/// `budget`), and the grant.
async fn granted(scope: GrantScope, budget: Option<u32>) -> (Store, Grant) {
    let store = Store::open_in_memory().await.unwrap();
    let made = store
        .create_request(request(vec![requirement("dba", 1)]))
        .await
        .unwrap();
    let vote = NewVote {
        budget,
        ..approve("bob", &["dba"], scope, 1_100)
    };
    let (_, grant) = approved(store.vote(&made.id, vote).await.unwrap());
    (store, grant)
}

#[tokio::test]
async fn votes_are_checked_and_two_of_two_needs_two_people() {
    let store = Store::open_in_memory().await.unwrap();
    let made = store
        .create_request(request(vec![requirement("dba", 2)]))
        .await
        .unwrap();
    assert_eq!(made.id.len(), 12);
    assert_eq!(made.state, RequestState::Pending);
    assert_eq!(
        store.approval_request(&made.id).await.unwrap().as_ref(),
        Some(&made)
    );

    let error = store
        .vote(
            &made.id,
            approve("alice", &["dba"], GrantScope::Statement, 1_010),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "invalid");
    assert!(
        error
            .to_string()
            .contains("a requester cannot approve their own request"),
        "{error}"
    );

    let after_bob = recorded(
        store
            .vote(
                &made.id,
                approve("bob", &["dba"], GrantScope::Statement, 1_020),
            )
            .await
            .unwrap(),
    );
    assert_eq!(after_bob.votes.len(), 1);
    assert_eq!(after_bob.votes[0].approver_subject, "bob");
    assert_eq!(after_bob.votes[0].comment.as_deref(), Some("looks fine"));

    let error = store
        .vote(&made.id, deny("bob", &["dba"], 1_030))
        .await
        .unwrap_err();
    assert!(
        matches!(conflict(&error), ConflictReason::AlreadyVoted { approver_subject, .. } if approver_subject == "bob"),
        "{error:?}"
    );
    assert_eq!(error.kind(), "conflict");

    // Outside the group: stored (it shows who tried), but it does not count.
    let after_mallory = recorded(
        store
            .vote(
                &made.id,
                approve("mallory", &["staff"], GrantScope::Action, 1_040),
            )
            .await
            .unwrap(),
    );
    assert_eq!(after_mallory.votes.len(), 2);
    assert_eq!(after_mallory.state, RequestState::Pending);
    // Nor can an outsider deny.
    let after_eve = recorded(
        store
            .vote(&made.id, deny("eve", &["staff"], 1_041))
            .await
            .unwrap(),
    );
    assert_eq!(after_eve.state, RequestState::Pending);

    let (request, grant) = approved(
        store
            .vote(
                &made.id,
                approve("carol", &["dba", "staff"], GrantScope::Action, 1_050),
            )
            .await
            .unwrap(),
    );
    assert_eq!(request.state, RequestState::Approved);
    assert_eq!(request.decided_at, Some(1_050));
    assert_eq!(request.grant_id.as_deref(), Some(grant.id.as_str()));
    assert_eq!(request.votes.len(), 4);
    assert_eq!(grant.created_by, ["bob", "carol"]);
    assert_eq!(
        grant.scope,
        GrantScope::Statement,
        "bob asked for the narrower scope"
    );
    assert_eq!(grant.statement_key.as_deref(), Some(KEY));
    assert_eq!((grant.budget, grant.uses), (Some(1), 0));
    assert_eq!(grant.expires_at, 1_050 + 600);
    assert_eq!(
        (
            grant.subject.as_str(),
            grant.issuer.as_str(),
            grant.target.as_str(),
            grant.role.as_str()
        ),
        ("alice", ISSUER, "prod", "app_rw")
    );
    assert_eq!(store.grant(&grant.id).await.unwrap(), Some(grant.clone()));
    assert_eq!(
        store.approval_request(&made.id).await.unwrap(),
        Some(request)
    );

    let error = store
        .vote(
            &made.id,
            approve("dave", &["dba"], GrantScope::Action, 1_060),
        )
        .await
        .unwrap_err();
    assert_eq!(
        conflict(&error),
        &ConflictReason::NotPending {
            state: RequestState::Approved
        }
    );
    assert!(
        error.to_string().contains("approved, no longer pending"),
        "{error}"
    );
}

#[tokio::test]
async fn a_deny_denies_and_makes_no_grant() {
    let store = Store::open_in_memory().await.unwrap();
    let made = store
        .create_request(request(vec![requirement("dba", 2)]))
        .await
        .unwrap();
    recorded(
        store
            .vote(
                &made.id,
                approve("bob", &["dba"], GrantScope::Action, 1_010),
            )
            .await
            .unwrap(),
    );
    let outcome = store
        .vote(&made.id, deny("carol", &["dba"], 1_020))
        .await
        .unwrap();
    let VoteOutcome::Denied(request) = outcome else {
        panic!("expected Denied, got {outcome:?}");
    };
    assert_eq!(
        (request.state, request.decided_at, request.grant_id),
        (RequestState::Denied, Some(1_020), None)
    );
    assert!(store.grants(true, 1_020).await.unwrap().is_empty());
    assert!(
        store
            .consume_request_grant(&made.id, 1_030)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn unknown_requests_are_named() {
    let store = Store::open_in_memory().await.unwrap();
    let error = store
        .vote(
            "000000000000",
            approve("bob", &["dba"], GrantScope::Action, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::NotFound { what: "approval request", id } if id == "000000000000"),
        "{error:?}"
    );
    assert_eq!(error.kind(), "not_found");
    assert_eq!(error.to_string(), "no approval request 000000000000");
    let error = store
        .set_preview("000000000000", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "not_found");
    assert!(
        store
            .approval_request("000000000000")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.grant("000000000000").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_requests_are_refused_before_sql() {
    let store = Store::open_in_memory().await.unwrap();
    let error = store.create_request(request(Vec::new())).await.unwrap_err();
    assert_eq!(error.kind(), "invalid");
    assert!(error.to_string().contains("requirements"), "{error}");
    let mut zero = request(vec![requirement("dba", 0)]);
    zero.reason = None;
    assert_eq!(
        store.create_request(zero).await.unwrap_err().kind(),
        "invalid"
    );
    assert!(store.approval_requests(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_waiting_statement_takes_the_single_use() {
    let (store, grant) = granted(GrantScope::Statement, None).await;
    let used = store
        .consume_request_grant(&grant.request_id, 1_101)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((used.id.as_str(), used.uses), (grant.id.as_str(), 1));
    assert!(
        store
            .consume_request_grant(&grant.request_id, 1_102)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .consume_statement_grant("alice", ISSUER, "prod", "app_rw", KEY, 1_103)
            .await
            .unwrap()
            .is_none(),
        "used up"
    );
    assert!(store.grants(false, 1_103).await.unwrap().is_empty());
    assert_eq!(store.grants(true, 1_103).await.unwrap(), [used]);
}

#[tokio::test]
async fn a_statement_grant_covers_that_statement_for_that_identity() {
    let (store, grant) = granted(GrantScope::Statement, Some(3)).await;
    let take =
        |subject: &'static str, issuer: &'static str, target: &'static str, key: &'static str| {
            let store = store.clone();
            async move {
                store
                    .consume_statement_grant(subject, issuer, target, "app_rw", key, 1_200)
                    .await
                    .unwrap()
            }
        };
    assert!(take("alice", ISSUER, "prod", OTHER_KEY).await.is_none());
    assert!(
        take("bob", ISSUER, "prod", KEY).await.is_none(),
        "the approver"
    );
    assert!(
        take("alice", "https://other.example.com", "prod", KEY)
            .await
            .is_none()
    );
    assert!(take("alice", ISSUER, "staging", KEY).await.is_none());
    assert!(
        store
            .consume_statement_grant("alice", ISSUER, "prod", "admin", KEY, 1_200)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .consume_action_grant(
                "alice",
                ISSUER,
                "prod",
                "app_rw",
                &[pair("write", "public.orders")],
                1_200
            )
            .await
            .unwrap()
            .is_none(),
        "a statement grant is not an action grant"
    );
    for expected in 1..=3 {
        let used = take("alice", ISSUER, "prod", KEY).await.unwrap();
        assert_eq!((used.id.as_str(), used.uses), (grant.id.as_str(), expected));
    }
    assert!(
        take("alice", ISSUER, "prod", KEY).await.is_none(),
        "budget 3"
    );
}

#[tokio::test]
async fn expired_and_revoked_grants_cover_nothing() {
    let (store, grant) = granted(GrantScope::Action, None).await;
    let asked = [pair("write", "public.orders")];
    let expires = grant.expires_at;
    assert!(
        store
            .consume_action_grant("alice", ISSUER, "prod", "app_rw", &asked, expires)
            .await
            .unwrap()
            .is_none(),
        "expired at expires_at"
    );
    assert!(store.grants(false, expires).await.unwrap().is_empty());
    assert!(
        store
            .revoke_grant(&grant.id, "carol", expires)
            .await
            .unwrap()
            .is_none(),
        "an expired grant is not active"
    );

    let (store, grant) = granted(GrantScope::Action, None).await;
    assert_eq!(
        store.grants(false, 1_200).await.unwrap(),
        std::slice::from_ref(&grant)
    );
    let revoked = store
        .revoke_grant(&grant.id, "carol", 1_200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (revoked.revoked_at, revoked.revoked_by.as_deref()),
        (Some(1_200), Some("carol"))
    );
    assert!(
        store
            .revoke_grant(&grant.id, "carol", 1_201)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .consume_action_grant("alice", ISSUER, "prod", "app_rw", &asked, 1_201)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .consume_request_grant(&grant.request_id, 1_201)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .revoke_grant(&grant.id, "", 1_202)
            .await
            .unwrap_err()
            .kind(),
        "invalid"
    );
}

#[tokio::test]
async fn an_action_grant_covers_a_subset_of_its_actions() {
    let (store, grant) = granted(GrantScope::Action, None).await;
    assert_eq!(
        (grant.scope, grant.budget, grant.statement_key.as_deref()),
        (GrantScope::Action, None, None)
    );
    let take = |asked: Vec<ActionOn>| {
        let store = store.clone();
        async move {
            store
                .consume_action_grant("alice", ISSUER, "prod", "app_rw", &asked, 1_200)
                .await
                .unwrap()
        }
    };
    let one = take(vec![pair("read", "public.orders")]).await.unwrap();
    assert_eq!((one.id.as_str(), one.uses), (grant.id.as_str(), 1));
    let both = take(vec![
        pair("write", "public.orders"),
        pair("read", "public.orders"),
    ])
    .await
    .unwrap();
    assert_eq!(both.uses, 2);
    assert!(
        take(vec![
            pair("write", "public.orders"),
            pair("ddl", "public.orders")
        ])
        .await
        .is_none()
    );
    assert!(
        take(vec![pair("write", "public.customers")])
            .await
            .is_none()
    );
    assert!(take(Vec::new()).await.is_none());
    assert!(
        store
            .consume_statement_grant("alice", ISSUER, "prod", "app_rw", KEY, 1_200)
            .await
            .unwrap()
            .is_none(),
        "an action grant is not a statement grant"
    );
}

#[tokio::test]
async fn requests_expire_and_are_withdrawn() {
    let store = Store::open_in_memory().await.unwrap();
    let early = store
        .create_request(NewApprovalRequest {
            expires_at: 1_100,
            ..request(vec![requirement("dba", 1)])
        })
        .await
        .unwrap();
    let late = store
        .create_request(request(vec![requirement("dba", 1)]))
        .await
        .unwrap();
    let withdrawn = store
        .create_request(request(vec![requirement("dba", 1)]))
        .await
        .unwrap();

    assert!(
        store
            .set_request_state(
                &withdrawn.id,
                RequestState::Pending,
                RequestState::Withdrawn,
                1_010
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_request_state(
                &withdrawn.id,
                RequestState::Pending,
                RequestState::Expired,
                1_011
            )
            .await
            .unwrap(),
        "no longer pending"
    );
    let error = store
        .set_request_state(
            &late.id,
            RequestState::Pending,
            RequestState::Approved,
            1_012,
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "invalid");

    assert!(store.expire_requests(1_099).await.unwrap().is_empty());
    let expired = store.expire_requests(1_100).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, early.id);
    assert_eq!(
        (expired[0].state, expired[0].decided_at),
        (RequestState::Expired, Some(1_100))
    );
    assert!(
        store.expire_requests(1_100).await.unwrap().is_empty(),
        "once"
    );

    // A vote after expires_at, before anyone expired the request, expires it.
    let error = store
        .vote(
            &late.id,
            approve("bob", &["dba"], GrantScope::Action, 1_300),
        )
        .await
        .unwrap_err();
    assert_eq!(
        conflict(&error),
        &ConflictReason::NotPending {
            state: RequestState::Expired
        }
    );
    let late = store.approval_request(&late.id).await.unwrap().unwrap();
    assert_eq!((late.state, late.votes.len()), (RequestState::Expired, 0));

    let pending = store
        .approval_requests(Some(RequestState::Pending), 10)
        .await
        .unwrap();
    assert!(pending.is_empty());
    let all = store.approval_requests(None, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [&withdrawn.id, &late.id, &early.id], "newest first");
    assert_eq!(store.approval_requests(None, 2).await.unwrap().len(), 2);
    let expired = store
        .approval_requests(Some(RequestState::Expired), 10)
        .await
        .unwrap();
    assert_eq!(expired.len(), 2);
}

#[tokio::test]
async fn lapsed_grants_are_reported_once() {
    let (store, grant) = granted(GrantScope::Action, None).await;
    assert!(
        store
            .lapse_grants(grant.expires_at - 1)
            .await
            .unwrap()
            .is_empty()
    );
    let lapsed = store.lapse_grants(grant.expires_at).await.unwrap();
    assert_eq!(lapsed, std::slice::from_ref(&grant));
    assert!(
        store
            .lapse_grants(grant.expires_at + 100)
            .await
            .unwrap()
            .is_empty()
    );

    let (store, grant) = granted(GrantScope::Action, None).await;
    store
        .revoke_grant(&grant.id, "carol", 1_200)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .lapse_grants(grant.expires_at)
            .await
            .unwrap()
            .is_empty(),
        "a revoked grant's end was reported when it was revoked"
    );
}

#[tokio::test]
async fn previews_are_kept() {
    let store = Store::open_in_memory().await.unwrap();
    let made = store
        .create_request(request(vec![requirement("dba", 1)]))
        .await
        .unwrap();
    let preview = serde_json::json!({"rows": 3, "sample": [[1, "a"]]});
    store.set_preview(&made.id, preview.clone()).await.unwrap();
    let read = store.approval_request(&made.id).await.unwrap().unwrap();
    assert_eq!(read.preview, Some(preview));
    let huge = serde_json::Value::String("x".repeat(MAX_PREVIEW_BYTES));
    assert_eq!(
        store.set_preview(&made.id, huge).await.unwrap_err().kind(),
        "invalid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_at_once_make_one_grant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = open(&path).await;
    let second = open(&path).await;
    for round in 0..10 {
        let made = first
            .create_request(request(vec![requirement("dba", 1)]))
            .await
            .unwrap();
        let (one, two) = tokio::join!(
            tokio::spawn({
                let store = first.clone();
                let id = made.id.clone();
                async move {
                    store
                        .vote(&id, approve("bob", &["dba"], GrantScope::Action, 1_100))
                        .await
                }
            }),
            tokio::spawn({
                let store = second.clone();
                let id = made.id.clone();
                async move {
                    store
                        .vote(&id, approve("carol", &["dba"], GrantScope::Action, 1_100))
                        .await
                }
            }),
        );
        let outcomes = [one.unwrap(), two.unwrap()];
        let grants: Vec<&Grant> = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok().and_then(VoteOutcome::grant))
            .collect();
        assert_eq!(grants.len(), 1, "round {round}: {outcomes:?}");
        let loser = outcomes.iter().find_map(|outcome| outcome.as_ref().err());
        let loser = loser.unwrap_or_else(|| panic!("round {round}: {outcomes:?}"));
        assert_eq!(
            conflict(loser),
            &ConflictReason::NotPending {
                state: RequestState::Approved
            }
        );
        let request = second.approval_request(&made.id).await.unwrap().unwrap();
        assert_eq!(request.votes.len(), 1);
        assert_eq!(request.grant_id.as_deref(), Some(grants[0].id.as_str()));
    }
    assert_eq!(first.grants(true, 1_100).await.unwrap().len(), 10);
}

#[tokio::test]
async fn approvals_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path).await;
    let made = store
        .create_request(request(vec![
            requirement("dba", 1),
            requirement("security", 1),
        ]))
        .await
        .unwrap();
    store
        .set_preview(&made.id, serde_json::json!({"rows": 1}))
        .await
        .unwrap();
    recorded(
        store
            .vote(
                &made.id,
                approve("bob", &["dba"], GrantScope::Action, 1_100),
            )
            .await
            .unwrap(),
    );
    let (request, grant) = approved(
        store
            .vote(
                &made.id,
                NewVote {
                    ttl_secs: Some(60),
                    budget: Some(2),
                    ..approve("carol", &["security"], GrantScope::Action, 1_110)
                },
            )
            .await
            .unwrap(),
    );
    assert_eq!((grant.expires_at, grant.budget), (1_170, Some(2)));
    let used = store
        .consume_request_grant(&made.id, 1_111)
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    drop(store);

    let store = open(&path).await;
    assert_eq!(
        store.approval_request(&made.id).await.unwrap(),
        Some(request)
    );
    assert_eq!(store.grant(&grant.id).await.unwrap(), Some(used));
    assert_eq!(
        store
            .approval_requests(Some(RequestState::Approved), 5)
            .await
            .unwrap()
            .len(),
        1
    );
}
