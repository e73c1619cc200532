//! Upstream connection pools: server connections kept open and handed from one client session
//! to the next, so that a client connection costs neither a new backend process nor an upstream
//! authentication.
//!
//! A pool holds the connections of one upstream login with one set of startup parameters: a
//! reused connection then has exactly the settings (`application_name`, `DateStyle`, …) a new
//! one would, without any `SET` on the way. Its size is bounded by a semaphore: a session holds
//! a permit for as long as it holds the connection, and gives it back only once the connection
//! is reset (or closed).
//!
//! A connection goes back to its pool only when its session ended cleanly and left nothing
//! behind that a reset cannot undo: every message answered, outside a transaction block, no
//! `LISTEN` (a notification already queued would reach the next client). The reset is
//! `DISCARD ALL` (role, settings, prepared statements, cursors, listeners, advisory locks,
//! temporary objects), preceded by a Sync in case the client left an extended-protocol batch
//! unfinished; a reset that does not end in an idle ReadyForQuery closes the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postern_config::PoolConfig;
use postern_wire::backend::{self, TransactionStatus};
use postern_wire::frame::Side;
use postern_wire::{FrameDecoder, frontend, limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::UpstreamError;
use crate::upstream::Upstream;

/// How long resetting a returned connection or checking an idle one may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Which connections may stand in for one another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// The upstream login (the mapped role in `role_login` mode).
    pub user: String,
    /// The client's startup parameters as forwarded, sorted by name.
    pub parameters: Vec<(String, String)>,
}

impl PoolKey {
    pub(crate) fn new(user: &str, parameters: &[(String, String)]) -> Self {
        let mut parameters = parameters.to_vec();
        parameters.sort();
        Self {
            user: user.to_owned(),
            parameters,
        }
    }
}

/// Every pool of one target.
pub(crate) struct Pools {
    config: PoolConfig,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

/// A connection handed out, with the permit that counts it against its pool's size.
pub(crate) struct Checkout {
    pub upstream: Upstream,
    pub lease: PoolLease,
}

/// A session's hold on a pool slot. Give the connection back with [`PoolLease::give_back`];
/// dropping the lease instead frees the slot (the caller has closed the connection).
pub(crate) struct PoolLease {
    pool: Arc<Pool>,
    created: Instant,
    permit: OwnedSemaphorePermit,
}

/// Why no connection could be handed out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckoutError {
    #[error("all {max} connections are busy")]
    Busy { max: usize },
    #[error(transparent)]
    Connect(#[from] UpstreamError),
}

/// The connections of one upstream login with one set of startup parameters.
pub(crate) struct Pool {
    key: PoolKey,
    config: PoolConfig,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    upstream: Upstream,
    created: Instant,
    since: Instant,
}

impl Pools {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            config,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for `key`, made on first use. A session that checks out often (one per
    /// transaction) keeps it rather than look it up each time.
    pub(crate) fn pool(&self, key: PoolKey) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(pools.entry(key.clone()).or_insert_with(|| {
            Arc::new(Pool {
                key,
                config: self.config.clone(),
                slots: Arc::new(Semaphore::new(self.config.max_connections)),
                idle: Mutex::new(Vec::new()),
            })
        }))
    }

    /// Closes idle connections past their idle timeout (down to `min_idle`) or lifetime.
    pub(crate) async fn prune(&self) {
        let pools: Vec<Arc<Pool>> = {
            let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            pools.values().cloned().collect()
        };
        for pool in pools {
            for upstream in pool.expired() {
                upstream.terminate().await;
            }
        }
    }

