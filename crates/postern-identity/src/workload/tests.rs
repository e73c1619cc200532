//! Each preset against the claims real issuers write, and against the ways they go wrong.

use std::time::{Duration, UNIX_EPOCH};

use postern_config::{IssuerConfig, IssuerPreset};
use serde_json::{Value, json};

use super::*;
use crate::claims::TokenTimes;
use crate::{Identity, IdentityKind};

fn config(preset: IssuerPreset) -> IssuerConfig {
    let mut config = IssuerConfig::with_preset(preset, "postern");
    if config.issuer.is_empty() {
        config.issuer = "https://issuer.example".into();
    }
    if preset == IssuerPreset::Spiffe {
        config.trust_domain = Some("example.org".into());
    }
    config
}

fn identity(preset: IssuerPreset, claims: Value) -> Result<Identity, AuthError> {
    let Value::Object(claims) = claims else {
        panic!("not an object")
    };
    let times = TokenTimes {
        expires_at: UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        issued_at: None,
    };
    Identity::from_verified("ci", &config(preset), claims, times)
}

/// The claims of a GitHub Actions OIDC token, as GitHub documents them (a job in environment
/// `prod` of a workflow_dispatch run on main, calling a reusable workflow).
fn github_claims() -> Value {
    json!({
        "jti": "example-id",
        "sub": "repo:acme/app:environment:prod",
        "environment": "prod",
        "aud": "postern",
        "ref": "refs/heads/main",
        "sha": "e83c5163316f89bfbde7d9ab23ca2e25604af290",
        "repository": "acme/app",
        "repository_owner": "acme",
        "actor_id": "12",
        "repository_visibility": "private",
        "repository_id": "74",
        "repository_owner_id": "65",
        "run_id": "5950393151",
        "run_number": "10",
        "run_attempt": "2",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "workflow": "deploy",
        "head_ref": "",
        "base_ref": "",
        "event_name": "workflow_dispatch",
        "ref_protected": "true",
        "ref_type": "branch",
        "workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
        "workflow_sha": "e83c5163316f89bfbde7d9ab23ca2e25604af290",
        "job_workflow_ref": "acme/automation/.github/workflows/oidc.yml@refs/heads/main",
        "job_workflow_sha": "c2a1ab1b7a48d0ee9b4f3c1a3c2a1ab1b7a48d0e",
        "iss": "https://token.actions.githubusercontent.com",
        "nbf": 1_632_492_967,
        "exp": 1_632_493_867,
        "iat": 1_632_493_567
    })
}

/// A projected service-account token's claims, as the Kubernetes documentation shows one bound
/// to a pod.
fn kubernetes_claims() -> Value {
    json!({
        "aud": ["postern"],
        "exp": 1_731_613_413,
        "iat": 1_700_077_413,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": "ea28ed49-2e11-4280-9ec5-bc3d1d84661a",
        "kubernetes.io": {
            "namespace": "payments",
            "node": {"name": "127.0.0.1", "uid": "58456cb0-dd00-45ed-b797-5578fdceaced"},
            "pod": {"name": "api-69cbfb9798-jv9gn", "uid": "778a530c-b3f4-47c0-9cd5-ab018fb64f33"},
            "serviceaccount": {"name": "api", "uid": "a087d5a0-e1dd-43ec-93ac-f13d89cd13af"},
            "warnafter": 1_700_081_020
        },
        "nbf": 1_700_077_413,
        "sub": "system:serviceaccount:payments:api"
    })
}

/// A JWT-SVID as SPIRE issues one.
fn spiffe_claims(sub: &str) -> Value {
    json!({
        "aud": ["postern"],
        "exp": 1_700_000_300,
        "iat": 1_700_000_000,
        "iss": "https://oidc-discovery.example.org",
        "sub": sub
    })
}

