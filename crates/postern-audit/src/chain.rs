//! The line format of the audit log: encoding one event with its chain fields, hashing a line,
//! and parsing the chain fields back out of a line. No I/O.
//!
//! Shared by the writer (which encodes, and parses the last line when it continues a file) and by
//! `verify` (which parses every line), so both agree on what a valid event is.

use std::sync::Arc;

use aws_lc_rs::digest;
use serde::ser::{SerializeMap as _, SerializeSeq as _};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::Event;

use crate::verify::Problem;

/// The `prev` of the first event of a chain: 64 zeros, the width of a hex SHA-256.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Fields the log writes itself; a caller's value under one of these names is dropped.
const RESERVED_FIELDS: [&str; 3] = ["seq", "time", "prev"];

/// What a redacted value is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// The last event of the chain as it is on disk: what the next event links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainHead {
    /// `seq` of the last event; 0 before the first.
    pub(crate) seq: u64,
    /// Hex SHA-256 of the last line; [`GENESIS_PREV`] before the first.
    pub(crate) hash: String,
}

impl ChainHead {
    pub(crate) fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_PREV.to_owned(),
        }
    }
}

/// The chain fields of one parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainFields {
    pub(crate) seq: u64,
    pub(crate) prev: String,
}

/// A value as the log shows it: masked whole under a secret-looking key, and with the same done
/// to every object inside it.
enum Redacted<'a> {
    Masked,
    Shown(&'a Value),
}

impl<'a> Redacted<'a> {
    fn under(key: &str, value: &'a Value) -> Self {
        if is_secret_key(key) {
            Self::Masked
        } else {
            Self::Shown(value)
        }
    }
}

impl Serialize for Redacted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Masked => serializer.serialize_str(REDACTED),
            Self::Shown(Value::Object(object)) => {
                let mut map = serializer.serialize_map(Some(object.len()))?;
                for (key, value) in object {
                    map.serialize_entry(key, &Redacted::under(key, value))?;
                }
                map.end()
            }
            Self::Shown(Value::Array(items)) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Redacted::Shown(item))?;
                }
                seq.end()
            }
            Self::Shown(other) => other.serialize(serializer),
        }
    }
}

/// Appends one event to `buf` as a complete line (with its trailing newline): the chain fields
/// first, so a reader sees them at a glance, then the session's base, then the event's own
/// fields; reserved fields dropped and secrets masked on the way out (nothing is copied to
/// redact it). On error `buf` may hold part of the line.
pub(crate) fn encode_into(
    buf: &mut Vec<u8>,
    event: &Event,
    seq: u64,
    time: &str,
    prev: &str,
) -> Result<(), serde_json::Error> {
    buf.extend_from_slice(b"{\"seq\":");
    serde_json::to_writer(&mut *buf, &seq)?;
    buf.extend_from_slice(b",\"time\":");
    serde_json::to_writer(&mut *buf, time)?;
    buf.extend_from_slice(b",\"prev\":");
    serde_json::to_writer(&mut *buf, prev)?;
    let fields = &event.fields;
    if let Some(base) = &event.base {
        let overridden = fields.keys().any(|key| base.contains_key(key));
        match base.encoded() {
            // The usual case: written once per session, copied per event.
            Some(encoded) if !overridden => buf.extend_from_slice(encoded),
            _ => base.write(buf, |key| fields.contains_key(key))?,
        }
    }
    write_entries(buf, fields.iter())?;
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// Appends `,"key":value` for each entry but the reserved ones, values masked under
/// secret-looking keys.
pub(crate) fn write_entries<'a>(
    buf: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Result<(), serde_json::Error> {
    for (key, value) in entries {
        write_entry(buf, key, value)?;
    }
    Ok(())
}

/// Appends `,"key":value`, the value masked under a secret-looking key; nothing for a reserved
/// key. Gives where the encoded key (quotes included) ends, if it wrote the entry.
pub(crate) fn write_entry(
    buf: &mut Vec<u8>,
    key: &str,
    value: &Value,
) -> Result<Option<usize>, serde_json::Error> {
    if RESERVED_FIELDS.contains(&key) {
        return Ok(None);
    }
    buf.push(b',');
    serde_json::to_writer(&mut *buf, key)?;
    let key_end = buf.len();
    buf.push(b':');
    serde_json::to_writer(&mut *buf, &Redacted::under(key, value))?;
    Ok(Some(key_end))
}

/// Lowercase hex SHA-256 of a line's exact bytes, newline included.
pub(crate) fn line_hash(line: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, line).as_ref())
}

