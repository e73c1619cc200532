//! Test kit: a real PostgreSQL cluster, a real development identity provider serving its JWKS
//! over HTTP, and Postern in front of them, started in-process for integration tests.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let stack = postern_testkit::Stack::start(postern_testkit::StackOptions::default()).await?;
//! let token = stack.token("alice@example.com", &["analysts"]);
//! let client = stack.connect("reader", &token).await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use postern_config::{Config, TlsFiles, UpstreamMode, UpstreamTls, UpstreamTlsMode};
use postern_sandbox::cluster::{ClusterOptions, PgCluster};
use postern_sandbox::demo::{self, DEMO_TARGET, DemoOptions};
use postern_sandbox::idp::DevIdentityProvider;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use postern_sandbox::idp::TokenRequest;

/// How to start a [`Stack`].
#[derive(Clone)]
pub struct StackOptions {
    pub mode: UpstreamMode,
    /// Give Postern a TLS certificate for clients.
    pub client_tls: bool,
    /// Accept tokens over plaintext from loopback.
    pub allow_plaintext_loopback: bool,
    /// Run `postern setup-db` on the demo target (signed claims).
    pub setup_db: bool,
    /// Give PostgreSQL a certificate and have Postern connect to it with verified TLS.
    pub upstream_tls: bool,
    /// `pg_hba.conf` lines placed before the defaults (e.g. to test md5 or trust upstream).
    pub extra_hba: Vec<String>,
    /// Cedar policy texts, each written to a file of the stack and listed in `[policy] files`.
    pub policies: Vec<String>,
    /// The clock policy conditions read (hour, weekday, token age); the system clock if `None`.
    pub clock: Option<postern_proxy::Clock>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            mode: UpstreamMode::RoleLogin,
            client_tls: false,
            allow_plaintext_loopback: true,
            setup_db: true,
            upstream_tls: false,
            extra_hba: Vec::new(),
            policies: Vec::new(),
            clock: None,
        }
    }
}

/// PostgreSQL + identity provider + Postern, torn down on drop.
pub struct Stack {
    pub cluster: PgCluster,
    pub idp: DevIdentityProvider,
    pub config: Config,
    pub addr: SocketAddr,
    /// The certificate clients should trust when `client_tls` is on.
    pub ca_certificate: Option<PathBuf>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
    clock: Option<postern_proxy::Clock>,
    policies: Option<std::sync::Arc<postern_proxy::Policies>>,
    sessions: Option<std::sync::Arc<postern_proxy::registry::Sessions>>,
    /// The admin API's address (always served, on a loopback port of its own).
    pub admin_addr: SocketAddr,
    admin_task: Option<JoinHandle<()>>,
}

