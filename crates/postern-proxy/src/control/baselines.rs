//! The operators' side of service identities' baselines (`baseline.rs`): list them, read one
//! whole, accept an anomaly into one, reset one. A baseline holds redacted statements, which is
//! audit-level information, so reading needs `view_audit` on its target; accepting a statement
//! into a service's allow list is an approval, so changing needs `approve` there. Every change is
//! audited (`kind: "control"`) before it is made, and goes through [`crate::baseline::Baselines`]
//! so this process's sessions see it at once, not only the store.

use std::collections::BTreeMap;

use postern_policy::cedar::Action;
use postern_store::{Baseline, BaselineEntryKind, BaselineKey, BaselineSummary, MAX_NAME_BYTES};
use serde_json::json;

use super::{Caller, Control, ControlError};

impl Control {
    /// The baselines on targets where `caller` may `view_audit`; refused if there is no such
    /// target.
    pub async fn baselines(&self, caller: &Caller) -> Result<Vec<BaselineSummary>, ControlError> {
        if !self
            .targets()?
            .iter()
            .any(|t| self.authorize(caller, Action::ViewAudit, t).is_ok())
        {
            return Err(ControlError::Forbidden(format!(
                "{} may not view_audit on any target: a policy must permit \
                 Action::\"view_audit\" for them",
                caller.identity.subject
            )));
        }
        let summaries = self.shared()?.baselines.store().baselines().await?;
        // A baseline may outlive its target's configuration; policy still decides on its name.
        let mut visible = BTreeMap::new();
        Ok(summaries
            .into_iter()
            .filter(|summary| {
                let target = &summary.key.target;
                *visible
                    .entry(target.clone())
                    .or_insert_with(|| self.authorize(caller, Action::ViewAudit, target).is_ok())
            })
            .collect())
    }

    /// The baseline of `key`, whole, if `caller` may `view_audit` on its target.
    pub async fn baseline(
        &self,
        caller: &Caller,
        key: &BaselineKey,
    ) -> Result<Baseline, ControlError> {
        key.validate()?;
        self.authorize(caller, Action::ViewAudit, &key.target)?;
        self.stored_baseline(key).await
    }

    /// Accepts the fingerprint or network `value` of the baseline of `key` (an anomaly: first
    /// seen after the observation window) into it: from now on it is learned, and an enforced
    /// service may run it. Needs `approve` on the target. Returns the baseline after.
    pub async fn accept_baseline_entry(
        &self,
        caller: &Caller,
        key: &BaselineKey,
        kind: &str,
        value: &str,
    ) -> Result<Baseline, ControlError> {
        key.validate()?;
        let kind = BaselineEntryKind::parse(kind).ok_or_else(|| {
            ControlError::Invalid(format!(
                "kind: {kind:?} is not an entry kind; write \"fingerprint\" or \"network\""
            ))
        })?;
        check_name("value", value)?;
        self.authorize(caller, Action::Approve, &key.target)?;
        let not_found = || {
            ControlError::NotFound(format!(
                "the baseline of {} from {} on target {:?} holds no {} {value:?}",
                key.subject,
                key.issuer,
                key.target,
                kind.as_str()
            ))
        };
        let before = self.stored_baseline(key).await?;
        let entry = before
            .entries
            .iter()
            .find(|e| e.kind == kind && e.value == value)
            .ok_or_else(not_found)?;
        if entry.learned {
            return Err(ControlError::Conflict(format!(
                "{} {value:?} is already part of the baseline of {} on target {:?}{}",
                kind.as_str(),
                key.subject,
                key.target,
                entry
                    .accepted_by
                    .as_ref()
                    .map(|by| format!(" (accepted by {by})"))
                    .unwrap_or_default()
            )));
        }
        self.audit(
            caller,
            "accept_baseline_entry",
            json!({
                "issuer": key.issuer,
                "subject": key.subject,
                "target": key.target,
                "kind": kind.as_str(),
                "value": value,
                "sample": entry.sample,
            }),
        )
        .await?;
        let shared = self.shared()?;
        let accepted = shared
            .baselines
            .accept(key, kind, value, &caller.identity.subject)
            .await?;
        if !accepted {
            // Reset between the read above and the write.
            return Err(not_found());
        }
        self.stored_baseline(key).await
    }

    /// Forgets everything the baseline of `key` holds and starts its observation window again
    /// now. Needs `approve` on the target. Returns the baseline after (empty).
    pub async fn reset_baseline(
        &self,
        caller: &Caller,
        key: &BaselineKey,
    ) -> Result<Baseline, ControlError> {
        key.validate()?;
        self.authorize(caller, Action::Approve, &key.target)?;
        let before = self.stored_baseline(key).await?;
        self.audit(
            caller,
            "reset_baseline",
            json!({
                "issuer": key.issuer,
                "subject": key.subject,
                "target": key.target,
                "entries_forgotten": before.entries.len(),
                "started_at_before": before.started_at,
            }),
        )
        .await?;
        let shared = self.shared()?;
        if !shared.baselines.reset(key, (shared.clock)()).await? {
            return Err(no_baseline(key));
        }
        self.stored_baseline(key).await
    }

    async fn stored_baseline(&self, key: &BaselineKey) -> Result<Baseline, ControlError> {
        self.shared()?
            .baselines
            .store()
            .baseline(key)
            .await?
            .ok_or_else(|| no_baseline(key))
    }
}

fn no_baseline(key: &BaselineKey) -> ControlError {
    ControlError::NotFound(format!(
        "no baseline of {} from {} on target {:?}",
        key.subject, key.issuer, key.target
    ))
}

fn check_name(field: &'static str, value: &str) -> Result<(), ControlError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES {
        return Err(ControlError::Invalid(format!(
            "invalid {field}: must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}