/// Parses the chain fields of one line (without its newline).
///
/// Returns the `seq` alongside a problem when the line has a usable `seq` but is otherwise
/// invalid, so the caller can name the event.
pub(crate) fn parse(line: &[u8]) -> Result<ChainFields, (Option<u64>, Problem)> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| (None, Problem::NotJson(Arc::new(e))))?;
    let Value::Object(object) = value else {
        return Err((None, Problem::NotObject));
    };
    let seq = object
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|seq| *seq >= 1)
        .ok_or((None, Problem::BadField("seq")))?;
    let prev = object
        .get("prev")
        .and_then(Value::as_str)
        .filter(|prev| is_hex_sha256(prev))
        .ok_or((Some(seq), Problem::BadField("prev")))?;
    if !object.get("time").is_some_and(Value::is_string) {
        return Err((Some(seq), Problem::BadField("time")));
    }
    Ok(ChainFields {
        seq,
        prev: prev.to_owned(),
    })
}

fn is_hex_sha256(s: &str) -> bool {
    s.len() == GENESIS_PREV.len()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a field name says its value is a credential. Deliberately broad: a false positive
/// costs a redacted field, a false negative leaks a secret into a file kept for years.
fn is_secret_key(key: &str) -> bool {
    // Every field of every event passes here: compared in place, without a lowercased copy.
    let key = key.as_bytes();
    let contains = |word: &[u8]| {
        key.windows(word.len())
            .any(|window| window.eq_ignore_ascii_case(word))
    };
    let ends_with = |word: &[u8]| {
        key.len() >= word.len() && key[key.len() - word.len()..].eq_ignore_ascii_case(word)
    };
    [
        b"password".as_slice(),
        b"passwd",
        b"secret",
        b"credential",
        b"private_key",
    ]
    .into_iter()
    .any(contains)
        || key.eq_ignore_ascii_case(b"token")
        || ends_with(b"_token")
        || ends_with(b"-token")
        || key.eq_ignore_ascii_case(b"authorization")
        || key.eq_ignore_ascii_case(b"jwt")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use serde_json::Map;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test input is an object"),
        }
    }

    fn encode(
        event: &Event,
        seq: u64,
        time: &str,
        prev: &str,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = Vec::new();
        encode_into(&mut line, event, seq, time, prev)?;
        Ok(line)
    }

    /// A test event without a base.
    fn map(value: Value) -> Event {
        Event::from(object(value))
    }

    #[test]
    fn encodes_chain_fields_first_and_ends_with_newline() {
        let line = encode(
            &map(json!({"kind": "statement", "sql": "select 1"})),
            7,
            "2025-01-02T03:04:05.000006Z",
            GENESIS_PREV,
        )
        .unwrap();
        let text = String::from_utf8(line).unwrap();
        assert!(text.starts_with(r#"{"seq":7,"time":"2025-01-02T03:04:05.000006Z","prev":"000"#));
        assert!(text.ends_with("\"sql\":\"select 1\"}\n"));
        let fields = parse(text.trim_end().as_bytes()).unwrap();
        assert_eq!(fields.seq, 7);
        assert_eq!(fields.prev, GENESIS_PREV);
    }

    #[test]
    fn caller_cannot_forge_chain_fields() {
        let line = encode(
            &map(json!({"seq": 99, "prev": "x", "time": "then", "kind": "k"})),
            1,
            "now",
            GENESIS_PREV,
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["seq"], 1);
        assert_eq!(value["time"], "now");
        assert_eq!(value["prev"], GENESIS_PREV);
    }

    #[test]
    fn redacts_secrets_at_any_depth() {
        let line = encode(
            &map(json!({
                "password": "hunter2",
                "identity": {"subject": "alice", "access_token": "eyJ", "Client_Secret": "s"},
                "startup": [{"Authorization": "Bearer x"}, {"token": "t"}],
                "token_expires_at": "2030-01-01T00:00:00Z",
                "sql": "select 1",
            })),
            1,
            "now",
            GENESIS_PREV,
        )
        .unwrap();
        let text = String::from_utf8(line).unwrap();
        for secret in ["hunter2", "eyJ", "\"s\"", "Bearer", "\"t\""] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        assert!(text.contains("alice"));
        assert!(text.contains("2030-01-01"), "a timestamp is not a token");
        assert!(text.contains("select 1"));
    }

    /// A session's base is written with every event, under the event's own fields, and
    /// a secret in it is masked like any other.
    #[test]
    fn the_base_comes_first_and_the_events_own_fields_win() {
        let base = std::sync::Arc::new(crate::EventBase::new(object(json!({
            "session": "s1",
            "kind": "base kind",
            "client_secret": "hunter2",
            "seq": 5,
        }))));
        let event = Event::with_base(
            base,
            object(json!({"kind": "statement", "sql": "select 1"})),
        );
        assert_eq!(event.get("session"), Some(json!("s1")));
        assert_eq!(event.get("kind"), Some(json!("statement")));
        let line = encode(&event, 1, "now", GENESIS_PREV).unwrap();
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.starts_with(r#"{"seq":1,"time":"now","prev":"#),
            "{text}"
        );
        assert_eq!(text.matches("\"kind\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"seq\"").count(), 1, "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["session"], "s1");
        assert_eq!(value["kind"], "statement");
        assert_eq!(value["client_secret"], REDACTED);
        assert_eq!(value["seq"], 1);
    }

    /// The base's encoding, made once, gives the line that encoding its fields with every
    /// event gives.
    #[test]
    fn a_pre_encoded_base_writes_the_same_line_as_its_fields() {
        let base_fields = object(json!({
            "session": "s1",
            "client": "127.0.0.1:5000",
            "identity": {"subject": "alice", "access_token": "eyJ"},
            "quote": "it's \"quoted\" \u{2713}\n",
            "prev": "forged",
        }));
        let own = object(json!({"kind": "statement", "sql": "select 1", "rows": 3}));
        let with_base = Event::with_base(
            std::sync::Arc::new(crate::EventBase::new(base_fields.clone())),
            own.clone(),
        );
        let unencoded = Event::with_base(
            std::sync::Arc::new(crate::EventBase::unencoded(base_fields)),
            own,
        );
        let expected = encode(&unencoded, 9, "now", GENESIS_PREV).unwrap();
        let text = String::from_utf8(encode(&with_base, 9, "now", GENESIS_PREV).unwrap()).unwrap();
        assert_eq!(text, String::from_utf8(expected).unwrap());
        assert!(!text.contains("eyJ") && !text.contains("forged"), "{text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["quote"], "it's \"quoted\" \u{2713}\n");
        assert_eq!(value["rows"], 3);
    }

    #[test]
    fn secret_keys_are_told_apart_in_any_case() {
        for key in [
            "PASSWORD",
            "db_Passwd",
            "clientSecret",
            "Credentials",
            "PRIVATE_KEY_PEM",
            "Token",
            "refresh_TOKEN",
            "x-token",
            "AUTHORIZATION",
            "JWT",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "tokens",
            "token_id",
            "jwt_claims",
            "subject",
            "sql",
            "authorized",
            "",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn hash_is_sha256_of_exact_bytes() {
        // `printf 'abc\n' | sha256sum`
        assert_eq!(
            line_hash(b"abc\n"),
            "edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb"
        );
    }

    #[test]
    fn parse_rejects_hostile_lines() {
        let cases: &[(&[u8], Option<u64>, &str)] = &[
            (b"", None, "not valid JSON"),
            (b"{", None, "not valid JSON"),
            (b"[1]", None, "not a JSON object"),
            (b"\xff", None, "not valid JSON"),
            (br#"{"seq":0,"time":"t","prev":"00"}"#, None, "seq"),
            (br#"{"seq":-1,"time":"t","prev":"00"}"#, None, "seq"),
            (br#"{"seq":"1","time":"t","prev":"00"}"#, None, "seq"),
            (br#"{"seq":3,"time":"t","prev":"00"}"#, Some(3), "prev"),
            (
                br#"{"seq":3,"time":"t","prev":"000000000000000000000000000000000000000000000000000000000000000G"}"#,
                Some(3),
                "prev",
            ),
            (
                br#"{"seq":3,"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
                Some(3),
                "time",
            ),
        ];
        for (line, seq, needle) in cases {
            let (got_seq, problem) = parse(line).unwrap_err();
            assert_eq!(got_seq, *seq, "{}", String::from_utf8_lossy(line));
            assert!(
                problem.to_string().contains(needle),
                "{problem} should mention {needle}"
            );
        }
    }
}
