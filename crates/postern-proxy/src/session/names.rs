//! What each extended-protocol statement and portal name may hold on the server.
//!
//! A Parse, Bind or Close changes a name only if the server runs it, and the server skips every
//! message after an error up to the next Sync. Postern decides an Execute before it knows how the
//! messages sent earlier fared, so applying each Parse/Bind/Close to its map as it is sent would
//! let a pipeline such as `Parse (fails), Close s1, Parse s1 'SELECT 1', Sync, Bind s1, Execute`
//! be decided as `SELECT 1` while the server runs the old `s1`.
//!
//! So each name keeps what the server has *confirmed* (ParseComplete, BindComplete and
//! CloseComplete arrive in the order the messages were sent, one per message that succeeded)
//! and the operations still unanswered. A message is decided with every content the name may
//! have when the server reaches it:
//! - an unanswered operation sent in the same message cycle (no Sync or Query in between) is
//!   certain to have run if this message runs, since a failure would skip this message too;
//! - one from an earlier cycle, not yet answered, may or may not have run: both its result and
//!   what came before it remain possible.
//!
//! After an error the server answers nothing more of the cycle, so when its ReadyForQuery arrives
//! whatever of that cycle is still unanswered did not run. A ReadyForQuery that reports no
//! transaction also ends every portal.
//!
//! Every content a name may hold was allowed when its Parse was decided; deciding each Execute
//! with all of them again is what keeps a policy reload or a time condition, and the audit
//! trail's record of what ran, exact.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use postern_sql::StatementFacts;

use crate::events::StatementRecord;

/// The two namespaces of the extended protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Namespace {
    Statement,
    Portal,
}

/// What a name may hold: any of `records`, or nothing (when `maybe_absent`).
#[derive(Default)]
pub(super) struct Candidates {
    pub records: Vec<Arc<StatementRecord>>,
    pub maybe_absent: bool,
}

impl Candidates {
    fn absent() -> Self {
        Self {
            records: Vec::new(),
            maybe_absent: true,
        }
    }

    fn exactly(records: &[Arc<StatementRecord>]) -> Self {
        Self {
            records: records.to_vec(),
            maybe_absent: records.is_empty(),
        }
    }

    fn include(&mut self, records: &[Arc<StatementRecord>]) {
        if records.is_empty() {
            self.maybe_absent = true;
        }
        for record in records {
            if !self.records.iter().any(|known| known.sql() == record.sql()) {
                self.records.push(Arc::clone(record));
            }
        }
    }

    /// Whether the name may hold a statement other than `sql`.
    pub fn may_hold_other_than(&self, sql: &[&str]) -> bool {
        self.records.iter().any(|r| !sql.contains(&r.sql()))
    }
}

/// A Parse, Bind or Close forwarded and not yet answered.
struct Pending {
    namespace: Namespace,
    name: String,
    /// The message cycle it was sent in (the number of Syncs and Queries before it).
    cycle: u64,
    /// What the name holds once it runs: empty for a Close. A Bind holds every statement its
    /// statement name might have held when it was sent.
    holds: Vec<Arc<StatementRecord>>,
    /// False once a SQL `DECLARE` or `CLOSE` has made Postern forget the portals.
    applies: bool,
}

/// A query a SQL `DECLARE` opened a cursor on.
struct Cursor {
    query: StatementFacts,
    hold: bool,
    /// The message cycle of the `DECLARE`.
    cycle: u64,
}

/// The names of one session.
#[derive(Default)]
pub(super) struct Names {
    statements: HashMap<String, Vec<Arc<StatementRecord>>>,
    portals: HashMap<String, Vec<Arc<StatementRecord>>>,
    pending: VecDeque<Pending>,
    /// Cursors opened by SQL `DECLARE`, with every query declared under the name while it may
    /// be open (a `CLOSE` or a `DECLARE` may fail, and Postern does not follow which): a `FETCH`
    /// is decided again with each, so a reload or a time condition reaches an open cursor.
    /// Forgotten when their transaction ends, unless `WITH HOLD`.
    cursors: HashMap<String, Vec<Cursor>>,
}

