//! Postern as an issuer on the admin API: `POST /v1/token` (RFC 8693 token exchange, a form
//! body), and the documents that let anyone verify Postern's tokens:
//! `/.well-known/openid-configuration` and `/.well-known/jwks.json`. All three answer 404 when
//! `[token_exchange]` is not configured.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_proxy::control::Control;
use postern_proxy::control::exchange::{ExchangeError, ExchangeRequest};
use serde_json::json;

/// The grant type of RFC 8693.
const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Largest form body read.
const MAX_BODY: usize = 64 * 1024;

fn not_configured() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({"error": "token exchange is not configured on this Postern ([token_exchange])"}),
        ),
    )
        .into_response()
}

pub(crate) async fn jwks(State(control): State<Control>) -> Response {
    match control.issuer_jwks() {
        Some(jwks) => {
            let mut response = Json(jwks).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        None => not_configured(),
    }
}

pub(crate) async fn discovery(State(control): State<Control>) -> Response {
    control
        .issuer_discovery()
        .map_or_else(not_configured, |document| Json(document).into_response())
}

pub(crate) async fn token(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let mut response = match exchange_request(&body) {
        Err(error) => oauth_error(&error),
        Ok(request) => match control.exchange_token(&request, peer.ip()).await {
            Ok(issued) => Json(issued).into_response(),
            Err(error) => oauth_error(&error),
        },
    };
    // RFC 6749 5.1: token responses are never cached.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn oauth_error(error: &ExchangeError) -> Response {
    let status = match error {
        ExchangeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        Json(json!({"error": error.code(), "error_description": error.to_string()})),
    )
        .into_response()
}

/// The form parameters of a token exchange request.
fn exchange_request(body: &[u8]) -> Result<ExchangeRequest, ExchangeError> {
    let invalid = |m: &str| ExchangeError::InvalidRequest(m.to_owned());
    if body.len() > MAX_BODY {
        return Err(invalid("the body is too large"));
    }
    let pairs = crate::logout::form_pairs(body).map_err(ExchangeError::InvalidRequest)?;
    let mut grant_type = None;
    let mut request = ExchangeRequest::default();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in pairs {
        if !seen.insert(name.clone()) {
            return Err(ExchangeError::InvalidRequest(format!(
                "{name} is given twice"
            )));
        }
        match name.as_str() {
            "grant_type" => grant_type = Some(value),
            "subject_token" => request.subject_token = value,
            "subject_token_type" => request.subject_token_type = value,
            "scope" => request.scope = Some(value),
            // Accepted and ignored: Postern issues JWT access tokens for itself only.
            "requested_token_type" | "audience" | "resource" => {}
            other => {
                return Err(ExchangeError::InvalidRequest(format!(
                    "unknown parameter {other}"
                )));
            }
        }
    }
    if grant_type.as_deref() != Some(TOKEN_EXCHANGE_GRANT) {
        return Err(ExchangeError::InvalidRequest(format!(
            "grant_type must be {TOKEN_EXCHANGE_GRANT}"
        )));
    }
    if request.subject_token.is_empty() {
        return Err(invalid("subject_token is missing"));
    }
    Ok(request)
}
