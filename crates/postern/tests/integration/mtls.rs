//! Mutual TLS: a workload presents an X.509-SVID (a client certificate whose one URI SAN is its
//! SPIFFE ID) verified against `[listen.tls] client_ca`, and logs in as a `Service` named by that
//! ID without any password message. Certificates are made at test time with rcgen: a trust
//! bundle's CA, SVIDs in and out of the trust domain, one with two SPIFFE IDs, one from a CA
//! outside the bundle. The client is rustls (through tokio-rustls) speaking the protocol byte by
//! byte, and psql with `sslcert`/`sslkey`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::NETWORK_WAIT;
use bytes::BytesMut;
use postern_config::{ClientCertificates, ClientIdentityConfig, RoleRule};
use postern_sandbox::demo::{DEMO_TARGET, READER_ROLE, WRITER_ROLE};
use postern_testkit::{Stack, StackOptions};
use postern_wire::backend::{self, Authentication, ErrorFields};
use postern_wire::frame::Side;
use postern_wire::{Frame, FrameDecoder, frontend, startup};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const TRUST_DOMAIN: &str = "example.org";
const ISSUER_NAME: &str = "mesh";
/// Allowed by the policy (path under `/ns/prod/`), mapped to `writer`.
const API: &str = "spiffe://example.org/ns/prod/sa/api";
/// Mapped to `reader`, but refused by the policy (path under `/ns/staging/`).
const STAGING: &str = "spiffe://example.org/ns/staging/sa/api";

/// Written for JWT-SVIDs as much as for certificates: the workload record is the same.
const POLICY: &str = r#"
@id("mesh-prod-only")
forbid (principal, action == Action::"connect", resource)
when { principal.workload.kind == "spiffe" }
unless {
  principal.workload.trust_domain == "example.org" &&
  principal.workload.path like "/ns/prod/*"
};
"#;

/// A certificate authority: the trust bundle's, or one outside it.
fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A client certificate and its key.
struct Svid {
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    certificate_pem: String,
    key_pem: String,
}

