//! [`Event`]: what a caller records — its own fields over an [`EventBase`] shared by every event
//! of one session (who, from where, which target), held by reference count and encoded once, so
//! that recording an event neither copies nor re-encodes the base field by field. The writer lays
//! the base out first and the event's own fields after it; a field of the event replaces the
//! base's field of the same name.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::chain;

/// The fields every event of one session shares, kept as the log writes them.
///
/// Every session holds one for its whole life, idle or not, so only the encoding is kept (a map
/// of the fields was most of a kilobyte per session), with where each entry starts: an event's
/// own field can still replace the base's of the same name, and the fields can be read back.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBase {
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq)]
enum Repr {
    /// `,"key":value` per field as [`chain`] writes them (secrets masked, reserved names left
    /// out), and per entry where it starts and where its encoded key (quotes included) ends.
    Encoded {
        bytes: Box<[u8]>,
        entries: Box<[(u32, u32)]>,
    },
    /// Fields that could not be encoded: encoded with every event (which then fails to be
    /// recorded, as it would have without a base).
    Fields(Map<String, Value>),
}

impl EventBase {
    #[must_use]
    pub fn new(fields: Map<String, Value>) -> Self {
        let mut bytes = Vec::new();
        let mut entries = Vec::with_capacity(fields.len());
        for (key, value) in &fields {
            let start = bytes.len();
            match chain::write_entry(&mut bytes, key, value) {
                Ok(Some(key_end)) => match (u32::try_from(start), u32::try_from(key_end)) {
                    (Ok(start), Ok(key_end)) => entries.push((start, key_end)),
                    _ => return Self::unencoded(fields),
                },
                Ok(None) => {}
                Err(_) => return Self::unencoded(fields),
            }
        }
        Self {
            repr: Repr::Encoded {
                bytes: bytes.into_boxed_slice(),
                entries: entries.into_boxed_slice(),
            },
        }
    }

    /// A base kept as its fields, as one that cannot be encoded is.
    pub(crate) fn unencoded(fields: Map<String, Value>) -> Self {
        Self {
            repr: Repr::Fields(fields),
        }
    }

    /// The fields as the log writes them (secrets masked, reserved names left out), for an
    /// event built on them as a whole (an anomaly, an approval request, a session's end).
    #[must_use]
    pub fn fields(&self) -> Map<String, Value> {
        match &self.repr {
            Repr::Fields(fields) => fields.clone(),
            Repr::Encoded { entries, .. } => (0..entries.len())
                .filter_map(|index| Some((self.key(index)?.into_owned(), self.value(index)?)))
                .collect(),
        }
    }

    /// One field, as the log writes it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Value> {
        match &self.repr {
            Repr::Fields(fields) => fields.get(key).cloned(),
            Repr::Encoded { entries, .. } => (0..entries.len())
                .find(|&index| self.key_is(index, key))
                .and_then(|index| self.value(index)),
        }
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        match &self.repr {
            Repr::Fields(fields) => fields.contains_key(key),
            Repr::Encoded { entries, .. } => {
                (0..entries.len()).any(|index| self.key_is(index, key))
            }
        }
    }

    /// Appends the base's entries, but those whose key `skip` names.
    pub(crate) fn write(
        &self,
        buf: &mut Vec<u8>,
        skip: impl Fn(&str) -> bool,
    ) -> Result<(), serde_json::Error> {
        match &self.repr {
            Repr::Fields(fields) => {
                chain::write_entries(buf, fields.iter().filter(|(key, _)| !skip(key)))
            }
            Repr::Encoded { bytes, entries } => {
                for index in 0..entries.len() {
                    if self.key(index).is_some_and(|key| !skip(&key)) {
                        buf.extend_from_slice(&bytes[self.entry_range(index)]);
                    }
                }
                Ok(())
            }
        }
    }

    /// The whole encoding, when there is one: what most events copy.
    pub(crate) fn encoded(&self) -> Option<&[u8]> {
        match &self.repr {
            Repr::Encoded { bytes, .. } => Some(bytes),
            Repr::Fields(_) => None,
        }
    }

    /// Entry `index` of an encoded base: `,"key":value`.
    fn entry_range(&self, index: usize) -> std::ops::Range<usize> {
        let Repr::Encoded { bytes, entries } = &self.repr else {
            return 0..0;
        };
        let start = entries[index].0 as usize;
        let end = entries
            .get(index + 1)
            .map_or(bytes.len(), |&(next, _)| next as usize);
        start..end
    }

    /// The key of entry `index` as JSON, with and without its quotes: as it is unless it needed
    /// escapes.
    fn raw_key(&self, index: usize) -> Option<(&[u8], &[u8])> {
        let Repr::Encoded { bytes, entries } = &self.repr else {
            return None;
        };
        let (start, key_end) = entries[index];
        // After the comma.
        let quoted = bytes.get(start as usize + 1..key_end as usize)?;
        let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
        Some((quoted, inner))
    }

    fn key(&self, index: usize) -> Option<Cow<'_, str>> {
        let (quoted, inner) = self.raw_key(index)?;
        if inner.contains(&b'\\') {
            serde_json::from_slice::<String>(quoted)
                .ok()
                .map(Cow::Owned)
        } else {
            std::str::from_utf8(inner).ok().map(Cow::Borrowed)
        }
    }

    /// Whether entry `index` is `key`: compared as bytes, without decoding, unless the key was
    /// escaped. Asked for every own field of every event, against every entry of the base.
    fn key_is(&self, index: usize, key: &str) -> bool {
        match self.raw_key(index) {
            Some((_, inner)) if !inner.contains(&b'\\') => inner == key.as_bytes(),
            Some(_) => self.key(index).is_some_and(|k| k == key),
            None => false,
        }
    }

    fn value(&self, index: usize) -> Option<Value> {
        let Repr::Encoded { bytes, entries } = &self.repr else {
            return None;
        };
        let range = self.entry_range(index);
        // After the key, its colon.
        let value = bytes.get(entries[index].1 as usize + 1..range.end)?;
        serde_json::from_slice(value).ok()
    }
}

