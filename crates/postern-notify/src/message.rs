//! What a notification says ([`Message`]) and the JSON body it becomes.
//!
//! The body is a Slack incoming-webhook message (<https://api.slack.com/messaging/webhooks>):
//! `text` (the fallback shown in notifications) and `blocks` (the summary, the fields, the
//! statement in a code block). Slack ignores top-level keys it does not know, so the same body
//! carries a `postern` object with the event, the request id and the fields as structured JSON
//! for any other receiver. This module does not decide *what* the fields are: the caller
//! (the approvals flow) picks them and redacts the statement before it gets here.

use serde_json::{Map, Value, json};

use crate::limits::{
    MAX_STRUCTURED_STRING_CHARS, SLACK_FIELD_TEXT_CHARS, SLACK_MAX_FIELDS, SLACK_SECTION_TEXT_CHARS,
};
use crate::mrkdwn;

/// The field shown as a code block rather than as a label and value.
const STATEMENT_FIELD: &str = "statement";

/// One notification, sent to every approver group it is addressed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// What happened, as a dotted name receivers can switch on: `approval.requested`,
    /// `approval.approved`, `approval.denied`, `approval.expired`, …
    pub event: String,
    /// The approval request this is about; receivers use it to act on the request.
    pub request_id: String,
    /// A plain-text summary for people, with the command or console URL that approves the
    /// request. Plain text, not mrkdwn: it is escaped like every user-supplied value (Slack turns
    /// bare URLs into links by itself).
    pub text: String,
    /// Details as a JSON object — requester, role, target, statement (already redacted), reason,
    /// … Each member becomes a field of the Slack message (`requester` → `*Requester*`), except
    /// `statement`, shown as a code block; the whole object is also sent as `postern.fields`.
    pub fields: Value,
}

impl Message {
    /// The JSON body of the webhook request.
    pub(crate) fn body(&self) -> Vec<u8> {
        let summary = if self.text.trim().is_empty() {
            mrkdwn::escape(&self.event, SLACK_SECTION_TEXT_CHARS)
        } else {
            mrkdwn::escape(&self.text, SLACK_SECTION_TEXT_CHARS)
        };
        let mut blocks = vec![section_text(summary.clone())];
        if let Some(fields) = self.fields.as_object() {
            let shown: Vec<Value> = fields
                .iter()
                .filter(|(name, value)| name.as_str() != STATEMENT_FIELD && !value.is_null())
                .take(SLACK_MAX_FIELDS)
                .map(|(name, value)| field(name, value))
                .collect();
            if !shown.is_empty() {
                blocks.push(json!({ "type": "section", "fields": shown }));
            }
            if let Some(statement) = fields.get(STATEMENT_FIELD).and_then(Value::as_str) {
                let heading = "*Statement*\n";
                let budget = SLACK_SECTION_TEXT_CHARS - heading.len();
                blocks.push(section_text(format!(
                    "{heading}{}",
                    mrkdwn::code_block(statement, budget)
                )));
            }
        }
        let body = json!({
            "text": summary,
            "blocks": blocks,
            "postern": {
                "event": self.event,
                "request_id": self.request_id,
                "fields": bounded(&self.fields),
            },
        });
        // `Value`'s `Display` is its compact JSON, and cannot fail.
        body.to_string().into_bytes()
    }
}

