//! `ephemeral_user` mode: a login role per identity and mapped role, made for its sessions and
//! dropped after the last one (ARCHITECTURE.md, decision 2).
//!
//! Through the target's admin login Postern creates `pst_<subject>__<role>` with a fresh random
//! password (only its SCRAM verifier reaches the server), `VALID UNTIL` the token's expiry, the
//! marker comment `postern ephemeral: <issuer> <subject> <role>`, and membership (INHERIT) in the
//! mapped role; the session logs in as it. A second session of the same identity and role reuses
//! the role with a new password and the later expiry. Each session holds an [`EphemeralLease`];
//! the last one's release, spawned off the session's path, turns LOGIN off, drops or reassigns
//! what the role owns, and drops it. Roles left by a crash are swept when a [`crate::Proxy`]
//! binds.
//!
//! One role per (identity, mapped role), not per identity: a login role granted both `reader`
//! and `writer` would give a reader session the writer's rights. Postern never alters or drops a
//! role that does not carry its marker comment: a foreign role holding the name pushes Postern
//! to the hashed name, and if that is taken too the session is refused.
//!
//! Not here: the escape guard (which refuses `ALTER ROLE`, so the role cannot change its own
//! password) and the `pg_hba.conf` lines that let these roles in only from Postern's address
//! (see [`postern_config::EphemeralConfig`]).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use postern_config::{EphemeralConfig, OnOwnedObjects, UpstreamLogin};
use postern_identity::Identity;
use tokio_util::task::TaskTracker;

use crate::error::UpstreamError;
use crate::target::{Target, login_as, random_hex};
use crate::upstream::{self, Endpoint, Login, Upstream, quote_ident, quote_literal};

/// PostgreSQL's longest identifier, in bytes (`NAMEDATALEN - 1`); longer names are truncated by
/// the server, which would make two identities share a role.
/// <https://www.postgresql.org/docs/current/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS>
pub const MAX_ROLE_NAME_BYTES: usize = 63;

/// Hex digits of SHA-256(issuer, subject, role) in a shortened or disambiguated name: 48 bits,
/// enough that two identities sharing a 50-byte name start do not meet by chance.
const NAME_HASH_HEX: usize = 12;

/// Start of the comment that marks a role as Postern's own; the only roles Postern alters,
/// drops, or sweeps.
pub const MARKER: &str = "postern ephemeral:";

/// How long the admin statements of one release or sweep may run on the server (a `DROP OWNED`
/// waiting for a lock held by a long transaction, say) before they are given up; what is left is
/// swept at the next start.
const ADMIN_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Who an ephemeral role serves: one identity in one mapped role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Owner {
    issuer: String,
    subject: String,
    role: String,
}

impl Owner {
    pub(crate) fn new(identity: &Identity, role: &str) -> Self {
        Self {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            role: role.to_owned(),
        }
    }

    /// The marker comment for this owner. Fields are written as they are, unless they hold a
    /// space, a quote, a backslash or a control character (or are empty), which are written as a
    /// JSON string, so that two owners never share a comment.
    pub(crate) fn comment(&self) -> String {
        format!(
            "{MARKER} {} {} {}",
            comment_field(&self.issuer),
            comment_field(&self.subject),
            comment_field(&self.role)
        )
    }

    /// SHA-256 over the length-prefixed issuer, subject and role, as hex.
    fn hash(&self) -> String {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for field in [&self.issuer, &self.subject, &self.role] {
            context.update(&(field.len() as u64).to_be_bytes());
            context.update(field.as_bytes());
        }
        hex::encode(context.finish().as_ref())
    }
}

fn comment_field(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '\\' || c.is_control());
    if plain {
        value.to_owned()
    } else {
        serde_json::Value::from(value).to_string()
    }
}

