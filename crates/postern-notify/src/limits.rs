//! Every bound this crate applies, in one place, each with the reason for its value.

use std::time::Duration;

/// Shortest webhook secret accepted, in bytes: an HMAC key should be at least as long as the
/// hash output (RFC 2104 §3, <https://www.rfc-editor.org/rfc/rfc2104#section-3>; RFC 7518 §3.2
/// makes it a requirement for HS256). Slack's signing secrets are 32 characters.
pub const MIN_SECRET_BYTES: usize = 32;

/// Most attempts a [`crate::RetryPolicy`] may ask for: with the default backoffs, 20 attempts
/// already span a quarter of an hour, longer than anyone waits for an approval prompt.
pub const MAX_ATTEMPTS: u32 = 20;

/// Deliveries kept for [`crate::Notifier::deliveries`]: enough for the console's recent list,
/// small enough that a flood of requests cannot grow memory.
pub const DELIVERY_LOG_LEN: usize = 200;

/// Deliveries in flight (queued, sending or waiting to retry) at once. Approvals come at human
/// pace; a backlog this deep means the receivers are down, and beyond it new notifications are
/// recorded as failed at once instead of piling up tasks.
pub const MAX_PENDING: usize = 1024;

/// Outcomes buffered per [`crate::Notifier::outcomes`] subscriber before a slow one starts
/// missing them (it then sees `RecvError::Lagged`).
pub const OUTCOME_CHANNEL_LEN: usize = 256;

/// Most characters of a Slack section's `text`.
/// <https://api.slack.com/reference/block-kit/blocks#section>
pub const SLACK_SECTION_TEXT_CHARS: usize = 3000;

/// Most characters of one entry of a Slack section's `fields`.
/// <https://api.slack.com/reference/block-kit/blocks#section>
pub const SLACK_FIELD_TEXT_CHARS: usize = 2000;

/// Most entries in a Slack section's `fields`.
/// <https://api.slack.com/reference/block-kit/blocks#section>
pub const SLACK_MAX_FIELDS: usize = 10;

/// Longest string kept in the structured `postern.fields` copy: a statement can be up to the
/// classifier's 1 MiB, and a webhook body that large helps nobody and may be refused.
pub const MAX_STRUCTURED_STRING_CHARS: usize = 16 * 1024;

/// Bytes of a refusing receiver's response body kept for the log and the console: enough for
/// Slack's short error codes (`invalid_payload`, `no_text`, `channel_is_archived`).
pub const MAX_ERROR_BODY_BYTES: usize = 256;

/// Default clock difference [`crate::verify_signature`] callers should tolerate: Slack's and
/// Stripe's five minutes.
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);