impl Stack {
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        init_tracing();
        let dir = tempfile::tempdir().context("temporary directory")?;
        let cluster = PgCluster::start(ClusterOptions {
            dir: None,
            tls: options.upstream_tls,
            extra_hba: options.extra_hba.clone(),
        })
        .await
        .context("starting PostgreSQL")?;
        let idp = DevIdentityProvider::start(&dir.path().join("idp"))
            .await
            .context("starting the identity provider")?;
        let secrets = dir.path().join("secrets");
        demo::prepare_demo_database(&cluster, &secrets)
            .await
            .context("preparing the demo database")?;
        let tls = if options.client_tls {
            Some(write_certificate(dir.path())?)
        } else {
            None
        };
        let ca_certificate = tls.as_ref().map(|t: &TlsFiles| t.certificate.clone());
        let mut config = demo::demo_config(
            &cluster,
            &idp,
            &DemoOptions {
                listen: "127.0.0.1:0".parse()?,
                mode: options.mode,
                tls,
                allow_plaintext_loopback: options.allow_plaintext_loopback,
                audit_path: dir.path().join("audit.jsonl"),
                secrets_dir: secrets,
            },
        )?;
        if options.upstream_tls {
            let target = config.targets.get_mut(DEMO_TARGET).context("demo target")?;
            target.tls = UpstreamTls {
                mode: UpstreamTlsMode::VerifyFull,
                ca_file: cluster.ca_certificate_path().map(Path::to_path_buf),
                server_name: None,
            };
        }
        config.store.path = dir.path().join("state.db");
        for (n, text) in options.policies.iter().enumerate() {
            let path = dir.path().join(format!("policy-{n}.cedar"));
            std::fs::write(&path, text).context("writing a policy file")?;
            config.policy.files.push(path);
        }
        if options.setup_db {
            postern_proxy::setup_target_database(DEMO_TARGET, &config)
                .await
                .map_err(|e| anyhow::anyhow!("setup-db: {e}"))?;
        }
        let mut stack = Self {
            cluster,
            idp,
            config,
            addr: "127.0.0.1:0".parse()?,
            ca_certificate,
            shutdown: CancellationToken::new(),
            task: None,
            dir,
            clock: options.clock.clone(),
            policies: None,
            sessions: None,
            admin_addr: "127.0.0.1:0".parse()?,
            admin_task: None,
        };
        stack.start_proxy().await?;
        Ok(stack)
    }

    /// (Re)starts Postern with `self.config` (after a test changed it).
    pub async fn start_proxy(&mut self) -> anyhow::Result<()> {
        self.stop_proxy().await;
        let mut options = postern_proxy::ProxyOptions::default();
        if let Some(clock) = &self.clock {
            options.clock = clock.clone();
        }
        let proxy = postern_proxy::Proxy::bind_with(&self.config, options)
            .await
            .context("starting Postern")?;
        self.addr = proxy.local_addr()?;
        self.config.listen.address = self.addr;
        self.shutdown = proxy.shutdown_handle();
        self.policies = Some(proxy.policies());
        self.sessions = Some(proxy.sessions());
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the admin API")?;
        self.admin_addr = admin.local_addr()?;
        let (control, shutdown) = (proxy.control(), proxy.shutdown_handle());
        self.admin_task = Some(tokio::spawn(async move {
            let _ = postern_admin::serve(admin, control, shutdown).await;
        }));
        self.task = Some(tokio::spawn(proxy.serve()));
        Ok(())
    }

    /// The policy set Postern is running with, to reload after changing its files.
    pub fn policies(&self) -> Option<std::sync::Arc<postern_proxy::Policies>> {
        self.policies.clone()
    }

    /// The live sessions of the running Postern, to list and end.
    pub fn sessions(&self) -> Option<std::sync::Arc<postern_proxy::registry::Sessions>> {
        self.sessions.clone()
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Stops Postern and waits until it has closed its sessions and audit log.
    pub async fn stop_proxy(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.admin_task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A token for `subject` in `groups` from the development identity provider.
    pub fn token(&self, subject: &str, groups: &[&str]) -> String {
        self.idp.mint(subject, groups)
    }

    /// A token request to adjust before [`Stack::mint`].
    pub fn request(&self, subject: &str) -> TokenRequest {
        self.idp.request(subject)
    }

    pub fn mint(&self, request: &TokenRequest) -> anyhow::Result<String> {
        Ok(self.idp.keys().mint(request)?)
    }

    /// Connection settings for Postern as `role` with `token`, on the demo target.
    pub fn client_config(&self, role: &str, token: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user(role)
            .password(token)
            .dbname(DEMO_TARGET)
            .application_name("postern-tests");
        config
    }

    /// Connects through Postern (plaintext on loopback) and drives the connection in the
    /// background.
    pub async fn connect(
        &self,
        role: &str,
        token: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self
            .client_config(role, token)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Connects to the demo database directly as the superuser, bypassing Postern.
    pub async fn direct(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.direct_as(self.cluster.superuser(), self.cluster.superuser_password())
            .await
    }

    /// Connects to the demo database directly as `user`, bypassing Postern.
    pub async fn direct_as(
        &self,
        user: &str,
        password: &str,
    ) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(self.cluster.host())
            .port(self.cluster.port())
            .user(user)
            .password(password)
            .dbname(DEMO_TARGET)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.config.audit.path.clone()
    }

    /// The stack's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The audit log's events, parsed.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`.
fn write_certificate(dir: &Path) -> anyhow::Result<TlsFiles> {
    let key = rcgen::KeyPair::generate()?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let cert = params.self_signed(&key)?;
    let certificate = dir.join("postern.crt");
    let private_key = dir.join("postern.key");
    std::fs::write(&certificate, cert.pem())?;
    std::fs::write(&private_key, key.serialize_pem())?;
    Ok(TlsFiles::new(certificate, private_key))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
