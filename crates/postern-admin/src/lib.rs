//! Postern's admin HTTP API: health, live sessions, and (as the control plane grows) revocations
//! and approvals. A thin layer over [`postern_proxy::control::Control`]: it reads the bearer
//! token and the request, and maps the control plane's answers to HTTP. Callers prove who they
//! are with the same tokens as database clients; what they may do is Cedar policy
//! (`view_sessions`, `end_session`, `revoke`), none of it granted by the shipped defaults.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/healthz` | the process is up |
//! | GET | `/readyz` | Postern is serving |
//! | GET | `/v1/sessions` | live sessions on targets where the caller may `view_sessions` |
//! | POST | `/v1/sessions/{id}/end` | end one (`{"reason": "…"}`), with `end_session` |
//! | GET | `/v1/revocations` | every revocation, with `revoke` on every target |
//! | POST | `/v1/revocations` | revoke (`{"scope": {"kind": "subject", "subject": "…"}, "reason": "…", "lasts": "8h"}`) |
//! | DELETE | `/v1/revocations/{id}` | lift one |

mod approvals;

mod console;
pub use console::{ConsoleError, ConsoleOptions, router_with, serve_with};

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use postern_proxy::control::{Caller, Control, ControlError};
use postern_store::RevocationScope;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest reason accepted for ending a session.
const MAX_REASON: usize = 500;

/// The admin API's routes over `control`.
pub fn router(control: Control) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{id}/end", post(end_session))
        .route("/v1/revocations", get(list_revocations).post(revoke))
        .route("/v1/revocations/{id}", delete(lift_revocation))
        .route("/v1/requests", get(approvals::list_requests))
        .route("/v1/requests/{id}", get(approvals::get_request))
        .route("/v1/requests/{id}/approve", post(approvals::approve))
        .route("/v1/requests/{id}/deny", post(approvals::deny))
        .route("/v1/grants", get(approvals::list_grants))
        .route("/v1/grants/{id}", delete(approvals::revoke_grant))
        .route("/v1/events", get(approvals::events))
        .route("/v1/webhooks/deliveries", get(approvals::deliveries))
        .with_state(control)
}

/// Serves the admin API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    control: Control,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(control).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// An error as the API returns it: a status and `{"error": "…"}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        let status = match &error {
            ControlError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::Audit(_) | ControlError::Stopped | ControlError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        Self(status, error.to_string())
    }
}

/// The caller, from `Authorization: Bearer <token>`.
async fn caller(
    control: &Control,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "no token: send your identity token as `Authorization: Bearer <token>`".into(),
            )
        })?;
    Ok(control.authenticate(token, peer.ip()).await?)
}

/// A reason for ending sessions or revoking access: the users affected are shown it.
fn reason(given: &str) -> Result<&str, ApiError> {
    let reason = given.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "give a reason of 1 to {MAX_REASON} characters: the users affected are shown it"
            ),
        ));
    }
    Ok(reason)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(control): State<Control>) -> Result<&'static str, ApiError> {
    control.targets()?;
    Ok("ready")
}

async fn list_sessions(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let sessions = control.sessions(&caller)?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndSession {
    reason: String,
}

async fn end_session(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<EndSession>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let reason = reason(&body.reason)?;
    let ended = control.end_session(&caller, &id, reason).await?;
    Ok(Json(json!({ "ended": ended })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    scope: RevocationScope,
    reason: String,
    /// How long the revocation lasts (`"8h"`, `"30m"`); until lifted when absent.
    #[serde(default)]
    lasts: Option<String>,
}

async fn list_revocations(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let revocations = control.revocations(&caller).await?;
    Ok(Json(json!({ "revocations": revocations })).into_response())
}

async fn revoke(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Revoke>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let reason = reason(&body.reason)?;
    let lasts = body
        .lasts
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("lasts: {e} (write a duration such as \"8h\" or \"30m\")"),
            )
        })?;
    let revoked = control.revoke(&caller, body.scope, reason, lasts).await?;
    Ok((StatusCode::CREATED, Json(json!(revoked))).into_response())
}

async fn lift_revocation(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let lifted = control.lift(&caller, &id).await?;
    Ok(Json(json!({ "lifted": lifted })).into_response())
}