/// The names an owner's role may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleNames {
    /// `prefix + subject + "__" + role`, sanitised, of any length: the key that serialises every
    /// owner who would compete for the same name.
    base: String,
    /// The name tried first: `base` if it fits in 63 bytes, else `hashed`.
    primary: String,
    /// `base` cut to leave room for `_` and the owner's hash: used when `primary` belongs to
    /// someone else.
    hashed: String,
}

impl RoleNames {
    pub(crate) fn new(prefix: &str, owner: &Owner) -> Self {
        let base = format!(
            "{}{}__{}",
            sanitise(prefix),
            sanitise(&owner.subject),
            sanitise(&owner.role)
        );
        // Every byte of `base` is ASCII, so any cut is on a character boundary.
        let keep = base.len().min(MAX_ROLE_NAME_BYTES - 1 - NAME_HASH_HEX);
        let hashed = format!("{}_{}", &base[..keep], &owner.hash()[..NAME_HASH_HEX]);
        let primary = if base.len() <= MAX_ROLE_NAME_BYTES {
            base.clone()
        } else {
            hashed.clone()
        };
        Self {
            base,
            primary,
            hashed,
        }
    }

    /// The names to try, in order.
    fn candidates(&self) -> Vec<&str> {
        if self.primary == self.hashed {
            vec![&self.primary]
        } else {
            vec![&self.primary, &self.hashed]
        }
    }
}

