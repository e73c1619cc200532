//! Sign-ins in progress and console sessions, held server-side in memory and found through
//! random ids in cookies. Both are bounded ([`MAX_PENDING_LOGINS`], [`MAX_SESSIONS`]) and
//! expire ([`LOGIN_TTL`]; a session with its token), so a flood of sign-ins costs a refusal,
//! never memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::CSRF_HEADER;

/// The cookie naming a console session (`HttpOnly; SameSite=Strict; Path=/`).
pub(super) const SESSION_COOKIE: &str = "postern_console";
/// The cookie naming a sign-in in progress. `SameSite=Lax`: the identity provider's redirect
/// back is a cross-site navigation, which a `Strict` cookie would not accompany.
pub(super) const LOGIN_COOKIE: &str = "postern_console_login";
/// How long a sign-in may take, from `/console/login` to the callback.
pub(super) const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Most sign-ins in progress at once (after expired ones are dropped).
pub(super) const MAX_PENDING_LOGINS: usize = 1024;
/// Most console sessions at once (after expired ones are dropped).
pub(super) const MAX_SESSIONS: usize = 4096;

/// What the callback needs to finish a sign-in the browser started.
pub(super) struct PendingLogin {
    /// The PKCE code verifier; the provider saw only its SHA-256.
    pub verifier: String,
    /// Must come back unchanged with the code.
    pub state: String,
    /// Must be in the ID token.
    pub nonce: String,
    pub expires: Instant,
}

/// A signed-in browser.
pub(super) struct ConsoleSession {
    /// The access token, verified at sign-in and again at every API call; never sent to the
    /// browser.
    pub token: String,
    pub issuer: String,
    pub subject: String,
    pub groups: Vec<String>,
    /// Sent by the page in [`CSRF_HEADER`] with every request that changes something.
    pub csrf: String,
    /// The token's expiry, which ends the session.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl ConsoleSession {
    /// Whether `headers` carry this session's CSRF token; if not, a message saying what is
    /// missing. Compared in constant time.
    pub(super) fn check_csrf(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(given) = headers.get(CSRF_HEADER) else {
            return Err(
                "this request changes something and came with the console's session \
                        cookie but without the X-CSRF-Token header: send the csrf_token from \
                        /console/session in X-CSRF-Token",
            );
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), self.csrf.as_bytes())
            .map_err(|_| {
                "the X-CSRF-Token header does not match this console session's token: reload \
                 the console"
            })
    }
}

/// Too many sign-ins or sessions at once.
#[derive(Debug)]
pub(super) struct Full;

#[derive(Default)]
pub(super) struct Sessions {
    logins: Mutex<HashMap<String, PendingLogin>>,
    live: Mutex<HashMap<String, Arc<ConsoleSession>>>,
}

impl Sessions {
    /// Keeps a sign-in in progress; returns the id for its cookie.
    pub(super) fn begin_login(&self, login: PendingLogin) -> Result<String, Full> {
        let id = random_token().ok_or(Full)?;
        let mut logins = self.logins.lock().unwrap_or_else(PoisonError::into_inner);
        if logins.len() >= MAX_PENDING_LOGINS {
            let now = Instant::now();
            logins.retain(|_, login| login.expires > now);
        }
        if logins.len() >= MAX_PENDING_LOGINS {
            return Err(Full);
        }
        logins.insert(id.clone(), login);
        Ok(id)
    }

