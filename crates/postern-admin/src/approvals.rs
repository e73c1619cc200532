//! The approval routes: requests, votes, grants, live changes (server-sent events) and webhook
//! deliveries. Who may do what is decided by [`Control`]; this maps HTTP onto it.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/v1/requests?state=pending&limit=100` | requests the caller may see, newest first |
//! | GET | `/v1/requests/{id}` | one request |
//! | POST | `/v1/requests/{id}/approve` | `{"comment", "ttl": "30m", "scope": "statement"\|"action", "budget": 3}` |
//! | POST | `/v1/requests/{id}/deny` | `{"comment": "…"}` (required) |
//! | GET | `/v1/grants?all=true` | grants (active ones unless `all`) |
//! | DELETE | `/v1/grants/{id}` | revoke one |
//! | GET | `/v1/events` | `text/event-stream`: event `request`, data the request, on every change |
//! | GET | `/v1/webhooks/deliveries` | the webhook deliveries tried lately |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use postern_proxy::control::{Ballot, Caller, Control};
use postern_store::{GrantScope, RequestState, Verdict, VoteOutcome};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::{ApiError, caller};

/// Longest approver comment, in characters (the store's limit).
const MAX_COMMENT: usize = postern_store::MAX_JUSTIFICATION_CHARS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRequests {
    #[serde(default)]
    state: Option<RequestState>,
    #[serde(default)]
    limit: Option<u32>,
}

pub(crate) async fn list_requests(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<ListRequests>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let requests = control
        .requests(&caller, query.state, query.limit.unwrap_or(100))
        .await?;
    Ok(Json(json!({ "requests": requests })).into_response())
}

pub(crate) async fn get_request(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let request = control.request(&caller, &id).await?;
    Ok(Json(json!({ "request": request })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Approve {
    #[serde(default)]
    comment: Option<String>,
    /// `"30m"`, `"4h"`: at most what the request's policy allows (its default).
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    scope: Option<GrantScope>,
    #[serde(default)]
    budget: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Deny {
    comment: String,
}

fn comment(given: Option<&str>, required: bool) -> Result<Option<String>, ApiError> {
    let comment = given.map(str::trim).filter(|c| !c.is_empty());
    match comment {
        None if required => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give a comment: the requester is shown why they were denied".into(),
        )),
        Some(c) if c.chars().count() > MAX_COMMENT => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a comment is at most {MAX_COMMENT} characters"),
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

pub(crate) async fn approve(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Approve>>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let Json(body) = body.unwrap_or_default();
    let ttl = body
        .ttl
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("ttl: {e} (write a duration such as \"30m\" or \"4h\")"),
            )
        })?;
    let ballot = Ballot {
        verdict: Verdict::Approve,
        comment: comment(body.comment.as_deref(), false)?,
        ttl,
        scope: body.scope,
        budget: body.budget,
    };
    vote(&control, &caller, &id, ballot).await
}

pub(crate) async fn deny(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Deny>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let ballot = Ballot {
        verdict: Verdict::Deny,
        comment: comment(Some(&body.comment), true)?,
        ttl: None,
        scope: None,
        budget: None,
    };
    vote(&control, &caller, &id, ballot).await
}

async fn vote(
    control: &Control,
    caller: &Caller,
    id: &str,
    ballot: Ballot,
) -> Result<Response, ApiError> {
    let body = match control.vote(caller, id, ballot).await? {
        VoteOutcome::Recorded(request) => json!({"outcome": "recorded", "request": request}),
        VoteOutcome::Approved(request, grant) => {
            json!({"outcome": "approved", "request": request, "grant": grant})
        }
        VoteOutcome::Denied(request) => json!({"outcome": "denied", "request": request}),
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListGrants {
    #[serde(default)]
    all: bool,
}

pub(crate) async fn list_grants(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<ListGrants>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let grants = control.grants(&caller, query.all).await?;
    Ok(Json(json!({ "grants": grants })).into_response())
}

pub(crate) async fn revoke_grant(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let revoked = control.revoke_grant(&caller, &id).await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

pub(crate) async fn deliveries(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let deliveries = control.deliveries(&caller)?;
    Ok(Json(json!({ "deliveries": deliveries })).into_response())
}

/// How often an idle event stream gets a comment, so proxies do not close it.
const EVENTS_KEEPALIVE: Duration = Duration::from_secs(15);

/// Every change of a request the caller may see, as it happens. The caller is verified once,
/// when the stream opens; a stream outlives neither the caller's token nor Postern.
pub(crate) async fn events(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let changes = control.request_changes()?;
    let expires_at = caller.identity.expires_at;
    let state = (control, caller, changes);
    let stream =
        futures_util::stream::unfold(state, move |(control, caller, mut changes)| async move {
            loop {
                let left = expires_at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                let next = tokio::time::timeout(left, changes.recv()).await;
                match next {
                    Ok(Ok(request)) if control.may_see(&caller, &request) => {
                        let event = Event::default()
                            .event("request")
                            .id(request.id.clone())
                            .json_data(&request)
                            .unwrap_or_else(|_| Event::default().comment("unencodable"));
                        return Some((Ok::<Event, Infallible>(event), (control, caller, changes)));
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(broadcast::error::RecvError::Lagged(missed))) => {
                        // The client reloads its lists when told it missed changes.
                        let event = Event::default().event("lagged").data(missed.to_string());
                        return Some((Ok(event), (control, caller, changes)));
                    }
                    // Postern stopped, or the caller's token expired.
                    Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
                }
            }
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(EVENTS_KEEPALIVE))
        .into_response())
}
