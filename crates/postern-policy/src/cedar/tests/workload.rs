//! `principal.workload`: policies on GitHub Actions jobs, Kubernetes service accounts, SPIFFE
//! IDs and OAuth clients validate strictly, decide by the workload's attributes, and never match
//! a workload of another kind or a person.

use postern_identity::{
    GithubActions, KubernetesServiceAccount, OauthClient, SpiffeId, WORKLOAD_ATTRIBUTES, Workload,
};

use super::*;
use crate::cedar::SCHEMA_TEXT;

fn service(subject: &str, workload: Workload) -> Identity {
    let mut identity = identity(subject, &[]);
    identity.claims.clear();
    identity.issuer_name = workload.kind().into();
    identity.kind = IdentityKind::Service;
    identity.workload = Some(workload);
    identity
}

fn github(repository: &str, git_ref: &str, environment: Option<&str>) -> Identity {
    service(
        &format!("repo:{repository}:ref:{git_ref}"),
        Workload::GithubActions(Box::new(GithubActions {
            repository: repository.into(),
            repository_id: Some("74".into()),
            repository_owner: repository.split('/').next().map(str::to_owned),
            repository_owner_id: Some("65".into()),
            git_ref: git_ref.into(),
            ref_type: Some("branch".into()),
            environment: environment.map(str::to_owned),
            workflow: "deploy".into(),
            workflow_ref: None,
            job_workflow_ref: None,
            actor: "octocat".into(),
            event_name: Some("push".into()),
        })),
    )
}

fn kubernetes(namespace: &str, service_account: &str) -> Identity {
    service(
        &format!("system:serviceaccount:{namespace}:{service_account}"),
        Workload::Kubernetes(KubernetesServiceAccount {
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod: Some(format!("{service_account}-7d4b9c-x2x8q")),
        }),
    )
}

fn spiffe(trust_domain: &str, path: &str) -> Identity {
    service(
        &format!("spiffe://{trust_domain}{path}"),
        Workload::Spiffe(SpiffeId {
            trust_domain: trust_domain.into(),
            path: path.into(),
        }),
    )
}

fn oauth(client_id: &str) -> Identity {
    service(
        client_id,
        Workload::OauthClient(OauthClient {
            client_id: client_id.into(),
        }),
    )
}

const WORKLOADS: &str = r#"
@id("deploys-from-acme-app-main")
permit (principal, action == Action::"connect", resource)
when {
  principal.workload.kind == "github_actions" &&
  principal.workload.repository == "acme/app" &&
  principal.workload.ref == "refs/heads/main"
};

@id("payments-namespace")
permit (principal is Service, action == Action::"connect", resource)
when { principal.workload.kind == "kubernetes" && principal.workload.namespace == "payments" };

@id("spiffe-billing")
permit (principal, action == Action::"connect", resource)
when {
  principal.workload.kind == "spiffe" && principal.workload.trust_domain == "example.org" &&
  principal.workload.path like "/ns/billing/*"
};

@id("reporting-client")
permit (principal, action == Action::"connect", resource)
when { principal.workload.kind == "oauth_client" && principal.workload.client_id == "reporting" };

@id("production-needs-an-environment")
forbid (principal, action == Action::"connect", resource)
when { principal.workload.kind == "github_actions" && principal.workload.environment == "" &&
       principal.workload.ref like "refs/tags/*" };
"#;

