//! The `filter` query parameter of a user listing (RFC 7644 section 3.4.2.2), in the form
//! identity providers send before creating a user: `userName eq "alice@example.com"`,
//! `externalId eq "00u1"` or `id eq "…"`. Attribute names and the operator are matched without
//! regard to case; the value is a JSON string. Anything else is refused with `invalidFilter`,
//! saying what Postern understands.

use postern_store::ScimUserFilter;

use super::ScimError;
use super::resource::USER_SCHEMA;

/// Longest filter read.
const MAX_FILTER_BYTES: usize = 4096;

/// What a refusal says Postern understands.
const UNDERSTOOD: &str =
    "Postern filters users by userName eq \"…\", externalId eq \"…\" or id eq \"…\" only";

/// Parses a user filter.
pub(super) fn parse(text: &str) -> Result<ScimUserFilter, ScimError> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(invalid(format!(
            "the filter is longer than {MAX_FILTER_BYTES} bytes"
        )));
    }
    let (attribute, value) =
        comparison(text).ok_or_else(|| invalid(format!("cannot read {text:?}: {UNDERSTOOD}")))?;
    let attribute = strip_core_schema(attribute);
    match attribute.to_ascii_lowercase().as_str() {
        "username" => Ok(ScimUserFilter::UserName(value)),
        "externalid" => Ok(ScimUserFilter::ExternalId(value)),
        "id" => Ok(ScimUserFilter::Id(value)),
        _ => Err(invalid(format!(
            "cannot filter on {attribute:?}: {UNDERSTOOD}"
        ))),
    }
}

/// `attribute eq "value"`: the attribute and the value, `None` for any other shape. Also used
/// for the value filters of PATCH paths (`emails[type eq "work"]`).
pub(super) fn comparison(text: &str) -> Option<(&str, String)> {
    let text = text.trim();
    let (attribute, rest) = text.split_once(char::is_whitespace)?;
    let (operator, value) = rest.trim_start().split_once(char::is_whitespace)?;
    if !operator.eq_ignore_ascii_case("eq") || attribute.is_empty() {
        return None;
    }
    // A JSON string and nothing after it: `"a" and …` does not parse.
    let value: String = serde_json::from_str(value.trim()).ok()?;
    Some((attribute, value))
}

/// An attribute named with the core User schema's URN (`urn:…:core:2.0:User:userName`) is the
/// attribute itself.
pub(super) fn strip_core_schema(attribute: &str) -> &str {
    attribute
        .get(..USER_SCHEMA.len() + 1)
        .filter(|prefix| prefix.eq_ignore_ascii_case(&format!("{USER_SCHEMA}:")))
        .map_or(attribute, |prefix| &attribute[prefix.len()..])
}

fn invalid(detail: String) -> ScimError {
    ScimError::bad("invalidFilter", detail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn equality_on_the_names_providers_use() {
        let cases = [
            (
                r#"userName eq "alice@example.com""#,
                ScimUserFilter::UserName("alice@example.com".into()),
            ),
            (
                r#"  USERNAME  EQ  "a \"quoted\" name"  "#,
                ScimUserFilter::UserName("a \"quoted\" name".into()),
            ),
            (
                r#"externalId eq "00u1""#,
                ScimUserFilter::ExternalId("00u1".into()),
            ),
            (r#"id eq "abc""#, ScimUserFilter::Id("abc".into())),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob""#,
                ScimUserFilter::UserName("bob".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn other_filters_are_refused() {
        for text in [
            "",
            "userName",
            r#"userName sw "a""#,
            r#"userName eq "a" and active eq true"#,
            r#"userName eq "a" or userName eq "b""#,
            "userName eq alice",
            "userName eq 5",
            r#"emails.value eq "a@example.com""#,
            r#"displayName eq "Alice""#,
            r#"userName eq "unterminated"#,
            "userName eq \"ok\" \u{0}",
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.scim_type, Some("invalidFilter"), "{text}");
        }
        assert!(parse(&format!("userName eq \"{}\"", "a".repeat(5000))).is_err());
    }
}
