//! The record of each notification's delivery to one group ([`Delivery`]) and the bounded list
//! of recent ones the console and the admin API read ([`DeliveryLog`]).
//!
//! The list is in memory and per instance: it answers "did the approvers hear about this?"
//! for the last few hundred notifications. What must survive a restart — that a request was
//! notified, or that notifying failed — belongs in the audit log, which the caller writes from
//! [`crate::Notifier::outcomes`].

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::error::DeliveryError;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Queued, being sent, or waiting to be retried.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: a permanent refusal, or every attempt failed.
    Failed,
}

/// One notification to one approver group's webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Random, sent as `X-Postern-Delivery` on every attempt so receivers can drop duplicates.
    pub id: String,
    /// The approver group whose webhook this is.
    pub group: String,
    /// The webhook's host (and port, if not the scheme's default). Never the path: Slack's
    /// webhook URLs are credentials.
    pub host: String,
    /// [`crate::Message::event`].
    pub event: String,
    /// [`crate::Message::request_id`].
    pub request_id: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// The HTTP status of the last answer, if the receiver answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed; `None` once delivered.
    pub last_error: Option<DeliveryError>,
    #[serde(serialize_with = "rfc3339")]
    pub queued_at: SystemTime,
    #[serde(serialize_with = "rfc3339_option")]
    pub last_attempt_at: Option<SystemTime>,
    /// When the next attempt is due, while waiting to retry.
    #[serde(serialize_with = "rfc3339_option")]
    pub next_attempt_at: Option<SystemTime>,
    /// When it was delivered or given up.
    #[serde(serialize_with = "rfc3339_option")]
    pub finished_at: Option<SystemTime>,
}

impl Delivery {
    /// Whether the receiver accepted it.
    pub fn delivered(&self) -> bool {
        self.state == DeliveryState::Delivered
    }
}

/// The last [`crate::limits::DELIVERY_LOG_LEN`] deliveries, oldest evicted first.
#[derive(Debug)]
pub(crate) struct DeliveryLog {
    capacity: usize,
    /// Oldest at the front. A std mutex: held only to copy or replace an entry, never across
    /// an `.await`.
    entries: Mutex<VecDeque<Delivery>>,
}

impl DeliveryLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Adds a new delivery, evicting the oldest if full.
    pub fn push(&self, delivery: Delivery) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(delivery);
    }

    /// Replaces the entry with `delivery`'s id, if it has not been evicted yet.
    pub fn update(&self, delivery: &Delivery) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Recent entries are the ones being updated; search from the back.
        if let Some(entry) = entries
            .iter_mut()
            .rev()
            .find(|entry| entry.id == delivery.id)
        {
            entry.clone_from(delivery);
        }
    }

    /// Every entry, newest first.
    pub fn snapshot(&self) -> Vec<Delivery> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().rev().cloned().collect()
    }
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

#[expect(
    clippy::ref_option,
    reason = "serde's serialize_with passes a reference to the field"
)]
fn rfc3339_option<S: Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => rfc3339(time, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn delivery(id: &str) -> Delivery {
        Delivery {
            id: id.into(),
            group: "dba".into(),
            host: "hooks.slack.com".into(),
            event: "approval.requested".into(),
            request_id: "req-1".into(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            queued_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            last_attempt_at: None,
            next_attempt_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn bounded_newest_first() {
        let log = DeliveryLog::new(3);
        for id in ["a", "b", "c", "d"] {
            log.push(delivery(id));
        }
        let ids: Vec<String> = log.snapshot().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["d", "c", "b"]);
        let mut done = delivery("c");
        done.state = DeliveryState::Delivered;
        log.update(&done);
        // An evicted entry is not brought back.
        log.update(&delivery("a"));
        let snapshot = log.snapshot();
        assert_eq!(snapshot.len(), 3);
        assert!(snapshot[1].delivered());
    }

    #[test]
    fn serialises_for_the_console() {
        let mut failed = delivery("a");
        failed.state = DeliveryState::Failed;
        failed.last_status = Some(400);
        failed.last_error = Some(DeliveryError::Status {
            status: 400,
            body: "invalid_payload".into(),
        });
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["queued_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["finished_at"], serde_json::Value::Null);
        assert_eq!(json["last_error"]["kind"], "status");
        assert_eq!(json["last_error"]["message"], "HTTP 400: invalid_payload");
    }
}
