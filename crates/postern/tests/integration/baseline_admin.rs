//! Service identities' baselines through the admin API and the CLI: an operator lists them and
//! reads one (`view_audit`), accepts an anomaly into one and resets one (`approve`), each change
//! on the audit log as a `control` event before it is made; callers without the rights are
//! refused, and names that match nothing are 404s. The services here come from issuers
//! configured as `identity_kind = "service"`, the operators from the development issuer, so
//! people stay people.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::wait_until;
use postern_config::{IdentityKindRule, JwksSource};
use postern_sandbox::demo::{DEMO_TARGET, DEV_ISSUER_NAME, WRITER_ROLE};
use postern_testkit::{Stack, StackOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A service identity's subject: `/` and `:` in it, as GitHub's and Kubernetes' have.
const SERVICE: &str = "repo:acme/billing:ref:refs/heads/main";
/// The `iss` of the CI issuer the service's tokens come from.
const CI_ISSUER: &str = "https://ci.example.test";
/// A second issuer vouching for a service of the same name.
const STAGING_ISSUER: &str = "https://ci-staging.example.test";

const WINDOW: Duration = Duration::from_secs(3600);

const POLICY: &str = r#"
@id("operators") permit (principal in Group::"operators", action in [Action::"view_audit", Action::"approve"], resource);
@id("auditors") permit (principal in Group::"auditors", action == Action::"view_audit", resource);
"#;

const LEARNED: &str = "SELECT count(*) FROM orders WHERE customer = 'Ada Lovelace'";
const LATE: &str = "SELECT customer FROM orders ORDER BY amount DESC LIMIT 1";
const AFTER_RESET: &str = "SELECT max(amount) FROM orders";

/// Postern's clock: the real time plus what the test moved it on by.
#[derive(Clone)]
struct MovableClock(Arc<AtomicU64>);

impl MovableClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }

    fn clock(&self) -> postern_proxy::Clock {
        let this = self.clone();
        Arc::new(move || this.now())
    }
}