/// Lower-case ASCII; every character outside `[a-z0-9_]` becomes `_`. The result is an unquoted
/// identifier's body, so the role reads the same in logs, `pg_roles` and `psql`.
fn sanitise(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A target's ephemeral roles: who holds which, and the releases in flight.
pub(crate) struct EphemeralRoles {
    target: String,
    endpoint: Arc<Endpoint>,
    admin: UpstreamLogin,
    settings: EphemeralConfig,
    /// Per base name, the lock that serialises creating, refreshing and dropping the roles of
    /// every owner competing for that name, and what they hold. A std mutex, never held across
    /// an await: it only hands out the per-name locks.
    slots: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Releases spawned by leases, waited for when the proxy stops.
    releases: TaskTracker,
}

/// The live roles of one base name.
#[derive(Default)]
struct Slot {
    live: HashMap<Owner, Live>,
}

/// A role with sessions through this target.
struct Live {
    name: String,
    sessions: usize,
    /// What `VALID UNTIL` was last set to: never moved earlier while sessions share the role.
    valid_until: SystemTime,
}

impl EphemeralRoles {
    pub(crate) fn new(
        target: &str,
        endpoint: Arc<Endpoint>,
        admin: UpstreamLogin,
        settings: EphemeralConfig,
    ) -> Self {
        Self {
            target: target.to_owned(),
            endpoint,
            admin,
            settings,
            slots: std::sync::Mutex::new(HashMap::new()),
            releases: TaskTracker::new(),
        }
    }

    fn slot(&self, base: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(base.to_owned()).or_default().clone()
    }

    /// Forgets `base`'s lock once no role of it is live and nobody else is waiting for it.
    fn forget_slot_if_unused(&self, base: &str, slot: &Arc<tokio::sync::Mutex<Slot>>, empty: bool) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // Two references: the map's and the caller's. Anyone else about to lock it holds a third.
        if empty && Arc::strong_count(slot) == 2 {
            slots.remove(base);
        }
    }

    /// Makes sure `identity`'s role for `role` exists with a fresh password, and logs in as it.
    /// Not cancel safe: cancelled between creating the role and counting the lease, the role is
    /// left (reused by the next session, or swept at the next start).
    pub(crate) async fn session(
        self: &Arc<Self>,
        role: &str,
        identity: &Identity,
        parameters: &[(String, String)],
    ) -> Result<(Upstream, EphemeralLease), UpstreamError> {
        let owner = Owner::new(identity, role);
        let names = RoleNames::new(&self.settings.name_prefix, &owner);
        let slot = self.slot(&names.base);
        // Held until the login is done: another session of this owner would otherwise change
        // the password between setting it and using it, and a release could drop the role.
        let mut state = slot.lock().await;
        let password = random_hex(32);
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let prepared = match self.admin().await {
            Ok(mut admin) => {
                let prepared = self
                    .prepare(
                        &mut admin,
                        &mut state,
                        &owner,
                        &names,
                        &verifier,
                        identity.expires_at,
                    )
                    .await;
                admin.terminate().await;
                prepared
            }
            Err(error) => Err(error),
        };
        let name = match prepared {
            Ok(name) => name,
            Err(error) => {
                let empty = state.live.is_empty();
                drop(state);
                self.forget_slot_if_unused(&names.base, &slot, empty);
                return Err(error);
            }
        };
        if let Some(live) = state.live.get_mut(&owner) {
            live.sessions += 1;
        }
        // Counted from here: if the login fails, dropping the lease releases the role.
        let lease = EphemeralLease {
            roles: Arc::clone(self),
            base: names.base.clone(),
            owner,
        };
        let login = Login {
            user: &name,
            password: Some(&password),
            parameters,
        };
        let upstream = upstream::connect(&self.endpoint, &login).await?;
        drop(state);
        Ok((upstream, lease))
    }

    /// Creates or refreshes the owner's role under the slot's lock; returns its name.
    async fn prepare(
        &self,
        admin: &mut Upstream,
        state: &mut Slot,
        owner: &Owner,
        names: &RoleNames,
        verifier: &str,
        expires_at: SystemTime,
    ) -> Result<String, UpstreamError> {
        if let Some(live) = state.live.get_mut(owner) {
            let valid_until = live.valid_until.max(expires_at);
            admin
                .simple_query(&refresh_sql(&live.name, &owner.role, verifier, valid_until))
                .await?;
            live.valid_until = valid_until;
            return Ok(live.name.clone());
        }
        let candidates = names.candidates();
        let list = candidates
            .iter()
            .map(|name| quote_literal(name))
            .collect::<Vec<_>>()
            .join(", ");
        let existing = admin
            .simple_query(&format!(
                "SELECT rolname, shobj_description(oid, 'pg_authid'), \
                        extract(epoch FROM rolvaliduntil)::bigint \
                 FROM pg_catalog.pg_roles WHERE rolname IN ({list})"
            ))
            .await?
            .rows;
        let comment = owner.comment();
        for name in candidates {
            let row = existing
                .iter()
                .find(|row| row.first().and_then(Option::as_deref) == Some(name));
            let valid_until = match row {
                None => {
                    admin
                        .simple_query(&create_sql(
                            name,
                            &owner.role,
                            &comment,
                            verifier,
                            expires_at,
                        ))
                        .await?;
                    tracing::info!(target = %self.target, role = name, mapped = %owner.role,
                        subject = %owner.subject, "ephemeral role created");
                    expires_at
                }
                Some(row) if row.get(1).and_then(Option::as_deref) == Some(comment.as_str()) => {
                    // Ours, from a session elsewhere or an earlier run: keep the later expiry.
                    let existing_until = row
                        .get(2)
                        .and_then(Option::as_deref)
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
                    let valid_until = existing_until.map_or(expires_at, |t| t.max(expires_at));
                    admin
                        .simple_query(&refresh_sql(name, &owner.role, verifier, valid_until))
                        .await?;
                    valid_until
                }
                Some(_) => {
                    tracing::info!(target = %self.target, role = name, subject = %owner.subject,
                        "role name belongs to someone else; trying the hashed name");
                    continue;
                }
            };
            state.live.insert(
                owner.clone(),
                Live {
                    name: name.to_owned(),
                    sessions: 0,
                    valid_until,
                },
            );
            return Ok(name.to_owned());
        }
        Err(UpstreamError::EphemeralRole(format!(
            "roles {} exist without Postern's marker for this identity; Postern leaves them alone",
            names.candidates().join(" and ")
        )))
    }

    /// One session of `owner` ended: the last one drops the role.
    async fn release(self: Arc<Self>, base: String, owner: Owner) {
        let slot = self.slot(&base);
        let mut state = slot.lock().await;
        let Some(live) = state.live.get_mut(&owner) else {
            return;
        };
        live.sessions = live.sessions.saturating_sub(1);
        if live.sessions == 0
            && let Some(live) = state.live.remove(&owner)
        {
            let work = self.drop_role(&live.name);
            match tokio::time::timeout(2 * ADMIN_STATEMENT_TIMEOUT, work).await {
                Ok(Ok(true)) => {
                    tracing::info!(target = %self.target, role = %live.name, subject = %owner.subject,
                        "ephemeral role dropped after its last session");
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(target = %self.target, role = %live.name, error = %error,
                        "cannot drop an ephemeral role; it is swept at the next start");
                }
                Err(_) => {
                    tracing::warn!(target = %self.target, role = %live.name,
                        "dropping an ephemeral role timed out; it is swept at the next start");
                }
            }
        }
        let empty = state.live.is_empty();
        self.forget_slot_if_unused(&base, &slot, empty);
    }

    /// Drops `name` if it carries Postern's marker: LOGIN off first (in its own transaction, so
    /// that it holds even if the drop fails), then what it owns, then the role. Sessions still
    /// logged in as it are not ended. `Ok(false)`: nothing to drop.
    async fn drop_role(&self, name: &str) -> Result<bool, UpstreamError> {
        let mut admin = self.admin().await?;
        let result = self.drop_role_with(&mut admin, name).await;
        admin.terminate().await;
        result
    }

    async fn drop_role_with(
        &self,
        admin: &mut Upstream,
        name: &str,
    ) -> Result<bool, UpstreamError> {
        let rows = admin
            .simple_query(&format!(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles \
                 WHERE rolname = {}",
                quote_literal(name)
            ))
            .await?
            .rows;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        let comment = row.first().cloned().flatten().unwrap_or_default();
        if !comment.starts_with(MARKER) {
            tracing::warn!(target = %self.target, role = name,
                "not dropping a role without Postern's marker comment");
            return Ok(false);
        }
        let role = quote_ident(name);
        admin
            .simple_query(&format!("ALTER ROLE {role} NOLOGIN"))
            .await?;
        let owned = match self.settings.on_owned_objects {
            OnOwnedObjects::Drop => format!("DROP OWNED BY {role}"),
            OnOwnedObjects::Reassign => {
                format!("REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}")
            }
        };
        admin
            .simple_query(&format!("{owned}; DROP ROLE {role}"))
            .await?;
        Ok(true)
    }

    /// The admin login, with a server-side limit on how long each statement may run.
    async fn admin(&self) -> Result<Upstream, UpstreamError> {
        let mut admin = login_as(&self.endpoint, &self.admin, &[]).await?;
        admin
            .simple_query(&format!(
                "SET statement_timeout = {}",
                ADMIN_STATEMENT_TIMEOUT.as_millis()
            ))
            .await?;
        Ok(admin)
    }

    /// Drops every role with this target's name prefix and Postern's marker: at start, when
    /// this process has no sessions, they are all leftovers.
    async fn sweep(&self) -> Result<Vec<String>, UpstreamError> {
        let mut admin = self.admin().await?;
        let result = self.sweep_with(&mut admin).await;
        admin.terminate().await;
        result
    }

    async fn sweep_with(&self, admin: &mut Upstream) -> Result<Vec<String>, UpstreamError> {
        let rows = admin
            .simple_query(&format!(
                "SELECT rolname FROM pg_catalog.pg_roles \
                 WHERE starts_with(rolname, {}) \
                   AND starts_with(coalesce(shobj_description(oid, 'pg_authid'), ''), {}) \
                 ORDER BY rolname",
                quote_literal(&self.settings.name_prefix),
                quote_literal(MARKER)
            ))
            .await?
            .rows;
        let mut swept = Vec::new();
        for name in rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
        {
            match self.drop_role_with(admin, &name).await {
                Ok(true) => swept.push(name),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(target = %self.target, role = %name, error = %error,
                        "cannot sweep a leftover ephemeral role");
                }
            }
        }
        Ok(swept)
    }
}

