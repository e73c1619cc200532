//! The request context: what Postern knows about a request besides who, what and on what, turned
//! into the Cedar `RequestContext` record of the schema.
//!
//! The engine never reads the clock or the network: the caller passes the time and the client's
//! address, so that decisions are reproducible (tests inject them, `postern policy explain` can
//! ask "what if").

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{Context, RestrictedExpression};
use postern_identity::IdentityKind;

use super::recent::{Recent, RequestKey};

/// What a request carries besides principal, action and resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The client's address (`context.source_ip`), as the listener saw it.
    pub source_ip: IpAddr,
    /// When the request is decided. Injected, never read from the clock inside the engine:
    /// `context.hour`, `context.weekday` and `context.token_age_seconds` come from it.
    pub now: SystemTime,
    /// The target's name (`context.target`, and the resource of `connect`).
    pub target: String,
    /// The database role the session runs as (`context.role`); for `assume`, the role asked
    /// for. Named in denial messages ("as reader").
    pub role: String,
    /// The client's `application_name` startup parameter (`context.application_name`, `""`
    /// when absent). Chosen by the client: useful to tell tools apart, never as a security
    /// boundary.
    pub application_name: Option<String>,
    /// The session's `search_path`, schema names as PostgreSQL stores them (unquoted). A table
    /// name written without a schema is asked about in every entry other than `$user`, since
    /// Postern does not know which schemas hold it (nor, so, how the server resolves `$user`):
    /// see [`RequestContext::schemas_for_unqualified`]. `public` when empty. This is how
    /// policies see every table schema-qualified.
    pub search_path: Vec<String>,
}

/// The schema a table written without one is given when the search path names none.
pub const DEFAULT_SCHEMA: &str = "public";

/// The schema PostgreSQL searches before the search path when the path does not list it, and
/// where its system catalogs and views live, all named `pg_*`.
/// <https://www.postgresql.org/docs/current/ddl-schemas.html#DDL-SCHEMAS-CATALOG>
pub const CATALOG_SCHEMA: &str = "pg_catalog";

impl RequestContext {
    /// The schemas a table written as `name`, without a schema, may be in: `pg_catalog` for a
    /// `pg_*` name (the server looks there first), then every schema of the search path other
    /// than `$user` ([`DEFAULT_SCHEMA`] when it names none). Postern does not know which of
    /// them holds the table, so a statement is asked about in each, and must be allowed in all:
    /// a client that chooses its search path (`options=-c search_path=nosuch,public`) cannot
    /// move a name away from the policy on the table the server will find.
    #[must_use]
    pub fn schemas_for_unqualified(&self, name: &str) -> Vec<&str> {
        let mut schemas = Vec::with_capacity(self.search_path.len() + 1);
        if name.starts_with("pg_") {
            schemas.push(CATALOG_SCHEMA);
        }
        let mut path = self
            .search_path
            .iter()
            .map(String::as_str)
            .filter(|schema| !schema.is_empty() && *schema != "$user")
            .peekable();
        if path.peek().is_none() {
            schemas.push(DEFAULT_SCHEMA);
        }
        for schema in path {
            if !schemas.contains(&schema) {
                schemas.push(schema);
            }
        }
        schemas
    }

    /// The schema of tables written without one: see [`RequestContext::search_path`].
    #[must_use]
    pub fn default_schema(&self) -> &str {
        self.search_path
            .iter()
            .map(String::as_str)
            .find(|schema| !schema.is_empty() && *schema != "$user")
            .unwrap_or(DEFAULT_SCHEMA)
    }
}

/// The parts of the context that come from the identity rather than from the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdentityFacts {
    pub(crate) kind: IdentityKind,
    pub(crate) mfa: bool,
    pub(crate) issued_at: Option<SystemTime>,
}

