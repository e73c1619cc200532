//! Workload identities end to end: the development identity provider stands in for GitHub
//! Actions and for a Kubernetes cluster (its issuer configured with `preset = "github_actions"`
//! or `"kubernetes"`), mints tokens shaped like theirs, and a Cedar policy on
//! `principal.workload` decides who may connect.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::collections::BTreeMap;

use crate::common::assert_db_error;
use postern_config::{IssuerConfig, IssuerPreset, RoleRule};
use postern_sandbox::demo::{DEMO_TARGET, DEV_ISSUER_NAME};
use postern_testkit::{Stack, StackOptions};
use serde_json::{Value, json};

/// A stack whose development issuer is configured with `preset` (the issuer URL overridden to
/// the development provider's, as for GitHub Enterprise Server or a cluster), `policy` loaded,
/// and `rule` added to the demo target's role rules.
async fn stack_with_preset(preset: &str, policy: &str, rule: RoleRule) -> Stack {
    let mut stack = Stack::start(StackOptions {
        policies: vec![policy.to_owned()],
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts");
    let table = format!(
        "preset = \"{preset}\"\nissuer = \"{}\"\naudience = [\"postern\"]\n",
        stack.idp.issuer()
    );
    let issuer: IssuerConfig = toml::from_str(&table).unwrap();
    assert_eq!(issuer.preset.map(IssuerPreset::as_str), Some(preset));
    stack
        .config
        .issuers
        .insert(DEV_ISSUER_NAME.to_owned(), issuer);
    stack
        .config
        .targets
        .get_mut(DEMO_TARGET)
        .unwrap()
        .roles
        .push(rule);
    stack.config.validate().unwrap();
    stack.start_proxy().await.unwrap();
    stack
}

/// A token from the development provider with `sub` and `claims`.
fn mint(stack: &Stack, subject: &str, claims: Value) -> String {
    let mut request = stack.request(subject);
    for (name, value) in claims.as_object().unwrap() {
        request.extra_claims.insert(name.clone(), value.clone());
    }
    stack.mint(&request).unwrap()
}

/// The claims GitHub puts in a job's OIDC token, for a push to `git_ref` of `repository`.
fn github_claims(repository: &str, git_ref: &str) -> Value {
    let owner = repository.split('/').next().unwrap();
    json!({
        "repository": repository,
        "repository_owner": owner,
        "repository_id": "74",
        "repository_owner_id": "65",
        "ref": git_ref,
        "ref_type": "branch",
        "sha": "e83c5163316f89bfbde7d9ab23ca2e25604af290",
        "workflow": "migrate",
        "workflow_ref": format!("{repository}/.github/workflows/migrate.yml@{git_ref}"),
        "job_workflow_ref": format!("{repository}/.github/workflows/migrate.yml@{git_ref}"),
        "actor": "octocat",
        "actor_id": "12",
        "event_name": "push",
        "run_id": "5950393151",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "repository_visibility": "private",
        "head_ref": "",
        "base_ref": "",
    })
}

const GITHUB_POLICY: &str = r#"
@id("ci-only-from-acme-app-main")
forbid (principal, action == Action::"connect", resource)
when { principal.workload.kind == "github_actions" }
unless {
  principal.workload.repository == "acme/app" &&
  principal.workload.ref == "refs/heads/main"
};
"#;

#[tokio::test]
async fn github_actions_jobs_are_decided_by_repository_and_branch() {
    // The role comes from the token's `repository` claim.
    let stack = stack_with_preset(
        "github_actions",
        GITHUB_POLICY,
        RoleRule {
            roles: vec!["writer".into()],
            groups: Vec::new(),
            subjects: Vec::new(),
            issuers: vec![DEV_ISSUER_NAME.into()],
            claims: BTreeMap::from([("repository".into(), "acme/app".into())]),
        },
    )
    .await;

    let main = mint(
        &stack,
        "repo:acme/app:ref:refs/heads/main",
        github_claims("acme/app", "refs/heads/main"),
    );
    let client = stack.connect("writer", &main).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text, postern.subject()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "writer");
    assert_eq!(row.get::<_, String>(1), "repo:acme/app:ref:refs/heads/main");

    for (subject, repository, git_ref) in [
        (
            "repo:acme/app:ref:refs/heads/feature",
            "acme/app",
            "refs/heads/feature",
        ),
        (
            "repo:acme/other:ref:refs/heads/main",
            "acme/other",
            "refs/heads/main",
        ),
    ] {
        let token = mint(&stack, subject, github_claims(repository, git_ref));
        let error = stack.connect("writer", &token).await.unwrap_err();
        assert_db_error(
            &error,
            "28000",
            "permission denied by policy \"ci-only-from-acme-app-main\"",
        );
    }

    // A token without a claim the preset needs is refused, naming it.
    let mut claims = github_claims("acme/app", "refs/heads/main");
    claims.as_object_mut().unwrap().remove("workflow");
    let token = mint(&stack, "repo:acme/app:ref:refs/heads/main", claims);
    let error = stack.connect("writer", &token).await.unwrap_err();
    assert_db_error(&error, "28P01", "token has no 'workflow' claim");
}

/// The claims of a projected service-account token for `service_account` in `namespace`, bound
/// to a pod.
fn kubernetes_claims(namespace: &str, service_account: &str) -> Value {
    json!({
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "node-1", "uid": "58456cb0-dd00-45ed-b797-5578fdceaced"},
            "pod": {
                "name": format!("{service_account}-69cbfb9798-jv9gn"),
                "uid": "778a530c-b3f4-47c0-9cd5-ab018fb64f33"
            },
            "serviceaccount": {
                "name": service_account,
                "uid": "a087d5a0-e1dd-43ec-93ac-f13d89cd13af"
            },
            "warnafter": 1_700_081_020
        }
    })
}

