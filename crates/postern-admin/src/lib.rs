//! Postern's admin HTTP API: health, live sessions, and (as the control plane grows) revocations
//! and approvals. A thin layer over [`postern_proxy::control::Control`]: it reads the bearer
//! token and the request, and maps the control plane's answers to HTTP. Callers prove who they
//! are with the same tokens as database clients; what they may do is Cedar policy
//! (`view_sessions`, `end_session`, `revoke`, `approve`, `view_audit`), none of it granted by the
//! shipped defaults.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/healthz` | the process is up |
//! | GET | `/readyz` | Postern is serving |
//! | GET | `/metrics` | Prometheus counters (`metrics.rs`; no token: counts, no names) |
//! | GET | `/openapi.json` | the OpenAPI 3.1 document of every route (`openapi.rs`; no token) |
//! | GET | `/v1/sessions` | live sessions on targets where the caller may `view_sessions` |
//! | POST | `/v1/sessions/{id}/end` | end one (`{"reason": "…"}`), with `end_session` |
//! | GET | `/v1/revocations` | every revocation, with `revoke` on every target |
//! | POST | `/v1/revocations` | revoke (`{"scope": {"kind": "subject", "subject": "…"}, "reason": "…", "lasts": "8h"}`) |
//! | DELETE | `/v1/revocations/{id}` | lift one |
//! | GET | `/v1/audit?kind=&subject=&…` | search the audit log, with `view_audit` (`audit_search.rs`) |
//!
//! The approval routes are in `approvals.rs`; service identities' baselines (`/v1/baselines`,
//! `/v1/baseline…`) in `baselines.rs`; the SCIM 2.0 provisioning routes under
//! `/scim/v2`, authenticated by the provider's own bearer token, in `scim.rs`. `ROUTES` is the
//! one list of routes.

mod approvals;
mod audit_search;
mod baselines;
mod exchange;
mod logout;
mod metrics;
mod openapi;
mod scim;

mod console;
pub use console::{ConsoleError, ConsoleOptions, router_with, serve_with};

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use postern_proxy::control::{Caller, Control, ControlError};
use postern_store::RevocationScope;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest reason accepted for ending a session.
const MAX_REASON: usize = 500;

/// One route of the admin API: the router is built from `ROUTES`, and the OpenAPI document
/// must describe each (a test compares the two), so a route cannot be served undocumented.
struct Route {
    method: Verb,
    path: &'static str,
    /// The handler, under the method filter given.
    handler: fn(MethodFilter) -> MethodRouter<Control>,
}

#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
            Self::Patch => MethodFilter::PATCH,
            Self::Delete => MethodFilter::DELETE,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// Every route of the admin API.
#[rustfmt::skip]
const ROUTES: &[Route] = &[
    Route { method: Verb::Get, path: "/healthz", handler: |m| on(m, healthz) },
    Route { method: Verb::Get, path: "/readyz", handler: |m| on(m, readyz) },
    Route { method: Verb::Get, path: "/metrics", handler: |m| on(m, metrics::metrics) },
    Route { method: Verb::Get, path: "/openapi.json", handler: |m| on(m, openapi::document) },
    Route { method: Verb::Get, path: "/v1/sessions", handler: |m| on(m, list_sessions) },
    Route { method: Verb::Post, path: "/v1/sessions/{id}/end", handler: |m| on(m, end_session) },
    Route { method: Verb::Get, path: "/v1/revocations", handler: |m| on(m, list_revocations) },
    Route { method: Verb::Post, path: "/v1/revocations", handler: |m| on(m, revoke) },
    Route { method: Verb::Delete, path: "/v1/revocations/{id}", handler: |m| on(m, lift_revocation) },
    Route { method: Verb::Get, path: "/v1/requests", handler: |m| on(m, approvals::list_requests) },
    Route { method: Verb::Get, path: "/v1/requests/{id}", handler: |m| on(m, approvals::get_request) },
    Route { method: Verb::Post, path: "/v1/requests/{id}/approve", handler: |m| on(m, approvals::approve) },
    Route { method: Verb::Post, path: "/v1/requests/{id}/deny", handler: |m| on(m, approvals::deny) },
    Route { method: Verb::Get, path: "/v1/grants", handler: |m| on(m, approvals::list_grants) },
    Route { method: Verb::Delete, path: "/v1/grants/{id}", handler: |m| on(m, approvals::revoke_grant) },
    Route { method: Verb::Get, path: "/v1/events", handler: |m| on(m, approvals::events) },
    Route { method: Verb::Get, path: "/v1/webhooks/deliveries", handler: |m| on(m, approvals::deliveries) },
    Route { method: Verb::Get, path: "/v1/audit", handler: |m| on(m, audit_search::search) },
    Route { method: Verb::Get, path: "/v1/baselines", handler: |m| on(m, baselines::list) },
    Route { method: Verb::Get, path: "/v1/baseline", handler: |m| on(m, baselines::get) },
    Route { method: Verb::Post, path: "/v1/baseline/accept", handler: |m| on(m, baselines::accept) },
    Route { method: Verb::Post, path: "/v1/baseline/reset", handler: |m| on(m, baselines::reset) },
    Route { method: Verb::Post, path: "/v1/oidc/backchannel-logout", handler: |m| on(m, logout::backchannel_logout) },
    Route { method: Verb::Get, path: "/scim/v2/ServiceProviderConfig", handler: |m| on(m, scim::service_provider_config) },
    Route { method: Verb::Get, path: "/scim/v2/ResourceTypes", handler: |m| on(m, scim::resource_types) },
    Route { method: Verb::Get, path: "/scim/v2/ResourceTypes/{id}", handler: |m| on(m, scim::resource_type) },
    Route { method: Verb::Get, path: "/scim/v2/Schemas", handler: |m| on(m, scim::schemas) },
    Route { method: Verb::Get, path: "/scim/v2/Schemas/{id}", handler: |m| on(m, scim::schema) },
    Route { method: Verb::Get, path: "/scim/v2/Users", handler: |m| on(m, scim::list_users) },
    Route { method: Verb::Post, path: "/scim/v2/Users", handler: |m| on(m, scim::create_user) },
    Route { method: Verb::Get, path: "/scim/v2/Users/{id}", handler: |m| on(m, scim::get_user) },
    Route { method: Verb::Put, path: "/scim/v2/Users/{id}", handler: |m| on(m, scim::replace_user) },
    Route { method: Verb::Patch, path: "/scim/v2/Users/{id}", handler: |m| on(m, scim::patch_user) },
    Route { method: Verb::Delete, path: "/scim/v2/Users/{id}", handler: |m| on(m, scim::delete_user) },
    Route { method: Verb::Post, path: "/v1/token", handler: |m| on(m, exchange::token) },
    Route { method: Verb::Get, path: "/.well-known/jwks.json", handler: |m| on(m, exchange::jwks) },
    Route { method: Verb::Get, path: "/.well-known/openid-configuration", handler: |m| on(m, exchange::discovery) },
];

/// Every route the admin API serves, as (method, path) with paths as OpenAPI writes them
/// (`/v1/requests/{id}`).
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|r| (r.method.as_str(), r.path))
}

/// The admin API's routes over `control`.
pub fn router(control: Control) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, r| {
            router.route(r.path, (r.handler)(r.method.filter()))
        })
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