/// Seconds in a day and an hour, for UTC calendar arithmetic on Unix time (which has no leap
/// seconds, so every day is 86,400 of them).
const SECONDS_PER_DAY: i64 = 86_400;
const SECONDS_PER_HOUR: i64 = 3_600;

/// Calendar facts of `now` in UTC: (hour 0-23, weekday with 0 = Monday).
pub(crate) fn hour_and_weekday(now: SystemTime) -> (i64, i64) {
    let seconds = unix_seconds(now);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let hour = seconds.rem_euclid(SECONDS_PER_DAY) / SECONDS_PER_HOUR;
    // 1970-01-01 was a Thursday: day 0 is weekday 3.
    let weekday = (days + 3).rem_euclid(7);
    (hour, weekday)
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Seconds between `issued_at` and `now`: 0 when the token claims to be from the future (clock
/// skew), and `i64::MAX` when it has no `iat`, so that a freshness condition such as
/// `context.token_age_seconds < 3600` fails closed.
pub(crate) fn token_age_seconds(issued_at: Option<SystemTime>, now: SystemTime) -> i64 {
    match issued_at {
        None => i64::MAX,
        Some(issued) => now
            .duration_since(issued)
            .map_or(0, |age| i64::try_from(age.as_secs()).unwrap_or(i64::MAX)),
    }
}

/// Everything time-dependent a context record holds, in whole seconds: the Unix second (hour and
/// weekday follow from it) and the token's age. The age is kept apart because a token issued at
/// a fraction of a second ages at that fraction, not at the turn of the Unix second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment {
    second: i64,
    token_age: i64,
}

impl Moment {
    pub(crate) fn of(now: SystemTime, identity: IdentityFacts) -> Self {
        Self {
            second: unix_seconds(now),
            token_age: token_age_seconds(identity.issued_at, now),
        }
    }
}

/// The last context records a session built (one per statement command), reused while the
/// request's facts stay the same within one [`Moment`] (everything in the record is exact to the
/// second). Building one costs more than deciding a request (Cedar parses the `ip` extension's
/// name for every address), and a session's statements mostly arrive with the same address,
/// target and role, and a handful of commands.
pub(crate) struct ContextCache(Recent<(RequestKey, String), Context>);

/// How many records [`ContextCache`] keeps: more than the commands of a typical workload.
const CONTEXT_CACHE_ENTRIES: usize = 8;

impl Default for ContextCache {
    fn default() -> Self {
        Self(Recent::new(CONTEXT_CACHE_ENTRIES))
    }
}

impl ContextCache {
    /// The context record for `ctx`, from the cache when nothing in it changed.
    pub(crate) fn get(
        &self,
        ctx: &RequestContext,
        identity: IdentityFacts,
        command: &str,
    ) -> Result<Context, String> {
        let moment = Moment::of(ctx.now, identity);
        let same = |(request, built_for): &(RequestKey, String)| {
            built_for == command && request.matches(ctx)
        };
        if let Some(context) = self.0.find(moment, same) {
            return Ok(context);
        }
        let context = cedar_context(ctx, identity, command)?;
        self.0.remember(
            moment,
            (RequestKey::of(ctx), command.to_owned()),
            context.clone(),
        );
        Ok(context)
    }
}

/// The Cedar context record for one request.
pub(crate) fn cedar_context(
    ctx: &RequestContext,
    identity: IdentityFacts,
    command: &str,
) -> Result<Context, String> {
    let (hour, weekday) = hour_and_weekday(ctx.now);
    let kind = match identity.kind {
        IdentityKind::Human => "human",
        IdentityKind::Service => "service",
    };
    Context::from_pairs([
        (
            "source_ip".to_owned(),
            RestrictedExpression::new_ip(ctx.source_ip.to_string()),
        ),
        ("hour".to_owned(), RestrictedExpression::new_long(hour)),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(weekday),
        ),
        (
            "mfa".to_owned(),
            RestrictedExpression::new_bool(identity.mfa),
        ),
        (
            "token_age_seconds".to_owned(),
            RestrictedExpression::new_long(token_age_seconds(identity.issued_at, ctx.now)),
        ),
        (
            "application_name".to_owned(),
            RestrictedExpression::new_string(ctx.application_name.clone().unwrap_or_default()),
        ),
        (
            "identity_kind".to_owned(),
            RestrictedExpression::new_string(kind.to_owned()),
        ),
        (
            "target".to_owned(),
            RestrictedExpression::new_string(ctx.target.clone()),
        ),
        (
            "role".to_owned(),
            RestrictedExpression::new_string(ctx.role.clone()),
        ),
        (
            "command".to_owned(),
            RestrictedExpression::new_string(command.to_owned()),
        ),
    ])
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{RequestContext, hour_and_weekday, token_age_seconds};

    #[test]
    fn calendar_in_utc() {
        // 1970-01-01T00:00:00Z, a Thursday.
        assert_eq!(hour_and_weekday(UNIX_EPOCH), (0, 3));
        // 2026-11-30T09:15:00Z, a Monday (1_796_029_200 = 2026-11-30T09:00:00Z).
        let monday = UNIX_EPOCH + Duration::from_secs(1_796_029_200 + 15 * 60);
        assert_eq!(hour_and_weekday(monday), (9, 0));
        // The Sunday before, 23:59:59.
        let sunday = UNIX_EPOCH + Duration::from_secs(1_796_029_200 - 9 * 3600 - 1);
        assert_eq!(hour_and_weekday(sunday), (23, 6));
        // Before the epoch: 1969-12-31T23:00:00Z, a Wednesday.
        let before = UNIX_EPOCH - Duration::from_secs(3600);
        assert_eq!(hour_and_weekday(before), (23, 2));
    }

    #[test]
    fn token_age() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            token_age_seconds(Some(now - Duration::from_secs(90)), now),
            90
        );
        assert_eq!(
            token_age_seconds(Some(now + Duration::from_secs(5)), now),
            0
        );
        assert_eq!(token_age_seconds(None, now), i64::MAX);
    }

    #[test]
    fn default_schema_skips_user() {
        let mut ctx = RequestContext {
            source_ip: [127, 0, 0, 1].into(),
            now: UNIX_EPOCH,
            target: "demo".into(),
            role: "reader".into(),
            application_name: None,
            search_path: vec![],
        };
        assert_eq!(ctx.default_schema(), "public");
        ctx.search_path = vec!["$user".into(), "app".into(), "public".into()];
        assert_eq!(ctx.default_schema(), "app");
    }

    #[test]
    fn unqualified_names_are_asked_about_in_every_schema_they_may_be_in() {
        let mut ctx = RequestContext {
            source_ip: [127, 0, 0, 1].into(),
            now: UNIX_EPOCH,
            target: "demo".into(),
            role: "reader".into(),
            application_name: None,
            search_path: vec![],
        };
        assert_eq!(ctx.schemas_for_unqualified("orders"), ["public"]);
        assert_eq!(
            ctx.schemas_for_unqualified("pg_stat_activity"),
            ["pg_catalog", "public"]
        );
        ctx.search_path = vec!["$user".into(), "public".into()];
        assert_eq!(ctx.schemas_for_unqualified("orders"), ["public"]);
        ctx.search_path = vec!["nosuch".into(), "$user".into(), "public".into()];
        assert_eq!(ctx.schemas_for_unqualified("orders"), ["nosuch", "public"]);
        ctx.search_path = vec!["public".into(), "pg_catalog".into()];
        assert_eq!(
            ctx.schemas_for_unqualified("pg_class"),
            ["pg_catalog", "public"]
        );
        assert_eq!(
            ctx.schemas_for_unqualified("orders"),
            ["public", "pg_catalog"]
        );
        ctx.search_path = vec!["$user".into()];
        assert_eq!(ctx.schemas_for_unqualified("orders"), ["public"]);
    }
}