    /// Closes every idle connection (at shutdown).
    pub(crate) async fn close_idle(&self) {
        let pools: Vec<Arc<Pool>> = {
            let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            pools.values().cloned().collect()
        };
        for pool in pools {
            let idle =
                std::mem::take(&mut *pool.idle.lock().unwrap_or_else(PoisonError::into_inner));
            for idle in idle {
                idle.upstream.terminate().await;
            }
        }
    }
}

impl Pool {
    /// A connection: an idle one if there is one that is still good, else a new one from
    /// `connect`. Waits for a free slot up to the configured checkout timeout.
    pub(crate) async fn checkout<F, Fut>(
        self: &Arc<Self>,
        connect: F,
    ) -> Result<Checkout, CheckoutError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Upstream, UpstreamError>>,
    {
        let pool = Arc::clone(self);
        // A free slot is taken at once; only a full pool pays for a timer.
        let permit = match Arc::clone(&pool.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(
                pool.config.checkout_timeout,
                Arc::clone(&pool.slots).acquire_owned(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(CheckoutError::Busy {
                max: pool.config.max_connections,
            })?,
        };
        while let Some(idle) = pool.take_idle() {
            if idle.created.elapsed() >= pool.config.max_lifetime {
                idle.upstream.terminate().await;
                continue;
            }
            let mut upstream = idle.upstream;
            if idle.since.elapsed() >= pool.config.health_check_after
                && !matches!(
                    tokio::time::timeout(RESET_TIMEOUT, Box::pin(upstream.simple_query(""))).await,
                    Ok(Ok(_))
                )
            {
                tracing::info!(user = %pool.key.user, "an idle upstream connection failed its health check; closing it");
                upstream.terminate().await;
                continue;
            }
            return Ok(Checkout {
                upstream,
                lease: PoolLease {
                    pool,
                    created: idle.created,
                    permit,
                },
            });
        }
        // Boxed, like the health check: a login's state is large, and inline it would be part
        // of the future of every transaction-pooled session, idle or not.
        let upstream = Box::pin(connect()).await?;
        Ok(Checkout {
            upstream,
            lease: PoolLease {
                pool,
                created: Instant::now(),
                permit,
            },
        })
    }

    /// The most recently returned idle connection: its caches are the warmest.
    fn take_idle(&self) -> Option<Idle> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn expired(&self) -> Vec<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keep = idle.len();
        let mut expired = Vec::new();
        // Oldest returns first: the ones past their idle timeout are at the front.
        let mut remaining = Vec::with_capacity(idle.len());
        for connection in idle.drain(..) {
            let too_old = connection.created.elapsed() >= self.config.max_lifetime;
            let unused = connection.since.elapsed() >= self.config.idle_timeout
                && keep > self.config.min_idle;
            if too_old || unused {
                keep -= 1;
                expired.push(connection.upstream);
            } else {
                remaining.push(connection);
            }
        }
        *idle = remaining;
        expired
    }
}

impl PoolLease {
    /// Hands back a connection that needs no reset: with transaction pooling a connection is
    /// returned between transactions, when everything the client did on it ended with its
    /// transaction (what would outlive it is refused). A connection past its lifetime is closed
    /// instead.
    pub(crate) fn give_back_clean(self, upstream: Upstream) {
        if self.created.elapsed() >= self.pool.config.max_lifetime {
            tokio::spawn(upstream.terminate());
            return;
        }
        self.pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Idle {
                upstream,
                created: self.created,
                since: Instant::now(),
            });
    }

    /// Hands a connection whose session ended cleanly back to the pool, after resetting it off
    /// the session's path. The slot stays taken until the reset is done.
    pub(crate) fn give_back(self, upstream: Upstream) {
        tokio::spawn(async move {
            let mut upstream = upstream;
            match tokio::time::timeout(RESET_TIMEOUT, reset(&mut upstream)).await {
                Ok(Ok(())) => {
                    let mut idle = self
                        .pool
                        .idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    idle.push(Idle {
                        upstream,
                        created: self.created,
                        since: Instant::now(),
                    });
                }
                Ok(Err(error)) => {
                    tracing::info!(user = %self.pool.key.user, error = %error, "an upstream connection could not be reset; closing it");
                    upstream.terminate().await;
                }
                Err(_) => {
                    tracing::info!(user = %self.pool.key.user, "resetting an upstream connection timed out; closing it");
                    upstream.terminate().await;
                }
            }
            drop(self.permit);
        });
    }
}

/// Sync (ends any extended-protocol batch the client left), then `DISCARD ALL`; the connection
/// must end idle.
async fn reset(upstream: &mut Upstream) -> Result<(), UpstreamError> {
    let mut out = BytesMut::new();
    frontend::encode_sync(&mut out);
    frontend::encode_query("DISCARD ALL", &mut out);
    upstream.stream.write_all(&out).await?;
    let decoder = FrameDecoder::new(Side::Backend, limits::MAX_BACKEND_MESSAGE_LENGTH);
    let mut ready = 0;
    let mut discarded = false;
    loop {
        let frame = match decoder.decode(&mut upstream.buffer)? {
            Some(frame) => frame,
            None => {
                if upstream.stream.read_buf(&mut upstream.buffer).await? == 0 {
                    return Err(UpstreamError::Closed);
                }
                continue;
            }
        };
        match frame.tag() {
            backend::COMMAND_COMPLETE if ready == 1 => {
                discarded = backend::command_tag(&frame)? == "DISCARD ALL";
            }
            backend::PARAMETER_STATUS => {
                let (name, value) = backend::parameter_status(&frame)?;
                upstream.set_parameter(name, value);
            }
            backend::ERROR_RESPONSE if ready == 1 => {
                return Err(crate::upstream::server_error(&frame));
            }
            backend::READY_FOR_QUERY => {
                ready += 1;
                if ready == 2 {
                    let status = backend::ready_for_query(&frame)?;
                    return if discarded && status == TransactionStatus::Idle {
                        Ok(())
                    } else {
                        Err(UpstreamError::NotReset(
                            "DISCARD ALL did not complete outside a transaction",
                        ))
                    };
                }
            }
            _ => {}
        }
    }
}