impl Names {
    fn confirmed(&self, namespace: Namespace) -> &HashMap<String, Vec<Arc<StatementRecord>>> {
        match namespace {
            Namespace::Statement => &self.statements,
            Namespace::Portal => &self.portals,
        }
    }

    fn confirmed_mut(
        &mut self,
        namespace: Namespace,
    ) -> &mut HashMap<String, Vec<Arc<StatementRecord>>> {
        match namespace {
            Namespace::Statement => &mut self.statements,
            Namespace::Portal => &mut self.portals,
        }
    }

    /// What `name` may hold when the server reaches a message sent in `cycle`.
    pub fn candidates(&self, namespace: Namespace, name: &str, cycle: u64) -> Candidates {
        let mut candidates = match self.confirmed(namespace).get(name) {
            Some(records) => Candidates::exactly(records),
            None => Candidates::absent(),
        };
        for op in self
            .pending
            .iter()
            .filter(|op| op.applies && op.namespace == namespace && op.name == name)
        {
            if op.cycle == cycle {
                candidates = Candidates::exactly(&op.holds);
            } else {
                candidates.include(&op.holds);
            }
        }
        candidates
    }

    /// A Parse (`holds` its statement), Bind (`holds` the statement's candidates) or Close
    /// (`holds` nothing) is forwarded in `cycle`.
    pub fn sent(
        &mut self,
        namespace: Namespace,
        name: &str,
        cycle: u64,
        holds: Vec<Arc<StatementRecord>>,
    ) {
        self.pending.push_back(Pending {
            namespace,
            name: name.to_owned(),
            cycle,
            holds,
            applies: true,
        });
    }

    /// ParseComplete, BindComplete or CloseComplete: the oldest unanswered operation ran.
    pub fn completed(&mut self) {
        let Some(op) = self.pending.pop_front() else {
            return;
        };
        if !op.applies {
            return;
        }
        let map = self.confirmed_mut(op.namespace);
        if op.holds.is_empty() {
            map.remove(&op.name);
        } else {
            map.insert(op.name, op.holds);
        }
    }

    /// A ReadyForQuery: whatever of the finished cycles is still unanswered did not run, and
    /// outside a transaction no portal survives, nor any cursor declared without `WITH HOLD`.
    pub fn cycle_ended(&mut self, finished: impl Fn(u64) -> bool, in_transaction: bool) {
        self.pending.retain(|op| !finished(op.cycle));
        if !in_transaction {
            self.portals.clear();
            self.cursors.retain(|_, queries| {
                queries.retain(|c| c.hold || !finished(c.cycle));
                !queries.is_empty()
            });
        }
    }

    /// The queries the cursor `name` may be open on.
    pub fn cursor_queries(&self, name: &str) -> impl Iterator<Item = &StatementFacts> {
        self.cursors
            .get(name)
            .into_iter()
            .flatten()
            .map(|c| &c.query)
    }

    /// How many queries the cursor `name` is remembered with, and whether `query` is one, and
    /// how many cursor names are remembered.
    pub fn cursor_count(&self, name: &str, query: &StatementFacts) -> (usize, bool, usize) {
        let known = self.cursors.get(name);
        (
            known.map_or(0, Vec::len),
            known.is_some_and(|q| q.iter().any(|c| &c.query == query)),
            self.cursors.len(),
        )
    }

    /// An allowed `DECLARE` in `cycle`.
    pub fn declared(&mut self, name: &str, query: &StatementFacts, hold: bool, cycle: u64) {
        let queries = self.cursors.entry(name.to_owned()).or_default();
        match queries.iter_mut().find(|c| &c.query == query) {
            Some(known) => {
                known.hold |= hold;
                known.cycle = known.cycle.max(cycle);
            }
            None => queries.push(Cursor {
                query: query.clone(),
                hold,
                cycle,
            }),
        }
    }

    /// A SQL `DECLARE` or `CLOSE` made or removed portals: forget every portal, so an Execute
    /// of one is recorded as the `FETCH` it then is.
    pub fn forget_portals(&mut self) {
        self.portals.clear();
        for op in &mut self.pending {
            if op.namespace == Namespace::Portal {
                op.applies = false;
            }
        }
    }

