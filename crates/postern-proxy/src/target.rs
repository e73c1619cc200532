//! A target at run time: its configuration, how to reach its database, and the per-target state
//! Postern keeps (role passwords it set, the ephemeral roles it holds, the claims signing key).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::{
    PoolMode, SecretSource, TargetConfig, UpstreamLogin, UpstreamMode, UpstreamTlsMode,
};
use postern_identity::Identity;
use rustls_pki_types::ServerName;
use tokio::sync::Mutex;

use crate::claims::SigningKey;
use crate::ephemeral::{EphemeralLease, EphemeralRoles};
use crate::error::{SetupError, UpstreamError};
use crate::pool::{CheckoutError, Pool, PoolKey, PoolLease, Pools};
use crate::tls;
use crate::upstream::{self, Endpoint, Login, Upstream, quote_ident, quote_literal};

/// How long a missing signing key (no `postern setup-db` yet) is remembered before Postern looks
/// again, so that running `setup-db` takes effect without a restart.
const MISSING_KEY_RETRY: Duration = Duration::from_secs(30);

/// A configured target, ready to open sessions.
pub struct Target {
    pub name: String,
    pub config: TargetConfig,
    pub endpoint: Arc<Endpoint>,
    /// Passwords Postern set for mapped roles (`role_login` mode), by role.
    role_passwords: Mutex<HashMap<String, String>>,
    /// The login roles made for identities (`ephemeral_user` mode only).
    ephemeral: Option<Arc<EphemeralRoles>>,
    signing_key: Mutex<Option<(Instant, Option<Arc<SigningKey>>)>>,
    /// Upstream connections kept between sessions (`role_login` and `set_role` modes).
    pub(crate) pools: Pools,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Target {
    pub fn new(name: &str, config: &TargetConfig) -> Result<Self, SetupError> {
        let tls = match config.tls.mode {
            UpstreamTlsMode::Disable => None,
            UpstreamTlsMode::VerifyFull => {
                let connector = tls::connector(config.tls.ca_file.as_deref())?;
                let host = config
                    .tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| config.host.clone());
                let name = ServerName::try_from(host.clone()).map_err(|_| {
                    SetupError::Tls(format!(
                        "target {name}: {host:?} is not a valid TLS server name"
                    ))
                })?;
                Some((connector, name))
            }
        };
        let endpoint = Arc::new(Endpoint {
            host: config.host.clone(),
            port: config.port,
            database: config.database.clone(),
            tls,
        });
        let ephemeral = (config.mode == UpstreamMode::EphemeralUser).then(|| {
            Arc::new(EphemeralRoles::new(
                name,
                endpoint.clone(),
                config.admin.clone(),
                config.ephemeral.clone().unwrap_or_default(),
            ))
        });
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            endpoint,
            role_passwords: Mutex::new(HashMap::new()),
            ephemeral,
            signing_key: Mutex::new(None),
            pools: Pools::new(config.pool.clone()),
        })
    }

    /// Opens Postern's administrative connection (the `admin` login).
    pub async fn admin(&self) -> Result<Upstream, UpstreamError> {
        login_as(&self.endpoint, &self.config.admin, &[]).await
    }

    /// Ends the backend `pid` through the admin login (`pg_terminate_backend`): a statement
    /// running there, and whatever is queued behind it, is rolled back rather than left to
    /// commit.
    pub(crate) async fn terminate_backend(&self, pid: i32) -> Result<(), UpstreamError> {
        let mut admin = self.admin().await?;
        let result = admin
            .simple_query(&format!("SELECT pg_terminate_backend({pid})"))
            .await;
        admin.terminate().await;
        result.map(|_| ())
    }

    /// The ephemeral roles, in `ephemeral_user` mode.
    pub(crate) fn ephemeral_roles(&self) -> Option<&Arc<EphemeralRoles>> {
        self.ephemeral.as_ref()
    }

    /// An upstream connection for `identity`'s client session as `role`: logged in as the role
    /// itself in `role_login` mode, as the shared session login in `set_role` mode (the caller
    /// then runs `SET ROLE`), as the identity's own login role in `ephemeral_user` mode. From the
    /// target's pool when it has one. Keep the lease for as long as the session lasts.
    pub async fn session(
        &self,
        role: &str,
        identity: &Identity,
        parameters: &[(String, String)],
    ) -> Result<(Upstream, SessionLease), UpstreamError> {
        let pooled = self.config.pool.mode != PoolMode::None
            && self.config.mode != UpstreamMode::EphemeralUser;
        if !pooled {
            return self.connect(role, identity, parameters).await;
        }
        let (upstream, lease) = self.checkout(role, identity, parameters).await?;
        Ok((
            upstream,
            SessionLease {
                _ephemeral: None,
                pool: Some(lease),
            },
        ))
    }

    /// Whether sessions on this target hold a server connection per transaction.
    pub(crate) fn transaction_pooled(&self) -> bool {
        self.config.pool.mode == PoolMode::Transaction
            && self.config.mode != UpstreamMode::EphemeralUser
    }

    /// A connection from the pool of `role`'s upstream login (see [`Self::pool_for`]).
    pub(crate) async fn checkout(
        &self,
        role: &str,
        identity: &Identity,
        parameters: &[(String, String)],
    ) -> Result<(Upstream, PoolLease), UpstreamError> {
        let pool = self.pool_for(role, parameters);
        self.checkout_from(&pool, role, identity, parameters).await
    }

    /// The pool of `role`'s upstream login: the role itself in `role_login` mode, the shared
    /// session login in `set_role` mode.
    pub(crate) fn pool_for(&self, role: &str, parameters: &[(String, String)]) -> Arc<Pool> {
        let user = match self.config.mode {
            UpstreamMode::SetRole => self.session_login().user.as_str(),
            _ => role,
        };
        self.pools.pool(PoolKey::new(user, parameters))
    }

    /// A connection from `pool`, which [`Self::pool_for`] gave for the same role and parameters.
    pub(crate) async fn checkout_from(
        &self,
        pool: &Arc<Pool>,
        role: &str,
        identity: &Identity,
        parameters: &[(String, String)],
    ) -> Result<(Upstream, PoolLease), UpstreamError> {
        let checkout = pool
            .checkout(|| async {
                self.connect(role, identity, parameters)
                    .await
                    .map(|(upstream, _)| upstream)
            })
            .await
            .map_err(|error| match error {
                CheckoutError::Busy { max } => UpstreamError::PoolBusy { max },
                CheckoutError::Connect(error) => error,
            })?;
        Ok((checkout.upstream, checkout.lease))
    }

    fn session_login(&self) -> &UpstreamLogin {
        self.config
            .session_login
            .as_ref()
            .unwrap_or(&self.config.admin)
    }

    /// Logs in anew for a session.
    async fn connect(
        &self,
        role: &str,
        identity: &Identity,
        parameters: &[(String, String)],
    ) -> Result<(Upstream, SessionLease), UpstreamError> {
        let upstream = match self.config.mode {
            UpstreamMode::EphemeralUser => {
                let roles = self.ephemeral.as_ref().ok_or_else(|| {
                    UpstreamError::EphemeralRole("the target has no ephemeral role state".into())
                })?;
                let (upstream, lease) = roles.session(role, identity, parameters).await?;
                return Ok((
                    upstream,
                    SessionLease {
                        _ephemeral: Some(lease),
                        pool: None,
                    },
                ));
            }
            UpstreamMode::SetRole => {
                login_as(&self.endpoint, self.session_login(), parameters).await
            }
            UpstreamMode::RoleLogin => {
                let password = self.role_password(role).await?;
                let login = Login {
                    user: role,
                    password: Some(&password),
                    parameters,
                };
                match upstream::connect(&self.endpoint, &login).await {
                    // Someone (another Postern, an operator) changed the password: set a new one
                    // and try once more.
                    Err(e)
                        if e.server_code() == Some("28P01")
                            && !self.config.role_passwords.contains_key(role) =>
                    {
                        self.role_passwords.lock().await.remove(role);
                        let password = self.role_password(role).await?;
                        let login = Login {
                            user: role,
                            password: Some(&password),
                            parameters,
                        };
                        upstream::connect(&self.endpoint, &login).await
                    }
                    other => other,
                }
            }
        }?;
        Ok((
            upstream,
            SessionLease {
                _ephemeral: None,
                pool: None,
            },
        ))
    }

    /// The password for logging in as `role`: from the configured secret, or one Postern sets
    /// itself through the admin connection the first time the role is used.
    async fn role_password(&self, role: &str) -> Result<String, UpstreamError> {
        if let Some(secret) = self.config.role_passwords.get(role) {
            return secret.read().map_err(UpstreamError::Secret);
        }
        let mut cache = self.role_passwords.lock().await;
        if let Some(password) = cache.get(role) {
            return Ok(password.clone());
        }
        let password = random_hex(32);
        // Only the SCRAM verifier crosses the wire and reaches the server's logs and catalogs.
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let mut admin = self.admin().await?;
        let result = admin
            .simple_query(&format!(
                "ALTER ROLE {} WITH LOGIN PASSWORD {}",
                quote_ident(role),
                quote_literal(&verifier)
            ))
            .await;
        admin.terminate().await;
        result?;
        cache.insert(role.to_owned(), password.clone());
        Ok(password)
    }

    /// The key that signs `postern.claims`, if `postern setup-db` has installed one.
    pub async fn signing_key(&self) -> Option<Arc<SigningKey>> {
        let mut slot = self.signing_key.lock().await;
        if let Some((loaded_at, key)) = slot.as_ref()
            && (key.is_some() || loaded_at.elapsed() < MISSING_KEY_RETRY)
        {
            return key.clone();
        }
        let key = match self.load_signing_key().await {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                tracing::warn!(target = %self.name, error = %e,
                    "no claims signing key: postern.claims() will be NULL; run `postern setup-db {}`", self.name);
                None
            }
        };
        *slot = Some((Instant::now(), key.clone()));
        key
    }

    async fn load_signing_key(&self) -> Result<SigningKey, UpstreamError> {
        let mut admin = self.admin().await?;
        let result = admin
            .simple_query("SELECT encode(key, 'hex') FROM postern.signing_key WHERE id = 1")
            .await;
        admin.terminate().await;
        let hex_key = result?
            .rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .ok_or_else(|| UpstreamError::Secret("postern.signing_key is empty".into()))?;
        let key = hex::decode(hex_key)
            .map_err(|e| UpstreamError::Secret(format!("signing key is not hex: {e}")))?;
        Ok(SigningKey::new(&key))
    }
}

