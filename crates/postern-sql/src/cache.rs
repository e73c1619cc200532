//! The classifier's cache: statements repeat (drivers send the same texts over and over), and
//! parsing is the costly step, so analyses are kept in a bounded LRU keyed by the exact SQL text.
//! Never by fingerprint: texts with the same fingerprint differ in constants, and a constant can
//! be the setting name that makes `set_config` dangerous.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use crate::facts::Analysis;
use crate::limits::analyze_uncached;

/// Texts longer than this are analysed every time rather than cached, so that the cache's memory
/// is bounded by `capacity × MAX_CACHED_SQL_LEN` rather than by what clients send. PostgreSQL
/// itself accepts queries up to its 1 GB message limit (`PQ_LARGE_MESSAGE_LIMIT` in
/// `src/include/libpq/libpq.h`).
pub const MAX_CACHED_SQL_LEN: usize = 64 * 1024;

/// Parses and classifies SQL texts, remembering the most recent analyses.
pub struct Classifier {
    /// Analyses by exact text; `None` when built with capacity 0 (no caching). The lock is held
    /// only to look up and to insert, never while parsing.
    cache: Option<Mutex<LruCache<Box<str>, Arc<Analysis>>>>,
}

impl Classifier {
    /// A classifier remembering up to `capacity` analyses; 0 disables the cache.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    /// The analysis of `sql`, from the cache when this exact text was seen recently. Never
    /// panics: a text the parser rejects yields an analysis with `parse_error` set.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        let Some(cache) = &self.cache else {
            return Arc::new(analyze_uncached(sql));
        };
        if let Some(hit) = lock(cache).get(sql) {
            return Arc::clone(hit);
        }
        let analysis = Arc::new(analyze_uncached(sql));
        if sql.len() <= MAX_CACHED_SQL_LEN {
            lock(cache).put(sql.into(), Arc::clone(&analysis));
        }
        analysis
    }

    /// How many analyses are cached.
    #[must_use]
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, |cache| lock(cache).len())
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("cached", &self.cached())
            .finish()
    }
}

/// The cache holds only complete entries, so a panic elsewhere while it was locked leaves it
/// usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Classifier, MAX_CACHED_SQL_LEN};

    #[test]
    fn cache_is_bounded() {
        let classifier = Classifier::new(3);
        for i in 0..10 {
            classifier.analyze(&format!("SELECT {i}"));
        }
        assert_eq!(classifier.cached(), 3);
    }

    #[test]
    fn cache_is_keyed_by_exact_text() {
        let classifier = Classifier::new(16);
        let first = classifier.analyze("SELECT set_config('application_name', 'x', false)");
        assert!(Arc::ptr_eq(
            &first,
            &classifier.analyze("SELECT set_config('application_name', 'x', false)")
        ));
        // Same fingerprint, different constant: must not share the cached analysis.
        let role = classifier.analyze("SELECT set_config('role', 'x', false)");
        assert_eq!(first.fingerprint, role.fingerprint);
        assert!(!Arc::ptr_eq(&first, &role));
        assert_ne!(first.statements, role.statements);
        // Whitespace and case make a different key too.
        let spaced = classifier.analyze("select set_config('application_name', 'x', false)");
        assert!(!Arc::ptr_eq(&first, &spaced));
        assert_eq!(classifier.cached(), 3);
    }

    #[test]
    fn long_texts_and_zero_capacity_are_not_cached() {
        let classifier = Classifier::new(4);
        let long = format!("SELECT '{}'", "x".repeat(MAX_CACHED_SQL_LEN));
        assert!(classifier.analyze(&long).parse_error.is_none());
        assert_eq!(classifier.cached(), 0);
        let uncached = Classifier::new(0);
        assert_eq!(uncached.analyze("SELECT 1").statements.len(), 1);
        assert_eq!(uncached.cached(), 0);
    }
}
