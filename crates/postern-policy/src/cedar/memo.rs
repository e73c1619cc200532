//! The decisions a session made on whole analysed texts, reused while nothing they were made
//! from has changed: the engine, the request (address, target, role, application name, search
//! path), the moment as far as the context record can tell (the second, and the token's age in
//! seconds), and the statements' facts.
//!
//! A session mostly sends a handful of statement shapes, and deciding one costs a Cedar request
//! per resource, each of which evaluates every policy of its action: in a profile of `pgbench -S`
//! that was a tenth of Postern's CPU, while comparing the facts costs next to nothing. Facts are
//! compared in full, never by fingerprint: two texts with one fingerprint may differ in a
//! constant that changes what they do (`set_config('role', …)`).

use postern_sql::{Analysis, StatementFacts};

use super::context::{IdentityFacts, Moment, RequestContext};
use super::decision::Decision;
use super::recent::{Recent, RequestKey};

/// How many decisions a session keeps: more than the statement shapes of a typical workload.
const MEMO_ENTRIES: usize = 16;

pub(crate) struct DecisionMemo(Recent<MemoKey, Decision>);

impl Default for DecisionMemo {
    fn default() -> Self {
        Self(Recent::new(MEMO_ENTRIES))
    }
}

/// What a decision was made from, besides the moment.
struct MemoKey {
    generation: u64,
    request: RequestKey,
    search_path: Vec<String>,
    parse_failed: bool,
    statements: Vec<StatementFacts>,
}

impl MemoKey {
    fn matches(&self, generation: u64, ctx: &RequestContext, analysis: &Analysis) -> bool {
        self.generation == generation
            && self.parse_failed == analysis.parse_error.is_some()
            && self.statements == analysis.statements
            && self.request.matches(ctx)
            && self.search_path == ctx.search_path
    }
}

impl DecisionMemo {
    /// The decision on `analysis` in `ctx` under engine `generation`: the one made before when
    /// nothing it was made from has changed, else `decide()`'s, remembered.
    pub(crate) fn get_or_decide(
        &self,
        generation: u64,
        identity: IdentityFacts,
        ctx: &RequestContext,
        analysis: &Analysis,
        decide: impl FnOnce() -> Decision,
    ) -> Decision {
        let moment = Moment::of(ctx.now, identity);
        if let Some(decision) = self
            .0
            .find(moment, |key| key.matches(generation, ctx, analysis))
        {
            return decision;
        }
        // Decided without the lock held: Cedar may take a while, and another statement of this
        // session may want a remembered decision meanwhile.
        let decision = decide();
        let key = MemoKey {
            generation,
            request: RequestKey::of(ctx),
            search_path: ctx.search_path.clone(),
            parse_failed: analysis.parse_error.is_some(),
            statements: analysis.statements.clone(),
        };
        self.0.remember(moment, key, decision.clone());
        decision
    }

    /// How many decisions are remembered, for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
