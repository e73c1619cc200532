//! Cedar entities from Postern's facts: the principal from a verified [`Identity`], and the
//! `Target`, `Role` and `Table` resources a request names.
//!
//! Building an entity store (and its transitive closure) is the costly part of a Cedar request,
//! so a [`SessionPolicy`] builds the principal's part once per session and keeps, per resource,
//! the complete store a request on it needs. What it caches depends only on the identity and the
//! built-in schema, never on the policies, so a session keeps its cache across policy reloads.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{
    Entities, Entity, EntityUid, PolicySet, PrincipalConstraint, RestrictedExpression, Schema,
};
use postern_identity::{Identity, IdentityKind, WORKLOAD_ATTRIBUTES};
use serde_json::Value;

use super::context::{ContextCache, IdentityFacts};
use super::decision::Resource;
use super::memo::DecisionMemo;
use super::schema::Names;

/// How many resources a session keeps complete entity stores for. A session touching more
/// tables than this starts over with an empty cache: memory stays bounded whatever the client
/// sends, and ordinary sessions touch far fewer.
pub const MAX_CACHED_RESOURCES: usize = 256;

/// The Cedar view of one session's identity, built once when the session is authenticated and
/// reused for every statement it sends.
///
/// Not tied to a [`PolicyEngine`](super::PolicyEngine): pass it to whichever engine is current,
/// so that reloaded policies apply to sessions already open.
pub struct SessionPolicy {
    /// `User::"<subject>"` or `Service::"<subject>"`.
    pub(crate) principal: EntityUid,
    /// For denial messages.
    pub(crate) subject: String,
    /// For the context record.
    pub(crate) identity: IdentityFacts,
    /// The principal, its groups and the schema's actions; `None` when they could not be built
    /// (which would be a bug), in which case every request is denied.
    base: Option<Entities>,
    /// Complete stores per target and resource.
    resources: Mutex<ResourceCache>,
    /// The last context record built.
    pub(crate) context: ContextCache,
    /// Decisions on whole texts, reused while nothing they were made from changes.
    pub(crate) decisions: DecisionMemo,
    /// The policy sets of the engine last used, per action, without the policies whose
    /// principal scope excludes this principal; keyed by the engine's generation.
    policies: Mutex<FilteredPolicies>,
}

/// See [`SessionPolicy::policy_set`].
#[derive(Default)]
struct FilteredPolicies {
    generation: u64,
    sets: Vec<Option<Arc<PolicySet>>>,
}

#[derive(Default)]
struct ResourceCache {
    by_target: HashMap<String, HashMap<Resource, Arc<Entities>>>,
    len: usize,
}

impl std::fmt::Debug for SessionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPolicy")
            .field("principal", &self.principal.to_string())
            .field("cached_resources", &lock(&self.resources).len)
            .finish_non_exhaustive()
    }
}

impl SessionPolicy {
    pub(crate) fn new(identity: &Identity, names: &Names, schema: &Schema) -> Self {
        let ty = match identity.kind {
            IdentityKind::Human => &names.user,
            IdentityKind::Service => &names.service,
        };
        let principal = names.uid(ty, &identity.subject);
        Self {
            base: principal_entities(identity, &principal, names, schema),
            principal,
            subject: identity.subject.clone(),
            identity: IdentityFacts {
                kind: identity.kind,
                mfa: identity.mfa,
                issued_at: identity.issued_at,
            },
            resources: Mutex::new(ResourceCache::default()),
            context: ContextCache::default(),
            decisions: DecisionMemo::default(),
            policies: Mutex::new(FilteredPolicies::default()),
        }
    }

    /// The complete entity store for a request on `resource` of `target`, from the cache when
    /// this session has asked about it before. `None` when it cannot be built: deny.
    pub(crate) fn entities_for(
        &self,
        target: &str,
        resource: &Resource,
        names: &Names,
    ) -> Option<Arc<Entities>> {
        if let Some(hit) = lock(&self.resources)
            .by_target
            .get(target)
            .and_then(|by_resource| by_resource.get(resource))
        {
            return Some(Arc::clone(hit));
        }
        let base = self.base.as_ref()?;
        let entities = Arc::new(
            base.clone()
                .add_entities(resource_entities(target, resource, names)?, None)
                .ok()?,
        );
        let mut cache = lock(&self.resources);
        if cache.len >= MAX_CACHED_RESOURCES {
            *cache = ResourceCache::default();
        }
        let previous = cache
            .by_target
            .entry(target.to_owned())
            .or_default()
            .insert(resource.clone(), Arc::clone(&entities));
        if previous.is_none() {
            cache.len += 1;
        }
        Some(entities)
    }

