//! The Postern proxy: accepts PostgreSQL clients, verifies the identity token each one presents,
//! maps it to a database role, and relays its session to the target database with every
//! statement checked by the escape guard and recorded in the audit log.
//!
//! # Layout
//! - [`Proxy`] (here): binding, the accept loop, connection limits, graceful shutdown.
//! - `handshake`: one connection from its first byte to a running session (a client
//!   certificate, when the listener verified one, stands in for the token).
//! - `session`: the relay, statement by statement.
//! - `upstream`: connections to the database (TLS, SCRAM/md5/cleartext, simple queries).
//! - `target`: per-target state — endpoint, role passwords Postern sets, the claims key.
//! - `ephemeral`: the per-identity login roles of `ephemeral_user` mode.
//! - `claims`: signing `postern.claims`; [`setup_db`]: the SQL that verifies it.
//! - `cancel`: per-session cancel keys mapped to upstream backends, and the signal that cancels
//!   a statement held for approval.
//! - [`issuer`]: Postern as an issuer of exchanged tokens (keys, rotation, JWKS, discovery);
//!   the exchange itself is `control/exchange.rs`.
//! - [`approvals`]: requests, grants and the wake-ups of statements held for approval;
//!   `preview`: the impact preview approvers see (the statement run and rolled back).
//! - `metrics`: counters for `/metrics`.
//! - `oauthbearer`: SASL OAUTHBEARER (RFC 7628), PostgreSQL 18's OAuth, for targets whose
//!   `client_auth` asks for it.
//! - `transaction_pool`: a session's link to the pool when it holds a server connection per
//!   transaction (upkeep of its prepared statements, its identity applied per transaction).
//! - `events`: the audit events' fields. `tls`: rustls configuration. `io`: boxed streams.

pub mod approvals;
pub mod baseline;
mod cancel;
mod claims;
pub mod control;
mod ephemeral;
mod error;
mod events;
mod handshake;
mod io;
pub mod issuer;
mod metrics;
mod oauthbearer;
mod policy;
mod pool;
mod preview;
pub mod registry;
mod revocations;
mod session;
mod session_task;
pub mod setup_db;
mod target;
mod tls;
mod transaction_pool;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use postern_audit::AuditLog;
use postern_config::{ClientAuth, Config, ListenConfig};
use postern_identity::Verifier;
use postern_sql::Classifier;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{SetupError, UpstreamError};
pub use policy::{Policies, PolicyLoadError};
pub use target::Target;

/// How many distinct statement texts the classifier remembers.
const CLASSIFIER_CACHE: usize = 4096;

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) listen: ListenConfig,
    pub(crate) verifier: Verifier,
    pub(crate) classifier: Arc<Classifier>,
    pub(crate) audit: AuditLog,
    pub(crate) targets: BTreeMap<String, Arc<Target>>,
    /// How each target's clients present their token (`[listen]` and target `client_auth`).
    pub(crate) client_auth: BTreeMap<String, ClientAuth>,
    pub(crate) tls: Option<TlsAcceptor>,
    /// How a verified client certificate becomes an identity, when the listener asks for them.
    pub(crate) certificates: Option<postern_identity::CertificateIdentities>,
    pub(crate) cancels: Arc<cancel::CancelRegistry>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) policies: Arc<Policies>,
    pub(crate) clock: Clock,
    pub(crate) sessions: Arc<registry::Sessions>,
    pub(crate) revocations: Arc<revocations::Revocations>,
    pub(crate) approvals: Arc<approvals::Approvals>,
    /// Counters for the admin API's `/metrics`.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// `[admin.scim]`: the provider's token and whose subjects its users carry; `None` when off.
    pub(crate) scim: Option<Arc<control::scim::ScimSettings>>,
    /// Postern's own issuer, when token exchange is configured.
    pub(crate) issuer: Option<Arc<issuer::PosternIssuer>>,
    /// Service identities' baselines: learned, reported when new, enforced where configured.
    pub(crate) baselines: Arc<baseline::Baselines>,
}

/// Where Postern reads the time for policy conditions (hour, weekday, token age). The system
/// clock, except in tests that need a particular Tuesday at 09:00.
pub type Clock = Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>;

/// Options that are not configuration: what tests and embedders may change.
#[derive(Clone)]
pub struct ProxyOptions {
    pub clock: Clock,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(std::time::SystemTime::now),
        }
    }
}

