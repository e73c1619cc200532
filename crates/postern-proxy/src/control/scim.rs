//! SCIM 2.0 provisioning in the control plane: the identity provider's bearer token, the users it
//! provisions, and what their state means for access. A user deactivated (`active` true→false)
//! or deleted at the provider is revoked here at once — an issuer + subject revocation by
//! `scim`, every live session of that person ending with 57P01 and new logins refused — and a
//! user made active again has the revocations *SCIM* made for that person lifted, never one an
//! operator made.
//!
//! The SCIM protocol itself (resources, filters, PATCH, errors) is the admin API's
//! (`postern-admin/src/scim.rs`); the users are stored by `postern-store`. The provider is
//! authenticated by the token in `[admin.scim] token_file`, not by an identity token, so no
//! Cedar policy is asked: holding the token is the authority. Every change is audited (`kind:
//! "control"`, `by: "scim"`) before it is made.
//!
//! Each change brings access in line with the user's state as it now stands, whatever it was
//! before: a deactivation whose revocation failed to be written is revoked when the provider
//! sends it again. Changes are serialised in this process, so a user's state and the revocation
//! that follows from it change together.

use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use postern_config::{Config, ScimSubjectAttribute};
use postern_store::{
    NewRevocation, RevocationScope, ScimUser, ScimUserData, ScimUserFilter, ScimUserPage,
    unix_seconds,
};
use serde_json::{Map, Value, json};

use super::{Control, ControlError};
use crate::{SetupError, Shared};

/// Who SCIM's revocations are made (and lifted) by, as the users affected are told.
pub const SCIM_ACTOR: &str = "scim";

/// The reason of a revocation made because the provider deactivated the user.
pub const DEACTIVATED: &str = "deactivated in the identity provider (SCIM)";

/// The reason of a revocation made because the provider deleted the user.
pub const DELETED: &str = "deleted in the identity provider (SCIM)";

/// The shortest bearer token accepted in `token_file`: 32 characters (`openssl rand -hex 32`
/// makes 64).
const MIN_TOKEN_CHARS: usize = 32;

/// The longest bearer token compared; a longer one is refused without hashing it.
const MAX_TOKEN_BYTES: usize = 4096;

/// `[admin.scim]`, ready for use.
pub(crate) struct ScimSettings {
    /// SHA-256 of the bearer token: what a presented token's digest is compared with, in
    /// constant time (digests, so the comparison's length says nothing about the token's).
    token_digest: Vec<u8>,
    /// The `iss` of the issuer whose tokens carry these users' subjects.
    issuer: String,
    /// Which user attribute is the subject.
    subject_attribute: ScimSubjectAttribute,
    /// Held across each change: a user's row and the revocation that follows from it.
    writes: tokio::sync::Mutex<()>,
}

