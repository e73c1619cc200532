//! `POST /v1/oidc/backchannel-logout`: the identity provider's back-channel logout endpoint
//! (OpenID Connect Back-Channel Logout 1.0, section 2.5). The body is
//! `application/x-www-form-urlencoded` with one parameter, `logout_token`; the token is its own
//! credential. Success is 200 with an empty body; a token that does not verify is 400 with the
//! OAuth error shape `{"error": "invalid_request", "error_description": "…"}`. Responses are
//! never cached.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_proxy::control::{Control, ControlError};
use serde_json::json;

/// Largest body read: a logout token is a few kilobytes.
const MAX_BODY: usize = 64 * 1024;

pub(crate) async fn backchannel_logout(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let mut response = match logout_token(&body) {
        Err(problem) => invalid(StatusCode::BAD_REQUEST, problem),
        Ok(token) => match control.backchannel_logout(&token, peer.ip()).await {
            Ok(done) => {
                tracing::info!(subject = ?done.subject, sid = ?done.sid, sessions = done.sessions_ended, "back-channel logout");
                StatusCode::OK.into_response()
            }
            Err(error @ (ControlError::Unauthenticated(_) | ControlError::Invalid(_))) => {
                invalid(StatusCode::BAD_REQUEST, error.to_string())
            }
            Err(error) => invalid(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        },
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn invalid(status: StatusCode, description: String) -> Response {
    let error = if status == StatusCode::BAD_REQUEST {
        "invalid_request"
    } else {
        "temporarily_unavailable"
    };
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// The `logout_token` parameter of a form body.
fn logout_token(body: &[u8]) -> Result<String, String> {
    if body.len() > MAX_BODY {
        return Err(format!("the body is larger than {MAX_BODY} bytes"));
    }
    let mut found = None;
    for (name, value) in form_pairs(body)? {
        if name == "logout_token" {
            if found.is_some() {
                return Err("logout_token is given twice".to_owned());
            }
            found = Some(value);
        }
    }
    found
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "send the logout token as the form parameter logout_token".to_owned())
}

/// The decoded name/value pairs of an `application/x-www-form-urlencoded` body.
pub(crate) fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Percent-decoding of a form component (`+` is a space).
fn decode(component: &str) -> Result<String, String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "the body has a bad percent-escape".to_owned())?;
                out.push(hex);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the body is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::logout_token;

    #[test]
    fn the_token_is_read_from_the_form() {
        assert_eq!(logout_token(b"logout_token=a.b.c").as_deref(), Ok("a.b.c"));
        assert_eq!(
            logout_token(b"x=1&logout%5Ftoken=a%2Eb.c+").as_deref(),
            Ok("a.b.c ")
        );
        assert!(logout_token(b"").is_err());
        assert!(logout_token(b"logout_token=a&logout_token=b").is_err());
        assert!(logout_token(b"logout_token=%zz").is_err());
    }
}
