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

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use postern_sql::{Analysis, StatementFacts};

use super::context::{IdentityFacts, Moment, RequestContext};
use super::decision::Decision;

/// How many decisions a session keeps: more than the statement shapes of a typical workload.
const MEMO_ENTRIES: usize = 16;

#[derive(Default)]
pub(crate) struct DecisionMemo(Mutex<Vec<Memo>>);

/// One decision and everything it was made from.
struct Memo {
    generation: u64,
    moment: Moment,
    source_ip: IpAddr,
    target: String,
    role: String,
    application_name: Option<String>,
    search_path: Vec<String>,
    parse_failed: bool,
    statements: Vec<StatementFacts>,
    decision: Decision,
}

impl Memo {
    fn matches(
        &self,
        generation: u64,
        moment: Moment,
        ctx: &RequestContext,
        analysis: &Analysis,
    ) -> bool {
        self.generation == generation
            && self.moment == moment
            && self.source_ip == ctx.source_ip
            && self.parse_failed == analysis.parse_error.is_some()
            && self.statements == analysis.statements
            && self.target == ctx.target
            && self.role == ctx.role
            && self.application_name == ctx.application_name
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
        {
            let memos = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(memo) = memos
                .iter()
                .find(|memo| memo.matches(generation, moment, ctx, analysis))
            {
                return memo.decision.clone();
            }
        }
        // Decided without the lock held: Cedar may take a while, and another statement of this
        // session may want a remembered decision meanwhile.
        let decision = decide();
        let mut memos = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Decisions of an earlier moment or engine can never match again.
        memos.retain(|memo| memo.moment == moment && memo.generation == generation);
        if memos.len() >= MEMO_ENTRIES {
            memos.remove(0);
        }
        memos.push(Memo {
            generation,
            moment,
            source_ip: ctx.source_ip,
            target: ctx.target.clone(),
            role: ctx.role.clone(),
            application_name: ctx.application_name.clone(),
            search_path: ctx.search_path.clone(),
            parse_failed: analysis.parse_error.is_some(),
            statements: analysis.statements.clone(),
            decision: decision.clone(),
        });
        decision
    }

    /// How many decisions are remembered, for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
