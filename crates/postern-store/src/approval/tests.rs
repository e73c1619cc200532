//! The pure parts of approvals: what a grant covers, what a request or vote may hold, and JSON.

use super::*;

const ISSUER: &str = "https://idp.example.com";
const KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn pair(action: &str, resource: &str) -> ActionOn {
    ActionOn {
        action: action.to_owned(),
        resource: resource.to_owned(),
    }
}

fn grant(scope: GrantScope) -> Grant {
    Grant {
        id: "0123456789ab".to_owned(),
        request_id: "ba9876543210".to_owned(),
        subject: "alice".to_owned(),
        issuer: ISSUER.to_owned(),
        target: "prod".to_owned(),
        role: "app_rw".to_owned(),
        scope,
        statement_key: (scope == GrantScope::Statement).then(|| KEY.to_owned()),
        actions: vec![
            pair("write", "public.orders"),
            pair("write", "public.order_lines"),
        ],
        budget: scope.default_budget(),
        uses: 0,
        created_at: 1_000,
        created_by: vec!["bob".to_owned()],
        expires_at: 2_000,
        revoked_at: None,
        revoked_by: None,
    }
}

#[test]
fn a_statement_grant_covers_that_statement_for_that_identity_only() {
    let g = grant(GrantScope::Statement);
    let covers = |subject: &str, issuer: &str, target: &str, role: &str, key: &str, now: i64| {
        g.covers_statement(subject, issuer, target, role, key, now)
    };
    assert!(covers("alice", ISSUER, "prod", "app_rw", KEY, 1_000));
    assert!(covers("alice", ISSUER, "prod", "app_rw", KEY, 1_999));
    assert!(
        !covers("alice", ISSUER, "prod", "app_rw", KEY, 2_000),
        "expired"
    );
    assert!(!covers("bob", ISSUER, "prod", "app_rw", KEY, 1_500));
    assert!(!covers("Alice", ISSUER, "prod", "app_rw", KEY, 1_500));
    assert!(!covers(
        "alice",
        "https://other",
        "prod",
        "app_rw",
        KEY,
        1_500
    ));
    assert!(!covers("alice", ISSUER, "staging", "app_rw", KEY, 1_500));
    assert!(!covers("alice", ISSUER, "prod", "admin", KEY, 1_500));
    assert!(!covers(
        "alice",
        ISSUER,
        "prod",
        "app_rw",
        &KEY.to_uppercase(),
        1_500
    ));
    let asked = [pair("write", "public.orders")];
    assert!(
        !g.covers_actions("alice", ISSUER, "prod", "app_rw", &asked, 1_500),
        "a statement grant does not cover its actions"
    );
}

#[test]
fn an_action_grant_covers_subsets_of_its_actions() {
    let g = grant(GrantScope::Action);
    let covers =
        |asked: &[ActionOn]| g.covers_actions("alice", ISSUER, "prod", "app_rw", asked, 1_500);
    assert!(covers(&[pair("write", "public.orders")]));
    assert!(covers(&[
        pair("write", "public.order_lines"),
        pair("write", "public.orders")
    ]));
    assert!(!covers(&[
        pair("write", "public.orders"),
        pair("ddl", "public.orders")
    ]));
    assert!(!covers(&[pair("write", "public.customers")]));
    assert!(!covers(&[]), "asking for nothing is covered by nothing");
    assert!(!g.covers_actions(
        "bob",
        ISSUER,
        "prod",
        "app_rw",
        &[pair("write", "public.orders")],
        1_500
    ));
    assert!(!g.covers_statement("alice", ISSUER, "prod", "app_rw", KEY, 1_500));
}

#[test]
fn revoked_and_used_up_grants_cover_nothing() {
    let mut g = grant(GrantScope::Statement);
    assert!(g.is_active(1_500));
    g.uses = 1;
    assert!(!g.is_active(1_500), "budget 1 used");
    g.budget = Some(3);
    assert!(g.is_active(1_500));
    g.uses = 3;
    assert!(!g.covers_statement("alice", ISSUER, "prod", "app_rw", KEY, 1_500));
    let mut g = grant(GrantScope::Action);
    g.uses = 1_000_000;
    assert!(g.is_active(1_500), "no budget: unlimited");
    g.revoked_at = Some(1_100);
    g.revoked_by = Some("carol".to_owned());
    assert!(!g.covers_actions(
        "alice",
        ISSUER,
        "prod",
        "app_rw",
        &[pair("write", "public.orders")],
        1_500
    ));
}

