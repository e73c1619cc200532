//! Policy as data, in Cedar (`docs/ARCHITECTURE.md`, decision 3): whether a verified identity
//! may connect to a target, assume a database role there, and run each statement, per table.
//!
//! Pure: no I/O, no clock, no async. The caller passes the time and the client's address in a
//! [`RequestContext`], the policy texts in [`PolicySource`]s; the engine decides.
//!
//! # Layout
//!
//! - `schema.rs`: the built-in Cedar schema (`schema/postern.cedarschema`) and the names used
//!   to speak to it.
//! - `load.rs`: parsing, `@id`s, strict validation, errors with `file:line:column`.
//! - `rules.rs`: configured role rules as generated `assume` permits.
//! - `entities.rs`: the principal from an `Identity`, resources from targets and tables, and
//!   the per-session cache of entity stores ([`SessionPolicy`]).
//! - `context.rs`: [`RequestContext`] and the Cedar context record.
//! - `engine.rs`: [`PolicyEngine`], and how a statement becomes requests.
//! - `decision.rs`: [`Decision`] and the messages a client sees.
//! - `approval.rs`: what an `@approval(...)` annotation asks for ([`ApprovalSpec`]).
//! - `explain.rs`: the dry run behind `postern policy explain`.
//!
//! # Using it
//!
//! ```text
//! let engine = PolicyEngine::load(&files, &role_rules)?;        // at start and on reload
//! let session = engine.session(&identity);                     // once per client session
//! session.authorize_role(&engine, &ctx, target, role)?;        // at startup
//! match session.decide_analysis(&engine, &ctx, &analysis) {    // for every Query / Parse
//!     Decision::Allow { .. } => forward,
//!     Decision::Deny { message, .. } => refuse with 42501 and `message`,
//! }
//! ```

mod approval;
mod context;
mod decision;
mod engine;
mod entities;
mod explain;
mod load;
mod memo;
mod recent;
mod rules;
mod schema;

#[cfg(test)]
mod tests;

pub use approval::{ApprovalSpec, DEFAULT_GRANT_TTL, MAX_APPROVERS, MAX_GRANT_TTL};
pub use context::{DEFAULT_SCHEMA, RequestContext};
pub use decision::{Action, ApprovalRequirement, Decision, DenyReason, Resource};
pub use engine::{DEFAULT_POLICIES, PolicyEngine, statement_action};
pub use entities::{MAX_CACHED_RESOURCES, SessionPolicy};
pub use explain::{Explanation, RequestExplanation, StatementExplanation};
pub use load::{LoadOptions, Location, MAX_POLICY_ID_LEN, PolicyError, PolicyErrors, PolicySource};
pub use schema::SCHEMA_TEXT;
