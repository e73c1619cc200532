//! What a session computed recently, kept with what it was computed from: the context records
//! and the decisions it reuses while nothing they depend on has changed.
//!
//! Everything is kept only for the [`Moment`] it was computed in: a value of an earlier moment
//! can never match again, and is dropped when the next one is remembered.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use super::context::{Moment, RequestContext};

/// A few values, each with its moment and its key, oldest first.
pub(crate) struct Recent<K, V> {
    entries: Mutex<Vec<(Moment, K, V)>>,
    capacity: usize,
}

impl<K, V: Clone> Recent<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// The value of `moment` whose key `matches`.
    pub(crate) fn find(&self, moment: Moment, matches: impl Fn(&K) -> bool) -> Option<V> {
        self.lock()
            .iter()
            .find(|(at, key, _)| *at == moment && matches(key))
            .map(|(_, _, value)| value.clone())
    }

    /// Keeps `value`, dropping every value of another moment and, when full, the oldest.
    pub(crate) fn remember(&self, moment: Moment, key: K, value: V) {
        let mut entries = self.lock();
        entries.retain(|(at, _, _)| *at == moment);
        if entries.len() >= self.capacity {
            entries.remove(0);
        }
        entries.push((moment, key, value));
    }

    /// How many values are kept, for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Moment, K, V)>> {
        // Nothing panics while the lock is held, so a poisoned lock still guards whole entries.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The parts of a request that both a context record and a decision are made from, besides the
/// moment.
pub(crate) struct RequestKey {
    source_ip: IpAddr,
    target: String,
    role: String,
    application_name: Option<String>,
}

impl RequestKey {
    pub(crate) fn of(ctx: &RequestContext) -> Self {
        Self {
            source_ip: ctx.source_ip,
            target: ctx.target.clone(),
            role: ctx.role.clone(),
            application_name: ctx.application_name.clone(),
        }
    }

    pub(crate) fn matches(&self, ctx: &RequestContext) -> bool {
        self.source_ip == ctx.source_ip
            && self.target == ctx.target
            && self.role == ctx.role
            && self.application_name == ctx.application_name
    }
}
