//! The policy engine: a validated Cedar policy set and the decisions Postern asks of it.
//!
//! Statements map onto requests as follows (see `docs/ARCHITECTURE.md`, decision 3):
//!
//! - The action is the statement's kind: `read`, `write`, `ddl`, `dcl`, `admin`, `raw`; a
//!   `COPY` whose kind is read (`COPY ... TO STDOUT`) is `copy_out`, one whose kind is write is
//!   `copy_in` (`COPY ... FROM STDIN`; also `COPY (DELETE ... RETURNING) TO STDOUT`, which
//!   the facts do not tell apart, and which `copy_in` covers since it is a write). A `COPY` with a
//!   server file or program is `admin`, as its kind says.
//! - Transaction control (`BEGIN`, `COMMIT`, ...) and session statements (`SET`, `PREPARE`,
//!   cursors, `LISTEN`, ...) are not policy matters and are always allowed: they change nothing
//!   in the database, and the escape guard already refuses the dangerous ones (`SET ROLE`,
//!   `RESET ALL`, ...). The exception is a session statement that names tables, such as
//!   `DECLARE c CURSOR FOR SELECT ... FROM t` or `PREPARE p AS SELECT ...`, or a `SELECT` that
//!   also calls `set_config`: its kind says "session", but it reads those tables, so it is
//!   authorised as `read` on them (the body runs later through `EXECUTE`/`FETCH`, which name
//!   nothing).
//! - One request per table the statement names, as `Table::"schema.name"` (an unqualified name
//!   is one request in each schema it may be in: every schema of the session's `search_path`
//!   other than `$user`, and `pg_catalog` for `pg_*` names); a statement naming no table is one
//!   request on `Target::"<target>"`. Every table gets the statement's action: in
//!   `INSERT INTO a SELECT ... FROM b`, `b` needs `write` too, since the facts do not say which
//!   tables are only read. Stricter than needed, never looser.
//! - Text that does not parse is `raw` on the target (unknown statements are denied unless
//!   policy grants `raw`). An empty text is allowed.
//!
//! A request is allowed when a permit applies and no forbid does, as Cedar decides, with one
//! difference: a policy that fails to evaluate denies the request. Cedar skips it, which for a
//! forbid would mean allowing what it was written to stop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{ActionConstraint, AuthorizationError, Authorizer, Context};
use cedar_policy::{Decision as CedarDecision, PolicyId, PolicySet, Request};
use postern_config::RoleRule;
use postern_identity::Identity;
use postern_sql::{Analysis, StatementFacts, StatementKind};

use super::context::{DEFAULT_SCHEMA, RequestContext};
use super::decision::{
    Action, ApprovalRequirement, Asker, Decision, DenyReason, Resource, deny_message,
};
use super::entities::{SessionPolicy, qualify_table, resource_uid};
use super::explain::{Explanation, RequestExplanation, StatementExplanation};
use super::load::{self, Author, LoadOptions, PolicyError, PolicyErrors, PolicySource};
use super::rules::role_rule_sources;
use super::schema::{SCHEMA_ORIGIN, Vocabulary};
use crate::roles::RoleRefusal;

/// Numbers each loaded engine: see [`PolicyEngine::generation`].
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Postern's shipped statement policies (`policies/defaults.cedar`).
pub const DEFAULT_POLICIES: &str = include_str!("../../policies/defaults.cedar");

/// Where the shipped defaults are reported from.
const DEFAULTS_ORIGIN: &str = "postern defaults (policies/defaults.cedar)";

