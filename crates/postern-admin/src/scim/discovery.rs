//! The discovery documents (RFC 7644 section 4): what Postern supports
//! (`/ServiceProviderConfig`), its one resource type (`/ResourceTypes`) and the User schema's
//! attributes it knows (`/Schemas`). Each needs the SCIM token like every other route.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use postern_proxy::control::Control;
use postern_store::MAX_SCIM_PAGE;
use serde_json::{Value, json};

use super::resource::{ENTERPRISE_SCHEMA, USER_SCHEMA};
use super::{LIST_SCHEMA, ScimError, client, scim_json};

const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

pub(crate) async fn service_provider_config(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    client(&control, &headers, peer)?;
    let unsupported = json!({"supported": false});
    Ok(scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_SCIM_PAGE},
            "changePassword": unsupported,
            "sort": unsupported,
            "etag": unsupported,
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "The token in Postern's [admin.scim] token_file, sent as \
                                Authorization: Bearer <token>.",
                "primary": true
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"}
        }),
    ))
}

pub(crate) async fn resource_types(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    client(&control, &headers, peer)?;
    Ok(scim_json(StatusCode::OK, &list(vec![user_resource_type()])))
}

pub(crate) async fn resource_type(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    client(&control, &headers, peer)?;
    if id != "User" {
        return Err(ScimError::new(
            StatusCode::NOT_FOUND,
            format!("no resource type {id:?}: Postern provisions Users only"),
        ));
    }
    Ok(scim_json(StatusCode::OK, &user_resource_type()))
}

pub(crate) async fn schemas(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    client(&control, &headers, peer)?;
    Ok(scim_json(StatusCode::OK, &list(vec![user_schema()])))
}

pub(crate) async fn schema(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    client(&control, &headers, peer)?;
    if id != USER_SCHEMA {
        return Err(ScimError::new(
            StatusCode::NOT_FOUND,
            format!("no schema {id:?}: Postern describes {USER_SCHEMA} only"),
        ));
    }
    Ok(scim_json(StatusCode::OK, &user_schema()))
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

fn user_resource_type() -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A person who may use Postern; deactivated or deleted, revoked at once",
        "schema": USER_SCHEMA,
        "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}],
        "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/User"}
    })
}

/// The User schema's attributes Postern knows (RFC 7643 section 8.7.1); others are kept as
/// sent.
fn user_schema() -> Value {
    let string = |name: &str, description: &str| attribute(name, "string", description, json!({}));
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "User Account",
        "attributes": [
            attribute(
                "userName",
                "string",
                "Unique identifier for the User; the subject of their tokens unless [admin.scim] \
                 subject_attribute says otherwise.",
                json!({"required": true, "uniqueness": "server"}),
            ),
            attribute(
                "name",
                "complex",
                "The components of the user's name.",
                json!({"subAttributes": [
                    string("formatted", "The full name."),
                    string("familyName", "The family name."),
                    string("givenName", "The given name."),
                ]}),
            ),
            string("displayName", "The name of the User, suitable for display."),
            attribute(
                "emails",
                "complex",
                "Email addresses for the user.",
                json!({"multiValued": true, "subAttributes": [
                    string("value", "An email address."),
                    string("type", "work, home or other."),
                    attribute("primary", "boolean", "The primary address.", json!({})),
                ]}),
            ),
            attribute(
                "active",
                "boolean",
                "Whether the person may use Postern: false revokes them at once.",
                json!({}),
            ),
        ],
        "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{USER_SCHEMA}")}
    })
}

/// An attribute definition with RFC 7643 section 7's defaults, overridden by `more`.
fn attribute(name: &str, kind: &str, description: &str, more: Value) -> Value {
    let mut definition = json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "description": description,
        "required": false,
        "caseExact": false,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    });
    if let (Some(definition), Value::Object(more)) = (definition.as_object_mut(), more) {
        definition.extend(more);
    }
    definition
}
