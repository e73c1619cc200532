//! PATCH of a user (RFC 7644 section 3.5.2): a PatchOp's operations, read and checked before
//! anything is touched, then applied in order to the user's JSON (`resource::document`), which
//! is then read again as a whole user, so a PATCH is held to every rule a PUT is.
//!
//! What providers send, and Postern takes:
//! - `{"op": "replace", "path": "active", "value": false}`; Entra ID writes the op capitalised
//!   and the value as the string `"False"`;
//! - no path and an object (Okta): `{"op": "replace", "value": {"active": false}}`, each member
//!   applied as if it were a path, and members under an extension's URN to that extension;
//! - sub-attributes (`name.givenName`), extension attributes
//!   (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`), and value filters
//!   on multi-valued attributes (`emails[type eq "work"].value`: the matching elements, or a new
//!   one when none matches and the op adds or replaces).
//!
//! Attribute names are matched without regard to case; `id`, `meta` and `schemas` cannot be
//! changed (`mutability`). Removing what is absent changes nothing.

use serde_json::{Map, Value};

use super::ScimError;
use super::filter::{comparison, strip_core_schema};
use super::resource::USER_SCHEMA;

/// The most operations one PATCH may carry.
const MAX_OPERATIONS: usize = 256;

/// The longest path read.
const MAX_PATH_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Replace,
    Remove,
}

/// Where an operation applies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PatchPath {
    /// The extension's URN, when the attribute is an extension's.
    schema: Option<String>,
    attribute: String,
    /// `[attribute eq "value"]`: the elements of a multi-valued attribute meant.
    filter: Option<(String, String)>,
    /// `.sub`: a sub-attribute of the attribute (or of each element meant).
    sub_attribute: Option<String>,
}

/// One operation, checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Operation {
    kind: Kind,
    path: Option<PatchPath>,
    /// Present for add and replace.
    value: Value,
}

/// Reads a PatchOp body.
pub(super) fn parse(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let Value::Object(fields) = body else {
        return Err(ScimError::bad(
            "invalidSyntax",
            "a PatchOp is a JSON object",
        ));
    };
    let operations = member(fields, "Operations")
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| {
            ScimError::bad(
                "invalidSyntax",
                "a PatchOp carries its operations as a non-empty array \"Operations\"",
            )
        })?;
    if operations.len() > MAX_OPERATIONS {
        return Err(ScimError::bad(
            "tooMany",
            format!("at most {MAX_OPERATIONS} operations per PATCH"),
        ));
    }
    operations.iter().map(operation).collect()
}

fn operation(value: &Value) -> Result<Operation, ScimError> {
    let Value::Object(fields) = value else {
        return Err(ScimError::bad(
            "invalidSyntax",
            "each operation is a JSON object",
        ));
    };
    let kind = match member(fields, "op").and_then(Value::as_str) {
        Some(op) if op.eq_ignore_ascii_case("add") => Kind::Add,
        Some(op) if op.eq_ignore_ascii_case("replace") => Kind::Replace,
        Some(op) if op.eq_ignore_ascii_case("remove") => Kind::Remove,
        _ => {
            return Err(ScimError::bad(
                "invalidSyntax",
                "each operation's \"op\" is add, replace or remove",
            ));
        }
    };
    let path = match member(fields, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(path(text)?),
        Some(_) => return Err(ScimError::bad("invalidPath", "a path is a string")),
    };
    let value = member(fields, "value").cloned().unwrap_or(Value::Null);
    match (kind, &path) {
        (Kind::Remove, None) => Err(ScimError::bad(
            "noTarget",
            "a remove operation names what it removes in \"path\"",
        )),
        (Kind::Add | Kind::Replace, None) if !value.is_object() => Err(ScimError::bad(
            "invalidValue",
            "an operation without a path takes an object of attributes as its value",
        )),
        _ => Ok(Operation { kind, path, value }),
    }
}

