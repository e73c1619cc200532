//! Signing in to the console and out of it.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/console/login` | starts a sign-in: PKCE verifier, state and nonce kept here under a short-lived cookie; 303 to the provider |
//! | GET | `/console/callback` | the provider's redirect: state checked, code exchanged, access token verified, session opened; 303 to `/console/` |
//! | GET | `/console/session` | who is signed in, and the CSRF token (`401` when nobody) |
//! | POST | `/console/logout` | ends the session (needs `X-CSRF-Token`) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::sessions::{
    ConsoleSession, LOGIN_COOKIE, LOGIN_TTL, PendingLogin, SESSION_COOKIE, cookie, random_token,
    set_cookie,
};
use super::{Console, escape_html};
use crate::ApiError;

/// The login cookie's path: it is needed by the callback only.
const LOGIN_COOKIE_PATH: &str = "/console/";
/// Longest ID token whose nonce is read.
const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

/// A page saying why a sign-in failed, with a way to try again. `message` is plain text.
fn failure(status: StatusCode, message: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Postern console: sign-in failed</title>\
         <link rel=\"icon\" href=\"/console/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/console/app.css\"></head>\n<body>\
         <main class=\"narrow\"><h1>Sign-in failed</h1>\n<p class=\"error\">{}</p>\n\
         <p><a class=\"button\" href=\"/console/login\">Try again</a> \
         <a href=\"/console/\">Back to the console</a></p></main></body></html>\n",
        escape_html(message)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => failure(
            StatusCode::BAD_GATEWAY,
            "the identity provider's authorization endpoint cannot be put in a redirect",
        ),
    }
}

/// The SHA-256 of `verifier`, base64url: the PKCE `S256` challenge (RFC 7636 §4.2).
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// `GET /console/login`.
pub(super) async fn login(State(console): State<Arc<Console>>) -> Response {
    let endpoints = match console.oidc.endpoints().await {
        Ok(endpoints) => endpoints,
        Err(error) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                &format!("{error} (issuer {})", console.options.issuer),
            );
        }
    };
    let (Some(verifier), Some(state), Some(nonce)) =
        (random_token(), random_token(), random_token())
    else {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "the system's random generator failed",
        );
    };
    let mut url = endpoints.authorization.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &console.options.client_id)
        .append_pair("redirect_uri", &console.options.redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let pending = PendingLogin {
        verifier,
        state,
        nonce,
        expires: Instant::now() + LOGIN_TTL,
    };
    let Ok(id) = console.sessions.begin_login(pending) else {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins are in progress; try again in a few minutes",
        );
    };
    with_cookie(
        see_other(url.as_str()),
        &set_cookie(
            LOGIN_COOKIE,
            &id,
            LOGIN_COOKIE_PATH,
            "Lax",
            LOGIN_TTL,
            console.secure_cookies,
        ),
    )
}

/// What the provider sends back (RFC 6749 §4.1.2, §4.1.2.1).
#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/callback`.
pub(super) async fn callback(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let forget_login = set_cookie(
        LOGIN_COOKIE,
        "",
        LOGIN_COOKIE_PATH,
        "Lax",
        Duration::ZERO,
        console.secure_cookies,
    );
    let response = match finish(&console, peer, &headers, query).await {
        Ok(session_cookie) => with_cookie(see_other("/console/"), &session_cookie),
        Err((status, message)) => {
            tracing::info!(%message, "console sign-in failed");
            failure(status, &message)
        }
    };
    with_cookie(response, &forget_login)
}

