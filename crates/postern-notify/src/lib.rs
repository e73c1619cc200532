//! Signed webhook notifications for just-in-time approvals.
//!
//! When a statement is held for approval, Postern tells the approver group: each group may have
//! a webhook ([`WebhookConfig`]), and [`Notifier::notify`] POSTs a [`Message`] to the webhook of
//! every group it names. The body is a Slack incoming-webhook message, so a Slack webhook URL
//! works as it is; it also carries the same facts as structured JSON for any other receiver.
//! Deliveries are retried with backoff ([`RetryPolicy`]), every failure is logged (naming the
//! group and host, never the URL's path or the secret), and the last few hundred are kept for the
//! console ([`Notifier::deliveries`]) and announced to the caller ([`Notifier::outcomes`]) for
//! the audit log.
//!
//! # The request
//!
//! ```text
//! POST <webhook url>
//! Content-Type: application/json
//! X-Postern-Delivery: 5f0c…            (random, the same on every retry of one notification)
//! X-Postern-Timestamp: 1700000000      (Unix seconds at which this attempt was signed)
//! X-Postern-Signature: v1=9a3e…        (hex HMAC-SHA256(secret, "<timestamp>.<body>"))
//!
//! {"text": "…", "blocks": [ … ],
//!  "postern": {"event": "approval.requested", "request_id": "…", "fields": { … }}}
//! ```
//!
//! `text` and `blocks` follow Slack's Block Kit: the summary, a section with one field per
//! member of [`Message::fields`], and the statement in a code block; user-supplied values are
//! escaped for mrkdwn and cut to Slack's limits. `postern` is ignored by Slack.
//!
//! # Checking a request (for receivers)
//!
//! The scheme is Slack's request signing with Postern's header names. A receiver should:
//!
//! 1. read the raw body bytes (before parsing the JSON);
//! 2. refuse the request unless `X-Postern-Timestamp` is within a few minutes of its own clock
//!    ([`DEFAULT_SIGNATURE_TOLERANCE`]): the timestamp is part of what is signed, so an old
//!    request cannot be replayed with a fresh one;
//! 3. compute `v1=` + hex(HMAC-SHA256(secret, timestamp + "." + body)) and compare it with
//!    `X-Postern-Signature` in constant time;
//! 4. drop a repeated `X-Postern-Delivery` (an attempt can reach the receiver yet time out at
//!    Postern, which then sends it again).
//!
//! [`verify_signature`] does steps 2 and 3.
//!
//! # Retries
//!
//! Connection failures, timeouts, 408, 429 and 5xx are retried, waiting `first_backoff`,
//! doubling up to `max_backoff`, or what `Retry-After` (in seconds) asks, capped at
//! `max_backoff`. Any other 4xx is a permanent failure; so is a redirect, which is never followed
//! (the configured URL must be the final one).
//!
//! # Layout
//! - [`Notifier`] (`notifier`): queuing, the delivery task and its retry loop, outcomes.
//! - `webhook`: a checked [`WebhookConfig`], the shared HTTP client, one signed attempt.
//! - `signature`: signing, and [`verify_signature`] for receivers.
//! - `message`: [`Message`] and its JSON body; `mrkdwn`: escaping and Slack's length limits.
//! - `retry`: [`RetryPolicy`], backoff and `Retry-After`.
//! - `delivery`: [`Delivery`] records and the bounded list of recent ones.
//! - `error`: [`NotifyError`] (configuration) and [`DeliveryError`] (one attempt).
//! - [`limits`]: every bound, named.

mod delivery;
mod error;
pub mod limits;
mod message;
mod mrkdwn;
mod notifier;
mod retry;
mod signature;
mod webhook;

pub use delivery::{Delivery, DeliveryState};
pub use error::{DeliveryError, NotifyError};
pub use limits::DEFAULT_SIGNATURE_TOLERANCE;
pub use message::Message;
pub use notifier::Notifier;
pub use retry::RetryPolicy;
pub use signature::{DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature};
pub use webhook::WebhookConfig;