/// A bound, not yet serving, Postern.
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl Proxy {
    /// Checks the configuration, opens the audit log, prepares TLS and binds the listening
    /// socket. Nothing is served until [`Proxy::serve`].
    pub async fn bind(config: &Config) -> Result<Self, SetupError> {
        Self::bind_with(config, ProxyOptions::default()).await
    }

    /// [`Proxy::bind`] with options.
    pub async fn bind_with(config: &Config, options: ProxyOptions) -> Result<Self, SetupError> {
        let policies = Arc::new(Policies::load(config).map_err(|e| SetupError::Policy(e.0))?);
        let tls = match &config.listen.tls {
            Some(files) => Some(tls::acceptor(files)?),
            None => None,
        };
        let certificates = config
            .certificate_identity()
            .map(postern_identity::CertificateIdentities::new);
        if certificates.is_none()
            && config
                .listen
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca.is_some())
        {
            return Err(SetupError::Tls(
                "listen.tls.client_ca is set without [listen.tls.client_identity]: client \
                 certificates would be asked for with nothing to say whom they name"
                    .to_owned(),
            ));
        }
        let mut targets = BTreeMap::new();
        let mut client_auth = BTreeMap::new();
        for (name, target) in &config.targets {
            targets.insert(name.clone(), Arc::new(Target::new(name, target)?));
            let method = config.client_auth(name).map_err(|problems| {
                SetupError::ClientAuth(
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
            client_auth.insert(name.clone(), method);
        }
        let audit = AuditLog::open(&config.audit.path).await?;
        let store = postern_store::Store::open(&config.store.path).await?;
        let issuer = match &config.token_exchange {
            Some(exchange) => Some(
                issuer::PosternIssuer::load(exchange.clone(), store.clone(), options.clock.clone())
                    .await
                    .map_err(|e| SetupError::Approvals(format!("token exchange: {e}")))?,
            ),
            None => None,
        };
        let verifier = Verifier::with_local_issuer(
            &config.issuers,
            config
                .token_exchange
                .as_ref()
                .zip(issuer.as_ref())
                .map(|(exchange, issuer)| {
                    (
                        postern_config::POSTERN_ISSUER_NAME.to_owned(),
                        exchange.as_issuer(),
                        issuer.local_jwks(),
                    )
                }),
        )?;
        let revocations = revocations::Revocations::load(store.clone(), (options.clock)()).await?;
        let notifier = approvals::notifier(&config.approvals)?;
        let scim = control::scim::ScimSettings::from_config(config)?.map(Arc::new);
        let console_url = config.approvals.console_url.clone().or_else(|| {
            config
                .admin
                .as_ref()
                .map(|admin| format!("http://{}/console/", admin.address))
        });
        let baselines = Arc::new(baseline::Baselines::new(
            config.baselines.clone(),
            store.clone(),
        ));
        let approvals = Arc::new(approvals::Approvals::new(
            store,
            config.approvals.clone(),
            console_url,
            audit.clone(),
            options.clock.clone(),
            notifier,
        ));
        let listener = TcpListener::bind(config.listen.address)
            .await
            .map_err(|source| SetupError::Listen {
                address: config.listen.address,
                source,
            })?;
        ephemeral::sweep_leftovers(targets.values()).await;
        for (issuer, error) in verifier.prefetch_keys().await {
            tracing::warn!(issuer, error = %error, "could not fetch signing keys yet; will retry on first use");
        }
        Ok(Self {
            shared: Arc::new(Shared {
                listen: config.listen.clone(),
                verifier,
                classifier: Arc::new(Classifier::new(CLASSIFIER_CACHE)),
                audit,
                targets,
                client_auth,
                tls,
                certificates,
                cancels: Arc::new(cancel::CancelRegistry::default()),
                shutdown: CancellationToken::new(),
                policies,
                clock: options.clock,
                sessions: Arc::new(registry::Sessions::default()),
                revocations: Arc::new(revocations),
                approvals,
                metrics: Arc::default(),
                scim,
                issuer,
                baselines,
            }),
            listener,
        })
    }

    /// The address clients connect to (useful when the configuration asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The policy set in force, to reload (on SIGHUP) or inspect.
    pub fn policies(&self) -> Arc<Policies> {
        self.shared.policies.clone()
    }

    /// The control plane's handle: verified, policy-checked, audited access to live sessions.
    pub fn control(&self) -> control::Control {
        control::Control::new(&self.shared)
    }

    /// The live sessions, to list and end.
    pub fn sessions(&self) -> Arc<registry::Sessions> {
        self.shared.sessions.clone()
    }

    /// A handle that stops the proxy: no new connections, open sessions end.
    pub fn shutdown_handle(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Serves until the shutdown handle is cancelled, then waits for sessions to end.
    pub async fn serve(self) {
        let Self { shared, listener } = self;
        shared.policies.watch(shared.shutdown.clone());
        let limit = Arc::new(Semaphore::new(shared.listen.max_connections.max(1)));
        let tasks = TaskTracker::new();
        tasks.spawn(prune_pools(shared.clone()));
        tasks.spawn(refresh_revocations(shared.clone()));
        tasks.spawn(shared.approvals.clone().run(shared.shutdown.clone()));
        if let Some(issuer) = &shared.issuer {
            tasks.spawn(issuer.clone().run(shared.shutdown.clone()));
        }
        tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Postern is listening");
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shared.shutdown.cancelled() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                shared.metrics.connection_refused("too_many_connections");
                tasks.spawn(refuse_overload(tcp, peer));
                continue;
            };
            let shared = shared.clone();
            let sessions = tasks.clone();
            tasks.spawn(async move {
                // A session runs as a task of its own, and this one ends: a task's future is
                // allocated whole for its life, and an idle session need not hold the
                // handshake's state.
                if let Some(session) = handshake::serve(shared, tcp, peer).await {
                    sessions.spawn(session.run(permit));
                }
            });
        }
        drop(listener);
        tasks.close();
        tasks.wait().await;
        ephemeral::drain(shared.targets.values()).await;
        for target in shared.targets.values() {
            target.pools.close_idle().await;
        }
        // Every session has ended: wait for the audit writer to write what they queued, so that
        // when `serve` returns the log is complete.
        match Arc::try_unwrap(shared) {
            Ok(shared) => {
                // The approval books hold a handle on the log too; the log waits for its
                // writer only when the last handle closes.
                let Shared {
                    audit, approvals, ..
                } = shared;
                if let Err(approvals) = Arc::try_unwrap(approvals) {
                    tracing::warn!(
                        holders = Arc::strong_count(&approvals),
                        "approval work still running at shutdown"
                    );
                }
                audit.close().await;
            }
            Err(_) => tracing::warn!(
                "audit log still in use at shutdown; its last events may be written late"
            ),
        }
        tracing::info!("Postern stopped");
    }
}

/// How often idle pooled connections are checked against their idle timeout and lifetime.
const POOL_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes idle pooled connections past their time, until shutdown.
async fn prune_pools(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(POOL_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shared.shutdown.cancelled() => return,
        }
        for target in shared.targets.values() {
            target.pools.prune().await;
        }
    }
}