/// Creates the role, marks it, grants it the mapped role: one message, so one transaction.
fn create_sql(
    name: &str,
    mapped: &str,
    comment: &str,
    verifier: &str,
    until: SystemTime,
) -> String {
    let role = quote_ident(name);
    format!(
        "CREATE ROLE {role} LOGIN INHERIT PASSWORD {} VALID UNTIL {}; \
         COMMENT ON ROLE {role} IS {}; \
         GRANT {} TO {role}",
        quote_literal(verifier),
        quote_literal(&rfc3339(until)),
        quote_literal(comment),
        quote_ident(mapped),
    )
}

/// A new password and expiry for an existing role; LOGIN again (a release that failed half-way
/// may have turned it off) and the grant again (idempotent).
fn refresh_sql(name: &str, mapped: &str, verifier: &str, until: SystemTime) -> String {
    let role = quote_ident(name);
    format!(
        "ALTER ROLE {role} WITH LOGIN INHERIT PASSWORD {} VALID UNTIL {}; GRANT {} TO {role}",
        quote_literal(verifier),
        quote_literal(&rfc3339(until)),
        quote_ident(mapped),
    )
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A session's hold on its ephemeral role. Dropping it spawns the release: the last lease of a
/// role drops the role, without delaying the client whose session just ended.
pub(crate) struct EphemeralLease {
    roles: Arc<EphemeralRoles>,
    base: String,
    owner: Owner,
}

impl Drop for EphemeralLease {
    fn drop(&mut self) {
        let roles = Arc::clone(&self.roles);
        let release =
            Arc::clone(&roles).release(std::mem::take(&mut self.base), self.owner.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                roles.releases.spawn_on(release, &handle);
            }
            Err(_) => tracing::warn!(target = %roles.target, subject = %self.owner.subject,
                "no runtime to release an ephemeral role; it is swept at the next start"),
        }
    }
}

