//! Tokens Postern must refuse, each with its own message and SQLSTATE and a `connection` event
//! with decision `refused` in the audit log; roles an identity may not assume; and tokens over
//! plaintext where TLS is required (with TLS checked through `psql`, as a user would connect).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::time::{Duration, SystemTime};

use crate::common::{assert_db_error, current_user};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_testkit::{Stack, StackOptions};
use serde_json::{Map, Value, json};

const ANALYST: &str = "alice@example.com";

/// One token Postern must refuse, and how.
struct Refusal {
    what: &'static str,
    token: String,
    role: &'static str,
    code: &'static str,
    /// A part of the message the client sees.
    message: String,
    /// The audit event's `reason`.
    reason: &'static str,
}

fn split(token: &str) -> (String, String, String) {
    let mut parts = token.split('.').map(str::to_owned);
    (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    )
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn claims_of(token: &str) -> Map<String, Value> {
    let (_, payload, _) = split(token);
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn refusals(stack: &Stack) -> Vec<Refusal> {
    let issuer = stack.idp.issuer().to_owned();
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let mint = |adjust: &dyn Fn(&mut postern_testkit::TokenRequest)| {
        let mut request = stack.request(ANALYST);
        request.groups = vec!["analysts".to_owned()];
        adjust(&mut request);
        stack.mint(&request).unwrap()
    };
    let good = stack.token(ANALYST, &["analysts"]);
    let (good_header, good_payload, good_signature) = split(&good);

    // `alg: none`, no signature.
    let unsigned = format!(
        "{}.{good_payload}.",
        b64_json(&json!({"alg": "none", "typ": "JWT"}))
    );
    // HS256 with the issuer's RSA public key (which anyone can download) as the HMAC secret.
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims_of(&good),
        &jsonwebtoken::EncodingKey::from_secret(stack.idp.keys().rsa_public_key_pem().as_bytes()),
    )
    .unwrap();
    // The right signature over a different payload: a different subject.
    let mut claims = claims_of(&good);
    claims.insert("sub".into(), json!("mallory@example.com"));
    let tampered = format!(
        "{good_header}.{}.{good_signature}",
        b64_json(&Value::Object(claims))
    );

    vec![
        Refusal {
            what: "expired",
            token: mint(&|r| {
                r.issued_at = Some(now - 2 * hour);
                r.ttl = hour;
            }),
            role: "reader",
            code: "28P01",
            message: "token expired at ".into(),
            reason: "expired",
        },
        Refusal {
            what: "not yet valid",
            token: mint(&|r| r.not_before = Some(now + hour)),
            role: "reader",
            code: "28P01",
            message: "token is not valid before ".into(),
            reason: "not_yet_valid",
        },
        Refusal {
            what: "wrong audience",
            token: mint(&|r| r.audience = "another-service".into()),
            role: "reader",
            code: "28000",
            message: "audience 'another-service' is not 'postern'".into(),
            reason: "wrong_audience",
        },
        Refusal {
            what: "wrong issuer",
            token: mint(&|r| r.issuer = "https://evil.example".into()),
            role: "reader",
            code: "28000",
            message: "issuer 'https://evil.example' is not trusted".into(),
            reason: "untrusted_issuer",
        },
        Refusal {
            what: "alg none",
            token: unsigned,
            role: "reader",
            code: "28P01",
            message: format!("algorithm none is not accepted for issuer '{issuer}'"),
            reason: "algorithm_not_accepted",
        },
        Refusal {
            what: "HS256 keyed with the RSA public key",
            token: confused,
            role: "reader",
            code: "28P01",
            message: format!("algorithm HS256 is not accepted for issuer '{issuer}'"),
            reason: "algorithm_not_accepted",
        },
        Refusal {
            what: "unknown key id",
            token: mint(&|r| r.kid = Some("not-a-published-key".into())),
            role: "reader",
            code: "28P01",
            message: format!(
                "signing key 'not-a-published-key' is not published by issuer '{issuer}'"
            ),
            reason: "unknown_key",
        },
        Refusal {
            what: "tampered payload",
            token: tampered,
            role: "reader",
            code: "28P01",
            message: "token signature is invalid".into(),
            reason: "bad_signature",
        },
        Refusal {
            what: "garbage",
            token: "this is not a token".into(),
            role: "reader",
            code: "28P01",
            message: "token is malformed: expected three base64url parts".into(),
            reason: "malformed",
        },
        Refusal {
            what: "garbage in three parts",
            token: "eyJ.eyJ.sig".into(),
            role: "reader",
            code: "28P01",
            message: "token is malformed: header is not".into(),
            reason: "malformed",
        },
        Refusal {
            what: "a role the identity may not assume",
            token: good.clone(),
            role: "writer",
            code: "28000",
            message: format!(
                "{ANALYST} may not assume role \"writer\" on target \"demo\"; roles you may use: reader"
            ),
            reason: "role_not_allowed",
        },
        Refusal {
            what: "a role no rule names",
            token: good,
            role: "postgres",
            code: "28000",
            message: "may not assume role \"postgres\"".into(),
            reason: "role_not_allowed",
        },
    ]
}

#[tokio::test]
async fn refused_tokens_say_why_and_are_audited() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let cases = refusals(&stack);
    for case in &cases {
        let error = stack
            .connect(case.role, &case.token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{}: the connection was accepted", case.what));
        let db = error
            .as_db_error()
            .unwrap_or_else(|| panic!("{}: not a database error: {error:?}", case.what));
        assert_eq!(
            db.code().code(),
            case.code,
            "{}: {}",
            case.what,
            db.message()
        );
        assert!(
            db.message().contains(&case.message),
            "{}: expected {:?} in {:?}",
            case.what,
            case.message,
            db.message()
        );
        assert!(
            !db.message().contains(&case.token),
            "{}: the message repeats the token",
            case.what
        );
    }

    // A session that runs a statement waits for its own audit event, which is written after
    // every refusal queued before it.
    let token = stack.token(ANALYST, &["analysts"]);
    let client = stack.connect("reader", &token).await.unwrap();
    assert_eq!(current_user(&client).await, "reader");

    let refused: Vec<Value> = stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "connection" && e["decision"] == "refused")
        .collect();
    assert_eq!(refused.len(), cases.len(), "{refused:#?}");
    for (case, event) in cases.iter().zip(&refused) {
        assert_eq!(event["reason"], case.reason, "{}: {event}", case.what);
        assert!(
            event["message"]
                .as_str()
                .is_some_and(|m| m.contains(&case.message)),
            "{}: {event}",
            case.what
        );
        assert_eq!(event["role"], case.role, "{}", case.what);
        assert_eq!(event["target"], "demo", "{}", case.what);
        assert!(
            !event.to_string().contains(&case.token),
            "{}: the audit log holds the token",
            case.what
        );
    }
    // The identity is recorded once it is verified: for the role refusals, not the token ones.
    let role_refusal = refused.last().unwrap();
    assert_eq!(role_refusal["subject"], ANALYST);
    assert!(refused[0].get("subject").is_none(), "{}", refused[0]);
}