/// The callback's work; the session cookie to set, or the status and message of the failure.
async fn finish(
    console: &Console,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Result<String, (StatusCode, String)> {
    let bad = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    let Ok(Query(params)) = query else {
        return Err(bad("the identity provider's redirect is malformed"));
    };
    let login = cookie(headers, LOGIN_COOKIE)
        .and_then(|id| console.sessions.finish_login(id))
        .ok_or_else(|| {
            bad(
                "this sign-in was not started in this browser, was already used, or took longer \
                 than 10 minutes: start again",
            )
        })?;
    let state_matches = params.state.as_deref().is_some_and(|state| {
        aws_lc_rs::constant_time::verify_slices_are_equal(state.as_bytes(), login.state.as_bytes())
            .is_ok()
    });
    if !state_matches {
        return Err(bad(
            "the identity provider's redirect does not belong to the sign-in this browser \
             started (state differs): start again",
        ));
    }
    if let Some(error) = params.error {
        let description = params.error_description.unwrap_or_default();
        return Err((
            StatusCode::FORBIDDEN,
            format!("the identity provider did not sign you in: {error} {description}")
                .trim()
                .to_owned(),
        ));
    }
    let code = params
        .code
        .ok_or_else(|| bad("the identity provider's redirect has no code"))?;
    let upstream = |error: super::oidc::OidcError| (StatusCode::BAD_GATEWAY, error.to_string());
    let endpoints = console.oidc.endpoints().await.map_err(upstream)?;
    let tokens = console
        .oidc
        .exchange(
            &endpoints,
            &code,
            &login.verifier,
            &console.options.redirect_uri,
            &console.options.client_id,
        )
        .await
        .map_err(upstream)?;
    // The ID token came straight from the token endpoint, so its nonce can be read without
    // checking its signature (OIDC Core §3.1.3.7, item 6); who signed in is decided by the
    // access token, verified below like any client's.
    let nonce_matches = id_token_nonce(&tokens.id_token).is_some_and(|nonce| {
        aws_lc_rs::constant_time::verify_slices_are_equal(nonce.as_bytes(), login.nonce.as_bytes())
            .is_ok()
    });
    if !nonce_matches {
        return Err((
            StatusCode::BAD_GATEWAY,
            "the identity provider's ID token does not carry this sign-in's nonce".into(),
        ));
    }
    let caller = console
        .control
        .authenticate(&tokens.access_token, peer.ip())
        .await
        .map_err(|error| {
            (
                StatusCode::FORBIDDEN,
                format!("Postern does not accept the token the identity provider issued: {error}"),
            )
        })?;
    let identity = std::sync::Arc::unwrap_or_clone(caller.identity);
    let lasts = identity
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let id = console
        .sessions
        .open(ConsoleSession {
            token: tokens.access_token,
            issuer: identity.issuer,
            subject: identity.subject,
            groups: identity.groups,
            csrf: random_token().ok_or_else(|| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the system's random generator failed".to_owned(),
                )
            })?,
            expires_at: identity.expires_at,
        })
        .map_err(|_| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many console sessions are open; try again later".to_owned(),
            )
        })?;
    Ok(set_cookie(
        SESSION_COOKIE,
        &id,
        "/",
        "Strict",
        lasts,
        console.secure_cookies,
    ))
}

/// The `nonce` claim of an ID token, read without verification (see the caller).
fn id_token_nonce(id_token: &str) -> Option<String> {
    if id_token.len() > MAX_ID_TOKEN_BYTES {
        return None;
    }
    let payload = id_token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("nonce")?.as_str().map(str::to_owned)
}

fn not_signed_in() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "not signed in to the console".into(),
    )
}

/// `GET /console/session`.
pub(super) async fn session(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = cookie(&headers, SESSION_COOKIE)
        .and_then(|id| console.sessions.get(id))
        .ok_or_else(not_signed_in)?;
    let expires_at = session
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    Ok(Json(json!({
        "subject": session.subject,
        "issuer": session.issuer,
        "groups": session.groups,
        "csrf_token": session.csrf,
        "expires_at": expires_at,
    }))
    .into_response())
}

/// `POST /console/logout`: ends the session (CSRF-checked) and deletes the cookie.
pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let forget = set_cookie(
        SESSION_COOKIE,
        "",
        "/",
        "Strict",
        Duration::ZERO,
        console.secure_cookies,
    );
    let Some(id) = cookie(&headers, SESSION_COOKIE) else {
        return Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), &forget));
    };
    if let Some(session) = console.sessions.get(id) {
        session
            .check_csrf(&headers)
            .map_err(|why| ApiError(StatusCode::FORBIDDEN, why.into()))?;
        console.sessions.close(id);
        tracing::info!(subject = %session.subject, "console sign-out");
    }
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), &forget))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_is_rfc_7636_s256() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_nonce_is_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","nonce":"n-1"}"#);
        assert_eq!(
            id_token_nonce(&format!("h.{payload}.s")).as_deref(),
            Some("n-1")
        );
        let without = URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#);
        assert_eq!(id_token_nonce(&format!("h.{without}.s")), None);
        assert_eq!(id_token_nonce("not a token"), None);
        assert_eq!(id_token_nonce("h.!!!.s"), None);
    }
}
