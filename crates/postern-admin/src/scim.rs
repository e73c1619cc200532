//! `/scim/v2`: a SCIM 2.0 service provider for Users (RFC 7643, RFC 7644), enough for Okta,
//! Entra ID and OneLogin provisioning. The identity provider creates, reads, lists, replaces,
//! patches and deletes users; deactivating one (`active` false, by PATCH or PUT) or deleting it
//! revokes that person at once, and making it active again lifts what SCIM revoked (see
//! `postern-proxy/src/control/scim.rs`, which decides and audits; this module speaks the
//! protocol).
//!
//! | method | path | |
//! | --- | --- | --- |
//! | POST | `/scim/v2/Users` | create (201; 409 `uniqueness` for a `userName` taken) |
//! | GET | `/scim/v2/Users?filter=userName eq "…"&startIndex=1&count=100` | list (`eq` on `userName`, `externalId`, `id`) |
//! | GET | `/scim/v2/Users/{id}` | one user |
//! | PUT | `/scim/v2/Users/{id}` | replace |
//! | PATCH | `/scim/v2/Users/{id}` | PatchOp `add`, `replace`, `remove` |
//! | DELETE | `/scim/v2/Users/{id}` | delete (204) |
//! | GET | `/scim/v2/ServiceProviderConfig`, `/ResourceTypes[/{id}]`, `/Schemas[/{id}]` | discovery |
//!
//! Every request carries `Authorization: Bearer <the token in [admin.scim] token_file>`.
//! Responses are `application/scim+json`; errors have the SCIM shape
//! `{"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "401", "detail":
//! "…"}`, with `scimType` where RFC 7644 section 3.12 names one.
//!
//! # Layout
//! - `resource.rs`: a User resource as JSON, read into what the store keeps and written back.
//! - `filter.rs`: the `filter` parameter (`attribute eq "value"`).
//! - `patch.rs`: PatchOp operations and their paths, applied to a user's JSON.
//! - `discovery.rs`: the ServiceProviderConfig, ResourceTypes and Schemas documents.
//! - this file: authentication, errors, the handlers.

mod discovery;
mod filter;
mod patch;
mod resource;

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_proxy::control::scim::{ScimAuthError, ScimClient};
use postern_proxy::control::{Control, ControlError};
use postern_store::MAX_SCIM_PAGE;
use serde::Deserialize;
use serde_json::{Value, json};

pub(crate) use discovery::{
    resource_type, resource_types, schema, schemas, service_provider_config,
};

/// The media type of every SCIM body (RFC 7644 section 3.1).
const SCIM_JSON: &str = "application/scim+json";

/// The schema of an error response (RFC 7644 section 3.12).
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The schema of a list response (RFC 7644 section 3.4.2).
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// Largest request body read: a user is a few kilobytes (its attributes are kept up to
/// [`postern_store::MAX_SCIM_ATTRIBUTES_BYTES`]), a PatchOp a few operations.
const MAX_BODY: usize = 256 * 1024;

/// A SCIM error response (RFC 7644 section 3.12).
#[derive(Debug)]
pub(crate) struct ScimError {
    status: StatusCode,
    /// The `scimType` keyword, for the 400s and 409s that have one.
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
        }
    }

    /// A 400 with `scimType`.
    fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_str(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type);
        }
        let mut response = scim_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"postern-scim\""),
            );
        }
        response
    }
}

impl From<ControlError> for ScimError {
    fn from(error: ControlError) -> Self {
        let detail = error.to_string();
        match error {
            ControlError::Unauthenticated(_) => Self::new(StatusCode::UNAUTHORIZED, detail),
            ControlError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, detail),
            ControlError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, detail),
            ControlError::Conflict(_) => Self {
                status: StatusCode::CONFLICT,
                scim_type: Some("uniqueness"),
                detail,
            },
            ControlError::Invalid(_) => Self::bad("invalidValue", detail),
            ControlError::Audit(_) | ControlError::Stopped | ControlError::Store(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
            }
        }
    }
}

/// A SCIM JSON response, never cached (it names people).
fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The provider, from `Authorization: Bearer <token>`.
fn client(
    control: &Control,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<ScimClient, ScimError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ScimError::new(
                StatusCode::UNAUTHORIZED,
                "no token: send Postern's SCIM token as `Authorization: Bearer <token>`",
            )
        })?;
    control
        .scim_authenticate(token, peer.ip())
        .map_err(|error| {
            let status = match error {
                ScimAuthError::Off => StatusCode::NOT_FOUND,
                ScimAuthError::WrongToken => StatusCode::UNAUTHORIZED,
                ScimAuthError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            };
            ScimError::new(status, error.to_string())
        })
}

