//! `POST /token`: which grant a request is — an authorization code and its PKCE verifier
//! ([`super::authorize`]), a device code ([`super::device`]) or a refresh token
//! ([`super::refresh`]) — and the tokens every successful grant gets ([`issue`]): an access
//! token and an ID token minted as [`super::DevIdentityProvider::mint`] mints them, with the
//! sign-in's `amr`, and a refresh token. This provider gives a refresh token whatever the scope
//! (a real one wants `offline_access`), so a client can always keep a session.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::authorize::form_params;
use super::refresh::Family;
use super::{DEFAULT_TTL, ServerState, TokenRequest};

/// `grant_type` of the device authorization grant (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Who signed in, and for which client: what every grant ends with, and what a refresh token
/// remembers.
#[derive(Debug, Clone)]
pub(super) struct SignIn {
    pub(super) client_id: String,
    pub(super) subject: String,
    pub(super) groups: Vec<String>,
    /// Authentication method references (RFC 8176): `pwd`, plus `otp` when the form's
    /// second-factor box was ticked.
    pub(super) amr: Vec<String>,
}

/// A token endpoint error (RFC 6749 §5.2; RFC 8628 §3.5 adds the device flow's codes).
pub(super) fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONNECTION, "close"),
        ],
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `POST /token`.
pub(super) async fn token(State(state): State<ServerState>, body: Bytes) -> Response {
    let invalid =
        |description: &str| token_error(StatusCode::BAD_REQUEST, "invalid_request", description);
    let params = match form_params(&body) {
        Some(Ok(params)) => params,
        Some(Err(why)) => return invalid(&why),
        None => return invalid("the body is larger than allowed or not form data"),
    };
    match params.require("grant_type") {
        Ok("authorization_code") => super::authorize::exchange(&state, &params),
        Ok(DEVICE_CODE_GRANT) => super::device::exchange(&state, &params),
        Ok("refresh_token") => super::refresh::exchange(&state, &params),
        Ok(_) => token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this provider takes authorization codes, device codes and refresh tokens",
        ),
        Err(why) => invalid(&why),
    }
}

/// The token response for a successful grant: an access token, an ID token (with `nonce` when
/// the sign-in carried one) and a refresh token of a new family, or of `family` when a refresh
/// token is being rotated.
pub(super) fn issue(state: &ServerState, sign_in: SignIn, nonce: Option<&str>) -> Response {
    issue_in(state, sign_in, nonce, None)
}

/// [`issue`], the refresh token joining `family` if given.
pub(super) fn issue_in(
    state: &ServerState,
    sign_in: SignIn,
    nonce: Option<&str>,
    family: Option<Family>,
) -> Response {
    let mut access = TokenRequest::new(&*state.issuer, &sign_in.subject, super::DEV_AUDIENCE);
    access.groups.clone_from(&sign_in.groups);
    access
        .extra_claims
        .insert("amr".into(), sign_in.amr.clone().into());
    let mut id = access.clone();
    if let Some(nonce) = nonce {
        id.extra_claims.insert("nonce".into(), nonce.into());
    }
    let (Ok(access_token), Ok(id_token)) = (state.keys.mint(&access), state.keys.mint(&id)) else {
        return token_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "signing failed",
        );
    };
    let refresh_token = match state.refresh.issue(sign_in, family) {
        Ok(token) => token,
        Err(why) => {
            return token_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                why,
            );
        }
    };
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONNECTION, "close"),
        ],
        axum::Json(json!({
            "access_token": access_token,
            "id_token": id_token,
            "refresh_token": refresh_token,
            "token_type": "Bearer",
            "expires_in": DEFAULT_TTL.as_secs(),
        })),
    )
        .into_response()
}
