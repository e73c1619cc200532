//! Revocations in force: checked in memory on every login, refreshed from the control store
//! every second (so a revocation made by another Postern sharing the store reaches this one's
//! sessions within that time), and every live session a new revocation covers is ended.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use postern_identity::Identity;
use postern_store::{Revocation, RevocationSet, Store, unix_seconds};

use crate::registry::{EndKind, EndRequest, LiveSession, Sessions};

/// How often the revocations in force are read again from the store.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Revocations {
    store: Store,
    in_force: ArcSwap<RevocationSet>,
}

impl Revocations {
    pub(crate) async fn load(
        store: Store,
        now: SystemTime,
    ) -> Result<Self, postern_store::StoreError> {
        let set = store.revocation_set(unix_seconds(now)).await?;
        Ok(Self {
            store,
            in_force: ArcSwap::from_pointee(set),
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The revocation in force that covers `identity`, if any.
    pub(crate) fn covering(&self, identity: &Identity, now: SystemTime) -> Option<Revocation> {
        self.in_force
            .load()
            .covering(
                &identity.issuer,
                &identity.subject,
                &identity.groups,
                identity.token_id.as_deref(),
                unix_seconds(now),
            )
            .cloned()
    }

    /// Reads the revocations in force again and ends every live session one of them covers.
    /// Returns the sessions ended.
    pub(crate) async fn refresh(
        &self,
        sessions: &Sessions,
        now: SystemTime,
    ) -> Result<usize, postern_store::StoreError> {
        let set = Arc::new(self.store.revocation_set(unix_seconds(now)).await?);
        self.in_force.store(Arc::clone(&set));
        Ok(end_covered(&set, sessions, now))
    }
}

/// Ends the live sessions `set` covers at `now` (each by the first revocation covering it),
/// except those already ending.
pub(crate) fn end_covered(set: &RevocationSet, sessions: &Sessions, now: SystemTime) -> usize {
    if set.is_empty() {
        return 0;
    }
    let now = unix_seconds(now);
    sessions
        .end_each(|session: &LiveSession| {
            let identity = &session.identity;
            let revocation = set.covering(
                &identity.issuer,
                &identity.subject,
                &identity.groups,
                identity.token_id.as_deref(),
                now,
            )?;
            Some(EndRequest {
                kind: EndKind::Revoked,
                by: revocation.created_by.clone(),
                reason: revocation.reason.clone(),
            })
        })
        .len()
}

/// The message of a login refused by `revocation`.
pub(crate) fn refusal_message(identity: &Identity, revocation: &Revocation) -> String {
    let reason = if revocation.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", revocation.reason)
    };
    let until = match revocation.expires_at {
        Some(expires_at) => format!(
            " until {}",
            humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(expires_at).unwrap_or(0))
            )
        ),
        None => String::new(),
    };
    format!(
        "access for {} was revoked by {}{until}{reason}",
        identity.subject, revocation.created_by
    )
}
