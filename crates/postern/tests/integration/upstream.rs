//! Postern's own connections to the database: verified TLS, and each password method PostgreSQL
//! may ask for (SCRAM-SHA-256 is what every other test uses; md5 and trust here).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::collections::BTreeMap;

use postern_config::{RoleRule, SecretSource, UpstreamTlsMode};
use postern_testkit::{Stack, StackOptions};

#[tokio::test]
async fn upstream_tls_is_verified_against_the_configured_ca() {
    let mut stack = Stack::start(StackOptions {
        upstream_tls: true,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    let client = stack.connect("reader", &token).await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the upstream session is not encrypted"
    );
    drop(client);

    // A CA that did not sign the server's certificate: Postern refuses to talk to the server.
    let other_ca = stack.dir().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let target = stack.config.targets.get_mut("demo").unwrap();
    assert_eq!(target.tls.mode, UpstreamTlsMode::VerifyFull);
    target.tls.ca_file = Some(other_ca);
    stack.start_proxy().await.unwrap();
    let error = stack.connect("reader", &token).await.unwrap_err();
    let db = error.as_db_error().expect("a FATAL from Postern");
    assert_eq!(db.code().code(), "08001");
    assert!(
        db.message()
            .contains("cannot reach the database of target \"demo\""),
        "{}",
        db.message()
    );
}

#[tokio::test]
async fn upstream_md5_and_trust_logins_work() {
    let mut stack = Stack::start(StackOptions {
        extra_hba: vec![
            "host demo md5_reader 127.0.0.1/32 md5".to_owned(),
            "host demo trust_reader 127.0.0.1/32 trust".to_owned(),
        ],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let admin = stack.direct().await.unwrap();
    admin
        .batch_execute(
            "SET password_encryption = 'md5';
             CREATE ROLE md5_reader LOGIN PASSWORD 'md5-secret' IN ROLE reader;
             CREATE ROLE trust_reader LOGIN IN ROLE reader;",
        )
        .await
        .unwrap();
    let stored: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_reader'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.starts_with("md5"),
        "the password must be stored as md5 for an md5 login"
    );

    let secret = stack.dir().join("md5-reader-password");
    std::fs::write(&secret, "md5-secret\n").unwrap();
    let target = stack.config.targets.get_mut("demo").unwrap();
    // Without a pool every session logs in, so the changed secret below is read.
    target.pool.mode = postern_config::PoolMode::None;
    target
        .role_passwords
        .insert("md5_reader".to_owned(), SecretSource::File(secret));
    target.roles.push(RoleRule {
        roles: vec!["md5_reader".to_owned(), "trust_reader".to_owned()],
        groups: vec!["analysts".to_owned()],
        subjects: Vec::new(),
        issuers: Vec::new(),
        claims: BTreeMap::new(),
    });
    stack.start_proxy().await.unwrap();

    let token = stack.token("alice@example.com", &["analysts"]);
    for role in ["md5_reader", "trust_reader"] {
        let client = stack
            .connect(role, &token)
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        let row = client
            .query_one("SELECT current_user::text, count(*) FROM orders", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), role);
        assert_eq!(row.get::<_, i64>(1), 4);
    }

    // A wrong md5 password is the database's refusal, passed on with its SQLSTATE.
    let secret = stack.dir().join("md5-reader-password");
    std::fs::write(&secret, "wrong").unwrap();
    let error = stack.connect("md5_reader", &token).await.unwrap_err();
    let db = error.as_db_error().expect("a FATAL from Postern");
    assert_eq!(db.code().code(), "28P01");
    assert!(
        db.message()
            .contains("the database refused the session for role \"md5_reader\""),
        "{}",
        db.message()
    );
}
