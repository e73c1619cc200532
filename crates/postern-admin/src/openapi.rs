//! `GET /openapi.json`: the OpenAPI 3.1 document of the admin API, a static asset
//! (`openapi.json`) built into the binary. Served without a token: it describes the API and
//! holds no data.
//!
//! The document is written by hand; the tests below hold it to the router: every route in
//! `ROUTES` is described, nothing else is, and its version is the crate's.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

pub(crate) async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    #[test]
    fn describes_every_route_and_no_other() {
        let document = document();
        let served: BTreeSet<(String, String)> = crate::routes()
            .map(|(method, path)| (method.to_ascii_lowercase(), path.to_owned()))
            .collect();
        let mut described = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                described.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(served, described);
    }

    #[test]
    fn every_reference_resolves_and_the_version_is_the_crates() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        let mut references = Vec::new();
        collect_references(&document, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            assert!(document.pointer(pointer).is_some(), "{reference} resolves");
        }
        // Every operation says how it fails in the shape every error has.
        assert!(
            document
                .pointer("/components/schemas/Error/required")
                .is_some_and(|r| r == &serde_json::json!(["error"]))
        );
    }

    fn collect_references(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    out.push(reference.clone());
                }
                map.values().for_each(|v| collect_references(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
            _ => {}
        }
    }
}