#[test]
fn workload_policies_validate_and_decide() {
    let engine = closed_engine(WORKLOADS);
    let connect = |who: &Identity| engine.decide_connect(who, &ctx("reader"));
    let cases: [(Identity, Option<&str>); 12] = [
        (github("acme/app", "refs/heads/main", None), None),
        (
            github("acme/app", "refs/heads/feature", None),
            Some("no policy allows connect"),
        ),
        (
            github("acme/other", "refs/heads/main", None),
            Some("no policy allows connect"),
        ),
        (kubernetes("payments", "api"), None),
        (
            kubernetes("default", "api"),
            Some("no policy allows connect"),
        ),
        (spiffe("example.org", "/ns/billing/sa/api"), None),
        (
            spiffe("example.org", "/ns/web/sa/api"),
            Some("no policy allows connect"),
        ),
        (oauth("reporting"), None),
        (oauth("dashboard"), Some("no policy allows connect")),
        // People and identities of issuers without a preset have no workload.
        (alice(), Some("no policy allows connect")),
        (
            {
                let mut job = alice();
                job.kind = IdentityKind::Service;
                job.claims.insert("repository".into(), "acme/app".into());
                job.claims.insert("ref".into(), "refs/heads/main".into());
                job
            },
            Some("no policy allows connect"),
        ),
        (
            github("acme/app", "refs/tags/v1", None),
            Some("denied by policy \"production-needs-an-environment\""),
        ),
    ];
    for (who, refusal) in cases {
        let decision = connect(&who);
        match refusal {
            None => assert!(decision.is_allowed(), "{}: {decision:?}", who.subject),
            Some(needle) => assert!(
                message(&decision).contains(needle),
                "{}: {decision:?}",
                who.subject
            ),
        }
        // Through a session, with its filtered policy sets: the same answer.
        assert_eq!(
            engine.session(&who).decide_connect(&engine, &ctx("reader")),
            decision
        );
    }
}

#[test]
fn a_policy_for_one_preset_never_matches_another() {
    // Conditions on the attributes alone, without `kind`: a workload of another kind has ""
    // there, which no non-empty value equals.
    let engine = closed_engine(
        r#"
@id("by-repository") permit (principal, action == Action::"connect", resource)
when { principal.workload.repository == "acme/app" };
@id("by-namespace") permit (principal, action == Action::"connect", resource)
when { principal.workload.namespace == "payments" };
"#,
    );
    let reader = ctx("reader");
    assert!(
        engine
            .decide_connect(&github("acme/app", "refs/heads/main", None), &reader)
            .is_allowed()
    );
    assert!(
        engine
            .decide_connect(&kubernetes("payments", "api"), &reader)
            .is_allowed()
    );
    for who in [
        kubernetes("acme", "app"),
        spiffe("acme", "/app"),
        oauth("acme/app"),
        github("payments/api", "refs/heads/main", None),
    ] {
        assert!(
            !engine.decide_connect(&who, &reader).is_allowed(),
            "{}",
            who.subject
        );
    }
}

#[test]
fn workload_attributes_need_no_has_but_misspellings_are_errors() {
    let errors = load_errors(&[source(
        "policies/ci.cedar",
        r#"
@id("typo")
permit (principal, action == Action::"connect", resource)
when { principal.workload.repo == "acme/app" };
"#,
    )]);
    let text = errors.to_string();
    assert!(text.contains("policies/ci.cedar:4:"), "{text}");
    assert!(text.contains("repo"), "{text}");
}

#[test]
fn workload_entities_conform_to_the_schema() {
    use cedar_policy::Entities;

    use super::super::schema::Vocabulary;

    let vocabulary = Vocabulary::load().unwrap();
    let names = &vocabulary.names;
    let engine = engine("");
    let target = Resource::Target {
        name: "demo".into(),
    };
    for who in [
        github("acme/app", "refs/heads/main", Some("prod")),
        kubernetes("payments", "api"),
        spiffe("example.org", "/api"),
        oauth("reporting"),
        alice(),
    ] {
        let session = engine.session(&who);
        let entities = session
            .entities_for("demo", &target, names)
            .unwrap_or_else(|| panic!("{}: no entities", who.subject));
        Entities::from_entities(entities.iter().cloned(), Some(&vocabulary.schema))
            .unwrap_or_else(|e| panic!("{}: {e}", who.subject));
    }
    // The schema's Workload type has exactly `kind` and the identity crate's attributes.
    let declared = SCHEMA_TEXT
        .split("type Workload = {")
        .nth(1)
        .and_then(|rest| rest.split("};").next())
        .unwrap();
    let mut fields: Vec<&str> = declared
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//") && !line.is_empty())
        .filter_map(|line| line.split(':').next())
        .collect();
    fields.sort_unstable();
    let mut expected: Vec<&str> = WORKLOAD_ATTRIBUTES.to_vec();
    expected.push("kind");
    expected.sort_unstable();
    assert_eq!(fields, expected);
}
