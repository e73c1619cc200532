//! Checks of the registered claims (RFC 7519 §4.1) that decide whether a verified token may be
//! used now, by Postern: `iss`, `aud`, `exp`, `nbf` (with the issuer's clock skew) and the
//! parsing of NumericDates. Done here rather than only by `jsonwebtoken` so that each refusal
//! names the time or value at fault. Building the [`crate::Identity`] is `identity.rs`'s job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::limits::MAX_NUMERIC_DATE;

/// What a token must satisfy for one issuer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRules<'a> {
    /// The exact `iss` expected.
    pub issuer: &'a str,
    /// At least one `aud` value must be among these.
    pub audience: &'a [String],
    /// Tolerance for `exp` and `nbf`.
    pub clock_skew: Duration,
}

/// The times of a token that passed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenTimes {
    pub expires_at: SystemTime,
    pub issued_at: Option<SystemTime>,
}

/// Checks `iss`, `aud`, `exp` (required) and `nbf` at time `now`.
pub(crate) fn check(
    claims: &Map<String, Value>,
    rules: ClaimRules<'_>,
    now: SystemTime,
) -> Result<TokenTimes, AuthError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == rules.issuer => {}
        Some(Value::String(iss)) => return Err(AuthError::UntrustedIssuer(iss.clone())),
        None | Some(Value::Null) => return Err(AuthError::MissingClaim("iss".into())),
        Some(_) => return Err(invalid("iss", "is not a string")),
    }
    check_audience(claims, rules.audience)?;

    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let skew = rules.clock_skew.as_secs();
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
    // RFC 7519 §4.1.4: the token must not be accepted on or after `exp`.
    if now >= exp.saturating_add(skew) {
        return Err(AuthError::Expired { at: to_time(exp) });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(skew)
    {
        return Err(AuthError::NotYetValid { at: to_time(nbf) });
    }
    let issued_at = numeric_date(claims, "iat")?.map(to_time);
    Ok(TokenTimes {
        expires_at: to_time(exp),
        issued_at,
    })
}

fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), AuthError> {
    let found: Vec<String> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(values)) => {
            let mut found = Vec::with_capacity(values.len());
            for value in values {
                match value {
                    Value::String(aud) => found.push(aud.clone()),
                    _ => return Err(invalid("aud", "is not a string or an array of strings")),
                }
            }
            found
        }
        None | Some(Value::Null) => return Err(AuthError::MissingClaim("aud".into())),
        Some(_) => return Err(invalid("aud", "is not a string or an array of strings")),
    };
    if found.is_empty() {
        return Err(AuthError::MissingClaim("aud".into()));
    }
    if found.iter().any(|aud| accepted.contains(aud)) {
        Ok(())
    } else {
        Err(AuthError::WrongAudience {
            found,
            accepted: accepted.to_vec(),
        })
    }
}

/// A NumericDate claim (seconds since 1970, possibly fractional: RFC 7519 §2), if present.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, AuthError> {
    const PROBLEM: &str = "is not a time in seconds since 1970 (before year 10000)";
    let number = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(_) => return Err(invalid(name, PROBLEM)),
    };
    let seconds = if let Some(seconds) = number.as_u64() {
        seconds
    } else {
        match number.as_f64() {
            // The cast is exact: finite, non-negative and at most MAX_NUMERIC_DATE.
            Some(seconds)
                if seconds.is_finite() && (0.0..=MAX_NUMERIC_DATE as f64).contains(&seconds) =>
            {
                seconds.floor() as u64
            }
            _ => return Err(invalid(name, PROBLEM)),
        }
    };
    if seconds > MAX_NUMERIC_DATE {
        return Err(invalid(name, PROBLEM));
    }
    Ok(Some(seconds))
}

fn to_time(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn invalid(claim: &str, problem: &'static str) -> AuthError {
    AuthError::InvalidClaim {
        claim: claim.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_795_341_600; // 2026-11-22T10:00:00Z

    fn rules(audience: &[String]) -> ClaimRules<'_> {
        ClaimRules {
            issuer: "https://idp",
            audience,
            clock_skew: Duration::from_secs(30),
        }
    }

    fn run(claims: Value) -> Result<TokenTimes, AuthError> {
        let audience = vec!["postern".to_owned()];
        let Value::Object(claims) = claims else {
            panic!("not an object")
        };
        check(&claims, rules(&audience), to_time(NOW))
    }

    #[test]
    fn accepts_a_current_token() {
        let times =
            run(json!({"iss": "https://idp", "aud": "postern", "exp": NOW + 60, "iat": NOW - 5}))
                .unwrap();
        assert_eq!(times.expires_at, to_time(NOW + 60));
        assert_eq!(times.issued_at, Some(to_time(NOW - 5)));
        // Within the skew on both sides, audience in an array, fractional dates.
        run(json!({"iss": "https://idp", "aud": ["other", "postern"], "exp": NOW - 29, "nbf": NOW + 30})).unwrap();
        run(json!({"iss": "https://idp", "aud": "postern", "exp": (NOW + 10) as f64 + 0.5}))
            .unwrap();
    }

    #[test]
    fn refusals_name_the_fault() {
        let cases = [
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": NOW - 30}),
                "token expired at 2026-11-22T09:59:30Z",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": NOW + 600, "nbf": NOW + 31}),
                "token is not valid before 2026-11-22T10:00:31Z",
            ),
            (
                json!({"iss": "https://idp", "aud": "x", "exp": NOW + 60}),
                "audience 'x' is not 'postern'",
            ),
            (
                json!({"iss": "https://idp", "aud": [], "exp": NOW + 60}),
                "token has no 'aud' claim",
            ),
            (
                json!({"iss": "https://idp", "aud": [1], "exp": NOW + 60}),
                "token claim 'aud' is not a string",
            ),
            (
                json!({"iss": "https://idp", "exp": NOW + 60}),
                "token has no 'aud' claim",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern"}),
                "token has no 'exp' claim",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": null}),
                "token has no 'exp' claim",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": "tomorrow"}),
                "token claim 'exp' is not a time",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": -1}),
                "token claim 'exp' is not a time",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": 1e300}),
                "token claim 'exp' is not a time",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": u64::MAX}),
                "token claim 'exp' is not a time",
            ),
            (
                json!({"iss": "https://idp", "aud": "postern", "exp": NOW + 60, "iat": "x"}),
                "token claim 'iat'",
            ),
            (
                json!({"iss": "https://evil", "aud": "postern", "exp": NOW + 60}),
                "issuer 'https://evil' is not trusted",
            ),
            (
                json!({"aud": "postern", "exp": NOW + 60}),
                "token has no 'iss' claim",
            ),
        ];
        for (claims, message) in cases {
            let err = run(claims.clone()).unwrap_err();
            assert!(err.to_string().starts_with(message), "{claims}: {err}");
        }
    }

    #[test]
    fn several_accepted_audiences_are_listed() {
        let audience = vec!["a".to_owned(), "b".to_owned()];
        let Value::Object(claims) = json!({"iss": "https://idp", "aud": "x", "exp": NOW + 60})
        else {
            unreachable!()
        };
        let err = check(&claims, rules(&audience), to_time(NOW)).unwrap_err();
        assert_eq!(err.to_string(), "audience 'x' is not one of 'a', 'b'");
    }
}