/// Sweeps the leftover roles of every `ephemeral_user` target, all targets at once. Run before
/// serving, so that no role of this process can be mistaken for a leftover, and after the
/// listening socket is bound, so that a second Postern started by mistake with the same
/// configuration fails there without sweeping the first one's roles. A target whose database
/// cannot be reached is logged and skipped.
pub(crate) async fn sweep_leftovers<'a>(targets: impl IntoIterator<Item = &'a Arc<Target>>) {
    let sweeps = targets.into_iter().filter_map(|target| {
        let roles = target.ephemeral_roles()?;
        Some(async move {
            match roles.sweep().await {
                Ok(swept) if swept.is_empty() => {}
                Ok(swept) => tracing::info!(target = %roles.target, roles = ?swept,
                    "swept ephemeral roles left by an earlier run"),
                Err(error) => tracing::warn!(target = %roles.target, error = %error,
                    "cannot sweep leftover ephemeral roles; they stay until the next start"),
            }
        })
    });
    futures_util::future::join_all(sweeps).await;
}

/// Waits for the role releases in flight (after every session has ended).
pub(crate) async fn drain<'a>(targets: impl IntoIterator<Item = &'a Arc<Target>>) {
    for target in targets {
        if let Some(roles) = target.ephemeral_roles() {
            roles.releases.close();
            roles.releases.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    fn owner(subject: &str, role: &str) -> Owner {
        Owner {
            issuer: "https://idp.example.com".into(),
            subject: subject.into(),
            role: role.into(),
        }
    }

    #[test]
    fn names_are_sanitised_subject_and_role() {
        let names = RoleNames::new("pst_", &owner("Alice@Example.com", "reader"));
        assert_eq!(names.primary, "pst_alice_example_com__reader");
        assert_eq!(names.base, names.primary);
        assert!(names.hashed.starts_with("pst_alice_example_com__reader_"));
        assert_eq!(names.hashed.len(), names.primary.len() + 1 + NAME_HASH_HEX);
        assert_eq!(names.candidates(), [&names.primary, &names.hashed]);

        for (subject, role, expected) in [
            ("bob", "Read-Only", "pst_bob__read_only"),
            ("élise", "reader", "pst__lise__reader"),
            ("a\"b'c;d", "r", "pst_a_b_c_d__r"),
            ("", "", "pst___"),
            ("x\0y", "r", "pst_x_y__r"),
        ] {
            assert_eq!(
                RoleNames::new("pst_", &owner(subject, role)).primary,
                expected
            );
        }
    }

    #[test]
    fn long_names_are_cut_and_hashed() {
        let long = "a".repeat(80);
        let one = RoleNames::new("pst_", &owner(&format!("{long}1"), "reader"));
        let two = RoleNames::new("pst_", &owner(&format!("{long}2"), "reader"));
        for names in [&one, &two] {
            assert_eq!(names.primary.len(), MAX_ROLE_NAME_BYTES);
            assert_eq!(names.primary, names.hashed);
            assert_eq!(names.candidates().len(), 1);
            assert!(names.primary.starts_with("pst_aaaa"));
        }
        assert_ne!(one.primary, two.primary);
        assert_eq!(one.primary[..50], two.primary[..50]);

        // 63 bytes exactly still fits.
        let fits = RoleNames::new("pst_", &owner(&"b".repeat(51), "reader"));
        assert_eq!(fits.primary.len(), 63);
        assert!(!fits.primary.contains(&fits.hashed[51..]));
    }

    #[test]
    fn owners_that_sanitise_alike_hash_apart() {
        let a = owner("alice@example.com", "reader");
        let b = owner("alice.example.com", "reader");
        let (na, nb) = (RoleNames::new("pst_", &a), RoleNames::new("pst_", &b));
        assert_eq!(na.primary, nb.primary);
        assert_eq!(na.base, nb.base);
        assert_ne!(na.hashed, nb.hashed);
        assert_ne!(a.comment(), b.comment());
        // The hash separates fields, so moving bytes between them changes it.
        let c = Owner {
            issuer: "https://idp.example.comx".into(),
            subject: "y".into(),
            role: "r".into(),
        };
        let d = Owner {
            issuer: "https://idp.example.com".into(),
            subject: "xy".into(),
            role: "r".into(),
        };
        assert_ne!(c.hash(), d.hash());
    }

    #[test]
    fn comments_are_unambiguous() {
        assert_eq!(
            owner("alice@example.com", "reader").comment(),
            "postern ephemeral: https://idp.example.com alice@example.com reader"
        );
        let spaced = owner("a ", "b").comment();
        let shifted = owner("a", " b").comment();
        assert_ne!(spaced, shifted);
        assert_eq!(
            spaced,
            "postern ephemeral: https://idp.example.com \"a \" b"
        );
        assert_eq!(
            owner("", "r").comment(),
            "postern ephemeral: https://idp.example.com \"\" r"
        );
    }

    #[test]
    fn statements_quote_what_they_carry() {
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let sql = create_sql(
            "pst_a__r",
            "Re\"ader",
            "postern ephemeral: i 'a' r",
            "SCRAM$x",
            until,
        );
        assert_eq!(
            sql,
            "CREATE ROLE \"pst_a__r\" LOGIN INHERIT PASSWORD 'SCRAM$x' \
             VALID UNTIL '2027-01-15T08:00:00Z'; \
             COMMENT ON ROLE \"pst_a__r\" IS 'postern ephemeral: i ''a'' r'; \
             GRANT \"Re\"\"ader\" TO \"pst_a__r\""
        );
        assert!(refresh_sql("pst_a__r", "reader", "v", until).starts_with(
            "ALTER ROLE \"pst_a__r\" WITH LOGIN INHERIT PASSWORD 'v' VALID UNTIL '2027-01-15T08:00:00Z';"
        ));
    }
}
