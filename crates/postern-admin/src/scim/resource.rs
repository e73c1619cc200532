//! A SCIM User resource (RFC 7643 section 4.1) as JSON: read into what Postern keeps
//! ([`ScimUserData`]) and written back with `id`, `schemas` and `meta`.
//!
//! Attribute names are matched without regard to case (RFC 7643 section 2.1). Postern acts on
//! `userName`, `externalId` and `active`; every other attribute (name, displayName, emails,
//! the enterprise extension, …) is kept as sent and returned as kept, except `password`, which
//! is never stored (Postern has no use for it). `id` and `meta` are Postern's and a body's are
//! ignored; a null attribute is an absent one.

use postern_store::{ScimUser, ScimUserData};
use serde_json::{Map, Value, json};

use super::ScimError;

/// The core User schema (RFC 7643 section 8.7.1).
pub(super) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// The enterprise User extension (RFC 7643 section 4.3).
pub(super) const ENTERPRISE_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Reads a User resource. `active` absent means the user's current state when there is one
/// (a PUT that leaves it out does not deactivate anyone) and active for a new user.
pub(super) fn user_data(
    document: &Value,
    current_active: Option<bool>,
) -> Result<ScimUserData, ScimError> {
    let Value::Object(fields) = document else {
        return Err(ScimError::bad(
            "invalidSyntax",
            "a User resource is a JSON object",
        ));
    };
    let mut user_name = None;
    let mut external_id = None;
    let mut active = None;
    let mut attributes = Map::new();
    for (name, value) in fields {
        if value.is_null() {
            continue;
        }
        match name.to_ascii_lowercase().as_str() {
            "schemas" | "id" | "meta" | "password" => {}
            "username" => match value {
                Value::String(s) => user_name = Some(s.clone()),
                _ => return Err(ScimError::bad("invalidValue", "userName must be a string")),
            },
            "externalid" => match value {
                Value::String(s) if s.is_empty() => {}
                Value::String(s) => external_id = Some(s.clone()),
                _ => {
                    return Err(ScimError::bad(
                        "invalidValue",
                        "externalId must be a string",
                    ));
                }
            },
            "active" => active = Some(boolean(value)?),
            _ => {
                attributes.insert(name.clone(), value.clone());
            }
        }
    }
    let user_name =
        user_name.ok_or_else(|| ScimError::bad("invalidValue", "userName is required"))?;
    Ok(ScimUserData {
        user_name,
        external_id,
        active: active.or(current_active).unwrap_or(true),
        attributes,
    })
}

/// `active`: a boolean, or the strings `"True"` and `"False"` in any case (Entra ID sends
/// those).
pub(super) fn boolean(value: &Value) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::bad(
            "invalidValue",
            format!("active must be true or false, not {other}"),
        )),
    }
}

/// The user's attributes as one JSON object, `id` included but no `schemas` or `meta`: what a
/// PATCH is applied to.
pub(super) fn document(user: &ScimUser) -> Map<String, Value> {
    let mut document = user.data.attributes.clone();
    document.insert("id".into(), json!(user.id));
    if let Some(external_id) = &user.data.external_id {
        document.insert("externalId".into(), json!(external_id));
    }
    document.insert("userName".into(), json!(user.data.user_name));
    document.insert("active".into(), json!(user.data.active));
    document
}

/// The user as a resource, with `meta.location` under `base` when known.
pub(super) fn render(user: &ScimUser, base: Option<&str>) -> Value {
    let mut resource = document(user);
    // The core schema, and each extension whose attributes the user has (an extension's
    // attributes sit under its schema URN).
    let mut schemas = vec![json!(USER_SCHEMA)];
    schemas.extend(
        user.data
            .attributes
            .keys()
            .filter(|k| k.to_ascii_lowercase().starts_with("urn:"))
            .map(|k| json!(k)),
    );
    resource.insert("schemas".into(), Value::Array(schemas));
    let mut meta = json!({
        "resourceType": "User",
        "created": rfc3339(user.created_at),
        "lastModified": rfc3339(user.modified_at),
    });
    if let Some(base) = base {
        meta["location"] = json!(format!("{base}/Users/{}", user.id));
    }
    resource.insert("meta".into(), meta);
    Value::Object(resource)
}

fn rfc3339(unix_seconds: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn a_user_is_read_without_regard_to_case_and_without_its_password() {
        let data = user_data(
            &json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
                "id": "ignored",
                "UserName": "alice@example.com",
                "externalID": "00u1",
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
                "password": "hunter2",
                "nickName": null,
                ENTERPRISE_SCHEMA: {"department": "Data"},
                "meta": {"resourceType": "User"}
            }),
            None,
        )
        .unwrap();
        assert_eq!(data.user_name, "alice@example.com");
        assert_eq!(data.external_id.as_deref(), Some("00u1"));
        assert!(data.active, "a new user is active unless it says otherwise");
        let keys: Vec<&str> = data.attributes.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(!keys.contains(&"password") && !keys.contains(&"nickName"));
    }

    #[test]
    fn active_is_a_boolean_or_entras_string() {
        let read = |active: Value, current| {
            user_data(&json!({"userName": "a", "active": active}), current).map(|d| d.active)
        };
        assert!(!read(json!(false), Some(true)).unwrap());
        assert!(!read(json!("False"), Some(true)).unwrap());
        assert!(read(json!("TRUE"), Some(false)).unwrap());
        assert!(
            !read(Value::Null, Some(false)).unwrap(),
            "absent keeps the state"
        );
        assert!(read(json!("no"), None).is_err());
        assert!(read(json!(0), None).is_err());
    }

    #[test]
    fn bad_resources_are_refused() {
        for bad in [
            json!([]),
            json!({"displayName": "no userName"}),
            json!({"userName": 5}),
            json!({"userName": "a", "externalId": ["x"]}),
        ] {
            let error = user_data(&bad, None).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn a_user_is_rendered_with_its_schemas_and_meta() {
        let mut attributes = Map::new();
        attributes.insert(ENTERPRISE_SCHEMA.into(), json!({"department": "Data"}));
        let user = ScimUser {
            id: "abc".into(),
            data: ScimUserData {
                user_name: "alice".into(),
                external_id: None,
                active: false,
                attributes,
            },
            created_at: 0,
            modified_at: 86_400,
        };
        let resource = render(&user, Some("https://postern.example.com/scim/v2"));
        assert_eq!(resource["schemas"], json!([USER_SCHEMA, ENTERPRISE_SCHEMA]));
        assert_eq!(resource["id"], "abc");
        assert_eq!(resource["active"], false);
        assert!(resource.get("externalId").is_none());
        assert_eq!(resource["meta"]["created"], "1970-01-01T00:00:00Z");
        assert_eq!(resource["meta"]["lastModified"], "1970-01-02T00:00:00Z");
        assert_eq!(
            resource["meta"]["location"],
            "https://postern.example.com/scim/v2/Users/abc"
        );
    }
}
