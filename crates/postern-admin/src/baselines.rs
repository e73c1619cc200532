//! The baseline routes: service identities' learned statement fingerprints and client networks
//! (`postern-proxy/src/baseline.rs`). Who may do what is decided by [`Control`] (`view_audit` to
//! read, `approve` to change); this maps HTTP onto it. A baseline is named by issuer, subject and
//! target; subjects hold `/` and `:` (`repo:acme/app:ref:refs/heads/main`), so the names travel
//! as query parameters or in the body, never as path segments.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/v1/baselines` | every baseline the caller may see, with its counts |
//! | GET | `/v1/baseline?issuer=&subject=&target=` | one baseline whole |
//! | POST | `/v1/baseline/accept` | `{"issuer", "subject", "target", "kind": "fingerprint"\|"network", "value"}` |
//! | POST | `/v1/baseline/reset` | `{"issuer", "subject", "target"}`: forget it, observe again |

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use postern_proxy::control::Control;
use postern_store::BaselineKey;
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, caller};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Accept {
    issuer: String,
    subject: String,
    target: String,
    /// `fingerprint` or `network`.
    kind: String,
    value: String,
}

/// A query string that cannot be read, as the API's JSON error (after the caller is known, so
/// an unauthenticated request learns only that it needs a token).
fn bad_query(rejection: &QueryRejection) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, rejection.body_text())
}

/// A body that cannot be read, as the API's JSON error, with axum's status (400 for bad JSON,
/// 415 without `Content-Type: application/json`, 422 for a missing or unknown field).
fn bad_body(rejection: &JsonRejection) -> ApiError {
    ApiError(rejection.status(), rejection.body_text())
}

pub(crate) async fn list(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let baselines = control.baselines(&caller).await?;
    Ok(Json(json!({ "baselines": baselines })).into_response())
}

pub(crate) async fn get(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    key: Result<Query<BaselineKey>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let Query(key) = key.map_err(|e| bad_query(&e))?;
    let baseline = control.baseline(&caller, &key).await?;
    Ok(Json(baseline).into_response())
}

pub(crate) async fn accept(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<Accept>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let Json(body) = body.map_err(|e| bad_body(&e))?;
    let key = BaselineKey {
        issuer: body.issuer,
        subject: body.subject,
        target: body.target,
    };
    let baseline = control
        .accept_baseline_entry(&caller, &key, &body.kind, &body.value)
        .await?;
    Ok(Json(baseline).into_response())
}

pub(crate) async fn reset(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    key: Result<Json<BaselineKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let Json(key) = key.map_err(|e| bad_body(&e))?;
    let baseline = control.reset_baseline(&caller, &key).await?;
    Ok(Json(baseline).into_response())
}