    /// Unanswered operations (for tests and bounds).
    #[cfg(test)]
    fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_sql::Classifier;

    fn record(classifier: &Classifier, sql: &str) -> Arc<StatementRecord> {
        Arc::new(StatementRecord {
            analysis: classifier.analyze(sql),
        })
    }

    fn sqls(candidates: &Candidates) -> Vec<&str> {
        candidates.records.iter().map(|r| r.sql()).collect()
    }

    #[test]
    fn an_operation_in_the_same_cycle_is_certain() {
        let classifier = Classifier::new(16);
        let mut names = Names::default();
        names.sent(
            Namespace::Statement,
            "s1",
            0,
            vec![record(&classifier, "DELETE FROM orders")],
        );
        names.completed();
        names.sent(Namespace::Statement, "s1", 1, Vec::new());
        names.sent(
            Namespace::Statement,
            "s1",
            1,
            vec![record(&classifier, "SELECT 1")],
        );
        let same = names.candidates(Namespace::Statement, "s1", 1);
        assert_eq!(sqls(&same), ["SELECT 1"]);
        assert!(!same.maybe_absent);
    }

    #[test]
    fn an_unanswered_operation_of_an_earlier_cycle_keeps_the_old_content_possible() {
        let classifier = Classifier::new(16);
        let mut names = Names::default();
        names.sent(
            Namespace::Statement,
            "s1",
            0,
            vec![record(&classifier, "DELETE FROM orders")],
        );
        names.completed();
        names.sent(Namespace::Statement, "s1", 1, Vec::new());
        names.sent(
            Namespace::Statement,
            "s1",
            1,
            vec![record(&classifier, "SELECT 1")],
        );
        let later = names.candidates(Namespace::Statement, "s1", 2);
        assert_eq!(sqls(&later), ["DELETE FROM orders", "SELECT 1"]);
        assert!(later.maybe_absent);

        // The server skipped both (an error earlier in cycle 1), and then ended the cycle.
        names.cycle_ended(|cycle| cycle < 2, false);
        assert_eq!(names.pending_len(), 0);
        let after = names.candidates(Namespace::Statement, "s1", 2);
        assert_eq!(sqls(&after), ["DELETE FROM orders"]);
    }

    #[test]
    fn replies_settle_names_in_order() {
        let classifier = Classifier::new(16);
        let mut names = Names::default();
        names.sent(
            Namespace::Statement,
            "s1",
            0,
            vec![record(&classifier, "DELETE FROM orders")],
        );
        names.sent(Namespace::Statement, "s1", 1, Vec::new());
        names.sent(
            Namespace::Statement,
            "s1",
            1,
            vec![record(&classifier, "SELECT 1")],
        );
        names.completed();
        names.cycle_ended(|cycle| cycle < 1, false);
        names.completed();
        names.completed();
        names.cycle_ended(|cycle| cycle < 2, false);
        let settled = names.candidates(Namespace::Statement, "s1", 2);
        assert_eq!(sqls(&settled), ["SELECT 1"]);
        assert!(!settled.maybe_absent);
    }

    #[test]
    fn portals_end_with_the_transaction_and_on_sql_cursor_changes() {
        let classifier = Classifier::new(16);
        let mut names = Names::default();
        let select = record(&classifier, "SELECT 1");
        names.sent(Namespace::Portal, "p", 0, vec![Arc::clone(&select)]);
        names.completed();
        names.cycle_ended(|cycle| cycle < 1, true);
        assert_eq!(
            sqls(&names.candidates(Namespace::Portal, "p", 1)),
            ["SELECT 1"]
        );
        names.cycle_ended(|cycle| cycle < 2, false);
        assert!(
            names
                .candidates(Namespace::Portal, "p", 2)
                .records
                .is_empty()
        );

        names.sent(Namespace::Portal, "p", 2, vec![select]);
        names.forget_portals();
        names.completed();
        assert!(
            names
                .candidates(Namespace::Portal, "p", 3)
                .records
                .is_empty()
        );
    }
}
