//! Signing webhook bodies, and checking a signature the way a receiver should.
//!
//! The scheme is Slack's request signing (and Stripe's), with Postern's header names: the
//! signed string is `"<timestamp>.<body>"`, so a captured request cannot be replayed later with a
//! fresh timestamp, and the receiver refuses timestamps outside its tolerance. See the crate
//! documentation for the receiver's side.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;

/// Unix seconds at which the attempt was signed. Every attempt is signed afresh, so a retry
/// after a long backoff still falls within the receiver's tolerance.
pub const TIMESTAMP_HEADER: &str = "x-postern-timestamp";
/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-postern-signature";
/// A random id per notification, the same on every retry, so a receiver can drop duplicates
/// (an attempt can succeed at the receiver yet time out at Postern).
pub const DELIVERY_HEADER: &str = "x-postern-delivery";

/// The version tag of the scheme; a future scheme gets another, and receivers can accept both
/// while they migrate.
const VERSION_PREFIX: &str = "v1=";

/// Most comma-separated signatures [`verify_signature`] looks at: a header may carry one per
/// secret during a rotation, and never needs many.
const MAX_SIGNATURES: usize = 8;

/// An HMAC-SHA256 key for `secret`.
pub(crate) fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// The `X-Postern-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub(crate) fn sign(key: &hmac::Key, timestamp: u64, body: &[u8]) -> String {
    let mut context = hmac::Context::with_key(key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("{VERSION_PREFIX}{}", hex::encode(context.sign()))
}

/// Whether `signature_header` (the `X-Postern-Signature` value) is a valid signature of `body`
/// sent at `timestamp` (the `X-Postern-Timestamp` value) under `secret`, and `timestamp` is
/// within `tolerance` of `now` in either direction.
///
/// `body` must be the exact bytes received, before any JSON parsing. The tags are compared in
/// constant time. The header may hold several comma-separated `v1=` signatures (one per secret
/// while a secret is rotated); any one valid signature is enough. A `tolerance` of
/// [`crate::limits::DEFAULT_SIGNATURE_TOLERANCE`] (five minutes) is what Slack uses.
pub fn verify_signature(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
    now: SystemTime,
    tolerance: Duration,
) -> bool {
    // Digits only: `u64::from_str` would also take a leading `+`.
    if timestamp.is_empty() || !timestamp.bytes().all(|byte| byte.is_ascii_digit()) {
        return false;
    }
    let Ok(seconds) = timestamp.parse::<u64>() else {
        return false;
    };
    let Some(sent) = UNIX_EPOCH.checked_add(Duration::from_secs(seconds)) else {
        return false;
    };
    let skew = now
        .duration_since(sent)
        .or_else(|_| sent.duration_since(now))
        .unwrap_or(Duration::MAX);
    if skew > tolerance {
        return false;
    }
    let key = key(secret);
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    signature_header
        .split(',')
        .take(MAX_SIGNATURES)
        .filter_map(|part| part.trim().strip_prefix(VERSION_PREFIX))
        .filter_map(|tag| hex::decode(tag).ok())
        .any(|tag| hmac::verify(&key, &signed, &tag).is_ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const BODY: &[u8] = br#"{"text":"hello"}"#;
    const SENT: u64 = 1_700_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn check(timestamp: &str, body: &[u8], header: &str, now: u64) -> bool {
        verify_signature(
            SECRET,
            timestamp,
            body,
            header,
            at(now),
            Duration::from_secs(300),
        )
    }

    #[test]
    fn matches_an_independent_computation() {
        // HMAC-SHA256 of "1700000000.{\"text\":\"hello\"}", computed with aws-lc's one-shot API.
        let expected = hmac::sign(&key(SECRET), b"1700000000.{\"text\":\"hello\"}");
        assert_eq!(
            sign(&key(SECRET), SENT, BODY),
            format!("v1={}", hex::encode(expected))
        );
    }

    #[test]
    fn accepts_and_refuses() {
        let good = sign(&key(SECRET), SENT, BODY);
        let ts = SENT.to_string();
        let other_key = sign(&key(b"another secret of thirty-two bytes"), SENT, BODY);
        // (case, timestamp, body, header, now, accepted)
        type Case<'a> = (&'a str, &'a str, &'a [u8], &'a str, u64, bool);
        let cases: &[Case<'_>] = &[
            ("genuine", &ts, BODY, &good, SENT, true),
            (
                "genuine, 5 minutes late",
                &ts,
                BODY,
                &good,
                SENT + 300,
                true,
            ),
            (
                "genuine, clock 5 minutes behind",
                &ts,
                BODY,
                &good,
                SENT - 300,
                true,
            ),
            ("too old", &ts, BODY, &good, SENT + 301, false),
            ("from the future", &ts, BODY, &good, SENT - 301, false),
            (
                "tampered body",
                &ts,
                br#"{"text":"hellO"}"#,
                &good,
                SENT,
                false,
            ),
            ("timestamp replaced", "1700000001", BODY, &good, SENT, false),
            ("plus sign", "+1700000000", BODY, &good, SENT, false),
            ("empty timestamp", "", BODY, &good, SENT, false),
            (
                "huge timestamp",
                "99999999999999999999999",
                BODY,
                &good,
                SENT,
                false,
            ),
            ("other secret", &ts, BODY, &other_key, SENT, false),
            ("no version", &ts, BODY, &good[3..], SENT, false),
            (
                "other version",
                &ts,
                BODY,
                &good.replace("v1=", "v0="),
                SENT,
                false,
            ),
            ("not hex", &ts, BODY, "v1=zz", SENT, false),
            ("empty header", &ts, BODY, "", SENT, false),
            (
                "truncated tag",
                &ts,
                BODY,
                &good[..good.len() - 2],
                SENT,
                false,
            ),
        ];
        for (name, timestamp, body, header, now, expected) in cases {
            assert_eq!(check(timestamp, body, header, *now), *expected, "{name}");
        }
    }

    #[test]
    fn any_of_several_signatures() {
        let good = sign(&key(SECRET), SENT, BODY);
        let ts = SENT.to_string();
        assert!(check(&ts, BODY, &format!("v1=00ff, {good}"), SENT));
        assert!(!check(&ts, BODY, "v1=00ff, v1=abcd", SENT));
    }
}