/// An X.509-SVID signed by `ca` with `uris` as its URI SANs, valid from a minute ago for
/// `lifetime`.
fn svid(ca: &CertifiedIssuer<'static, KeyPair>, uris: &[&str], lifetime: Duration) -> Svid {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "workload");
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI((*uri).try_into().unwrap()))
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch = date_time_ymd(1970, 1, 1);
    params.not_before = epoch + (now - Duration::from_secs(60));
    params.not_after = epoch + now + lifetime;
    let certificate = params.signed_by(&key, &**ca).unwrap();
    Svid {
        certificate: certificate.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// A stack whose listener takes TLS only, asks for client certificates verified against `ca`
/// (`required` or not), names them in trust domain `example.org` as issuer `mesh`, maps `API`
/// to writer and `STAGING` to reader, and runs [`POLICY`].
async fn stack(ca: &CertifiedIssuer<'static, KeyPair>, required: bool) -> Stack {
    let mut stack = Stack::start(StackOptions {
        client_tls: true,
        allow_plaintext_loopback: false,
        policies: vec![POLICY.to_owned()],
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts");
    let bundle = stack.dir().join("spiffe-bundle.pem");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let tls = stack.config.listen.tls.as_mut().unwrap();
    tls.client_ca = Some(bundle);
    tls.client_certificates = required.then_some(ClientCertificates::Required);
    tls.client_identity = Some(ClientIdentityConfig {
        trust_domain: TRUST_DOMAIN.to_owned(),
        issuer_name: ISSUER_NAME.to_owned(),
    });
    let rule = |role: &str, subject: &str| RoleRule {
        roles: vec![role.to_owned()],
        groups: Vec::new(),
        subjects: vec![subject.to_owned()],
        issuers: vec![ISSUER_NAME.to_owned()],
        claims: BTreeMap::new(),
    };
    let target = stack.config.targets.get_mut(DEMO_TARGET).unwrap();
    target.roles.push(rule(WRITER_ROLE, API));
    target.roles.push(rule(READER_ROLE, STAGING));
    stack.config.validate().unwrap();
    stack.start_proxy().await.unwrap();
    stack
}

/// A client session over TLS, speaking the protocol byte by byte.
struct Session {
    stream: TlsStream<TcpStream>,
    buffer: BytesMut,
}

/// How a login ended.
enum Login {
    /// In, with the authentication requests Postern sent on the way (boxed: a TLS stream is
    /// large).
    Ready(Box<Session>, Vec<String>),
    /// A FATAL ErrorResponse, after these authentication requests.
    Refused(ErrorFields, Vec<String>),
    /// The TLS session failed (the error the client saw).
    Tls(String),
}

impl Login {
    #[track_caller]
    fn ready(self) -> (Session, Vec<String>) {
        match self {
            Self::Ready(session, requests) => (*session, requests),
            Self::Refused(error, _) => panic!("refused: {error:?}"),
            Self::Tls(error) => panic!("TLS failed: {error}"),
        }
    }

    #[track_caller]
    fn refused(self) -> (ErrorFields, Vec<String>) {
        match self {
            Self::Refused(error, requests) => (error, requests),
            Self::Ready(..) => panic!("logged in"),
            Self::Tls(error) => panic!("TLS failed: {error}"),
        }
    }
}

/// Connects over TLS (trusting the stack's certificate), presenting `svid` if given, and logs
/// in as `role` on the demo target, answering a password request with `token` if given.
async fn login(stack: &Stack, svid: Option<&Svid>, role: &str, token: Option<&str>) -> Login {
    let mut tcp = tokio::time::timeout(NETWORK_WAIT, TcpStream::connect(stack.addr))
        .await
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    startup::encode_ssl_request(&mut out);
    tcp.write_all(&out).await.unwrap();
    let mut answer = [0_u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S", "Postern accepts TLS");

    let mut roots = rustls::RootCertStore::empty();
    let server = CertificateDer::from_pem_file(stack.ca_certificate.as_ref().unwrap()).unwrap();
    roots.add(server).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match svid {
        Some(svid) => config
            .with_client_auth_cert(vec![svid.certificate.clone()], svid.key.clone_key())
            .unwrap(),
        None => config.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let stream = match tokio::time::timeout(NETWORK_WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
    {
        Ok(stream) => stream,
        Err(error) => return Login::Tls(error.to_string()),
    };
    let mut session = Session {
        stream,
        buffer: BytesMut::new(),
    };
    let mut out = BytesMut::new();
    startup::encode_startup(&[("user", role), ("database", DEMO_TARGET)], &mut out);
    if let Err(error) = session.stream.write_all(&out).await {
        return Login::Tls(error.to_string());
    }
    let mut requests = Vec::new();
    loop {
        let frame = match session.read().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Login::Tls("closed without a word".to_owned()),
            Err(error) => return Login::Tls(error),
        };
        match frame.tag() {
            backend::AUTHENTICATION => {
                let request = backend::authentication(&frame).unwrap();
                requests.push(format!("{request:?}"));
                if request == Authentication::CleartextPassword {
                    let mut out = BytesMut::new();
                    frontend::encode_password(token.expect("no password to give"), &mut out);
                    session.stream.write_all(&out).await.unwrap();
                }
            }
            backend::ERROR_RESPONSE => {
                return Login::Refused(backend::error_fields(&frame).unwrap(), requests);
            }
            backend::READY_FOR_QUERY => return Login::Ready(Box::new(session), requests),
            _ => {}
        }
    }
}

impl Session {
    /// The next backend frame; `Ok(None)` at a clean end, `Err` with the TLS error otherwise.
    async fn read(&mut self) -> Result<Option<Frame>, String> {
        let decoder = FrameDecoder::new(Side::Backend, 1 << 20);
        loop {
            if let Some(frame) = decoder.decode(&mut self.buffer).unwrap() {
                return Ok(Some(frame));
            }
            let read = tokio::time::timeout(NETWORK_WAIT, self.stream.read_buf(&mut self.buffer))
                .await
                .expect("Postern answers or closes in time");
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    /// Runs `sql`; the first column of each row, or the error.
    async fn query(&mut self, sql: &str) -> Result<Vec<String>, ErrorFields> {
        let mut out = BytesMut::new();
        frontend::encode_query(sql, &mut out);
        self.stream.write_all(&out).await.unwrap();
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.read().await.unwrap().expect("the session stays open");
            match frame.tag() {
                backend::DATA_ROW => {
                    let values = backend::data_row(&frame).unwrap();
                    let value = values[0].map(|v| String::from_utf8(v.to_vec()).unwrap());
                    rows.push(value.unwrap_or_default());
                }
                backend::ERROR_RESPONSE => error = Some(backend::error_fields(&frame).unwrap()),
                backend::READY_FOR_QUERY => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    /// Reads until the FATAL ErrorResponse that ends the session.
    async fn fatal(&mut self) -> ErrorFields {
        loop {
            let frame = self.read().await.unwrap().expect("a FATAL before the end");
            if frame.tag() == backend::ERROR_RESPONSE {
                let error = backend::error_fields(&frame).unwrap();
                assert_eq!(error.severity, "FATAL", "{error:?}");
                return error;
            }
        }
    }
}

#[track_caller]
fn assert_refused(login: Login, code: &str, needle: &str) {
    let (error, requests) = login.refused();
    assert_eq!(error.code, code, "{error:?}");
    assert!(error.message.contains(needle), "{needle:?} in {error:?}");
    assert!(requests.is_empty(), "nothing was asked for: {requests:?}");
}

fn connections(stack: &Stack) -> Vec<Value> {
    stack
        .audit_events()
        .into_iter()
        .filter(|event| event["kind"] == "connection")
        .collect()
}

/// psql (libpq) with the SVID as `sslcert`/`sslkey` and no password anywhere: `-w` makes it
/// fail rather than prompt if one were asked for.
async fn psql(stack: &Stack, svid: &Svid, role: &str, sql: &str) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = stack.dir().join(format!("psql-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (certificate, key) = (dir.join("svid.crt"), dir.join("svid.key"));
    std::fs::write(&certificate, &svid.certificate_pem).unwrap();
    std::fs::write(&key, &svid.key_pem).unwrap();
    // libpq refuses a key file others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let connection = format!(
        "host=127.0.0.1 port={} dbname={DEMO_TARGET} user={role} sslmode=verify-full \
         sslrootcert={} sslcert={} sslkey={} connect_timeout=10",
        stack.addr.port(),
        stack.ca_certificate.as_ref().unwrap().display(),
        certificate.display(),
        key.display(),
    );
    let output = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-w",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            &connection,
        ])
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env_remove("PGPASSFILE")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("psql finishes in time")
        .expect("psql runs")
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn a_workload_logs_in_with_its_svid_and_nothing_else() {
    let ca = authority("example.org bundle");
    let stack = stack(&ca, false).await;
    let api = svid(&ca, &[API], HOUR);

    // No password message: the certificate is the credential, and the role rule on its
    // SPIFFE ID maps it to writer.
    let (mut session, requests) = login(&stack, Some(&api), WRITER_ROLE, None).await.ready();
    assert_eq!(requests, ["Ok"]);
    assert_eq!(
        session
            .query("SELECT current_user::text || ' ' || postern.subject()")
            .await
            .unwrap(),
        [format!("{WRITER_ROLE} {API}")]
    );
    // It is in no group, and no role rule maps it to reader.
    let (error, _) = login(&stack, Some(&api), READER_ROLE, None).await.refused();
    assert_eq!(error.code, "28000");
    assert!(
        error.message.contains("may not assume role \"reader\""),
        "{error:?}"
    );

    // libpq does the same with sslcert/sslkey.
    let output = psql(&stack, &api, WRITER_ROLE, "SELECT current_user").await;
    assert!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), WRITER_ROLE);

    let accepted: Vec<Value> = connections(&stack)
        .into_iter()
        .filter(|event| event["decision"] == "accepted")
        .collect();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    for event in &accepted {
        assert_eq!(event["subject"], API);
        assert_eq!(event["issuer"], "spiffe://example.org");
        assert_eq!(event["identity_kind"], "service");
        assert_eq!(event["client_auth"], "certificate");
        assert_eq!(
            event["client_certificate"],
            postern_identity::certificate_thumbprint(&api.certificate)
        );
    }
    let statements: Vec<Value> = stack
        .audit_events()
        .into_iter()
        .filter(|event| event["kind"] == "statement")
        .collect();
    assert!(
        !statements.is_empty() && statements.iter().all(|event| event["subject"] == API),
        "{statements:?}"
    );

    // A client without a certificate logs in with a token, as before.
    let token = stack.token("alice@example.com", &["analysts"]);
    let (mut session, requests) = login(&stack, None, READER_ROLE, Some(&token)).await.ready();
    assert_eq!(requests, ["CleartextPassword", "Ok"]);
    assert_eq!(
        session.query("SELECT current_user::text").await.unwrap(),
        [READER_ROLE]
    );
}

#[tokio::test]
async fn certificates_that_name_no_acceptable_spiffe_id_are_refused() {
    let ca = authority("example.org bundle");
    let stack = stack(&ca, false).await;

    let elsewhere = svid(&ca, &["spiffe://other.org/ns/prod/sa/api"], HOUR);
    assert_refused(
        login(&stack, Some(&elsewhere), WRITER_ROLE, None).await,
        "28000",
        "client certificate names SPIFFE ID 'spiffe://other.org/ns/prod/sa/api', which is not \
         in trust domain 'example.org'",
    );
    let two = svid(&ca, &[API, STAGING], HOUR);
    assert_refused(
        login(&stack, Some(&two), WRITER_ROLE, None).await,
        "28000",
        &format!(
            "client certificate holds 2 URIs in its subjectAltName ('{API}', '{STAGING}'), and \
             an X.509-SVID holds exactly one"
        ),
    );
    let none = svid(&ca, &[], HOUR);
    assert_refused(
        login(&stack, Some(&none), WRITER_ROLE, None).await,
        "28000",
        "client certificate names no SPIFFE ID",
    );

    // A Cedar policy on the workload's path: staging is mapped to reader, but may not connect.
    let staging = svid(&ca, &[STAGING], HOUR);
    assert_refused(
        login(&stack, Some(&staging), READER_ROLE, None).await,
        "28000",
        "policy \"mesh-prod-only\"",
    );

    // A CA outside the bundle: the TLS handshake fails, before any protocol message.
    let foreign = authority("someone else");
    let forged = svid(&foreign, &[API], HOUR);
    let Login::Tls(error) = login(&stack, Some(&forged), WRITER_ROLE, None).await else {
        panic!("a certificate from outside the bundle got through TLS");
    };
    assert!(error.contains("alert"), "{error}");

    // The failed handshake is recorded after the client has its alert.
    common::wait_until("the failed TLS handshake is audited", || {
        let recorded = connections(&stack)
            .iter()
            .any(|event| event["reason"] == "tls_handshake");
        async move { recorded }
    })
    .await;
    let refused: Vec<(String, String)> = connections(&stack)
        .iter()
        .map(|event| {
            (
                event["reason"].as_str().unwrap().to_owned(),
                event["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let reasons: Vec<&str> = refused.iter().map(|(reason, _)| reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "client_certificate",
            "client_certificate",
            "client_certificate",
            "forbidden",
            "tls_handshake"
        ]
    );
    assert!(
        refused[4]
            .1
            .contains("invalid peer certificate: UnknownIssuer"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn revocation_and_the_certificate_s_expiry_end_sessions() {
    let ca = authority("example.org bundle");
    let stack = stack(&ca, true).await;

    // With certificates required, a client without one does not get through TLS.
    assert!(matches!(
        login(&stack, None, WRITER_ROLE, None).await,
        Login::Tls(_)
    ));
    // The failed handshake is recorded after the client has its alert.
    common::wait_until("the failed TLS handshake is audited", || {
        let recorded = !connections(&stack).is_empty();
        async move { recorded }
    })
    .await;
    let events = connections(&stack);
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("peer sent no certificates"),
        "{events:?}"
    );

    // The session ends when the certificate does (no grace configured).
    let brief = svid(&ca, &[API], Duration::from_secs(3));
    let (mut session, _) = login(&stack, Some(&brief), WRITER_ROLE, None).await.ready();
    let error = session.fatal().await;
    assert_eq!(error.code, "57P01");
    assert!(
        error.message.contains("your client certificate expired at"),
        "{error:?}"
    );

    // Revoking the SPIFFE ID (by subject, as for any identity) ends its sessions and refuses it.
    let api = svid(&ca, &[API], HOUR);
    let (mut session, _) = login(&stack, Some(&api), WRITER_ROLE, None).await.ready();
    let store = postern_store::Store::open(&stack.config.store.path)
        .await
        .unwrap();
    store
        .add_revocation(postern_store::NewRevocation {
            scope: postern_store::RevocationScope::Subject {
                subject: API.to_owned(),
            },
            reason: "key leaked".to_owned(),
            created_by: "olga@example.com".to_owned(),
            created_at: postern_store::unix_seconds(SystemTime::now()),
            expires_at: None,
        })
        .await
        .unwrap();
    let error = session.fatal().await;
    assert_eq!(error.code, "57P01");
    assert!(error.message.ends_with("key leaked"), "{error:?}");
    assert_refused(
        login(&stack, Some(&api), WRITER_ROLE, None).await,
        "28000",
        &format!("access for {API} was revoked by olga@example.com: key leaked"),
    );
}