    /// Takes the sign-in `id` names, if it is there and not expired. A sign-in is finished (or
    /// failed) once.
    pub(super) fn finish_login(&self, id: &str) -> Option<PendingLogin> {
        let login = self
            .logins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)?;
        (login.expires > Instant::now()).then_some(login)
    }

    /// Opens a session; returns the id for its cookie.
    pub(super) fn open(&self, session: ConsoleSession) -> Result<String, Full> {
        let id = random_token().ok_or(Full)?;
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.len() >= MAX_SESSIONS {
            let now = SystemTime::now();
            live.retain(|_, session| session.expires_at > now);
        }
        if live.len() >= MAX_SESSIONS {
            return Err(Full);
        }
        live.insert(id.clone(), Arc::new(session));
        Ok(id)
    }

    /// The live session `id` names; an expired one is dropped.
    pub(super) fn get(&self, id: &str) -> Option<Arc<ConsoleSession>> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let session = live.get(id)?;
        if session.expires_at > SystemTime::now() {
            Some(Arc::clone(session))
        } else {
            live.remove(id);
            None
        }
    }

    /// Ends the session `id` names.
    pub(super) fn close(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// 256 random bits, base64url: session ids, CSRF tokens, PKCE verifiers, states and nonces.
/// `None` only if the system's random generator fails.
pub(super) fn random_token() -> Option<String> {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// The value of the first cookie called `name` in the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// A `Set-Cookie` value for `name`: `HttpOnly`, on `path`, with `same_site`, lasting `max_age`
/// (zero deletes it), `Secure` when the console is reached over TLS.
pub(super) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: Duration,
    secure: bool,
) -> String {
    format!(
        "{name}={value}; HttpOnly; SameSite={same_site}; Path={path}; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use axum::http::HeaderValue;

    use super::*;

    fn session(expires_at: SystemTime) -> ConsoleSession {
        ConsoleSession {
            token: "t".into(),
            issuer: "i".into(),
            subject: "s".into(),
            groups: Vec::new(),
            csrf: "c".repeat(43),
            expires_at,
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; postern_console_login=L"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("x_postern_console=no;postern_console=\"S\""),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("S"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("L"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn sessions_expire_and_close() {
        let sessions = Sessions::default();
        let later = SystemTime::now() + Duration::from_secs(60);
        let id = sessions.open(session(later)).unwrap();
        assert_eq!(id.len(), 43);
        assert_eq!(sessions.get(&id).unwrap().subject, "s");
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        let id = sessions.open(session(SystemTime::now())).unwrap();
        assert!(sessions.get(&id).is_none());
        assert!(sessions.get("nope").is_none());
    }

    #[test]
    fn a_login_finishes_once_and_in_time() {
        let sessions = Sessions::default();
        let login = |expires| PendingLogin {
            verifier: "v".into(),
            state: "s".into(),
            nonce: "n".into(),
            expires,
        };
        let id = sessions
            .begin_login(login(Instant::now() + LOGIN_TTL))
            .unwrap();
        assert!(sessions.finish_login(&id).is_some());
        assert!(sessions.finish_login(&id).is_none());
        let id = sessions.begin_login(login(Instant::now())).unwrap();
        assert!(sessions.finish_login(&id).is_none());
    }

    #[test]
    fn sign_ins_in_progress_are_bounded() {
        let sessions = Sessions::default();
        let expires = Instant::now() + LOGIN_TTL;
        for _ in 0..MAX_PENDING_LOGINS {
            let login = PendingLogin {
                verifier: String::new(),
                state: String::new(),
                nonce: String::new(),
                expires,
            };
            sessions.begin_login(login).unwrap();
        }
        let login = PendingLogin {
            verifier: String::new(),
            state: String::new(),
            nonce: String::new(),
            expires,
        };
        assert!(sessions.begin_login(login).is_err());
    }

    #[test]
    fn csrf_tokens_must_match() {
        let session = session(SystemTime::now());
        let mut headers = HeaderMap::new();
        assert!(
            session
                .check_csrf(&headers)
                .unwrap_err()
                .contains("without")
        );
        headers.insert(CSRF_HEADER, HeaderValue::from_static("wrong"));
        assert!(
            session
                .check_csrf(&headers)
                .unwrap_err()
                .contains("does not match")
        );
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&"c".repeat(43)).unwrap());
        assert!(session.check_csrf(&headers).is_ok());
    }
}
