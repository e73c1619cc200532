//! Reading a compact JWS *before* it is verified: its size, its shape, the header's `alg` and
//! `kid`, and the payload (from which only `iss` is used, to pick the issuer whose keys then
//! verify everything). Nothing read here is trusted until [`crate::Verifier`] has checked the
//! signature over the very same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::limits::MAX_TOKEN_BYTES;

/// A token split into its parts, header and payload decoded, signature not yet checked.
#[derive(Debug)]
pub(crate) struct UnverifiedToken {
    /// The header's `alg`, as written (`none` included: refusing it is the issuer's business, so
    /// the message can name the issuer).
    pub alg: String,
    /// The header's `kid`, when present.
    pub kid: Option<String>,
    /// The header's `typ`, when present (a logout token says `logout+jwt`).
    pub typ: Option<String>,
    /// The payload. Unverified: use only `iss`, and only to choose the issuer.
    pub claims: Map<String, Value>,
}

impl UnverifiedToken {
    /// Splits and decodes `token`, refusing anything that is not a compact JWS of JSON objects
    /// no larger than [`MAX_TOKEN_BYTES`].
    pub fn parse(token: &str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        if token.is_empty() {
            return Err(AuthError::malformed(
                "it is empty; send the token as the password",
            ));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, _signature] = parts.as_slice() else {
            return Err(AuthError::malformed(match parts.len() {
                5 => "encrypted tokens (JWE) are not supported; send a signed JWT",
                _ => "expected three base64url parts separated by '.'",
            }));
        };
        let header = decode_object(header, "header")?;
        let claims = decode_object(payload, "payload")?;

        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            Some(_) => return Err(AuthError::malformed("header 'alg' is not a string")),
            None => return Err(AuthError::malformed("header has no 'alg'")),
        };
        let kid = match header.get("kid") {
            Some(Value::String(kid)) => Some(kid.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(AuthError::malformed("header 'kid' is not a string")),
        };
        let typ = match header.get("typ") {
            Some(Value::String(typ)) => Some(typ.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(AuthError::malformed("header 'typ' is not a string")),
        };
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood or the token refused;
        // Postern understands none.
        if header.contains_key("crit") {
            return Err(AuthError::malformed(
                "header lists critical extensions ('crit'), which are not supported",
            ));
        }
        Ok(Self {
            alg,
            kid,
            typ,
            claims,
        })
    }
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        AuthError::malformed(match what {
            "header" => "header is not base64url",
            _ => "payload is not base64url",
        })
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::malformed(match what {
            "header" => "header is not a JSON object",
            _ => "payload is not a JSON object",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn reads_alg_kid_and_claims() {
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(r#"{"iss":"https://idp"}"#)
        );
        let parsed = UnverifiedToken::parse(&token).unwrap();
        assert_eq!(parsed.alg, "RS256");
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["iss"], "https://idp");
    }

    #[test]
    fn refuses_hostile_input() {
        let good_header = b64(r#"{"alg":"RS256"}"#);
        let good_payload = b64(r#"{"iss":"x"}"#);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "it is empty"),
            ("garbage".into(), "three base64url parts"),
            ("a.b".into(), "three base64url parts"),
            ("a.b.c.d".into(), "three base64url parts"),
            ("a.b.c.d.e".into(), "JWE"),
            ("!!!.b.c".into(), "header is not base64url"),
            (
                format!("{}.{good_payload}.c", b64("[1,2]")),
                "header is not a JSON object",
            ),
            (
                format!("{}.{good_payload}.c", b64("{")),
                "header is not a JSON object",
            ),
            (
                format!("{good_header}.{}.c", b64("\"str\"")),
                "payload is not a JSON object",
            ),
            (format!("{good_header}.%%%.c"), "payload is not base64url"),
            (
                format!("{}.{good_payload}.c", b64("{}")),
                "header has no 'alg'",
            ),
            (
                format!("{}.{good_payload}.c", b64(r#"{"alg":1}"#)),
                "'alg' is not a string",
            ),
            (
                format!("{}.{good_payload}.c", b64(r#"{"alg":"RS256","kid":[]}"#)),
                "'kid' is not a string",
            ),
            (
                format!(
                    "{}.{good_payload}.c",
                    b64(r#"{"alg":"RS256","crit":["b64"]}"#)
                ),
                "critical",
            ),
            (
                format!(
                    "{}.{good_payload}.c",
                    b64(&format!("{}1{}", "[".repeat(5000), "]".repeat(5000)))
                ),
                "not a JSON object",
            ),
        ];
        for (token, expected) in cases {
            let err = UnverifiedToken::parse(&token).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{token}: {err}");
            assert!(err.to_string().contains(expected), "{token}: {err}");
        }
    }

    #[test]
    fn refuses_oversized_tokens_before_decoding() {
        let token = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            UnverifiedToken::parse(&token).unwrap_err(),
            AuthError::TooLarge {
                len: MAX_TOKEN_BYTES + 1,
                max: MAX_TOKEN_BYTES
            }
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix and several mutations of a valid-looking token.
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"ES256","kid":"k"}"#),
            b64(r#"{"iss":"i","exp":1}"#)
        );
        for end in 0..token.len() {
            let _ = UnverifiedToken::parse(&token[..end]);
        }
        let mut bytes = token.clone().into_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'.', b'A', b'-', b'_', b'=', 0xff] {
                let saved = bytes[i];
                bytes[i] = replacement;
                let _ = UnverifiedToken::parse(&String::from_utf8_lossy(&bytes));
                bytes[i] = saved;
            }
        }
    }
}
