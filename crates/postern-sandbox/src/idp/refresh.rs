//! Refresh tokens (RFC 6749 §6) with rotation: every refresh token is used once and answered
//! with a new one of the same *family*; presenting a spent one again revokes the whole family,
//! since either the client or a thief holds a copy (RFC 9700 §4.14.2). Tokens are kept by their
//! SHA-256, live [`REFRESH_TTL`] from their issue, and at most [`MAX_REFRESH_TOKENS`] are live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;

use super::ServerState;
use super::authorize::random_token;
use super::form::Params;
use super::grant::{SignIn, issue_in, token_error};

/// How long a refresh token may wait for its use: a working day, like many providers' idle
/// session lifetime.
pub const REFRESH_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most refresh tokens live at once; past it (after dropping expired ones) grants are refused.
pub const MAX_REFRESH_TOKENS: usize = 4096;
/// Most spent tokens remembered for reuse detection; past it the oldest are forgotten.
const MAX_SPENT_TOKENS: usize = 4096;

/// The refresh tokens a sign-in leads to, one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Family(u64);

/// The refresh tokens issued, by SHA-256, and how many refreshes were asked for.
#[derive(Default)]
pub(super) struct RefreshTokens {
    inner: Mutex<Inner>,
    /// Every `grant_type=refresh_token` request, granted or not: tests count refreshes with it.
    pub(super) requests: AtomicU64,
}

#[derive(Default)]
struct Inner {
    live: HashMap<[u8; 32], Live>,
    /// Tokens already used (or refused), remembered until they would have expired.
    spent: HashMap<[u8; 32], Spent>,
    next_family: u64,
}

struct Live {
    sign_in: SignIn,
    family: Family,
    expires: Instant,
}

struct Spent {
    family: Family,
    expires: Instant,
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

impl RefreshTokens {
    /// A new refresh token for `sign_in`, in `family` or a new one.
    pub(super) fn issue(
        &self,
        sign_in: SignIn,
        family: Option<Family>,
    ) -> Result<String, &'static str> {
        let token = random_token().ok_or("the provider could not generate a refresh token")?;
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if inner.live.len() >= MAX_REFRESH_TOKENS {
            inner.live.retain(|_, live| live.expires > now);
        }
        if inner.live.len() >= MAX_REFRESH_TOKENS {
            return Err("too many sessions are open; try again later");
        }
        let family = family.unwrap_or_else(|| {
            inner.next_family += 1;
            Family(inner.next_family)
        });
        inner.live.insert(
            digest(&token),
            Live {
                sign_in,
                family,
                expires: now + REFRESH_TTL,
            },
        );
        Ok(token)
    }

    /// Takes `token` out: its sign-in and family if it was live and for `client_id`. A spent
    /// token presented again revokes its family.
    fn take(&self, token: &str, client_id: &str) -> Result<(SignIn, Family), &'static str> {
        let key = digest(token);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(spent) = inner.spent.get(&key) {
            let family = spent.family;
            inner.live.retain(|_, live| live.family != family);
            return Err(
                "the refresh token was already used; every token of its sign-in is now revoked",
            );
        }
        let Some(live) = inner.live.remove(&key) else {
            return Err("the refresh token is unknown");
        };
        if inner.spent.len() >= MAX_SPENT_TOKENS {
            inner.spent.retain(|_, spent| spent.expires > now);
        }
        if inner.spent.len() < MAX_SPENT_TOKENS {
            inner.spent.insert(
                key,
                Spent {
                    family: live.family,
                    expires: live.expires,
                },
            );
        }
        if live.expires <= now {
            return Err("the refresh token has expired");
        }
        if live.sign_in.client_id != client_id {
            return Err("the refresh token was issued to another client");
        }
        Ok((live.sign_in, live.family))
    }

    /// Makes every live token expire now (tests: a session that has ended).
    pub(super) fn expire_all(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for live in inner.live.values_mut() {
            live.expires = now;
        }
    }
}

/// `POST /token` with `grant_type=refresh_token`: new tokens, and a new refresh token in place of
/// the one given.
pub(super) fn exchange(state: &ServerState, params: &Params) -> Response {
    state.refresh.requests.fetch_add(1, Ordering::SeqCst);
    let (token, client_id) = match (params.require("refresh_token"), params.require("client_id")) {
        (Ok(token), Ok(client_id)) => (token, client_id),
        (Err(why), _) | (_, Err(why)) => {
            return token_error(StatusCode::BAD_REQUEST, "invalid_request", &why);
        }
    };
    match state.refresh.take(token, client_id) {
        Ok((sign_in, family)) => issue_in(state, sign_in, None, Some(family)),
        Err(why) => token_error(StatusCode::BAD_REQUEST, "invalid_grant", why),
    }
}