#[test]
fn github_actions_job() {
    let identity = identity(IssuerPreset::GithubActions, github_claims()).unwrap();
    assert_eq!(identity.subject, "repo:acme/app:environment:prod");
    assert_eq!(identity.kind, IdentityKind::Service);
    let Some(Workload::GithubActions(job)) = &identity.workload else {
        panic!("{:?}", identity.workload)
    };
    assert_eq!(job.repository, "acme/app");
    assert_eq!(job.git_ref, "refs/heads/main");
    assert_eq!(job.environment.as_deref(), Some("prod"));
    assert_eq!(job.workflow, "deploy");
    assert_eq!(job.actor, "octocat");
    assert_eq!(job.event_name.as_deref(), Some("workflow_dispatch"));
    let workload = identity.workload.as_ref().unwrap();
    assert_eq!(workload.kind(), "github_actions");
    assert_eq!(workload.attribute("ref"), Some("refs/heads/main"));
    assert_eq!(workload.attribute("repository_id"), Some("74"));
    assert_eq!(
        workload.attribute("job_workflow_ref"),
        Some("acme/automation/.github/workflows/oidc.yml@refs/heads/main")
    );
    assert_eq!(workload.attribute("namespace"), None);

    // A job without an environment.
    let mut claims = github_claims();
    claims["environment"] = Value::Null;
    let identity = identity_of(IssuerPreset::GithubActions, claims);
    assert_eq!(identity.workload.unwrap().attribute("environment"), None);
}

fn identity_of(preset: IssuerPreset, claims: Value) -> Identity {
    identity(preset, claims).unwrap()
}