/// Reads `[urn:…:]attribute[[filter]][.sub]`.
fn path(text: &str) -> Result<PatchPath, ScimError> {
    let invalid = |why: &str| ScimError::bad("invalidPath", format!("path {text:?}: {why}"));
    if text.len() > MAX_PATH_BYTES {
        return Err(invalid("too long"));
    }
    let text = strip_core_schema(text.trim());
    // An extension's URN ends at the last colon before any value filter.
    let head_end = text.find('[').unwrap_or(text.len());
    let (schema, rest) = match text.get(..4) {
        Some(start) if start.eq_ignore_ascii_case("urn:") => {
            let colon = text[..head_end]
                .rfind(':')
                .ok_or_else(|| invalid("no attribute after the schema"))?;
            (Some(text[..colon].to_owned()), &text[colon + 1..])
        }
        _ => (None, text),
    };
    let (attribute, filter, sub_attribute) = match rest.split_once('[') {
        Some((attribute, after)) => {
            let (inside, after) = after
                .split_once(']')
                .ok_or_else(|| invalid("a value filter without ']'"))?;
            let (name, value) = comparison(inside)
                .ok_or_else(|| invalid("value filters are `attribute eq \"value\"`"))?;
            let sub = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix('.')
                        .ok_or_else(|| invalid("only .subAttribute may follow ']'"))?,
                ),
            };
            (attribute, Some((name.to_owned(), value)), sub)
        }
        None => match rest.split_once('.') {
            Some((attribute, sub)) => (attribute, None, Some(sub)),
            None => (rest, None, None),
        },
    };
    for name in std::iter::once(attribute)
        .chain(sub_attribute)
        .chain(filter.as_ref().map(|(name, _)| name.as_str()))
    {
        if !is_attribute_name(name) {
            return Err(invalid(&format!("{name:?} is not an attribute name")));
        }
    }
    Ok(PatchPath {
        schema: schema.filter(|s| !s.eq_ignore_ascii_case(USER_SCHEMA)),
        attribute: attribute.to_owned(),
        filter,
        sub_attribute: sub_attribute.map(str::to_owned),
    })
}

/// RFC 7643 section 2.1: `ALPHA *(ALPHA / DIGIT / "-" / "_")` (and `$ref`).
fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Applies `operations`, in order, to a user's JSON.
pub(super) fn apply(
    operations: &[Operation],
    user: &mut Map<String, Value>,
) -> Result<(), ScimError> {
    for operation in operations {
        match &operation.path {
            Some(path) => at_path(user, path, operation.kind, &operation.value)?,
            None => {
                let Value::Object(members) = &operation.value else {
                    continue;
                };
                for (name, value) in members {
                    without_path(user, name, value, operation.kind)?;
                }
            }
        }
    }
    Ok(())
}

/// One member of a path-less operation's value.
fn without_path(
    user: &mut Map<String, Value>,
    name: &str,
    value: &Value,
    kind: Kind,
) -> Result<(), ScimError> {
    if name.eq_ignore_ascii_case("schemas") {
        return Ok(());
    }
    let is_urn = name
        .get(..4)
        .is_some_and(|s| s.eq_ignore_ascii_case("urn:"));
    match value {
        // The core schema's or an extension's attributes, under its URN.
        Value::Object(members) if is_urn => {
            let core = name.eq_ignore_ascii_case(USER_SCHEMA);
            for (inner, value) in members {
                if core {
                    writable(inner)?;
                    set(user, inner, value, kind);
                } else {
                    set(object_at(user, name)?, inner, value, kind);
                }
            }
            Ok(())
        }
        _ if is_urn => {
            let path = path(name)?;
            at_path(user, &path, kind, value)
        }
        _ => {
            writable(name)?;
            set(user, name, value, kind);
            Ok(())
        }
    }
}

fn at_path(
    user: &mut Map<String, Value>,
    path: &PatchPath,
    kind: Kind,
    value: &Value,
) -> Result<(), ScimError> {
    let container = match &path.schema {
        None => {
            writable(&path.attribute)?;
            user
        }
        Some(schema) if kind == Kind::Remove => match key(user, schema) {
            Some(found) => match user.get_mut(&found) {
                Some(Value::Object(members)) => members,
                _ => return Ok(()),
            },
            None => return Ok(()),
        },
        Some(schema) => object_at(user, schema)?,
    };
    let attribute = path.attribute.as_str();
    match (&path.filter, &path.sub_attribute, kind) {
        (None, None, Kind::Remove) => {
            remove(container, attribute);
            Ok(())
        }
        (None, None, _) => {
            set(container, attribute, value, kind);
            Ok(())
        }
        (None, Some(sub), Kind::Remove) => {
            if let Some(found) = key(container, attribute)
                && let Some(Value::Object(members)) = container.get_mut(&found)
            {
                remove(members, sub);
            }
            Ok(())
        }
        (None, Some(sub), _) => {
            set(object_at(container, attribute)?, sub, value, kind);
            Ok(())
        }
        (Some(filter), sub, _) => {
            filtered(container, attribute, filter, sub.as_deref(), kind, value)
        }
    }
}

