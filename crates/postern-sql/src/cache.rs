//! The classifier's cache: statements repeat (drivers send the same texts over and over), and
//! parsing is the costly step, so analyses are kept in a bounded LRU keyed by the exact SQL text.
//! Never by fingerprint: texts with the same fingerprint differ in constants, and a constant can
//! be the setting name that makes `set_config` dangerous.
//!
//! Clients that send constants inline (the simple protocol) rarely send one text twice, though.
//! For them there is a second LRU keyed by [shape](crate::shape): the text with its plain
//! constants replaced. It holds only analyses no constant can change: plain `SELECT`, `INSERT`,
//! `UPDATE` and `DELETE` statements that read or write, with no hazard, no state left on the
//! connection and no prepared statement or cursor named, of texts that cannot hold a secret to
//! redact. What such an analysis says (kind, tables, functions, fingerprint) comes from the
//! statement's structure and names, which the shape keeps byte for byte; a text of the same shape
//! gets a copy with its own text. Anything else is parsed.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use crate::facts::{Analysis, StatementKind};
use crate::limits::analyze_uncached;
use crate::redact::may_hold_secret;
use crate::shape::shape;

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
    /// Analyses of plain reads and writes by shape; `None` without caching.
    shapes: Option<Mutex<LruCache<Box<str>, Arc<Analysis>>>>,
    /// Analyses served from `shapes`.
    shape_hits: std::sync::atomic::AtomicU64,
}

impl Classifier {
    /// A classifier remembering up to `capacity` analyses; 0 disables the cache.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            shapes: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            shape_hits: std::sync::atomic::AtomicU64::new(0),
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
        if sql.len() > MAX_CACHED_SQL_LEN {
            return Arc::new(analyze_uncached(sql));
        }
        let shape = if may_hold_secret(sql) {
            None
        } else {
            shape(sql)
        };
        if let (Some(shape), Some(shapes)) = (&shape, &self.shapes) {
            let same_shape = lock(shapes).get(shape.as_str()).cloned();
            if let Some(same_shape) = same_shape {
                self.shape_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A one-off text: kept out of the exact cache, where it would evict texts that
                // do come again.
                return Arc::new(Analysis {
                    statements: same_shape.statements.clone(),
                    parse_error: None,
                    fingerprint: same_shape.fingerprint.clone(),
                    redacted: sql.to_owned(),
                    text: sql.to_owned(),
                });
            }
        }
        let analysis = Arc::new(analyze_uncached(sql));
        lock(cache).put(sql.into(), Arc::clone(&analysis));
        if let (Some(shape), Some(shapes)) = (shape, &self.shapes)
            && constants_cannot_change(&analysis)
        {
            lock(shapes).put(shape.into(), Arc::clone(&analysis));
        }
        analysis
    }

    /// How many analyses were copied from a text of the same shape.
    #[must_use]
    pub fn shape_hits(&self) -> u64 {
        self.shape_hits.load(std::sync::atomic::Ordering::Relaxed)
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

/// Whether no constant of the text can have shaped `analysis` (see the module's comment).
fn constants_cannot_change(analysis: &Analysis) -> bool {
    analysis.parse_error.is_none()
        && !analysis.statements.is_empty()
        && analysis.statements.iter().all(|statement| {
            matches!(statement.kind, StatementKind::Read | StatementKind::Write)
                && matches!(
                    statement.command.as_str(),
                    "SELECT" | "INSERT" | "UPDATE" | "DELETE"
                )
                && statement.hazards.is_empty()
                && statement.session_scoped.is_empty()
                && statement.prepared.is_none()
        })
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
            classifier.analyze(&format!("SELECT * FROM t{i}"));
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

    #[test]
    fn texts_of_one_shape_share_the_analysis_of_plain_reads_and_writes() {
        let classifier = Classifier::new(16);
        let uncached = Classifier::new(0);
        for (first, second) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
            ),
            (
                "UPDATE orders SET amount = amount + 1.5 WHERE customer = 'Ada'",
                "UPDATE orders SET amount = amount + 7 WHERE customer = 'Grace'",
            ),
            (
                "INSERT INTO orders (tenant_id, customer) VALUES ('acme', 'x') RETURNING id",
                "INSERT INTO orders (tenant_id, customer) VALUES ('globex', 'y') RETURNING id",
            ),
            (
                "DELETE FROM orders WHERE id = 3; SELECT nextval('orders_id_seq')",
                "DELETE FROM orders WHERE id = 4; SELECT nextval('orders_id_seq')",
            ),
        ] {
            let hits = classifier.shape_hits();
            classifier.analyze(first);
            let copied = classifier.analyze(second);
            assert_eq!(classifier.shape_hits(), hits + 1, "{second}");
            let parsed = uncached.analyze(second);
            assert_eq!(*copied, *parsed, "{second}");
        }
    }

    #[test]
    fn what_a_constant_can_change_is_always_parsed() {
        let classifier = Classifier::new(16);
        for (first, second) in [
            (
                "SELECT set_config('application_name', 'x', false)",
                "SELECT set_config('role', 'x', false)",
            ),
            (
                "SELECT set_config('app.x', 'x', true)",
                "SELECT set_config('app.x', 'x', false)",
            ),
            (
                "SET standard_conforming_strings = 'on'",
                "SET standard_conforming_strings = 'off'",
            ),
            (
                "EXPLAIN (ANALYZE false) DELETE FROM orders",
                "EXPLAIN (ANALYZE true) DELETE FROM orders",
            ),
            (
                "SELECT * FROM users WHERE password = 'a'",
                "SELECT * FROM users WHERE password = 'b'",
            ),
            ("PREPARE p AS SELECT 1", "PREPARE p AS SELECT 2"),
        ] {
            let hits = classifier.shape_hits();
            classifier.analyze(first);
            let second = classifier.analyze(second);
            assert_eq!(classifier.shape_hits(), hits, "{first} lent its analysis");
            assert_eq!(*second, *Classifier::new(0).analyze(&second.text));
        }
    }
}
