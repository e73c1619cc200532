//! The audit events a session writes: their field names in one place, so the log reads the same
//! for every kind of event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_audit::Event;
use postern_identity::{Identity, IdentityKind};
use serde_json::{Map, Value, json};

/// Fields every event of one connection carries.
pub fn connection_base(session: &str, client: SocketAddr, tls: bool) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("session".into(), json!(session));
    event.insert("client".into(), json!(client.to_string()));
    event.insert("tls".into(), json!(tls));
    event
}

/// Adds what the client asked for: target, role, application_name (as the client gave it).
pub fn add_request(
    event: &mut Map<String, Value>,
    target: Option<&str>,
    role: Option<&str>,
    application_name: Option<&str>,
) {
    if let Some(target) = target {
        event.insert("target".into(), json!(target));
    }
    if let Some(role) = role {
        event.insert("role".into(), json!(role));
    }
    if let Some(name) = application_name {
        event.insert("application_name".into(), json!(name));
    }
}

/// Adds how the client presented its token: `password` or `oauthbearer` (or `certificate`, by
/// [`add_client_certificate`]).
pub fn add_client_auth(event: &mut Map<String, Value>, method: &str) {
    event.insert("client_auth".into(), json!(method));
}

/// Marks a login by client certificate (no token was asked for) and names the certificate by
/// its SHA-256 thumbprint (base64url, JOSE's `x5t#S256`), so an event can be traced to the
/// exact certificate, refused or not.
pub fn add_client_certificate(event: &mut Map<String, Value>, thumbprint: &str) {
    add_client_auth(event, "certificate");
    event.insert("client_certificate".into(), json!(thumbprint));
}

/// Adds the verified identity.
pub fn add_identity(event: &mut Map<String, Value>, identity: &Identity) {
    event.insert("issuer".into(), json!(identity.issuer));
    event.insert("subject".into(), json!(identity.subject));
    let kind = match identity.kind {
        IdentityKind::Human => "human",
        IdentityKind::Service => "service",
    };
    event.insert("identity_kind".into(), json!(kind));
}

/// A connection accepted or refused.
pub fn connection(base: &Map<String, Value>, refused: Option<(&str, &str)>) -> Map<String, Value> {
    let mut event = base.clone();
    event.insert("kind".into(), json!("connection"));
    match refused {
        None => {
            event.insert("decision".into(), json!("accepted"));
        }
        Some((reason, message)) => {
            event.insert("decision".into(), json!("refused"));
            event.insert("reason".into(), json!(reason));
            event.insert("message".into(), json!(message));
        }
    }
    event
}

/// What Postern knows about a statement when it decides on it: its classification, kept to
/// decide again at each execution of a prepared statement and to describe it in events.
pub struct StatementRecord {
    pub analysis: std::sync::Arc<postern_sql::Analysis>,
}

impl StatementRecord {
    /// The text with literals that could be secrets replaced.
    pub fn sql(&self) -> &str {
        &self.analysis.redacted
    }

    /// Every table the text names, as written, each once.
    fn tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self
            .analysis
            .statements
            .iter()
            .flat_map(|s| s.tables.iter().map(String::as_str))
            .collect();
        tables.sort_unstable();
        tables.dedup();
        tables
    }
}

/// A statement about to be forwarded, or refused: the session's base shared, not copied (two
/// events per statement).
pub fn statement(
    base: &Arc<postern_audit::EventBase>,
    id: u64,
    protocol: &str,
    record: &StatementRecord,
    refused: Option<(&str, &str)>,
    policies: &[String],
) -> Event {
    let mut event = Map::new();
    event.insert("kind".into(), json!("statement"));
    event.insert("statement_id".into(), json!(id));
    event.insert("protocol".into(), json!(protocol));
    event.insert("sql".into(), json!(record.sql()));
    if let Some(fingerprint) = &record.analysis.fingerprint {
        event.insert("fingerprint".into(), json!(fingerprint));
    }
    event.insert(
        "statement_kind".into(),
        json!(record.analysis.kind().as_str()),
    );
    let tables = record.tables();
    if !tables.is_empty() {
        event.insert("tables".into(), json!(tables));
    }
    match refused {
        None => {
            event.insert("decision".into(), json!("allowed"));
        }
        Some((reason, message)) => {
            event.insert("decision".into(), json!("refused"));
            event.insert("reason".into(), json!(reason));
            event.insert("message".into(), json!(message));
        }
    }
    // The `@id`s of the policies that decided it.
    if !policies.is_empty() {
        event.insert("policies".into(), json!(policies));
    }
    Event::with_base(Arc::clone(base), event)
}

/// How a forwarded statement ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub command_tags: Vec<String>,
    pub rows: Option<u64>,
    pub sqlstate: Option<String>,
    /// Never ran: an earlier error in the same pipeline made the server skip it.
    pub skipped: bool,
}

pub fn statement_end(
    base: &Arc<postern_audit::EventBase>,
    id: u64,
    outcome: &Outcome,
    duration: Duration,
) -> Event {
    let mut event = Map::new();
    event.insert("kind".into(), json!("statement_end"));
    event.insert("statement_id".into(), json!(id));
    let result = if outcome.skipped {
        "skipped"
    } else if outcome.sqlstate.is_some() {
        "error"
    } else {
        "ok"
    };
    event.insert("outcome".into(), json!(result));
    if !outcome.command_tags.is_empty() {
        event.insert("command_tag".into(), json!(outcome.command_tags.join("; ")));
    }
    if let Some(rows) = outcome.rows {
        event.insert("rows".into(), json!(rows));
    }
    if let Some(code) = &outcome.sqlstate {
        event.insert("sqlstate".into(), json!(code));
    }
    event.insert("duration_ms".into(), json!(duration.as_secs_f64() * 1000.0));
    Event::with_base(Arc::clone(base), event)
}

/// A session's end; `ended_by`: the request that ended it, if one did (a kill, a revocation).
pub fn session_end(
    base: &Arc<postern_audit::EventBase>,
    statements: u64,
    duration: Duration,
    reason: &str,
    ended_by: Option<&crate::registry::EndRequest>,
) -> Event {
    let mut event = Map::new();
    event.insert("kind".into(), json!("session_end"));
    event.insert("statements".into(), json!(statements));
    event.insert("duration_ms".into(), json!(duration.as_secs_f64() * 1000.0));
    event.insert("reason".into(), json!(reason));
    if let Some(request) = ended_by {
        event.insert("ended_by".into(), json!(request.by));
        event.insert("end_reason".into(), json!(request.reason));
    }
    Event::with_base(Arc::clone(base), event)
}

/// The row count a command tag reports (`INSERT 0 3`, `SELECT 5`, `COPY 10`), if it reports one.
pub fn rows_of(tag: &str) -> Option<u64> {
    let mut words = tag.split_ascii_whitespace();
    let command = words.next()?;
    if !matches!(
        command,
        "INSERT" | "UPDATE" | "DELETE" | "SELECT" | "MERGE" | "COPY" | "FETCH" | "MOVE"
    ) {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::rows_of;

    #[test]
    fn rows_come_from_the_last_number_of_counting_tags() {
        assert_eq!(rows_of("INSERT 0 3"), Some(3));
        assert_eq!(rows_of("SELECT 12"), Some(12));
        assert_eq!(rows_of("COPY 0"), Some(0));
        assert_eq!(rows_of("CREATE TABLE"), None);
        assert_eq!(rows_of("SET"), None);
    }
}