#[test]
fn github_actions_refusals_name_the_claim() {
    for (claim, value, message) in [
        ("repository", Value::Null, "token has no 'repository' claim"),
        ("ref", Value::Null, "token has no 'ref' claim"),
        ("workflow", json!(""), "token claim 'workflow' is empty"),
        ("actor", json!(12), "token claim 'actor' is not a string"),
        (
            "environment",
            json!(["prod"]),
            "token claim 'environment' is not a string",
        ),
    ] {
        let mut claims = github_claims();
        claims[claim] = value;
        if claims[claim].is_null() {
            claims.as_object_mut().unwrap().remove(claim);
        }
        let error = identity(IssuerPreset::GithubActions, claims).unwrap_err();
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn kubernetes_service_account() {
    let identity = identity_of(IssuerPreset::Kubernetes, kubernetes_claims());
    assert_eq!(identity.subject, "system:serviceaccount:payments:api");
    assert_eq!(identity.kind, IdentityKind::Service);
    assert_eq!(
        identity.workload,
        Some(Workload::Kubernetes(KubernetesServiceAccount {
            namespace: "payments".into(),
            service_account: "api".into(),
            pod: Some("api-69cbfb9798-jv9gn".into()),
        }))
    );
    let workload = identity.workload.unwrap();
    assert_eq!(workload.kind(), "kubernetes");
    assert_eq!(workload.attribute("service_account"), Some("api"));
    assert_eq!(workload.attribute("repository"), None);

    // A token not bound to a pod (kubectl create token).
    let mut claims = kubernetes_claims();
    claims["kubernetes.io"]
        .as_object_mut()
        .unwrap()
        .remove("pod");
    let identity = identity_of(IssuerPreset::Kubernetes, claims);
    assert_eq!(identity.workload.unwrap().attribute("pod"), None);
}

#[test]
fn kubernetes_refusals_name_the_claim() {
    let without = |path: &[&str]| {
        let mut claims = kubernetes_claims();
        let mut object = claims["kubernetes.io"].as_object_mut().unwrap();
        let (last, parents) = path.split_last().unwrap();
        for parent in parents {
            object = object.get_mut(*parent).unwrap().as_object_mut().unwrap();
        }
        object.remove(*last);
        claims
    };
    let mut legacy = kubernetes_claims();
    legacy.as_object_mut().unwrap().remove("kubernetes.io");
    legacy["kubernetes.io/serviceaccount/namespace"] = json!("payments");
    let mut wrong_sub = kubernetes_claims();
    wrong_sub["sub"] = json!("system:serviceaccount:kube-system:api");
    let mut not_object = kubernetes_claims();
    not_object["kubernetes.io"] = json!("payments");
    for (claims, message) in [
        (
            without(&["namespace"]),
            "token has no 'kubernetes.io.namespace' claim",
        ),
        (
            without(&["serviceaccount", "name"]),
            "token has no 'kubernetes.io.serviceaccount.name' claim",
        ),
        (legacy, "token has no 'kubernetes.io.namespace' claim"),
        (
            wrong_sub,
            "token claim 'sub' is not system:serviceaccount:<namespace>:<name>",
        ),
        (not_object, "token claim 'kubernetes.io' is not an object"),
    ] {
        let error = identity(IssuerPreset::Kubernetes, claims).unwrap_err();
        assert!(error.to_string().starts_with(message), "{error}");
    }
}

#[test]
fn spiffe_jwt_svid() {
    let identity = identity_of(
        IssuerPreset::Spiffe,
        spiffe_claims("spiffe://example.org/ns/prod/sa/api"),
    );
    assert_eq!(identity.subject, "spiffe://example.org/ns/prod/sa/api");
    assert_eq!(
        identity.workload,
        Some(Workload::Spiffe(SpiffeId {
            trust_domain: "example.org".into(),
            path: "/ns/prod/sa/api".into(),
        }))
    );
}

#[test]
fn spiffe_ids_outside_the_trust_domain_are_refused() {
    let error = identity(
        IssuerPreset::Spiffe,
        spiffe_claims("spiffe://evil.example/ns/prod/sa/api"),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "SPIFFE ID 'spiffe://evil.example/ns/prod/sa/api' is not in trust domain 'example.org', \
         the only one issuer 'https://issuer.example' is trusted for"
    );
    assert_eq!(error.sqlstate(), "28000");
    assert_eq!(error.label(), "workload_mismatch");
    // A trust domain that merely starts like the configured one.
    assert!(
        identity(
            IssuerPreset::Spiffe,
            spiffe_claims("spiffe://example.org.evil/x")
        )
        .is_err()
    );
}

#[test]
fn malformed_spiffe_ids_are_refused() {
    for (id, needle) in [
        ("https://example.org/api", "does not start with spiffe://"),
        ("spiffe://example.org", "names a trust domain"),
        ("spiffe://example.org/", "empty segment"),
        ("spiffe://example.org/a//b", "empty segment"),
        ("spiffe://example.org/a/../b", "'.' or '..'"),
        ("spiffe://example.org/a/%2e", "only letters"),
        ("spiffe://example.org/a?b", "only letters"),
        ("spiffe://Example.org/a", "trust domain must be lowercase"),
        ("spiffe://user@example.org/a", "trust domain must be"),
        ("spiffe://example.org:443/a", "trust domain must be"),
        ("SPIFFE://example.org/a", "does not start with"),
    ] {
        let error = parse_spiffe_id(id).unwrap_err();
        assert!(error.contains(needle), "{id}: {error}");
        let refused = identity(IssuerPreset::Spiffe, spiffe_claims(id)).unwrap_err();
        assert!(
            refused.to_string().starts_with("token claim 'sub' "),
            "{id}: {refused}"
        );
    }
    let long = format!("spiffe://example.org/{}", "a".repeat(MAX_SPIFFE_ID_BYTES));
    assert!(parse_spiffe_id(&long).unwrap_err().contains("2048"));
    assert_eq!(
        parse_spiffe_id("spiffe://td_1.example-2/A.b-c_d/0").unwrap(),
        SpiffeId {
            trust_domain: "td_1.example-2".into(),
            path: "/A.b-c_d/0".into(),
        }
    );
}

#[test]
fn oauth_clients_acting_for_themselves() {
    let base = json!({"iss": "https://as.example", "aud": "postern", "exp": 1_900_000_000});
    let with = |extra: Value| {
        let mut claims = base.clone();
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    for (claims, client) in [
        // RFC 9068 access token for client credentials: sub is the client.
        (
            with(json!({"client_id": "billing-job", "sub": "billing-job"})),
            "billing-job",
        ),
        // A provider that names the client only in azp.
        (with(json!({"azp": "billing-job"})), "billing-job"),
        (
            with(json!({"client_id": "billing-job", "azp": "billing-job"})),
            "billing-job",
        ),
    ] {
        let identity = identity_of(IssuerPreset::OauthClient, claims);
        assert_eq!(identity.subject, client);
        assert_eq!(identity.kind, IdentityKind::Service);
        assert_eq!(
            identity.workload.unwrap().attribute("client_id"),
            Some(client)
        );
    }
    for (claims, message) in [
        (
            with(json!({"azp": "dashboard", "sub": "alice"})),
            "token's sub 'alice' is not its client 'dashboard'",
        ),
        (
            with(json!({"sub": "billing-job"})),
            "token has no 'client_id' claim and no 'azp' claim",
        ),
        (
            with(json!({"client_id": "a", "azp": "b"})),
            "token names two clients, client_id 'a' and azp 'b'",
        ),
        (
            with(json!({"client_id": 7})),
            "token claim 'client_id' is not a string",
        ),
    ] {
        let error = identity(IssuerPreset::OauthClient, claims).unwrap_err();
        assert!(error.to_string().starts_with(message), "{error}");
    }
}

#[test]
fn no_preset_no_workload() {
    let mut config = IssuerConfig::new(
        "https://idp",
        "postern",
        postern_config::JwksSource::Discovery,
    );
    let Value::Object(claims) = github_claims() else {
        unreachable!()
    };
    assert_eq!(Workload::from_claims(&config, &claims).unwrap(), None);
    config.preset = Some(IssuerPreset::Kubernetes);
    assert!(Workload::from_claims(&config, &claims).is_err());
}

#[test]
fn every_attribute_belongs_to_one_preset() {
    let workloads = [
        identity_of(IssuerPreset::GithubActions, github_claims()),
        identity_of(IssuerPreset::Kubernetes, kubernetes_claims()),
        identity_of(
            IssuerPreset::Spiffe,
            spiffe_claims("spiffe://example.org/api"),
        ),
        identity_of(
            IssuerPreset::OauthClient,
            json!({"client_id": "c", "iss": "x", "aud": "postern", "exp": 1}),
        ),
    ]
    .map(|identity| identity.workload.unwrap());
    for name in WORKLOAD_ATTRIBUTES {
        let having: Vec<&str> = workloads
            .iter()
            .filter(|w| w.attribute(name).is_some())
            .map(Workload::kind)
            .collect();
        assert_eq!(having.len(), 1, "{name}: {having:?}");
    }
    let kinds: Vec<&str> = workloads.iter().map(Workload::kind).collect();
    let presets: Vec<&str> = IssuerPreset::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(kinds, presets);
}

/// A token exchanged at Postern carries its workload whole: read back from the claim, every
/// preset's workload is the one the original token gave.
#[test]
fn an_exchanged_tokens_workload_claim_reads_back_as_the_original() {
    let github = identity(IssuerPreset::GithubActions, github_claims())
        .unwrap_or_else(|e| panic!("{e}"))
        .workload
        .unwrap_or_else(|| panic!("a workload"));
    let kubernetes = Workload::Kubernetes(KubernetesServiceAccount {
        namespace: "payments".into(),
        service_account: "api".into(),
        pod: None,
    });
    let spiffe = Workload::Spiffe(SpiffeId {
        trust_domain: "example.org".into(),
        path: "/ns/prod/sa/api".into(),
    });
    let client = Workload::OauthClient(OauthClient {
        client_id: "reporting".into(),
    });
    for workload in [github, kubernetes, spiffe, client] {
        let claim = workload.to_claim();
        assert_eq!(claim["kind"], workload.kind());
        let read = Workload::from_claim(&claim).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, workload);
    }
}

#[test]
fn a_workload_claim_missing_a_required_attribute_or_of_no_known_kind_is_refused() {
    let missing = Workload::from_claim(&json!({"kind": "kubernetes", "namespace": "payments"}));
    assert!(
        matches!(&missing, Err(AuthError::MissingClaim(name)) if name == "service_account"),
        "{missing:?}"
    );
    assert!(Workload::from_claim(&json!({"kind": "mainframe"})).is_err());
    assert!(Workload::from_claim(&json!("github_actions")).is_err());
}

/// Only Postern's own tokens are believed about an exchanged workload: another issuer's token
/// with a claim of that name has no workload (its issuer has no preset).
#[test]
fn only_postern_tokens_carry_an_exchanged_workload() {
    let claims = json!({
        "sub": "someone",
        EXCHANGED_WORKLOAD_CLAIM: {"kind": "oauth_client", "client_id": "reporting"},
    });
    let Value::Object(claims) = claims else {
        panic!("not an object")
    };
    let times = || TokenTimes {
        expires_at: UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        issued_at: None,
    };
    let plain = IssuerConfig::new(
        "https://idp.example",
        "postern",
        postern_config::JwksSource::Discovery,
    );
    let other = Identity::from_verified("idp", &plain, claims.clone(), times())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.workload, None);
    let postern =
        Identity::from_verified(postern_config::POSTERN_ISSUER_NAME, &plain, claims, times())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(postern.workload.map(|w| w.kind()), Some("oauth_client"));
}