/// An operation on the elements of a multi-valued attribute that a value filter matches.
fn filtered(
    container: &mut Map<String, Value>,
    attribute: &str,
    (name, wanted): &(String, String),
    sub: Option<&str>,
    kind: Kind,
    value: &Value,
) -> Result<(), ScimError> {
    let found = key(container, attribute).unwrap_or_else(|| attribute.to_owned());
    match container.get(&found) {
        Some(Value::Array(_)) => {}
        Some(Value::Null) | None if kind == Kind::Remove => return Ok(()),
        Some(Value::Null) | None => {
            container.insert(found.clone(), Value::Array(Vec::new()));
        }
        Some(_) => {
            return Err(ScimError::bad(
                "invalidPath",
                format!("{attribute} is not multi-valued: it takes no value filter"),
            ));
        }
    }
    let Some(Value::Array(elements)) = container.get_mut(&found) else {
        return Ok(());
    };
    let matches = |element: &Value| {
        element.as_object().is_some_and(|members| {
            key(members, name)
                .and_then(|k| members.get(&k))
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(wanted))
        })
    };
    if kind == Kind::Remove {
        match sub {
            Some(sub) => elements
                .iter_mut()
                .filter(|e| matches(e))
                .filter_map(Value::as_object_mut)
                .for_each(|members| remove(members, sub)),
            None => elements.retain(|e| !matches(e)),
        }
        return Ok(());
    }
    if !elements.iter().any(&matches) {
        let mut element = Map::new();
        element.insert(name.clone(), Value::String(wanted.clone()));
        elements.push(Value::Object(element));
    }
    for element in elements.iter_mut().filter(|e| matches(e)) {
        let Some(members) = element.as_object_mut() else {
            continue;
        };
        match (sub, value) {
            (Some(sub), value) => set(members, sub, value, Kind::Replace),
            (None, Value::Object(given)) => {
                for (inner, value) in given {
                    set(members, inner, value, Kind::Replace);
                }
            }
            (None, _) => {
                return Err(ScimError::bad(
                    "invalidValue",
                    format!(
                        "{attribute}[…] takes an object, or a path to one of its sub-attributes"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a change to what is Postern's.
fn writable(attribute: &str) -> Result<(), ScimError> {
    if ["id", "meta", "schemas"]
        .iter()
        .any(|own| attribute.eq_ignore_ascii_case(own))
    {
        return Err(ScimError::bad(
            "mutability",
            format!("{attribute} is Postern's and cannot be changed"),
        ));
    }
    Ok(())
}

/// The key `name` is stored under, matched without regard to case.
fn key(members: &Map<String, Value>, name: &str) -> Option<String> {
    members
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
}

/// A member by name, without regard to case.
fn member<'a>(members: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    key(members, name).and_then(|k| members.get(&k))
}

/// Sets `name` (replacing, or for add to a multi-valued attribute, appending); null removes.
fn set(members: &mut Map<String, Value>, name: &str, value: &Value, kind: Kind) {
    let name = key(members, name).unwrap_or_else(|| name.to_owned());
    match (kind, members.get_mut(&name), value) {
        (_, _, Value::Null) => {
            members.remove(&name);
        }
        (Kind::Add, Some(Value::Array(elements)), Value::Array(more)) => {
            elements.extend(more.iter().cloned());
        }
        (Kind::Add, Some(Value::Array(elements)), one) => elements.push(one.clone()),
        _ => {
            members.insert(name, value.clone());
        }
    }
}

fn remove(members: &mut Map<String, Value>, name: &str) {
    if let Some(found) = key(members, name) {
        members.remove(&found);
    }
}

/// The complex attribute `name`, created empty when absent.
fn object_at<'a>(
    members: &'a mut Map<String, Value>,
    name: &str,
) -> Result<&'a mut Map<String, Value>, ScimError> {
    let found = key(members, name).unwrap_or_else(|| name.to_owned());
    let slot = members
        .entry(found)
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().ok_or_else(|| {
        ScimError::bad(
            "invalidPath",
            format!("{name} is not a complex attribute: it has no sub-attributes"),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use serde_json::json;

    use super::*;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn user() -> Map<String, Value> {
        match json!({
            "id": "abc",
            "userName": "alice",
            "active": true,
            "name": {"givenName": "Alice"},
            "emails": [{"value": "alice@work.example", "type": "work", "primary": true}]
        }) {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn patched(operations: Value) -> Result<Map<String, Value>, ScimError> {
        let operations = parse(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations
        }))?;
        let mut user = user();
        apply(&operations, &mut user)?;
        Ok(user)
    }

    #[test]
    fn the_deactivations_providers_send() {
        for operations in [
            json!([{"op": "replace", "path": "active", "value": false}]),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
            json!([{"op": "replace", "value": {"active": false}}]),
            json!([{"op": "replace", "value": {"ACTIVE": false}}]),
            json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:active", "value": false}]),
        ] {
            let user = patched(operations.clone()).unwrap();
            assert!(
                crate::scim::resource::boolean(&user["active"]).is_ok_and(|active| !active),
                "{operations}: {user:?}"
            );
            assert_eq!(
                user.keys()
                    .filter(|k| k.eq_ignore_ascii_case("active"))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn attributes_sub_attributes_extensions_and_filters() {
        let user = patched(json!([
            {"op": "add", "path": "displayName", "value": "Alice S"},
            {"op": "replace", "path": "name.familyName", "value": "Smith"},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "a@new.example"},
            {"op": "Add", "path": "emails[type eq \"home\"].value", "value": "a@home.example"},
            {"op": "add", "path": format!("{ENTERPRISE}:department"), "value": "Data"},
            {"op": "replace", "value": {ENTERPRISE: {"costCenter": "42"}, "nickName": "Al"}},
            {"op": "add", "path": "phoneNumbers", "value": [{"value": "1", "type": "work"}]},
            {"op": "add", "path": "phoneNumbers", "value": [{"value": "2", "type": "mobile"}]},
        ]))
        .unwrap();
        assert_eq!(user["displayName"], "Alice S");
        assert_eq!(
            user["name"],
            json!({"givenName": "Alice", "familyName": "Smith"})
        );
        assert_eq!(
            user["emails"],
            json!([
                {"value": "a@new.example", "type": "work", "primary": true},
                {"type": "home", "value": "a@home.example"}
            ])
        );
        assert_eq!(
            user[ENTERPRISE],
            json!({"department": "Data", "costCenter": "42"})
        );
        assert_eq!(user["nickName"], "Al");
        assert_eq!(user["phoneNumbers"].as_array().unwrap().len(), 2);

        let user = patched(json!([
            {"op": "remove", "path": "emails[type eq \"work\"]"},
            {"op": "remove", "path": "name.givenName"},
            {"op": "remove", "path": "nickName"},
            {"op": "remove", "path": format!("{ENTERPRISE}:manager")},
            {"op": "replace", "path": "displayName", "value": null},
        ]))
        .unwrap();
        assert_eq!(user["emails"], json!([]));
        assert_eq!(user["name"], json!({}));
    }

    #[test]
    fn bad_operations_are_refused_before_anything_changes() {
        let cases = [
            (json!({"Operations": []}), "invalidSyntax"),
            (json!({"operations": "x"}), "invalidSyntax"),
            (
                json!({"Operations": [{"op": "move", "path": "a"}]}),
                "invalidSyntax",
            ),
            (json!({"Operations": [{"op": "remove"}]}), "noTarget"),
            (
                json!({"Operations": [{"op": "replace", "value": false}]}),
                "invalidValue",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "a b", "value": 1}]}),
                "invalidPath",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "emails[type sw \"w\"]", "value": {}}]}),
                "invalidPath",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "emails[type eq \"w\"", "value": {}}]}),
                "invalidPath",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": "emails[type eq \"w\"]x", "value": {}}]}),
                "invalidPath",
            ),
            (
                json!({"Operations": [{"op": "replace", "path": 5, "value": {}}]}),
                "invalidPath",
            ),
        ];
        for (body, scim_type) in cases {
            let error = parse(&body).unwrap_err();
            assert_eq!(error.scim_type, Some(scim_type), "{body}");
        }
        let many: Vec<Value> = (0..=MAX_OPERATIONS)
            .map(|_| json!({"op": "replace", "path": "a", "value": 1}))
            .collect();
        assert!(parse(&json!({"Operations": many})).is_err());
    }

    #[test]
    fn what_is_postern_s_cannot_change() {
        for operations in [
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            json!([{"op": "replace", "value": {"meta": {}}}]),
            json!([{"op": "remove", "path": "ID"}]),
        ] {
            let error = patched(operations.clone()).unwrap_err();
            assert_eq!(error.scim_type, Some("mutability"), "{operations}");
        }
        let error =
            patched(json!([{"op": "replace", "path": "userName.x", "value": 1}])).unwrap_err();
        assert_eq!(error.scim_type, Some("invalidPath"));
        let error = patched(json!([{"op": "replace", "path": "name[type eq \"x\"]", "value": {}}]))
            .unwrap_err();
        assert_eq!(error.scim_type, Some("invalidPath"));
    }
}
