//! [`Event`]: what a caller records — its own fields over a base shared by every event of one
//! session (who, from where, which target), held by reference count so that recording an event
//! never copies the base field by field. The writer lays the base out first and the event's own
//! fields after it; a field of the event replaces the base's field of the same name.

use std::sync::Arc;

use serde_json::{Map, Value};

/// One event to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub(crate) base: Option<Arc<Map<String, Value>>>,
    pub(crate) fields: Map<String, Value>,
}

impl Event {
    /// `fields` over `base`.
    #[must_use]
    pub fn with_base(base: Arc<Map<String, Value>>, fields: Map<String, Value>) -> Self {
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