/// A validated policy set, ready to decide. Pure (no I/O, no clock, no async) and cheap to
/// share: keep it in an `Arc` (or `ArcSwap`, replaced whole on reload) and call it from every
/// session. For statements, build a [`SessionPolicy`] once per session with
/// [`PolicyEngine::session`] and decide through it: the engine's methods that take an
/// [`Identity`] rebuild the principal's entities on every call.
pub struct PolicyEngine {
    /// The schema, its names and action entities.
    vocabulary: Vocabulary,
    /// Per action (by [`Action::index`]), the policies whose action scope can match it. Cedar
    /// evaluates every policy of a set for every request, and a policy whose scope names only
    /// other actions evaluates to false without looking at its conditions (the scope comes
    /// first in the conjunction), so it can neither apply nor fail: leaving it out changes no
    /// decision and keeps each request to the few policies that matter (role rules never weigh
    /// on statements).
    by_action: Vec<PolicySet>,
    /// Tells engines apart, so that a session's filtered copy of [`Self::by_action`] is rebuilt
    /// when it is first used with a reloaded engine.
    generation: u64,
    /// Cedar's evaluator; stateless, kept to avoid building one per request.
    authorizer: Authorizer,
    /// Load order by id: the "first" of several deciding policies is the earliest loaded.
    order: std::collections::HashMap<String, usize>,
    /// `@approval` annotations of permits, by id.
    approvals: std::collections::HashMap<String, super::approval::ApprovalSpec>,
    /// Some policy mentions `context.mfa` (see [`PolicyEngine::asks_for_mfa`]).
    asks_for_mfa: bool,
    /// `file:line:column` of each policy, by id.
    origins: std::collections::HashMap<String, String>,
    /// Validator warnings, for `postern policy check`.
    warnings: Vec<PolicyError>,
    /// Per target, the roles its role rules name: the candidates of [`Self::allowed_roles`].
    role_candidates: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.order.len())
            .field("targets", &self.role_candidates.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Loads the role rules of every target, the shipped defaults and `sources`, and validates
    /// them all against the schema. See [`PolicyEngine::load_with`].
    ///
    /// # Errors
    ///
    /// Every problem found, each with its origin and line: see [`PolicyEngine::load_with`].
    pub fn load(
        sources: &[PolicySource],
        targets: &BTreeMap<String, Vec<RoleRule>>,
    ) -> Result<Self, PolicyErrors> {
        Self::load_with(sources, targets, LoadOptions::default())
    }

    /// Builds the policy set: one `assume` permit per role rule of each target (ids
    /// `role-rule-<target>-<n>`), the shipped defaults unless `options` turn them off, then
    /// `sources` in order. Every policy needs an `@id("...")` annotation, unique across all of
    /// them; it is the policy's name in decisions, messages and audit events.
    ///
    /// # Errors
    ///
    /// [`PolicyErrors`] listing every problem: syntax errors, missing or repeated `@id`s,
    /// templates, `@approval` on a forbid, and everything Cedar's strict validation finds (a
    /// misspelt attribute, an action or entity type the schema does not have, a type mismatch,
    /// a tag read without `hasTag`), each with its origin and `line:column`.
    pub fn load_with(
        sources: &[PolicySource],
        targets: &BTreeMap<String, Vec<RoleRule>>,
        options: LoadOptions,
    ) -> Result<Self, PolicyErrors> {
        let vocabulary = Vocabulary::load().map_err(|message| PolicyErrors {
            errors: vec![PolicyError {
                origin: SCHEMA_ORIGIN.to_owned(),
                location: None,
                policy: None,
                message,
            }],
        })?;
        let (rule_sources, role_candidates) = role_rule_sources(targets);
        let mut all: Vec<(Author, PolicySource)> = rule_sources
            .into_iter()
            .map(|source| (Author::Postern, source))
            .collect();
        if options.include_defaults {
            all.push((
                Author::Postern,
                PolicySource {
                    origin: DEFAULTS_ORIGIN.to_owned(),
                    text: DEFAULT_POLICIES.to_owned(),
                },
            ));
        }
        all.extend(sources.iter().cloned().map(|source| (Author::User, source)));
        let asks_for_mfa = all
            .iter()
            .any(|(_, source)| source.text.contains("context.mfa"));
        let loaded = load::load(&vocabulary, &all)?;
        let by_action =
            split_by_action(&loaded.policies, &vocabulary).map_err(|message| PolicyErrors {
                errors: vec![PolicyError {
                    origin: SCHEMA_ORIGIN.to_owned(),
                    location: None,
                    policy: None,
                    message,
                }],
            })?;
        Ok(Self {
            vocabulary,
            by_action,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            authorizer: Authorizer::new(),
            order: loaded.order,
            approvals: loaded.approvals,
            origins: loaded.origins,
            warnings: loaded.warnings,
            role_candidates,
            asks_for_mfa,
        })
    }

    /// Whether some policy looks at `context.mfa`: then a refusal of an identity whose token
    /// shows no second factor may be one MFA would lift, and the client is told how to get it.
    #[must_use]
    pub fn asks_for_mfa(&self) -> bool {
        self.asks_for_mfa
    }

    /// What Cedar's validator warns about (a policy that can never apply, confusable Unicode):
    /// not errors, but worth showing an operator.
    #[must_use]
    pub fn warnings(&self) -> &[PolicyError] {
        &self.warnings
    }

    /// How many policies are loaded (role rules, defaults and files).
    #[must_use]
    pub fn policy_count(&self) -> usize {
        self.order.len()
    }

    /// Where the policy `id` was written (`file:line:column`, or `targets.demo.roles[0]`).
    #[must_use]
    pub fn origin_of(&self, id: &str) -> Option<&str> {
        self.origins.get(id).map(String::as_str)
    }

    /// The Cedar view of `identity`, to build once per session and reuse for every decision.
    #[must_use]
    pub fn session(&self, identity: &Identity) -> SessionPolicy {
        SessionPolicy::new(identity, &self.vocabulary.names, &self.vocabulary.schema)
    }

    /// Whether `identity` may open a session on `ctx.target`.
    #[must_use]
    pub fn decide_connect(&self, identity: &Identity, ctx: &RequestContext) -> Decision {
        self.session(identity).decide_connect(self, ctx)
    }

    /// Whether `identity` may run as database role `role` on `target` (`ctx.target` and
    /// `ctx.role` are not used: the request is about `target` and `role`).
    #[must_use]
    pub fn decide_assume(
        &self,
        identity: &Identity,
        ctx: &RequestContext,
        target: &str,
        role: &str,
    ) -> Decision {
        self.session(identity)
            .decide_assume(self, ctx, target, role)
    }

    /// The roles `identity` may assume on `target`, sorted: those named in the target's role
    /// rules that [`Self::decide_assume`] allows. For the refusal message "roles you may use".
    #[must_use]
    pub fn allowed_roles(
        &self,
        identity: &Identity,
        ctx: &RequestContext,
        target: &str,
    ) -> Vec<String> {
        self.session(identity).allowed_roles(self, ctx, target)
    }

    /// [`Self::decide_assume`], with a refusal worded as role mapping always has been.
    ///
    /// # Errors
    ///
    /// A [`RoleRefusal`]: the roles the identity may use instead, none, or the forbid policy
    /// that stopped it.
    pub fn authorize_role(
        &self,
        identity: &Identity,
        ctx: &RequestContext,
        target: &str,
        role: &str,
    ) -> Result<Decision, RoleRefusal> {
        self.session(identity)
            .authorize_role(self, ctx, target, role)
    }

    /// Whether `identity` may run one statement, in `ctx`.
    #[must_use]
    pub fn decide_statement(
        &self,
        identity: &Identity,
        ctx: &RequestContext,
        facts: &StatementFacts,
    ) -> Decision {
        self.session(identity).decide_statement(self, ctx, facts)
    }

    /// Whether `identity` may run every statement of an analysed text; the first denial wins.
    #[must_use]
    pub fn decide_analysis(
        &self,
        identity: &Identity,
        ctx: &RequestContext,
        analysis: &Analysis,
    ) -> Decision {
        self.session(identity).decide_analysis(self, ctx, analysis)
    }

    /// Every request an analysed text makes and how each is decided, for a dry run.
    #[must_use]
    pub fn explain(
        &self,
        identity: &Identity,
        ctx: &RequestContext,
        analysis: &Analysis,
    ) -> Explanation {
        self.session(identity).explain(self, ctx, analysis)
    }

    /// One Cedar request. Never panics; anything that goes wrong denies.
    fn authorize(
        &self,
        session: &SessionPolicy,
        ctx: &RequestContext,
        context: &Context,
        action: Action,
        resource: Resource,
    ) -> Outcome {
        let names = &self.vocabulary.names;
        let asker = Asker {
            subject: &session.subject,
            role: &ctx.role,
        };
        let Some(entities) = session.entities_for(&ctx.target, &resource, names) else {
            return Outcome::internal(action, resource, &asker, "entities could not be built");
        };
        let request = match Request::new(
            session.principal.clone(),
            names.action(action).clone(),
            resource_uid(&ctx.target, &resource, names),
            context.clone(),
            None,
        ) {
            Ok(request) => request,
            Err(e) => return Outcome::internal(action, resource, &asker, &e.to_string()),
        };
        let Some(policies) = session.policy_set(self.generation, action.index(), &self.by_action)
        else {
            return Outcome::internal(action, resource, &asker, "no policy set for the action");
        };
        let response = self
            .authorizer
            .is_authorized(&request, &policies, &entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<(String, String)> = diagnostics
            .errors()
            .map(|error| match error {
                AuthorizationError::PolicyEvaluationError(e) => {
                    (policy_id(e.policy_id()).to_owned(), e.to_string())
                }
            })
            .collect();
        if !errors.is_empty() {
            let policies = self.in_load_order(errors.iter().map(|(id, _)| id.clone()));
            return Outcome {
                decision: deny(
                    DenyReason::EvaluationError,
                    policies,
                    action,
                    resource,
                    &asker,
                ),
                errors: errors.into_iter().map(|(_, e)| e).collect(),
            };
        }
        let policies = self.in_load_order(diagnostics.reason().map(|id| policy_id(id).to_owned()));
        let decision = match response.decision() {
            CedarDecision::Allow => {
                // Held only when every permit that applied asks for approval: an unannotated
                // permit allows the request as it is.
                let approvals = if policies.iter().all(|p| self.approvals.contains_key(p)) {
                    policies
                        .iter()
                        .filter_map(|policy| {
                            Some(ApprovalRequirement {
                                policy: policy.clone(),
                                spec: self.approvals.get(policy)?.clone(),
                                action,
                                resource: resource.clone(),
                            })
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                if !approvals.is_empty() && !action.is_statement() {
                    let message = format!(
                        "permission denied: {action} on {resource} for {asker} needs approval \
                         (policy \"{}\"), and only statements can wait for one",
                        policies.first().map_or("", String::as_str)
                    );
                    return Outcome {
                        decision: Decision::Deny {
                            reason: DenyReason::NotPermitted,
                            policies,
                            action,
                            resource,
                            message,
                        },
                        errors: Vec::new(),
                    };
                }
                Decision::Allow {
                    policies,
                    approvals,
                }
            }
            CedarDecision::Deny if policies.is_empty() => {
                deny(DenyReason::NotPermitted, policies, action, resource, &asker)
            }
            CedarDecision::Deny => deny(DenyReason::Forbidden, policies, action, resource, &asker),
        };
        Outcome {
            decision,
            errors: Vec::new(),
        }
    }

    fn in_load_order(&self, ids: impl Iterator<Item = String>) -> Vec<String> {
        let mut ids: Vec<String> = ids.collect();
        ids.sort_by_key(|id| self.order.get(id).copied().unwrap_or(usize::MAX));
        ids.dedup();
        ids
    }
}

/// A policy's id as given (its `Display` escapes it).
pub(crate) fn policy_id(id: &PolicyId) -> &str {
    id.as_ref()
}

/// See [`PolicyEngine::by_action`].
fn split_by_action(
    policies: &PolicySet,
    vocabulary: &Vocabulary,
) -> Result<Vec<PolicySet>, String> {
    let names = &vocabulary.names;
    let hierarchy = vocabulary
        .schema
        .action_entities()
        .map_err(|e| e.to_string())?;
    let mut sets = Vec::with_capacity(Action::ALL.len());
    for action in Action::ALL {
        let uid = names.action(action);
        let mut set = PolicySet::new();
        for policy in policies.policies() {
            let applies = match policy.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(eq) => &eq == uid,
                ActionConstraint::In(groups) => {
                    // `in` is reflexive: `action in [Action::"read"]` matches read itself.
                    groups
                        .iter()
                        .any(|group| group == uid || hierarchy.is_ancestor_of(group, uid))
                }
            };
            if applies {
                set.add(policy.clone()).map_err(|e| e.to_string())?;
            }
        }
        sets.push(set);
    }
    Ok(sets)
}

/// One request's decision, with Cedar's evaluation errors for explanations (never for clients:
/// they can quote attribute values).
struct Outcome {
    decision: Decision,
    errors: Vec<String>,
}

impl Outcome {
    fn internal(action: Action, resource: Resource, asker: &Asker<'_>, error: &str) -> Self {
        Self {
            decision: deny(
                DenyReason::EvaluationError,
                Vec::new(),
                action,
                resource,
                asker,
            ),
            errors: vec![error.to_owned()],
        }
    }
}

fn deny(
    reason: DenyReason,
    policies: Vec<String>,
    action: Action,
    resource: Resource,
    asker: &Asker<'_>,
) -> Decision {
    Decision::Deny {
        message: deny_message(reason, &policies, action, &resource, asker),
        reason,
        policies,
        action,
        resource,
    }
}

/// The action a statement is authorised as, or `None` when no policy governs it (transaction
/// control, and session statements that name no table). See the module documentation.
#[must_use]
pub fn statement_action(facts: &StatementFacts) -> Option<Action> {
    let copy = facts.command == "COPY";
    Some(match facts.kind {
        StatementKind::Transaction | StatementKind::Session if facts.tables.is_empty() => {
            return None;
        }
        StatementKind::Transaction | StatementKind::Session => Action::Read,
        StatementKind::Read if copy => Action::CopyOut,
        StatementKind::Read => Action::Read,
        StatementKind::Write if copy => Action::CopyIn,
        StatementKind::Write => Action::Write,
        StatementKind::Ddl => Action::Ddl,
        StatementKind::Dcl => Action::Dcl,
        StatementKind::Admin => Action::Admin,
        StatementKind::Raw => Action::Raw,
    })
}

/// The resources of a statement's requests: its tables, schema-qualified and without
/// repetition (a table written without a schema once in every schema it may be in, see
/// [`RequestContext::schemas_for_unqualified`]), or the target when it names none.
fn statement_resources(facts: &StatementFacts, ctx: &RequestContext) -> Vec<Resource> {
    let mut resources: Vec<Resource> = Vec::with_capacity(facts.tables.len().max(1));
    for table in &facts.tables {
        let qualified: Vec<Resource> = if table.contains('.') {
            vec![qualify_table(table, DEFAULT_SCHEMA)]
        } else {
            ctx.schemas_for_unqualified(table)
                .into_iter()
                .map(|schema| qualify_table(table, schema))
                .collect()
        };
        for resource in qualified {
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
    }
    if resources.is_empty() {
        resources.push(Resource::Target {
            name: ctx.target.clone(),
        });
    }
    resources
}

impl SessionPolicy {
    /// The context record, or the denial to return when it cannot be built.
    fn context(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: impl FnOnce() -> Resource,
    ) -> Result<Context, Box<Outcome>> {
        self.context_for(ctx, "", action, resource)
    }

    /// The context of a statement's requests: `context.command` is its command.
    fn context_for(
        &self,
        ctx: &RequestContext,
        command: &str,
        action: Action,
        resource: impl FnOnce() -> Resource,
    ) -> Result<Context, Box<Outcome>> {
        self.context.get(ctx, self.identity, command).map_err(|e| {
            let asker = Asker {
                subject: &self.subject,
                role: &ctx.role,
            };
            Box::new(Outcome::internal(action, resource(), &asker, &e))
        })
    }

    /// Whether this identity may perform `action` on `resource`: the building block of the
    /// other decisions, for questions they do not ask, such as whether the escape guard may let
    /// `DO` through (`raw` on `Resource::Target`) before any such statement arrives.
    #[must_use]
    pub fn decide(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        action: Action,
        resource: Resource,
    ) -> Decision {
        match self.context(ctx, action, || resource.clone()) {
            Ok(context) => {
                engine
                    .authorize(self, ctx, &context, action, resource)
                    .decision
            }
            Err(outcome) => outcome.decision,
        }
    }

    /// Whether this session's identity may open a session on `ctx.target`.
    #[must_use]
    pub fn decide_connect(&self, engine: &PolicyEngine, ctx: &RequestContext) -> Decision {
        let target = || Resource::Target {
            name: ctx.target.clone(),
        };
        match self.context(ctx, Action::Connect, target) {
            Ok(context) => {
                engine
                    .authorize(self, ctx, &context, Action::Connect, target())
                    .decision
            }
            Err(outcome) => outcome.decision,
        }
    }

    /// Whether this identity may run as `role` on `target`. The context's `target` and `role`
    /// are those of the request.
    #[must_use]
    pub fn decide_assume(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        target: &str,
        role: &str,
    ) -> Decision {
        let ctx = RequestContext {
            target: target.to_owned(),
            role: role.to_owned(),
            ..ctx.clone()
        };
        let resource = || Resource::Role {
            target: target.to_owned(),
            name: role.to_owned(),
        };
        match self.context(&ctx, Action::Assume, resource) {
            Ok(context) => {
                engine
                    .authorize(self, &ctx, &context, Action::Assume, resource())
                    .decision
            }
            Err(outcome) => outcome.decision,
        }
    }

    /// The roles named in `target`'s role rules that this identity may assume, sorted.
    #[must_use]
    pub fn allowed_roles(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        target: &str,
    ) -> Vec<String> {
        engine
            .role_candidates
            .get(target)
            .into_iter()
            .flatten()
            .filter(|role| self.decide_assume(engine, ctx, target, role).is_allowed())
            .cloned()
            .collect()
    }

    /// [`Self::decide_assume`] with the refusal worded for the person who asked: the roles
    /// they may use instead, or the policy that forbade it.
    ///
    /// # Errors
    ///
    /// A [`RoleRefusal`] when the identity may not assume `role`.
    pub fn authorize_role(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        target: &str,
        role: &str,
    ) -> Result<Decision, RoleRefusal> {
        let decision = self.decide_assume(engine, ctx, target, role);
        match &decision {
            Decision::Allow { .. } => Ok(decision),
            Decision::Deny {
                reason: DenyReason::NotPermitted,
                ..
            } => {
                let allowed = self.allowed_roles(engine, ctx, target);
                if allowed.is_empty() {
                    Err(RoleRefusal::NoRoles {
                        subject: self.subject.clone(),
                        target: target.to_owned(),
                    })
                } else {
                    Err(RoleRefusal::NotAllowed {
                        subject: self.subject.clone(),
                        requested: role.to_owned(),
                        target: target.to_owned(),
                        allowed,
                    })
                }
            }
            Decision::Deny { policies, .. } => Err(RoleRefusal::Denied {
                subject: self.subject.clone(),
                requested: role.to_owned(),
                target: target.to_owned(),
                policy: policies.first().cloned().unwrap_or_default(),
            }),
        }
    }

    /// Whether this session may run one statement. See the module documentation for how a
    /// statement becomes requests.
    #[must_use]
    pub fn decide_statement(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        facts: &StatementFacts,
    ) -> Decision {
        let Some(action) = statement_action(facts) else {
            return Decision::allow_unchecked();
        };
        let target = || Resource::Target {
            name: ctx.target.clone(),
        };
        match self.context_for(ctx, &facts.command, action, target) {
            Ok(context) => self.decide_facts(engine, ctx, &context, action, facts),
            Err(outcome) => outcome.decision,
        }
    }

    fn decide_facts(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        context: &Context,
        action: Action,
        facts: &StatementFacts,
    ) -> Decision {
        let mut decision = Decision::allow_unchecked();
        for resource in statement_resources(facts, ctx) {
            let outcome = engine.authorize(self, ctx, context, action, resource);
            if !outcome.decision.is_allowed() {
                return outcome.decision;
            }
            decision.merge_allow(outcome.decision);
        }
        decision
    }

    /// Whether this session may run every statement of an analysed text (one simple `Query`
    /// or one `Parse`); the first denial wins. Text that did not parse is `raw` on the target.
    #[must_use]
    pub fn decide_analysis(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        analysis: &Analysis,
    ) -> Decision {
        self.decisions
            .get_or_decide(engine.generation, self.identity, ctx, analysis, || {
                self.decide_analysis_afresh(engine, ctx, analysis)
            })
    }

    /// [`Self::decide_analysis`] without the session's remembered decisions.
    fn decide_analysis_afresh(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        analysis: &Analysis,
    ) -> Decision {
        let target = || Resource::Target {
            name: ctx.target.clone(),
        };
        let first_action = if analysis.parse_error.is_some() {
            Some(Action::Raw)
        } else {
            analysis.statements.iter().find_map(statement_action)
        };
        let Some(first_action) = first_action else {
            return Decision::allow_unchecked();
        };
        if analysis.parse_error.is_some() {
            let context = match self.context(ctx, first_action, target) {
                Ok(context) => context,
                Err(outcome) => return outcome.decision,
            };
            return engine
                .authorize(self, ctx, &context, Action::Raw, target())
                .decision;
        }
        let mut decision = Decision::allow_unchecked();
        for facts in &analysis.statements {
            let Some(action) = statement_action(facts) else {
                continue;
            };
            let context = match self.context_for(ctx, &facts.command, action, target) {
                Ok(context) => context,
                Err(outcome) => return outcome.decision,
            };
            let next = self.decide_facts(engine, ctx, &context, action, facts);
            if !next.is_allowed() {
                return next;
            }
            decision.merge_allow(next);
        }
        decision
    }

    /// Every request an analysed text makes and how each is decided, without stopping at the
    /// first denial: what `postern policy explain` prints.
    #[must_use]
    pub fn explain(
        &self,
        engine: &PolicyEngine,
        ctx: &RequestContext,
        analysis: &Analysis,
    ) -> Explanation {
        let target = || Resource::Target {
            name: ctx.target.clone(),
        };
        let explain_request = |command: &str, action: Action, resource: Resource| match &self
            .context_for(ctx, command, action, || resource.clone())
        {
            Ok(context) => {
                let outcome = engine.authorize(self, ctx, context, action, resource.clone());
                RequestExplanation {
                    action,
                    resource,
                    origins: outcome
                        .decision
                        .policies()
                        .iter()
                        .filter_map(|id| engine.origin_of(id).map(|o| (id.clone(), o.to_owned())))
                        .collect(),
                    decision: outcome.decision,
                    errors: outcome.errors,
                }
            }
            Err(outcome) => RequestExplanation {
                action,
                resource,
                origins: Vec::new(),
                decision: outcome.decision.clone(),
                errors: outcome.errors.clone(),
            },
        };
        let statements = if analysis.parse_error.is_some() {
            vec![StatementExplanation {
                command: "(unparseable)".to_owned(),
                kind: StatementKind::Raw,
                action: Some(Action::Raw),
                requests: vec![explain_request("", Action::Raw, target())],
            }]
        } else {
            analysis
                .statements
                .iter()
                .map(|facts| {
                    let action = statement_action(facts);
                    let requests = match action {
                        Some(action) => statement_resources(facts, ctx)
                            .into_iter()
                            .map(|resource| explain_request(&facts.command, action, resource))
                            .collect(),
                        None => Vec::new(),
                    };
                    StatementExplanation {
                        command: facts.command.clone(),
                        kind: facts.kind,
                        action,
                        requests,
                    }
                })
                .collect()
        };
        let mut decision = Decision::allow_unchecked();
        for request in statements.iter().flat_map(|s| &s.requests) {
            if !request.decision.is_allowed() {
                decision = request.decision.clone();
                break;
            }
            decision.merge_allow(request.decision.clone());
        }
        Explanation {
            parse_error: analysis.parse_error.clone(),
            statements,
            decision,
        }
    }
}
