//! [`Event`]: what a caller records — its own fields over an [`EventBase`] shared by every event
//! of one session (who, from where, which target), held by reference count and encoded once, so
//! that recording an event neither copies nor re-encodes the base field by field. The writer lays
//! the base out first and the event's own fields after it; a field of the event replaces the
//! base's field of the same name.

use std::ops::Deref;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::chain;

/// The fields every event of one session shares, with their encoding in the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventBase {
    pub(crate) fields: Map<String, Value>,
    /// `,"key":value` per field as [`chain`] writes them (secrets masked, reserved names left
    /// out); `None` if they could not be encoded, and then encoded with every event.
    pub(crate) encoded: Option<Vec<u8>>,
}

impl EventBase {
    #[must_use]
    pub fn new(fields: Map<String, Value>) -> Self {
        // Held for a whole session, idle or not: rebuilt from an exact-size iterator, the map
        // has no spare capacity left from growing field by field.
        let fields: Map<String, Value> = fields.into_iter().collect();
        let mut encoded = Vec::new();
        let encoded = chain::write_entries(&mut encoded, fields.iter())
            .ok()
            .map(|()| {
                encoded.shrink_to_fit();
                encoded
            });
        Self { fields, encoded }
    }

    pub(crate) fn encoded(&self) -> Option<&[u8]> {
        self.encoded.as_deref()
    }
}

impl Deref for EventBase {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.fields
    }
}

impl From<Map<String, Value>> for EventBase {
    fn from(fields: Map<String, Value>) -> Self {
        Self::new(fields)
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

    /// A field as the log will show it: the event's own, else the base's.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .get(key)
            .or_else(|| self.base.as_ref().and_then(|base| base.get(key)))
    }
}

impl From<Map<String, Value>> for Event {
    fn from(fields: Map<String, Value>) -> Self {
        Self { base: None, fields }
    }
}
