//! Who may search the audit log. The search itself (reading the file) is the admin API's; this
//! decides whether the caller may, records that they did, and says where the log is.

use std::path::PathBuf;

use postern_policy::cedar::Action;
use serde_json::Value;

use super::{Caller, Control, ControlError};

impl Control {
    /// The audit log's path, for `caller` to search with `filters`.
    ///
    /// Allowed with `view_audit` on every target: the log holds every target's events in one
    /// file. A search changes nothing, but it shows other people's statements, so it is recorded
    /// (`kind: "control"`, `action: "search_audit"`, the filters as details) before the log is
    /// read, and refused if it cannot be, as a change would be.
    pub async fn audit_search(
        &self,
        caller: &Caller,
        filters: Value,
    ) -> Result<PathBuf, ControlError> {
        for target in self.targets()? {
            self.authorize(caller, Action::ViewAudit, &target)?;
        }
        self.audit(caller, "search_audit", filters).await?;
        Ok(self.shared()?.audit.path().to_path_buf())
    }
}