impl ScimSettings {
    /// The settings of `[admin.scim]`, with the token read from its file; `None` when SCIM is
    /// off.
    pub(crate) fn from_config(config: &Config) -> Result<Option<Self>, SetupError> {
        let Some(admin) = &config.admin else {
            return Ok(None);
        };
        let Some(scim) = &admin.scim else {
            return Ok(None);
        };
        let problem = |p: postern_config::Problem| SetupError::Scim(p.to_string());
        let (_, issuer) = admin
            .scim_issuer(&config.issuers)
            .map_err(problem)?
            .ok_or_else(|| SetupError::Scim("admin.scim.issuer: no issuer".to_owned()))?;
        let path = scim
            .token_file
            .as_ref()
            .ok_or_else(|| SetupError::Scim("admin.scim.token_file: required".to_owned()))?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            SetupError::Scim(format!("cannot read token_file {}: {e}", path.display()))
        })?;
        warn_if_readable_by_others(path);
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_CHARS
            || token.len() > MAX_TOKEN_BYTES
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(SetupError::Scim(format!(
                "the token in {} must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_BYTES} printable ASCII \
                 characters without spaces (make one with `openssl rand -hex 32`)",
                path.display()
            )));
        }
        Ok(Some(Self {
            token_digest: digest(&SHA256, token.as_bytes()).as_ref().to_vec(),
            issuer: issuer.issuer.clone(),
            subject_attribute: scim.subject_attribute,
            writes: tokio::sync::Mutex::new(()),
        }))
    }

    /// The subject of `user`'s tokens: the configured attribute, `None` when the user has no
    /// `externalId` and that is the attribute.
    fn subject_of<'a>(&self, user: &'a ScimUser) -> Option<&'a str> {
        match self.subject_attribute {
            ScimSubjectAttribute::UserName => Some(&user.data.user_name),
            ScimSubjectAttribute::ExternalId => user.data.external_id.as_deref(),
            ScimSubjectAttribute::Id => Some(&user.id),
        }
    }

    /// Refuses a user without the attribute that names the person.
    fn check(&self, data: &ScimUserData) -> Result<(), ControlError> {
        data.validate()?;
        if self.subject_attribute == ScimSubjectAttribute::ExternalId && data.external_id.is_none()
        {
            return Err(ControlError::Invalid(
                "externalId is required: Postern's [admin.scim] subject_attribute says it is the \
                 subject of this person's tokens"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "the SCIM token file can be read by other users: chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &std::path::Path) {}

/// The identity provider, proven to hold the SCIM bearer token: what every SCIM operation
/// takes.
#[derive(Debug, Clone)]
pub struct ScimClient {
    /// Where the request came from, for the audit log.
    source_ip: IpAddr,
}

/// Why a SCIM request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum ScimAuthError {
    /// `[admin.scim]` is not configured.
    #[error("SCIM provisioning is off: configure [admin.scim] to turn it on")]
    Off,
    /// The bearer token is not the configured one.
    #[error("the bearer token is not Postern's SCIM token ([admin.scim] token_file)")]
    WrongToken,
    #[error("Postern is shutting down")]
    Stopped,
}

/// What a user's state asks of access.
#[derive(Clone, Copy)]
enum Access {
    /// Active: the revocations SCIM made for the person are lifted.
    Allowed,
    /// Deactivated or deleted: the person is revoked (once), for this reason.
    Revoked(&'static str),
}

impl Control {
    /// Checks the provider's bearer token against `[admin.scim] token_file`, in constant time.
    ///
    /// # Errors
    /// [`ScimAuthError::Off`] when SCIM is not configured, [`ScimAuthError::WrongToken`] for any
    /// other token.
    pub fn scim_authenticate(
        &self,
        token: &str,
        source_ip: IpAddr,
    ) -> Result<ScimClient, ScimAuthError> {
        let shared = self.shared().map_err(|_| ScimAuthError::Stopped)?;
        let settings = shared.scim.as_ref().ok_or(ScimAuthError::Off)?;
        let matches = token.len() <= MAX_TOKEN_BYTES
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                digest(&SHA256, token.as_bytes()).as_ref(),
                &settings.token_digest,
            )
            .is_ok();
        if matches {
            Ok(ScimClient { source_ip })
        } else {
            shared.metrics.admin_auth_failure("scim_token");
            Err(ScimAuthError::WrongToken)
        }
    }

    /// Creates a user. An inactive one is revoked at once; an active one has the revocations
    /// SCIM made for that person before (a user deleted and provisioned again) lifted.
    ///
    /// # Errors
    /// [`ControlError::Invalid`] for a user without the subject attribute or with oversized
    /// fields, [`ControlError::Conflict`] when the `userName` is taken, and the audit log's and
    /// store's failures.
    pub async fn scim_create_user(
        &self,
        client: &ScimClient,
        data: ScimUserData,
    ) -> Result<ScimUser, ControlError> {
        let (shared, settings) = self.scim()?;
        settings.check(&data)?;
        let _write = settings.writes.lock().await;
        self.scim_audit(
            client,
            "scim_create_user",
            json!({"userName": data.user_name, "externalId": data.external_id, "active": data.active}),
        )
        .await?;
        let now = (shared.clock)();
        let user = shared
            .revocations
            .store()
            .create_scim_user(&data, unix_seconds(now))
            .await?;
        self.scim_enforce(client, &user, access(&user)).await?;
        Ok(user)
    }

    /// The user `id`.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] when there is none.
    pub async fn scim_user(
        &self,
        _client: &ScimClient,
        id: &str,
    ) -> Result<ScimUser, ControlError> {
        let (shared, _) = self.scim()?;
        shared
            .revocations
            .store()
            .scim_user(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// The users `filter` matches, `limit` of them after `offset`, and how many in all.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn scim_users(
        &self,
        _client: &ScimClient,
        filter: Option<&ScimUserFilter>,
        offset: u64,
        limit: u32,
    ) -> Result<ScimUserPage, ControlError> {
        let (shared, _) = self.scim()?;
        Ok(shared
            .revocations
            .store()
            .scim_users(filter, offset, limit)
            .await?)
    }

    /// Replaces user `id` by what `change` makes of it (PUT gives the new user, PATCH applies
    /// its operations to the current one), then brings access in line: deactivated, the person
    /// is revoked and their live sessions end now; active, SCIM's revocations of them are
    /// lifted. `change` runs while this process's SCIM changes wait, so PATCH reads and writes
    /// one state.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] when there is no such user, whatever `change` returns, and as
    /// [`Control::scim_create_user`].
    pub async fn scim_update_user<F, E>(
        &self,
        client: &ScimClient,
        id: &str,
        change: F,
    ) -> Result<ScimUser, E>
    where
        F: FnOnce(&ScimUser) -> Result<ScimUserData, E>,
        E: From<ControlError>,
    {
        let (shared, settings) = self.scim()?;
        let store = shared.revocations.store();
        let _write = settings.writes.lock().await;
        let current = store
            .scim_user(id)
            .await
            .map_err(ControlError::from)?
            .ok_or_else(|| not_found(id))?;
        let data = change(&current)?;
        settings.check(&data)?;
        self.scim_audit(
            client,
            "scim_update_user",
            json!({
                "user": id,
                "userName": data.user_name,
                "externalId": data.external_id,
                "active": data.active,
                "was_active": current.data.active,
            }),
        )
        .await?;
        let now = (shared.clock)();
        let (_, user) = store
            .replace_scim_user(id, &data, unix_seconds(now))
            .await
            .map_err(ControlError::from)?
            .ok_or_else(|| not_found(id))?;
        self.scim_enforce(client, &user, access(&user)).await?;
        Ok(user)
    }

    /// Deletes user `id` and revokes the person: deleted at the provider, they may not come
    /// back unless provisioned again (or an operator lifts the revocation).
    ///
    /// # Errors
    /// [`ControlError::NotFound`] when there is no such user, and the audit log's and store's
    /// failures.
    pub async fn scim_delete_user(
        &self,
        client: &ScimClient,
        id: &str,
    ) -> Result<ScimUser, ControlError> {
        let (shared, settings) = self.scim()?;
        let store = shared.revocations.store();
        let _write = settings.writes.lock().await;
        let current = store.scim_user(id).await?.ok_or_else(|| not_found(id))?;
        self.scim_audit(
            client,
            "scim_delete_user",
            json!({"user": id, "userName": current.data.user_name, "externalId": current.data.external_id}),
        )
        .await?;
        let user = store
            .delete_scim_user(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        self.scim_enforce(client, &user, Access::Revoked(DELETED))
            .await?;
        Ok(user)
    }

    fn scim(&self) -> Result<(Arc<Shared>, Arc<ScimSettings>), ControlError> {
        let shared = self.shared()?;
        let settings = shared
            .scim
            .clone()
            .ok_or_else(|| ControlError::NotFound(ScimAuthError::Off.to_string()))?;
        Ok((shared, settings))
    }

    /// Brings the person's access in line with `access`: revoked once (an existing SCIM
    /// revocation of them stands) and their live sessions ended, or SCIM's revocations of them
    /// lifted.
    async fn scim_enforce(
        &self,
        client: &ScimClient,
        user: &ScimUser,
        access: Access,
    ) -> Result<(), ControlError> {
        let (shared, settings) = self.scim()?;
        let Some(subject) = settings.subject_of(user) else {
            // Only a user stored before subject_attribute became externalId can lack it.
            tracing::warn!(user = %user.id, "SCIM user has no externalId: no subject to revoke or lift");
            return Ok(());
        };
        let store = shared.revocations.store();
        let now = (shared.clock)();
        let in_force = store
            .scim_revocations_in_force(&settings.issuer, subject, unix_seconds(now))
            .await?;
        match access {
            Access::Revoked(_) if !in_force.is_empty() => Ok(()),
            Access::Allowed if in_force.is_empty() => Ok(()),
            Access::Revoked(reason) => {
                let new = NewRevocation {
                    scope: RevocationScope::IssuerSubject {
                        issuer: settings.issuer.clone(),
                        subject: subject.to_owned(),
                    },
                    reason: reason.to_owned(),
                    created_by: SCIM_ACTOR.to_owned(),
                    created_at: unix_seconds(now),
                    expires_at: None,
                };
                new.validate()?;
                self.scim_audit(
                    client,
                    "revoke",
                    json!({"scope": new.scope, "reason": reason, "expires_at": null, "user": user.id}),
                )
                .await?;
                let revocation = store.add_scim_revocation(new).await?;
                let ended = shared.revocations.refresh(&shared.sessions, now).await?;
                tracing::info!(subject, revocation = %revocation.id, sessions_ended = ended, reason, "SCIM revoked a person");
                Ok(())
            }
            Access::Allowed => {
                self.scim_audit(
                    client,
                    "lift_revocation",
                    json!({"revocations": in_force, "subject": subject, "user": user.id}),
                )
                .await?;
                let lifted = store
                    .lift_scim_revocations(&settings.issuer, subject, SCIM_ACTOR, unix_seconds(now))
                    .await?;
                shared.revocations.refresh(&shared.sessions, now).await?;
                tracing::info!(subject, ?lifted, "SCIM reactivated a person");
                Ok(())
            }
        }
    }

    /// Records a SCIM change before it is made; refuses it if the record fails.
    async fn scim_audit(
        &self,
        client: &ScimClient,
        action: &str,
        details: Value,
    ) -> Result<(), ControlError> {
        let audit = self.shared()?.audit.clone();
        let mut event = Map::new();
        event.insert("kind".into(), json!("control"));
        event.insert("action".into(), json!(action));
        event.insert("by".into(), json!(SCIM_ACTOR));
        event.insert("source_ip".into(), json!(client.source_ip.to_string()));
        event.insert("details".into(), details);
        audit
            .record(event)
            .await
            .map(|_| ())
            .map_err(|e| ControlError::Audit(e.client_message()))
    }
}

fn access(user: &ScimUser) -> Access {
    if user.data.active {
        Access::Allowed
    } else {
        Access::Revoked(DEACTIVATED)
    }
}

fn not_found(id: &str) -> ControlError {
    ControlError::NotFound(format!("no SCIM user {id:?}"))
}