const KUBERNETES_POLICY: &str = r#"
@id("pods-only-from-payments")
forbid (principal, action == Action::"connect", resource)
when { principal.workload.kind == "kubernetes" }
unless { principal.workload.namespace == "payments" };
"#;

#[tokio::test]
async fn kubernetes_service_accounts_are_decided_by_namespace() {
    let stack = stack_with_preset(
        "kubernetes",
        KUBERNETES_POLICY,
        RoleRule {
            roles: vec!["reader".into()],
            groups: Vec::new(),
            subjects: vec![
                "system:serviceaccount:payments:api".into(),
                "system:serviceaccount:default:api".into(),
            ],
            issuers: Vec::new(),
            claims: BTreeMap::new(),
        },
    )
    .await;

    let payments = mint(
        &stack,
        "system:serviceaccount:payments:api",
        kubernetes_claims("payments", "api"),
    );
    let client = stack.connect("reader", &payments).await.unwrap();
    let subject: String = client
        .query_one("SELECT postern.subject()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(subject, "system:serviceaccount:payments:api");

    let other = mint(
        &stack,
        "system:serviceaccount:default:api",
        kubernetes_claims("default", "api"),
    );
    let error = stack.connect("reader", &other).await.unwrap_err();
    assert_db_error(
        &error,
        "28000",
        "permission denied by policy \"pods-only-from-payments\"",
    );

    // `sub` must name the service account of the `kubernetes.io` claim.
    let forged = mint(
        &stack,
        "system:serviceaccount:payments:api",
        kubernetes_claims("default", "api"),
    );
    let error = stack.connect("reader", &forged).await.unwrap_err();
    assert_db_error(
        &error,
        "28P01",
        "token claim 'sub' is not system:serviceaccount:",
    );

    // A token without the `kubernetes.io` claim is not a projected service-account token.
    let plain = mint(&stack, "system:serviceaccount:payments:api", json!({}));
    let error = stack.connect("reader", &plain).await.unwrap_err();
    assert_db_error(
        &error,
        "28P01",
        "token has no 'kubernetes.io.namespace' claim",
    );
}

/// `postern policy check` validates policies on `principal.workload` and, with `--issuer`,
/// dry-runs them as a token of a preset issuer would be decided.
#[test]
fn policy_check_dry_runs_a_workload() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("ci.cedar");
    std::fs::write(
        &policy,
        r#"
@id("ci-writes-only-from-main")
forbid (principal, action == Action::"write", resource)
when { principal.workload.kind == "github_actions" }
unless { principal.workload.ref == "refs/heads/main" };
"#,
    )
    .unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[listen]
allow_plaintext_loopback = true

[issuers.gha]
preset = "github_actions"
audience = ["postern"]

[targets.demo]
host = "127.0.0.1"
port = 5432
database = "demo"
admin = {{ user = "postern_admin" }}

[[targets.demo.roles]]
roles = ["writer"]
issuers = ["gha"]
claims = {{ repository = "acme/app" }}

[policy]
files = [{policy:?}]
"#
        ),
    )
    .unwrap();
    let check = |git_ref: &str, extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["policy", "check", "--config"])
            .arg(&config)
            .args([
                "--as",
                &format!("repo:acme/app:ref:{git_ref}"),
                "--issuer",
                "gha",
                "--claim",
                "repository=acme/app",
                "--claim",
                &format!("ref={git_ref}"),
                "--claim",
                "actor=octocat",
                "--role",
                "writer",
                "--target",
                "demo",
                "--sql",
                "DELETE FROM orders",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (allowed, output) = check("refs/heads/main", &["--claim", "workflow=deploy"]);
    assert!(allowed, "{output}");
    assert!(output.contains("policies loaded and valid"), "{output}");
    let (allowed, output) = check("refs/heads/feature", &["--claim", "workflow=deploy"]);
    assert!(!allowed, "{output}");
    assert!(output.contains("ci-writes-only-from-main"), "{output}");
    // Without a claim the preset needs, the token would not get this far.
    let (allowed, output) = check("refs/heads/main", &[]);
    assert!(!allowed, "{output}");
    assert!(output.contains("token has no 'workflow' claim"), "{output}");
}

/// The README's "Workload identities" examples: its issuers validate in the README's main
/// configuration, its policies against the schema.
#[test]
fn readme_workload_examples_are_valid() {
    const README: &str = include_str!("../../../../README.md");
    let block = |text: &str, lang: &str| {
        let fence = format!("```{lang}\n");
        let start = text.find(&fence).expect("a code block") + fence.len();
        let end = start + text[start..].find("```").expect("the end of the block");
        text[start..end].to_owned()
    };
    let section = &README[README.find("## Workload identities").expect("the section")..];
    let mut config =
        postern_config::Config::from_toml(&block(README, "toml"), "README.md").unwrap();
    let workloads =
        postern_config::Config::from_toml(&block(section, "toml"), "README.md").unwrap();
    assert_eq!(workloads.issuers.len(), 4);
    for (name, issuer) in workloads.issuers {
        assert!(issuer.preset.is_some(), "{name}");
        config.issuers.insert(name, issuer);
    }
    config.validate().unwrap();

    let source = postern_policy::cedar::PolicySource {
        origin: "README.md".to_owned(),
        text: block(section, "cedar"),
    };
    let engine = postern_policy::cedar::PolicyEngine::load(&[source], &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(engine.origin_of("migrations-from-main").is_some());
}
