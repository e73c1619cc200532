//! What a policy decision says: allowed (by which policies, and whether they ask for approval) or
//! denied (why, by which policies, and what to tell the client).

use std::fmt;

/// A Cedar action: what the principal wants to do. Statement classes map onto these one to one,
/// except that `COPY ... TO STDOUT` and `COPY ... FROM STDIN` get their own actions (inside
/// `read` and `write` in the schema's hierarchy) so that bulk export and import can be governed
/// apart from ordinary reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Open a session on a target.
    Connect,
    /// Run the session as a database role.
    Assume,
    /// `SELECT`, `SHOW`, `EXPLAIN`, ...
    Read,
    /// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `CALL`, ...
    Write,
    /// Schema changes.
    Ddl,
    /// Privileges and roles.
    Dcl,
    /// Server administration.
    Admin,
    /// `COPY ... TO STDOUT`.
    CopyOut,
    /// `COPY ... FROM STDIN`.
    CopyIn,
    /// What Postern cannot check: `DO`, unparseable text, SQL run from text.
    Raw,
    /// Approve another identity's held statement (reserved).
    Approve,
    /// See the live sessions on a target (admin API, `postern sessions`).
    ViewSessions,
    /// End another identity's live session on a target (`postern kill`).
    EndSession,
    /// Revoke identities' access. Revocations cover every target, so this must be allowed on
    /// every target.
    Revoke,
    /// Search the audit log (admin API `GET /v1/audit`). The log holds every target's events,
    /// so this must be allowed on every target.
    ViewAudit,
}

impl Action {
    /// Every action, in the order of [`Action::index`].
    pub const ALL: [Self; 15] = [
        Self::Connect,
        Self::Assume,
        Self::Read,
        Self::Write,
        Self::Ddl,
        Self::Dcl,
        Self::Admin,
        Self::CopyOut,
        Self::CopyIn,
        Self::Raw,
        Self::Approve,
        Self::ViewSessions,
        Self::EndSession,
        Self::Revoke,
        Self::ViewAudit,
    ];

    /// The Cedar action id (`Action::"copy_in"`), also the name used in messages and audit
    /// events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Assume => "assume",
            Self::Read => "read",
            Self::Write => "write",
            Self::Ddl => "ddl",
            Self::Dcl => "dcl",
            Self::Admin => "admin",
            Self::CopyOut => "copy_out",
            Self::CopyIn => "copy_in",
            Self::Raw => "raw",
            Self::Approve => "approve",
            Self::ViewSessions => "view_sessions",
            Self::EndSession => "end_session",
            Self::Revoke => "revoke",
            Self::ViewAudit => "view_audit",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether the action is a statement's: only a statement can be held for approval, so for
    /// the others (connect, assume, the control actions) a permit that asks for approval never
    /// allows.
    #[must_use]
    pub fn is_statement(self) -> bool {
        matches!(
            self,
            Self::Read
                | Self::Write
                | Self::Ddl
                | Self::Dcl
                | Self::Admin
                | Self::CopyOut
                | Self::CopyIn
                | Self::Raw
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Cedar resource of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `Target::"<name>"`: for `connect`, and for statements that name no table.
    Target {
        /// The target's name in the configuration.
        name: String,
    },
    /// `Role::"<target>/<name>"`: for `assume`.
    Role {
        /// The target's name in the configuration.
        target: String,
        /// The database role.
        name: String,
    },
    /// `Table::"<schema>.<name>"`: for statements, one request per table they name.
    Table {
        /// The schema, explicit or one of those the session's `search_path` may find it in.
        schema: String,
        /// The relation's name.
        name: String,
    },
}

impl fmt::Display for Resource {
    /// How the resource reads in a client message: `public.orders`, `target demo`,
    /// `role reader`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Target { name } => write!(f, "target {name}"),
            Self::Role { name, .. } => write!(f, "role {name}"),
            Self::Table { schema, name } => write!(f, "{schema}.{name}"),
        }
    }
}

/// Why a request was denied, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// A `forbid` policy applied.
    Forbidden,
    /// No `permit` policy applied: closed by default.
    NotPermitted,
    /// A policy could not be evaluated (an overflow, a bad extension argument, ...). Cedar would
    /// skip it; Postern denies instead, since a skipped `forbid` would have allowed.
    EvaluationError,
}

impl DenyReason {
    /// A stable name for metrics and audit events.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::NotPermitted => "not_permitted",
            Self::EvaluationError => "evaluation_error",
        }
    }
}

/// A request that only `@approval(...)` permits allowed: it may go ahead once approved. Reported
/// only; holding the statement is the proxy's job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalRequirement {
    /// The annotated policy's `@id`.
    pub policy: String,
    /// What the annotation asks for.
    pub spec: super::approval::ApprovalSpec,
    /// The action that needs the approval.
    pub action: Action,
    /// On what.
    pub resource: Resource,
}

