//! A dry run of policy over a text: which statements it holds, what each is authorised as, and
//! how each request is decided. What `postern policy explain` prints, so that an operator can
//! see why a statement is refused without sending it to a database.

use std::fmt;

use postern_sql::StatementKind;

use super::decision::{Action, Decision, Resource};

/// How policy decides every request of an analysed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The parser's message when the text did not parse (it is then one `raw` request).
    pub parse_error: Option<String>,
    /// One entry per statement, in order.
    pub statements: Vec<StatementExplanation>,
    /// The decision the proxy would make: the first denial, or the allow of them all.
    pub decision: Decision,
}

/// How one statement is classified and decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementExplanation {
    /// The command tag (`SELECT`, `COPY`, ...).
    pub command: String,
    /// The classifier's kind.
    pub kind: StatementKind,
    /// The action it is authorised as; `None` when no policy governs it (transaction control,
    /// session statements naming no table).
    pub action: Option<Action>,
    /// One request per resource.
    pub requests: Vec<RequestExplanation>,
}

/// One Cedar request and its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestExplanation {
    /// The action asked.
    pub action: Action,
    /// The resource.
    pub resource: Resource,
    /// The decision, with the deciding policies.
    pub decision: Decision,
    /// Where each deciding policy was written: `(id, file:line:column)`.
    pub origins: Vec<(String, String)>,
    /// Cedar's evaluation errors, for the operator (they may quote attribute values, so they
    /// are never sent to a client).
    pub errors: Vec<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.parse_error {
            writeln!(f, "the text does not parse: {error}")?;
        }
        if self.statements.is_empty() {
            writeln!(f, "no statements")?;
        }
        for (i, statement) in self.statements.iter().enumerate() {
            write!(
                f,
                "statement {}: {} ({})",
                i + 1,
                statement.command,
                statement.kind
            )?;
            match statement.action {
                None => writeln!(f, ": not a policy matter")?,
                Some(action) => {
                    writeln!(f, ", authorised as {action}")?;
                    for request in &statement.requests {
                        write!(f, "  {request}")?;
                    }
                }
            }
        }
        match &self.decision {
            Decision::Allow { .. } => writeln!(f, "decision: allowed"),
            Decision::Deny { message, .. } => writeln!(f, "decision: {message}"),
        }
    }
}

impl fmt::Display for RequestExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}: ", self.action, self.resource)?;
        let named = |f: &mut fmt::Formatter<'_>, ids: &[String]| -> fmt::Result {
            for (i, id) in ids.iter().enumerate() {
                f.write_str(if i == 0 { " " } else { ", " })?;
                write!(f, "{id}")?;
                if let Some((_, origin)) = self.origins.iter().find(|(o, _)| o == id) {
                    write!(f, " ({origin})")?;
                }
            }
            Ok(())
        };
        match &self.decision {
            Decision::Allow {
                policies,
                approvals,
            } => {
                f.write_str("allowed")?;
                if !policies.is_empty() {
                    f.write_str(" by")?;
                    named(f, policies)?;
                }
                for approval in approvals {
                    write!(
                        f,
                        "; needs {} (policy {}) for {} on {}",
                        approval.spec, approval.policy, approval.action, approval.resource
                    )?;
                }
            }
            Decision::Deny {
                reason, policies, ..
            } => {
                write!(f, "denied ({})", reason.label())?;
                if !policies.is_empty() {
                    f.write_str(" by")?;
                    named(f, policies)?;
                }
            }
        }
        writeln!(f)?;
        for error in &self.errors {
            writeln!(f, "    error: {error}")?;
        }
        Ok(())
    }
}