/// What a client session holds upstream besides its connection: in `ephemeral_user` mode, its
/// share of the identity's login role (dropping it when the session ends lets the last session
/// of a role drop the role, off the session's path); with a pool, its slot in the pool.
#[must_use = "dropping the lease ends the session's hold on its upstream role"]
pub struct SessionLease {
    /// Never read: it works by being dropped.
    _ephemeral: Option<EphemeralLease>,
    pool: Option<PoolLease>,
}

impl SessionLease {
    /// The pool slot, for a session that gives its connection back at once and takes one per
    /// transaction from then on.
    pub(crate) fn into_pool_lease(self) -> Option<PoolLease> {
        self.pool
    }

    /// Ends the session's hold. A connection the session left reusable goes back to its pool;
    /// without one (or without a pool) the slot is freed and the connection closed.
    pub(crate) fn release(self, reusable: Option<Upstream>) {
        if let (Some(pool), Some(upstream)) = (self.pool, reusable) {
            pool.give_back(upstream);
        }
    }
}

pub(crate) async fn login_as(
    endpoint: &Endpoint,
    login: &UpstreamLogin,
    parameters: &[(String, String)],
) -> Result<Upstream, UpstreamError> {
    let password = read_optional(login.password.as_ref())?;
    upstream::connect(
        endpoint,
        &Login {
            user: &login.user,
            password: password.as_deref(),
            parameters,
        },
    )
    .await
}

fn read_optional(secret: Option<&SecretSource>) -> Result<Option<String>, UpstreamError> {
    secret
        .map(|s| s.read().map_err(UpstreamError::Secret))
        .transpose()
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    hex::encode(buf)
}

/// Fills `buf` from the system's secure random source.
pub fn fill_random(buf: &mut [u8]) {
    use aws_lc_rs::rand::SecureRandom;
    // The system RNG failing is not something Postern can work around; aws-lc aborts on it
    // itself, so this error path is unreachable in practice.
    if aws_lc_rs::rand::SystemRandom::new().fill(buf).is_err() {
        tracing::error!("the system random number generator failed");
        std::process::abort();
    }
}