/// One event to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub(crate) base: Option<Arc<EventBase>>,
    pub(crate) fields: Map<String, Value>,
}

impl Event {
    /// `fields` over `base`.
    #[must_use]
    pub fn with_base(base: Arc<EventBase>, fields: Map<String, Value>) -> Self {
        Self {
            base: Some(base),
            fields,
        }
    }

    /// Sets one of the event's own fields.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        self.fields.insert(key.into(), value);
    }

    /// A field: the event's own, else the base's as the log writes it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Value> {
        match self.fields.get(key) {
            Some(value) => Some(value.clone()),
            None => self.base.as_ref().and_then(|base| base.get(key)),
        }
    }
}

impl From<Map<String, Value>> for Event {
    fn from(fields: Map<String, Value>) -> Self {
        Self { base: None, fields }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn awkward_fields() -> Map<String, Value> {
        object(json!({
            "session": "s1",
            "quote": "it's \"quoted\" \u{2713}\n,\"session\":",
            "we\"ird\\key": [1, {"nested": true}],
            "identity": {"subject": "alice", "groups": ["a", "b"]},
            "port": 5432,
            "tls": false,
            "none": null,
            "client_secret": "hunter2",
            "time": "forged",
        }))
    }

    /// Kept only as its encoding, a base still answers for each field as the log writes it:
    /// secrets masked, reserved names left out, keys and values that needed escapes intact.
    #[test]
    fn an_encoded_base_gives_back_its_fields_as_written() {
        let base = EventBase::new(awkward_fields());
        assert!(base.encoded().is_some());
        let mut expected = awkward_fields();
        expected.insert("client_secret".into(), json!(crate::chain::REDACTED));
        expected.remove("time");
        assert_eq!(base.fields(), expected);
        for (key, value) in &expected {
            assert!(base.contains_key(key), "{key}");
            assert_eq!(base.get(key).as_ref(), Some(value), "{key}");
        }
        // The last: an escaped key's encoded form, which is not the key.
        for absent in [
            "time",
            "nested",
            "subject",
            "sess",
            "ion",
            "",
            "kind",
            r#"we\"ird\\key"#,
        ] {
            assert!(!base.contains_key(absent), "{absent}");
            assert_eq!(base.get(absent), None, "{absent}");
        }
    }

    /// Leaving out the fields an event replaces gives exactly what encoding the rest gives.
    #[test]
    fn an_encoded_base_leaves_out_the_replaced_fields_exactly() {
        let encoded = EventBase::new(awkward_fields());
        let unencoded = EventBase::unencoded(awkward_fields());
        for replaced in [
            &["session"][..],
            &["we\"ird\\key", "port"],
            &["none"],
            &["client_secret", "quote", "identity"],
            &[],
        ] {
            let skip = |key: &str| replaced.contains(&key);
            let (mut from_encoding, mut from_fields) = (Vec::new(), Vec::new());
            encoded.write(&mut from_encoding, skip).unwrap();
            unencoded.write(&mut from_fields, skip).unwrap();
            assert_eq!(
                String::from_utf8(from_encoding).unwrap(),
                String::from_utf8(from_fields).unwrap(),
                "{replaced:?}"
            );
        }
    }
}