pub(crate) fn new_request() -> NewApprovalRequest {
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
        actions: vec![pair("write", "public.orders")],
        requirements: vec![Requirement {
            policy: "prod-writes".to_owned(),
            group: "dba".to_owned(),
            approvers: 1,
            grant_ttl_secs: 600,
            preview: false,
        }],
        context: serde_json::json!({"application_name": "psql"}),
        created_at: 1_000,
        expires_at: 1_300,
    }
}

#[test]
fn request_validation_names_the_field_at_fault() {
    let good = new_request();
    assert!(good.validate().is_ok());
    let with = |change: fn(&mut NewApprovalRequest)| {
        let mut new = good.clone();
        change(&mut new);
        new
    };
    let cases: Vec<(&str, NewApprovalRequest)> = vec![
        (
            "requester_subject",
            with(|n| n.requester_subject = " ".to_owned()),
        ),
        ("requester_issuer", with(|n| n.requester_issuer.clear())),
        ("target", with(|n| n.target.clear())),
        (
            "role",
            with(|n| n.role = "r".repeat(crate::MAX_NAME_BYTES + 1)),
        ),
        ("statement", with(|n| n.statement.clear())),
        (
            "statement",
            with(|n| n.statement = "x".repeat(MAX_STATEMENT_BYTES + 1)),
        ),
        (
            "reason",
            with(|n| n.reason = Some("é".repeat(MAX_JUSTIFICATION_CHARS + 1))),
        ),
        ("requirements", with(|n| n.requirements.clear())),
        ("approvers", with(|n| n.requirements[0].approvers = 0)),
        (
            "grant_ttl_secs",
            with(|n| n.requirements[0].grant_ttl_secs = 0),
        ),
        ("group", with(|n| n.requirements[0].group.clear())),
        ("resource", with(|n| n.actions[0].resource.clear())),
        ("context", with(|n| n.context = serde_json::json!([1, 2]))),
        ("expires_at", with(|n| n.expires_at = n.created_at)),
    ];
    for (field, new) in cases {
        match new.validate() {
            Err(StoreError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    // Characters, not bytes: 1000 two-byte characters are fine.
    let long = with(|n| n.reason = Some("é".repeat(MAX_JUSTIFICATION_CHARS)));
    assert!(long.validate().is_ok());
}

#[test]
fn vote_validation() {
    let good = NewVote {
        approver_subject: "bob".to_owned(),
        approver_issuer: ISSUER.to_owned(),
        approver_groups: vec!["dba".to_owned()],
        verdict: Verdict::Approve,
        comment: None,
        scope: GrantScope::Statement,
        ttl_secs: Some(60),
        budget: Some(2),
        at: 1_100,
    };
    assert!(good.validate().is_ok());
    let cases = [
        (
            "approver_subject",
            NewVote {
                approver_subject: String::new(),
                ..good.clone()
            },
        ),
        (
            "approver_groups",
            NewVote {
                approver_groups: vec![String::new()],
                ..good.clone()
            },
        ),
        (
            "ttl_secs",
            NewVote {
                ttl_secs: Some(0),
                ..good.clone()
            },
        ),
        (
            "budget",
            NewVote {
                budget: Some(0),
                ..good.clone()
            },
        ),
        (
            "comment",
            NewVote {
                comment: Some("x".repeat(1001)),
                ..good.clone()
            },
        ),
    ];
    for (field, new) in cases {
        match new.validate() {
            Err(StoreError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn json_shape() {
    let g = grant(GrantScope::Action);
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(json["scope"], "action");
    assert_eq!(json["statement_key"], serde_json::Value::Null);
    assert_eq!(
        json["actions"][0],
        serde_json::json!({"action": "write", "resource": "public.orders"})
    );
    let back: Grant = serde_json::from_value(json).unwrap();
    assert_eq!(back, g);

    assert_eq!(
        serde_json::to_value(RequestState::Withdrawn).unwrap(),
        "withdrawn"
    );
    assert_eq!(serde_json::to_value(Verdict::Deny).unwrap(), "deny");
    assert_eq!(RequestState::Expired.to_string(), "expired");

    let new: NewVote = serde_json::from_str(
        r#"{"approver_subject": "bob", "approver_issuer": "i", "approver_groups": ["dba"],
            "verdict": "approve", "scope": "statement", "at": 5}"#,
    )
    .unwrap();
    assert_eq!((new.comment, new.ttl_secs, new.budget), (None, None, None));

    let mut request = serde_json::to_value(new_request()).unwrap();
    request.as_object_mut().unwrap().remove("context");
    let back: NewApprovalRequest = serde_json::from_value(request.clone()).unwrap();
    assert_eq!(
        back.context,
        serde_json::json!({}),
        "context defaults to an empty object"
    );
    request["surprise"] = serde_json::json!(1);
    assert!(serde_json::from_value::<NewApprovalRequest>(request).is_err());
}
