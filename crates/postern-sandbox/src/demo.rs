//! The demo deployment shared by `postern quickstart` and the integration tests: a `demo`
//! database with roles `reader` and `writer` and an `orders` table, and the Postern configuration
//! that puts the development identity provider and that database together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use postern_config::{
    AuditConfig, Config, IssuerConfig, JwksSource, ListenConfig, PolicyConfig, PoolConfig,
    RoleRule, SecretSource, SessionLimits, StoreConfig, TargetConfig, TlsFiles, UpstreamLogin,
    UpstreamMode, UpstreamTls,
};

use crate::cluster::{ClusterError, PgCluster};
use crate::idp::{DEV_AUDIENCE, DevIdentityProvider};

/// The target name clients give as `dbname`, and the database behind it.
pub const DEMO_TARGET: &str = "demo";
/// The issuer name of the development identity provider in the configuration.
pub const DEV_ISSUER_NAME: &str = "dev";
/// The shared login role used in `set_role` mode.
pub const SESSION_LOGIN: &str = "postern_session";
/// The role for group `analysts`: reads the demo table.
pub const READER_ROLE: &str = "reader";
/// The role for group `engineers`: reads and writes it.
pub const WRITER_ROLE: &str = "writer";

/// How the demo Postern is set up.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub mode: UpstreamMode,
    /// Certificate and key for client TLS, if any.
    pub tls: Option<TlsFiles>,
    pub allow_plaintext_loopback: bool,
    pub audit_path: PathBuf,
    /// Where password files for the database logins are written (mode 0600).
    pub secrets_dir: PathBuf,
}

/// Creates the `demo` database, its roles and its `orders` table. The session login's password
/// is written to `secrets_dir`.
pub async fn prepare_demo_database(
    cluster: &PgCluster,
    secrets_dir: &Path,
) -> Result<(), ClusterError> {
    let session_password = random_secret();
    write_secret(secrets_dir, "session-password", &session_password).map_err(|source| {
        ClusterError::Io {
            action: "write the session password to",
            path: secrets_dir.to_path_buf(),
            source,
        }
    })?;
    cluster
        .psql("postgres", &format!("CREATE DATABASE {DEMO_TARGET};"))
        .await?;
    let sql = format!(
        "CREATE ROLE {READER_ROLE} NOLOGIN;
         CREATE ROLE {WRITER_ROLE} NOLOGIN;
         CREATE ROLE {SESSION_LOGIN} LOGIN NOINHERIT PASSWORD '{session_password}';
         GRANT {READER_ROLE}, {WRITER_ROLE} TO {SESSION_LOGIN};
         CREATE TABLE public.orders (
             id serial PRIMARY KEY,
             tenant_id text NOT NULL,
             customer text NOT NULL,
             amount numeric(10, 2) NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now()
         );
         INSERT INTO public.orders (tenant_id, customer, amount) VALUES
             ('acme', 'Ada Lovelace', 120.00),
             ('acme', 'Alan Turing', 75.50),
             ('globex', 'Grace Hopper', 310.25),
             ('globex', 'Edsger Dijkstra', 42.00);
         GRANT SELECT ON public.orders TO {READER_ROLE};
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders TO {WRITER_ROLE};
         GRANT USAGE ON SEQUENCE public.orders_id_seq TO {WRITER_ROLE};"
    );
    cluster.psql(DEMO_TARGET, &sql).await?;
    Ok(())
}

/// The Postern configuration for the demo: the development issuer, target `demo` with `reader`
/// for group `analysts` and `writer` for group `engineers`. Writes the admin password file.
pub fn demo_config(
    cluster: &PgCluster,
    idp: &DevIdentityProvider,
    options: &DemoOptions,
) -> std::io::Result<Config> {
    let admin_password = write_secret(
        &options.secrets_dir,
        "admin-password",
        cluster.superuser_password(),
    )?;
    let session_password = options.secrets_dir.join("session-password");
    let mut issuers = BTreeMap::new();
    issuers.insert(
        DEV_ISSUER_NAME.to_owned(),
        IssuerConfig::new(idp.issuer(), DEV_AUDIENCE, JwksSource::Discovery),
    );
    let rule = |role: &str, group: &str| RoleRule {
        roles: vec![role.to_owned()],
        groups: vec![group.to_owned()],
        subjects: Vec::new(),
        issuers: Vec::new(),
        claims: BTreeMap::new(),
    };
    let target = TargetConfig {
        host: cluster.host().to_owned(),
        port: cluster.port(),
        database: DEMO_TARGET.to_owned(),
        mode: options.mode,
        admin: UpstreamLogin {
            user: cluster.superuser().to_owned(),
            password: Some(SecretSource::File(admin_password)),
        },
        session_login: Some(UpstreamLogin {
            user: SESSION_LOGIN.to_owned(),
            password: Some(SecretSource::File(session_password)),
        }),
        role_passwords: BTreeMap::new(),
        tls: UpstreamTls::default(),
        roles: vec![
            rule(READER_ROLE, "analysts"),
            rule(WRITER_ROLE, "engineers"),
        ],
        ephemeral: None,
        pool: PoolConfig::default(),
        sessions: SessionLimits::default(),
        client_auth: None,
        oauth_issuer: None,
        oauth_scope: None,
    };
    let mut targets = BTreeMap::new();
    targets.insert(DEMO_TARGET.to_owned(), target);
    let listen = ListenConfig {
        address: options.listen,
        tls: options.tls.clone(),
        allow_plaintext_loopback: options.allow_plaintext_loopback,
        ..ListenConfig::default()
    };
    Ok(Config {
        listen,
        issuers,
        targets,
        audit: AuditConfig {
            path: options.audit_path.clone(),
        },
        policy: PolicyConfig::default(),
        store: StoreConfig::default(),
        admin: None,
        approvals: postern_config::ApprovalsConfig::default(),
        token_exchange: None,
        baselines: postern_config::BaselinesConfig::default(),
    })
}

fn write_secret(dir: &Path, name: &str, value: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(value.as_bytes())?;
    Ok(path)
}

fn random_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        std::process::abort();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