    /// The policy set for action number `action` of the engine `generation` without the
    /// policies that cannot apply to this principal, built from `by_action` on first use (per
    /// action, so that a one-off decision filters only what it needs). `None` for an action the
    /// engine has no set for.
    ///
    /// A policy whose principal scope (`principal == User::"x"`, `principal in Group::"g"`,
    /// `principal is Service`) excludes this principal evaluates to false without looking at its
    /// conditions, so it can neither apply nor fail: leaving it out changes no decision, and
    /// deployments whose policies are mostly about groups evaluate a handful per request.
    pub(crate) fn policy_set(
        &self,
        generation: u64,
        action: usize,
        by_action: &[PolicySet],
    ) -> Option<Arc<PolicySet>> {
        let full = by_action.get(action)?;
        let mut cached = lock(&self.policies);
        if cached.generation != generation || cached.sets.len() != by_action.len() {
            *cached = FilteredPolicies {
                generation,
                sets: vec![None; by_action.len()],
            };
        }
        let slot = cached.sets.get_mut(action)?;
        if let Some(set) = slot {
            return Some(Arc::clone(set));
        }
        let set = Arc::new(match &self.base {
            Some(base) => self.filter(full, base),
            // Every request is denied anyway.
            None => full.clone(),
        });
        *slot = Some(Arc::clone(&set));
        Some(set)
    }

    fn filter(&self, full: &PolicySet, base: &Entities) -> PolicySet {
        let mut mine = PolicySet::new();
        for policy in full.policies() {
            if principal_may_match(&policy.principal_constraint(), &self.principal, base)
                && mine.add(policy.clone()).is_err()
            {
                // Cannot happen (the ids are unique); keep the whole set.
                return full.clone();
            }
        }
        mine
    }