/// The outcome of one request, or of all the requests a text makes (the first denial wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed. `policies` are the `@id`s of the permits that applied (empty when no request was
    /// needed: transaction control, empty queries). `approvals` is not empty when some request
    /// was allowed only by permits annotated `@approval`: one entry per such permit and
    /// request. A request that any unannotated permit allows needs no approval.
    Allow {
        /// The `@id`s of the permit policies that applied, in load order.
        policies: Vec<String>,
        /// The `@approval` annotations among them.
        approvals: Vec<ApprovalRequirement>,
    },
    /// Denied.
    Deny {
        /// Why, as a metrics label.
        reason: DenyReason,
        /// The deciding policies, in load order: the forbids that applied, or the policies that
        /// failed to evaluate; empty when nothing permitted the request.
        policies: Vec<String>,
        /// What was asked.
        action: Action,
        /// On what.
        resource: Resource,
        /// What the client sees (after `ERROR: ` with SQLSTATE 42501). Names the policy, the
        /// action, the resource, the subject and the role; never policy contents or claims.
        message: String,
    },
}

impl Decision {
    /// Whether the request may go ahead (perhaps after approval).
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// The deciding policies' `@id`s, allowed or denied.
    #[must_use]
    pub fn policies(&self) -> &[String] {
        match self {
            Self::Allow { policies, .. } | Self::Deny { policies, .. } => policies,
        }
    }

    /// The client message of a denial; `None` when allowed.
    #[must_use]
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Allow { .. } => None,
            Self::Deny { message, .. } => Some(message),
        }
    }

    /// An allow that needed no policy.
    pub(crate) fn allow_unchecked() -> Self {
        Self::Allow {
            policies: Vec::new(),
            approvals: Vec::new(),
        }
    }

    /// Adds the policies and approvals of another allow to this one (for texts of several
    /// statements, or statements on several tables). A no-op on a denial.
    pub(crate) fn merge_allow(&mut self, other: Self) {
        if let (
            Self::Allow {
                policies,
                approvals,
            },
            Self::Allow {
                policies: more,
                approvals: more_approvals,
            },
        ) = (self, other)
        {
            for policy in more {
                if !policies.contains(&policy) {
                    policies.push(policy);
                }
            }
            for approval in more_approvals {
                if !approvals.contains(&approval) {
                    approvals.push(approval);
                }
            }
        }
    }
}

/// Who asked, for messages: `alice@example.com as reader`.
pub(crate) struct Asker<'a> {
    pub(crate) subject: &'a str,
    pub(crate) role: &'a str,
}

impl fmt::Display for Asker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subject)?;
        if !self.role.is_empty() {
            write!(f, " as {}", self.role)?;
        }
        Ok(())
    }
}

/// The client message for a denial, in the three forms Postern uses.
pub(crate) fn deny_message(
    reason: DenyReason,
    policies: &[String],
    action: Action,
    resource: &Resource,
    asker: &Asker<'_>,
) -> String {
    match (reason, policies.first()) {
        (DenyReason::Forbidden, Some(policy)) => format!(
            "permission denied by policy \"{policy}\": {action} on {resource} is not allowed for \
             {asker}"
        ),
        (DenyReason::EvaluationError, Some(policy)) => format!(
            "permission denied: policy \"{policy}\" could not be evaluated for {action} on \
             {resource} for {asker}"
        ),
        (DenyReason::EvaluationError, None) => format!(
            "permission denied: the policies could not be evaluated for {action} on {resource} \
             for {asker}"
        ),
        (DenyReason::Forbidden | DenyReason::NotPermitted, _) => {
            format!("permission denied: no policy allows {action} on {resource} for {asker}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Action, Asker, DenyReason, Resource, deny_message};

    #[test]
    fn messages() {
        let table = Resource::Table {
            schema: "public".into(),
            name: "orders".into(),
        };
        let alice = Asker {
            subject: "alice@example.com",
            role: "reader",
        };
        assert_eq!(
            deny_message(
                DenyReason::Forbidden,
                &["analysts-read-only".into(), "other".into()],
                Action::Write,
                &table,
                &alice
            ),
            "permission denied by policy \"analysts-read-only\": write on public.orders is not \
             allowed for alice@example.com as reader"
        );
        assert_eq!(
            deny_message(DenyReason::NotPermitted, &[], Action::Write, &table, &alice),
            "permission denied: no policy allows write on public.orders for alice@example.com as \
             reader"
        );
        let nobody = Asker {
            subject: "ci",
            role: "",
        };
        assert_eq!(
            deny_message(
                DenyReason::EvaluationError,
                &["p".into()],
                Action::Connect,
                &Resource::Target {
                    name: "demo".into()
                },
                &nobody
            ),
            "permission denied: policy \"p\" could not be evaluated for connect on target demo \
             for ci"
        );
        for (i, action) in Action::ALL.iter().enumerate() {
            assert_eq!(action.index(), i);
        }
    }
}