/// A request body as JSON.
fn body_json(body: &[u8]) -> Result<Value, ScimError> {
    if body.len() > MAX_BODY {
        return Err(ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("the body is not JSON: {e}")))
}

/// Where this API is reached, for `meta.location`: the request's `Host`, over HTTPS when a
/// proxy in front says so (`X-Forwarded-Proto`).
fn base_url(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    Some(format!(
        "{}://{host}/scim/v2",
        if https { "https" } else { "http" }
    ))
}

/// The query parameters of a listing (RFC 7644 section 3.4.2). Others (`attributes`,
/// `sortBy`, …) are accepted and ignored: every attribute is returned, oldest first.
#[derive(Deserialize)]
pub(crate) struct ListParams {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<String>,
    count: Option<String>,
}

/// An integer query parameter.
fn integer(name: &str, value: Option<&str>) -> Result<Option<i64>, ScimError> {
    value
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ScimError::bad(
                    "invalidValue",
                    format!("{name} must be an integer, not {v:?}"),
                )
            })
        })
        .transpose()
}

pub(crate) async fn create_user(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let client = client(&control, &headers, peer)?;
    let data = resource::user_data(&body_json(&body)?, None)?;
    let user = control.scim_create_user(&client, data).await?;
    let base = base_url(&headers);
    let mut response = scim_json(
        StatusCode::CREATED,
        &resource::render(&user, base.as_deref()),
    );
    if let Some(location) = base
        .map(|base| format!("{base}/Users/{}", user.id))
        .and_then(|l| HeaderValue::from_str(&l).ok())
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(crate) async fn get_user(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let client = client(&control, &headers, peer)?;
    let user = control.scim_user(&client, &id).await?;
    let base = base_url(&headers);
    Ok(scim_json(
        StatusCode::OK,
        &resource::render(&user, base.as_deref()),
    ))
}

pub(crate) async fn list_users(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ScimError> {
    let client = client(&control, &headers, peer)?;
    let Query(params) =
        params.map_err(|e| ScimError::bad("invalidValue", format!("the query string: {e}")))?;
    let filter = params.filter.as_deref().map(filter::parse).transpose()?;
    // RFC 7644 section 3.4.2.4: a startIndex below 1 is 1, a negative count is 0.
    let start_index = integer("startIndex", params.start_index.as_deref())?
        .unwrap_or(1)
        .max(1);
    let count = integer("count", params.count.as_deref())?
        .unwrap_or(i64::from(MAX_SCIM_PAGE))
        .clamp(0, i64::from(MAX_SCIM_PAGE));
    let offset = u64::try_from(start_index - 1).unwrap_or(0);
    let limit = u32::try_from(count).unwrap_or(MAX_SCIM_PAGE);
    let page = control
        .scim_users(&client, filter.as_ref(), offset, limit)
        .await?;
    let base = base_url(&headers);
    let resources: Vec<Value> = page
        .users
        .iter()
        .map(|user| resource::render(user, base.as_deref()))
        .collect();
    Ok(scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": page.total,
            "startIndex": start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    ))
}

pub(crate) async fn replace_user(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let client = client(&control, &headers, peer)?;
    let document = body_json(&body)?;
    let user = control
        .scim_update_user(&client, &id, |current| {
            resource::user_data(&document, Some(current.data.active))
        })
        .await?;
    let base = base_url(&headers);
    Ok(scim_json(
        StatusCode::OK,
        &resource::render(&user, base.as_deref()),
    ))
}

pub(crate) async fn patch_user(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let client = client(&control, &headers, peer)?;
    let operations = patch::parse(&body_json(&body)?)?;
    let user = control
        .scim_update_user(&client, &id, |current| {
            let mut document = resource::document(current);
            patch::apply(&operations, &mut document)?;
            resource::user_data(&Value::Object(document), Some(current.data.active))
        })
        .await?;
    let base = base_url(&headers);
    Ok(scim_json(
        StatusCode::OK,
        &resource::render(&user, base.as_deref()),
    ))
}

pub(crate) async fn delete_user(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let client = client(&control, &headers, peer)?;
    control.scim_delete_user(&client, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