    /// The subject, as named in messages.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// Whether a principal scope can hold for `principal`, whose groups are in `base`.
fn principal_may_match(
    constraint: &PrincipalConstraint,
    principal: &EntityUid,
    base: &Entities,
) -> bool {
    let is_in = |group: &EntityUid| group == principal || base.is_ancestor_of(group, principal);
    match constraint {
        PrincipalConstraint::Any => true,
        PrincipalConstraint::Eq(uid) => uid == principal,
        PrincipalConstraint::In(group) => is_in(group),
        PrincipalConstraint::Is(ty) => principal.type_name() == ty,
        PrincipalConstraint::IsIn(ty, group) => principal.type_name() == ty && is_in(group),
    }
}

/// The cache holds only complete entries, so a panic elsewhere while it was locked leaves it
/// usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The principal with its attributes and tags, its groups, and the schema's action entities.
fn principal_entities(
    identity: &Identity,
    principal: &EntityUid,
    names: &Names,
    schema: &Schema,
) -> Option<Entities> {
    let groups: BTreeSet<&str> = identity.groups.iter().map(String::as_str).collect();
    let group_uids: Vec<EntityUid> = groups
        .iter()
        .map(|group| names.uid(&names.group, group))
        .collect();
    let kind = match identity.kind {
        IdentityKind::Human => "human",
        IdentityKind::Service => "service",
    };
    let attrs = [
        (
            "subject",
            RestrictedExpression::new_string(identity.subject.clone()),
        ),
        (
            "issuer",
            RestrictedExpression::new_string(identity.issuer_name.clone()),
        ),
        (
            "issuer_url",
            RestrictedExpression::new_string(identity.issuer.clone()),
        ),
        ("kind", RestrictedExpression::new_string(kind.to_owned())),
        ("mfa", RestrictedExpression::new_bool(identity.mfa)),
        ("workload", workload_record(identity)?),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let principal = Entity::new_with_tags(
        principal.clone(),
        attrs,
        group_uids.iter().cloned(),
        claim_tags(identity),
    )
    .ok()?;
    let groups = group_uids
        .into_iter()
        .map(|uid| Entity::new_no_attrs(uid, Default::default()));
    // With the schema, Cedar checks the entities conform and adds the action entities.
    Entities::from_entities(std::iter::once(principal).chain(groups), Some(schema)).ok()
}

/// `principal.workload`: the preset's kind and every attribute of every preset, "" where the
/// workload does not have it (the schema's `Workload` type lists each as a required String, so
/// policies need no `has`; `postern-identity` names the attributes).
fn workload_record(identity: &Identity) -> Option<RestrictedExpression> {
    let workload = identity.workload.as_ref();
    let kind = workload.map_or("", |w| w.kind());
    let attributes = WORKLOAD_ATTRIBUTES.iter().map(|&name| {
        let value = workload.and_then(|w| w.attribute(name)).unwrap_or_default();
        (
            name.to_owned(),
            RestrictedExpression::new_string(value.to_owned()),
        )
    });
    RestrictedExpression::new_record(
        std::iter::once((
            "kind".to_owned(),
            RestrictedExpression::new_string(kind.to_owned()),
        ))
        .chain(attributes),
    )
    .ok()
}

/// The token's string claims, as entity tags. Claims of other types are left out: a tag has one
/// type, and a number or a list has no single faithful string form (is `1` "1" or "1.0"?). This
/// is also what role rules match (`claims = { tenant_id = "acme" }`). Groups come through
/// `principal in Group::"..."`, MFA through `principal.mfa`.
fn claim_tags(identity: &Identity) -> Vec<(String, RestrictedExpression)> {
    identity
        .claims
        .iter()
        .filter_map(|(name, value)| match value {
            Value::String(s) => Some((name.clone(), RestrictedExpression::new_string(s.clone()))),
            _ => None,
        })
        .collect()
}

/// The resource entity and its target.
fn resource_entities(target: &str, resource: &Resource, names: &Names) -> Option<Vec<Entity>> {
    let target_uid = names.uid(&names.target, target);
    let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
    let target_entity = Entity::new(
        target_uid.clone(),
        HashMap::from([("name".to_owned(), string(target))]),
        Default::default(),
    )
    .ok()?;
    let entity = match resource {
        Resource::Target { .. } => return Some(vec![target_entity]),
        Resource::Role { name, .. } => Entity::new(
            resource_uid(target, resource, names),
            HashMap::from([
                ("name".to_owned(), string(name)),
                ("target".to_owned(), string(target)),
            ]),
            [target_uid].into(),
        ),
        Resource::Table { schema, name } => Entity::new(
            resource_uid(target, resource, names),
            HashMap::from([
                ("schema".to_owned(), string(schema)),
                ("name".to_owned(), string(name)),
                ("target".to_owned(), string(target)),
            ]),
            [target_uid].into(),
        ),
    }
    .ok()?;
    Some(vec![target_entity, entity])
}

/// The Cedar uid of a resource: `Target::"demo"`, `Role::"demo/reader"`,
/// `Table::"public.orders"`.
pub(crate) fn resource_uid(target: &str, resource: &Resource, names: &Names) -> EntityUid {
    match resource {
        Resource::Target { name } => names.uid(&names.target, name),
        Resource::Role { name, .. } => names.uid(&names.role, &format!("{target}/{name}")),
        Resource::Table { schema, name } => names.uid(&names.table, &format!("{schema}.{name}")),
    }
}

/// Splits a table name as `postern-sql` reports it (`orders`, `public.orders`,
/// `db.public.orders`) into schema and name, giving an unqualified name `default_schema`. A
/// catalog is dropped: PostgreSQL accepts only the current database there.
///
/// `postern-sql` joins the parts with dots, so a quoted name containing a dot (`"a.b"`) is read
/// as more parts than it has, and `x."public.orders"` reads as `public.orders`. Such names are
/// rare; until `postern-sql` reports the parts apart, policies should not rely on a permit for
/// one table to keep a client away from a table it can create with a dotted name.
pub(crate) fn qualify_table(table: &str, default_schema: &str) -> Resource {
    let mut parts = table.rsplitn(3, '.');
    let name = parts.next().unwrap_or_default();
    let schema = parts.next().unwrap_or(default_schema);
    Resource::Table {
        schema: schema.to_owned(),
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::qualify_table;
    use crate::cedar::decision::Resource;

    #[test]
    fn tables_are_qualified() {
        let table = |schema: &str, name: &str| Resource::Table {
            schema: schema.into(),
            name: name.into(),
        };
        assert_eq!(qualify_table("orders", "public"), table("public", "orders"));
        assert_eq!(qualify_table("orders", "app"), table("app", "orders"));
        assert_eq!(
            qualify_table("sales.orders", "app"),
            table("sales", "orders")
        );
        assert_eq!(
            qualify_table("demo.sales.orders", "app"),
            table("sales", "orders")
        );
    }
}