/// A section block of mrkdwn text (already escaped).
fn section_text(text: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

/// One entry of a section's `fields`: the member's name as a bold label, its value below.
fn field(name: &str, value: &Value) -> Value {
    let label = mrkdwn::escape(&label(name), SLACK_FIELD_TEXT_CHARS / 4);
    let value = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    // The label, two asterisks and a newline come first.
    let budget = SLACK_FIELD_TEXT_CHARS.saturating_sub(label.chars().count() + 3);
    json!({ "type": "mrkdwn", "text": format!("*{label}*\n{}", mrkdwn::escape(&value, budget)) })
}

/// `target_role` → `Target role`.
fn label(name: &str) -> String {
    let spaced = name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

/// A copy of `value` with every string cut to [`MAX_STRUCTURED_STRING_CHARS`].
fn bounded(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(mrkdwn::truncate(text, MAX_STRUCTURED_STRING_CHARS)),
        Value::Array(items) => Value::Array(items.iter().map(bounded).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(name, member)| (name.clone(), bounded(member)))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    fn message(fields: Value) -> Message {
        Message {
            event: "approval.requested".into(),
            request_id: "req-1".into(),
            text: "alice <alice@example.com> asks to run a write on prod: postern approve req-1"
                .into(),
            fields,
        }
    }

    fn parse(message: &Message) -> Value {
        serde_json::from_slice(&message.body()).unwrap()
    }

    #[test]
    fn slack_shape_with_structured_copy() {
        let body = parse(&message(json!({
            "requester": "alice@example.com",
            "role": "writer",
            "reason": "fix <!channel> & ticket",
            "statement": "UPDATE orders SET total = $1 WHERE id < $2",
            "ttl_seconds": 900,
            "note": null,
        })));
        assert_eq!(
            body["text"],
            "alice &lt;alice@example.com&gt; asks to run a write on prod: postern approve req-1"
        );
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        assert_eq!(blocks[0]["text"]["text"], body["text"]);
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|field| field["text"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&"*Requester*\nalice@example.com"));
        assert!(fields.contains(&"*Reason*\nfix &lt;!channel&gt; &amp; ticket"));
        assert!(fields.contains(&"*Ttl seconds*\n900"));
        assert_eq!(fields.len(), 4, "the statement and nulls are not fields");
        assert_eq!(
            blocks[2]["text"]["text"],
            "*Statement*\n```\nUPDATE orders SET total = $1 WHERE id &lt; $2\n```"
        );
        assert_eq!(body["postern"]["event"], "approval.requested");
        assert_eq!(body["postern"]["request_id"], "req-1");
        assert_eq!(
            body["postern"]["fields"]["reason"],
            "fix <!channel> & ticket"
        );
    }

    #[test]
    fn within_slack_limits() {
        let mut fields = Map::new();
        for n in 0..15 {
            fields.insert(format!("field_{n:02}"), Value::String("<".repeat(3000)));
        }
        fields.insert("statement".into(), Value::String("x".repeat(1 << 20)));
        let mut long = message(Value::Object(fields));
        long.text = "&".repeat(10_000);
        let body = parse(&long);
        assert!(body["text"].as_str().unwrap().chars().count() <= SLACK_SECTION_TEXT_CHARS);
        let blocks = body["blocks"].as_array().unwrap();
        for block in [&blocks[0], &blocks[2]] {
            let text = block["text"]["text"].as_str().unwrap();
            assert!(text.chars().count() <= SLACK_SECTION_TEXT_CHARS);
        }
        let shown = blocks[1]["fields"].as_array().unwrap();
        assert_eq!(shown.len(), SLACK_MAX_FIELDS);
        for field in shown {
            let text = field["text"].as_str().unwrap();
            assert!(text.chars().count() <= SLACK_FIELD_TEXT_CHARS);
        }
        let statement = body["postern"]["fields"]["statement"].as_str().unwrap();
        assert_eq!(statement.chars().count(), MAX_STRUCTURED_STRING_CHARS);
    }

    #[test]
    fn without_fields_or_text() {
        let mut bare = message(Value::Null);
        bare.text = "  ".into();
        let body = parse(&bare);
        assert_eq!(body["text"], "approval.requested");
        assert_eq!(body["blocks"].as_array().unwrap().len(), 1);
        assert_eq!(body["postern"]["fields"], Value::Null);
    }

    #[test]
    fn labels() {
        assert_eq!(label("requester"), "Requester");
        assert_eq!(label("target_role"), "Target role");
        assert_eq!(label("é-x"), "É x");
        assert_eq!(label(""), "");
    }
}