#[tokio::test]
async fn an_empty_password_asks_for_the_token() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let error = stack.connect("reader", " ").await.unwrap_err();
    assert_db_error(&error, "28P01", "no token given");
}

async fn psql(stack: &Stack, token: &str, sslmode: &str, sql: &str) -> std::process::Output {
    let ca = stack
        .ca_certificate
        .as_ref()
        .expect("the stack has a certificate");
    let connection = format!(
        "host=127.0.0.1 port={} dbname=demo user=reader sslmode={sslmode} sslrootcert={} connect_timeout=10",
        stack.addr.port(),
        ca.display()
    );
    let output = tokio::process::Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, &connection])
        .env("PGPASSWORD", token)
        .env_remove("PGSERVICE")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("psql finishes in time")
        .expect("psql runs")
}

#[tokio::test]
async fn tokens_travel_only_over_tls_when_plaintext_is_not_allowed() {
    let stack = Stack::start(StackOptions {
        client_tls: true,
        allow_plaintext_loopback: false,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let token = stack.token(ANALYST, &["analysts"]);

    // tokio-postgres without TLS: refused before the token is even asked for.
    let error = stack.connect("reader", &token).await.unwrap_err();
    assert_db_error(&error, "28000", "Postern accepts tokens only over TLS");

    let refused = psql(&stack, &token, "disable", "SELECT 1").await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Postern accepts tokens only over TLS"),
        "{stderr}"
    );

    let accepted = psql(
        &stack,
        &token,
        "verify-full",
        "SELECT current_user, postern.subject(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "psql over TLS: {}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    // The client's TLS ends at Postern; the upstream connection is its own (plaintext here).
    assert_eq!(stdout.trim(), format!("reader|{ANALYST}|f"));

    let connections: Vec<Value> = stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "connection")
        .collect();
    let decisions: Vec<(&str, bool)> = connections
        .iter()
        .map(|e| (e["decision"].as_str().unwrap(), e["tls"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        decisions,
        [("refused", false), ("refused", false), ("accepted", true)]
    );
    assert!(
        connections
            .iter()
            .take(2)
            .all(|e| e["reason"] == "tls_required")
    );
}