fn unix(time: SystemTime) -> i64 {
    i64::try_from(time.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// A stack that trusts [`CI_ISSUER`] and [`STAGING_ISSUER`] (tokens signed by the development
/// provider's keys) for service identities, with a one-hour observation window.
async fn stack(clock: &MovableClock) -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut stack = Stack::start(StackOptions {
        policies: vec![POLICY.to_owned()],
        clock: Some(clock.clock()),
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts");
    for (name, iss) in [("ci", CI_ISSUER), ("ci-staging", STAGING_ISSUER)] {
        let mut issuer = stack.config.issuers[DEV_ISSUER_NAME].clone();
        issuer.issuer = iss.to_owned();
        issuer.jwks = JwksSource::Uri(stack.idp.jwks_uri());
        issuer.identity_kind = IdentityKindRule::Service;
        stack.config.issuers.insert(name.to_owned(), issuer);
    }
    stack.config.baselines.observation_window = WINDOW;
    stack.config.validate().unwrap();
    stack.start_proxy().await.unwrap();
    stack
}

/// A session of [`SERVICE`] with a token from `issuer`.
async fn service(stack: &Stack, issuer: &str) -> tokio_postgres::Client {
    let mut request = stack.request(SERVICE);
    request.issuer = issuer.to_owned();
    request.groups = vec!["engineers".to_owned()];
    let token = stack.mint(&request).unwrap();
    stack.connect(WRITER_ROLE, &token).await.unwrap()
}

async fn get(
    stack: &Stack,
    token: Option<&str>,
    path: &str,
    query: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .get(format!("{}{path}", stack.admin_url()))
        .query(query);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn post(stack: &Stack, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", stack.admin_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// [`SERVICE`]'s baseline from `issuer` on the demo target, as `token` reads it.
async fn baseline(stack: &Stack, token: &str, issuer: &str) -> (StatusCode, Value) {
    get(
        stack,
        Some(token),
        "/v1/baseline",
        &[
            ("issuer", issuer),
            ("subject", SERVICE),
            ("target", DEMO_TARGET),
        ],
    )
    .await
}

/// The entry of `kind` with `value`, if the baseline holds one.
fn entry<'a>(baseline: &'a Value, kind: &str, value: &str) -> Option<&'a Value> {
    baseline["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && e["value"] == value)
}

/// Waits until [`SERVICE`]'s baseline from [`CI_ISSUER`] satisfies `check` (what is first seen
/// is written to the store in the background); returns it.
async fn wait_for_baseline(
    stack: &Stack,
    token: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let check = &check;
    wait_until(what, || async move {
        let (status, body) = baseline(stack, token, CI_ISSUER).await;
        status == StatusCode::OK && check(&body)
    })
    .await;
    baseline(stack, token, CI_ISSUER).await.1
}

/// Runs the `postern` binary with `token`; returns (success, stdout, stderr).
async fn cli(token: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(args)
        .env_remove("POSTERN_ADMIN")
        .env("POSTERN_TOKEN", token)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn control_events(stack: &Stack) -> Vec<Value> {
    stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "control")
        .collect()
}

#[tokio::test]
async fn operators_read_accept_and_reset_service_baselines_through_the_api_and_the_cli() {
    let clock = MovableClock(Arc::new(AtomicU64::new(0)));
    let stack = stack(&clock).await;
    let operator = stack.token("olga@example.com", &["operators"]);
    let auditor = stack.token("aude@example.com", &["auditors"]);
    let engineer = stack.token("erin@example.com", &["engineers"]);
    let admin = stack.admin_url();

    // In its observation window the service's statement and network are learned.
    let started = unix(clock.now());
    let client = service(&stack, CI_ISSUER).await;
    client.simple_query(LEARNED).await.unwrap();
    drop(client);
    let learned = wait_for_baseline(&stack, &operator, "the statement is in the baseline", |b| {
        b["entries"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    assert_eq!(learned["issuer"], CI_ISSUER);
    assert_eq!(learned["subject"], SERVICE);
    assert_eq!(learned["target"], DEMO_TARGET);
    let began = learned["started_at"].as_i64().unwrap();
    assert!((started..started + 60).contains(&began), "{learned}");
    let statements: Vec<&Value> = learned["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "fingerprint")
        .collect();
    assert_eq!(statements.len(), 1, "{learned}");
    let fingerprint = statements[0]["value"].as_str().unwrap().to_owned();
    assert!(!fingerprint.is_empty());
    assert_eq!(statements[0]["learned"], true);
    assert_eq!(statements[0]["sample"], LEARNED);
    assert_eq!(statements[0]["accepted_by"], Value::Null);
    let network = entry(&learned, "network", "127.0.0.1/32").expect("the client's network");
    assert_eq!(network["learned"], true);
    assert_eq!(network["sample"], "127.0.0.1", "{learned}");

    // The list: the operator and the auditor see it, with its counts.
    let (status, list) = get(&stack, Some(&operator), "/v1/baselines", &[]).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list,
        json!({"baselines": [{
            "issuer": CI_ISSUER, "subject": SERVICE, "target": DEMO_TARGET, "started_at": began,
            "fingerprints": 1, "networks": 1, "anomalies": 0,
        }]})
    );
    let (status, seen) = get(&stack, Some(&auditor), "/v1/baselines", &[]).await;
    assert_eq!((status, &seen), (StatusCode::OK, &list));
    assert_eq!(
        baseline(&stack, &auditor, CI_ISSUER).await.0,
        StatusCode::OK
    );

    // No token, no view_audit: refused, in the API's error shape.
    let (status, body) = get(&stack, None, "/v1/baselines", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = get(&stack, Some(&engineer), "/v1/baselines", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("erin@example.com may not view_audit"),
        "{body}"
    );
    let (status, body) = baseline(&stack, &engineer, CI_ISSUER).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("view_audit"),
        "{body}"
    );

    // A name that matches nothing, a missing parameter, an unknown kind.
    let (status, body) = baseline(&stack, &operator, STAGING_ISSUER).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no baseline"),
        "{body}"
    );
    let (status, body) = get(
        &stack,
        Some(&operator),
        "/v1/baseline",
        &[("issuer", CI_ISSUER), ("subject", SERVICE)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("target"), "{body}");
    let accept = |kind: &str, value: &str| json!({"issuer": CI_ISSUER, "subject": SERVICE, "target": DEMO_TARGET, "kind": kind, "value": value});
    let (status, body) = post(
        &stack,
        &operator,
        "/v1/baseline/accept",
        accept("fingerprint", "0123456789abcdef"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("holds no fingerprint \"0123456789abcdef\""),
        "{body}"
    );
    let (status, body) = post(
        &stack,
        &operator,
        "/v1/baseline/accept",
        accept("table", &fingerprint),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"fingerprint\" or \"network\""),
        "{body}"
    );
    // Learned already: nothing to accept.
    let (status, body) = post(
        &stack,
        &operator,
        "/v1/baseline/accept",
        accept("fingerprint", &fingerprint),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Reading is not changing: the auditor may not accept or reset.
    let (status, body) = post(
        &stack,
        &auditor,
        "/v1/baseline/accept",
        accept("fingerprint", &fingerprint),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("may not approve"),
        "{body}"
    );
    let (status, body) = post(
        &stack,
        &auditor,
        "/v1/baseline/reset",
        json!({"issuer": CI_ISSUER, "subject": SERVICE, "target": DEMO_TARGET}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // None of the refused or empty requests changed anything, so none is on record.
    assert!(
        control_events(&stack).is_empty(),
        "{:?}",
        control_events(&stack)
    );

    // After the window, a new statement is an anomaly.
    clock.advance(2 * WINDOW);
    let client = service(&stack, CI_ISSUER).await;
    client.simple_query(LATE).await.unwrap();
    drop(client);
    let anomaly = stack
        .audit_events()
        .into_iter()
        .find(|e| e["kind"] == "anomaly")
        .expect("an anomaly event");
    let late = anomaly["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(late, fingerprint);
    let reported = wait_for_baseline(&stack, &operator, "the anomaly is in the baseline", |b| {
        entry(b, "fingerprint", &late).is_some()
    })
    .await;
    assert_eq!(
        entry(&reported, "fingerprint", &late).unwrap()["learned"],
        false
    );

    // The CLI lists it, finding the admin API from a quickstart-style directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-address"), format!("{admin}\n")).unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let (ok, out, err) = cli(&operator, &["baselines", "--dir", dir_arg]).await;
    assert!(ok, "{err}");
    let row: Vec<&str> = out
        .lines()
        .find(|line| line.contains(SERVICE))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], [CI_ISSUER, SERVICE, DEMO_TARGET], "{out}");
    assert_eq!(
        row[4..],
        ["1", "1", "1"],
        "learned fingerprints, networks, anomalies: {out}"
    );
    assert!(out.contains("(1 baselines)"), "{out}");
    let (ok, _, err) = cli(&engineer, &["baselines", "--admin", admin.as_str()]).await;
    assert!(!ok);
    assert!(err.contains("403") && err.contains("view_audit"), "{err}");

    // `baseline show` finds the issuer itself and marks the anomaly.
    let which = [
        "--subject",
        SERVICE,
        "--target",
        DEMO_TARGET,
        "--admin",
        admin.as_str(),
    ];
    let (ok, out, err) = cli(&operator, &[&["baseline", "show"][..], &which[..]].concat()).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("from {CI_ISSUER} on target {DEMO_TARGET}")),
        "{out}"
    );
    let line = |value: &str| {
        out.lines()
            .find(|l| l.contains(value))
            .unwrap_or_else(|| panic!("{value} in {out}"))
            .to_owned()
    };
    assert!(
        line(&late).contains("ANOMALY") && line(&late).contains(LATE),
        "{out}"
    );
    assert!(
        line(&fingerprint).contains("learned") && line(&fingerprint).contains(LEARNED),
        "{out}"
    );
    assert!(line("127.0.0.1/32").contains("learned"), "{out}");
    assert!(out.contains("(3 entries, 1 anomalies)"), "{out}");

    // `baseline accept`: the auditor may not; the operator may, and it is learned from now on.
    let accept_late = [
        &["baseline", "accept"][..],
        &which[..],
        &["--fingerprint", late.as_str()][..],
    ]
    .concat();
    let (ok, _, err) = cli(&auditor, &accept_late).await;
    assert!(!ok);
    assert!(
        err.contains("403") && err.contains("may not approve"),
        "{err}"
    );
    let (ok, out, err) = cli(&operator, &accept_late).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("fingerprint {late} accepted")) && out.contains(LATE),
        "{out}"
    );
    let (_, accepted) = baseline(&stack, &operator, CI_ISSUER).await;
    let now_learned = entry(&accepted, "fingerprint", &late).unwrap();
    assert_eq!(now_learned["learned"], true);
    assert_eq!(now_learned["accepted_by"], "olga@example.com");
    let (ok, _, err) = cli(
        &operator,
        &[
            &["baseline", "accept"][..],
            &which[..],
            &["--network", "10.9.9.9/32"][..],
        ]
        .concat(),
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("404") && err.contains("holds no network"),
        "{err}"
    );

    // A second issuer's service of the same name: the issuer must now be named.
    let staging = service(&stack, STAGING_ISSUER).await;
    staging.simple_query(LEARNED).await.unwrap();
    drop(staging);
    wait_until("the second baseline is listed", || async {
        let (_, list) = get(&stack, Some(&operator), "/v1/baselines", &[]).await;
        list["baselines"].as_array().unwrap().len() == 2
    })
    .await;
    let reset = [&["baseline", "reset"][..], &which[..]].concat();
    let (ok, _, err) = cli(&operator, &reset).await;
    assert!(!ok);
    assert!(
        err.contains("from 2 issuers")
            && err.contains(CI_ISSUER)
            && err.contains(STAGING_ISSUER)
            && err.contains("--issuer"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &operator,
        &[&[
            "baseline",
            "show",
            "--subject",
            "nobody",
            "--target",
            DEMO_TARGET,
            "--admin",
            admin.as_str(),
        ][..]]
        .concat(),
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no baseline of nobody"), "{err}");

    // `baseline reset` with the issuer: empty, observing again from now.
    let (ok, out, err) = cli(
        &operator,
        &[&reset[..], &["--issuer", CI_ISSUER][..]].concat(),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("reset: learning again from"), "{out}");
    let (_, after) = baseline(&stack, &operator, CI_ISSUER).await;
    assert_eq!(after["entries"], json!([]), "{after}");
    let restarted = after["started_at"].as_i64().unwrap();
    assert!(restarted >= began + 2 * 3600, "{after}");
    // The other issuer's baseline is untouched.
    let (_, other) = baseline(&stack, &operator, STAGING_ISSUER).await;
    assert_eq!(other["entries"].as_array().unwrap().len(), 2, "{other}");

    // A new window: what the service runs now is learned, not reported.
    let client = service(&stack, CI_ISSUER).await;
    client.simple_query(AFTER_RESET).await.unwrap();
    drop(client);
    let relearned = wait_for_baseline(&stack, &operator, "the baseline learns again", |b| {
        b["entries"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    let statement = relearned["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "fingerprint")
        .unwrap();
    assert_eq!(
        (&statement["learned"], &statement["sample"]),
        (&json!(true), &json!(AFTER_RESET))
    );
    let anomalies = stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "anomaly")
        .count();
    assert_eq!(
        anomalies, 1,
        "only the statement seen after the first window"
    );

    // Each change is on record, by whom and of what; the refusals changed nothing.
    let events = control_events(&stack);
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["accept_baseline_entry", "reset_baseline"],
        "{events:?}"
    );
    for event in &events {
        assert_eq!(event["by"], "olga@example.com");
        assert_eq!(event["details"]["issuer"], CI_ISSUER);
        assert_eq!(event["details"]["subject"], SERVICE);
        assert_eq!(event["details"]["target"], DEMO_TARGET);
    }
    assert_eq!(events[0]["details"]["kind"], "fingerprint");
    assert_eq!(events[0]["details"]["value"], late.as_str());
    assert_eq!(events[1]["details"]["entries_forgotten"], 3);
}