/// Reads the revocations in force every second and ends the sessions they cover, until
/// shutdown: a revocation made through another Postern sharing the store reaches this one.
async fn refresh_revocations(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(revocations::REFRESH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shared.shutdown.cancelled() => return,
        }
        let now = (shared.clock)();
        match shared.revocations.refresh(&shared.sessions, now).await {
            Ok(0) => {}
            Ok(ended) => tracing::info!(sessions = ended, "revoked sessions ended"),
            Err(error) => {
                tracing::error!(error = %error, "cannot read revocations from the control store; keeping the last ones read");
            }
        }
    }
}

/// Too many connections: say so like PostgreSQL does, after the client's startup packet.
async fn refuse_overload(mut tcp: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    tracing::warn!(client = %peer, "connection limit reached; connection refused");
    let mut out = bytes::BytesMut::new();
    postern_wire::backend::Report::new(
        postern_wire::backend::Severity::Fatal,
        postern_wire::sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    )
    .encode(&mut out);
    let _ = tcp.write_all(&out).await;
    let _ = tcp.shutdown().await;
}

/// Installs the `postern` schema (claims key and functions) in a target's database.
pub async fn setup_target_database(
    target_name: &str,
    config: &Config,
) -> Result<setup_db::SetupReport, String> {
    let target_config = config
        .targets
        .get(target_name)
        .ok_or_else(|| format!("no target named {target_name:?} in the configuration"))?;
    let target = Target::new(target_name, target_config).map_err(|e| e.to_string())?;
    setup_db::setup_db(&target).await.map_err(|e| e.to_string())
}
