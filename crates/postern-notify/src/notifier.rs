//! [`Notifier`]: queues a notification per approver group and delivers each on its own task,
//! retrying per the [`RetryPolicy`], recording every delivery in a bounded list and announcing
//! each outcome to subscribers.
//!
//! The notifier decides nothing about approvals (who approves what, when to notify): the
//! approvals flow calls [`Notifier::notify`] and audits what [`Notifier::outcomes`] reports.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::sync::{broadcast, watch};

use crate::delivery::{Delivery, DeliveryLog, DeliveryState};
use crate::error::{DeliveryError, NotifyError};
use crate::limits::{DELIVERY_LOG_LEN, MAX_PENDING, OUTCOME_CHANNEL_LEN};
use crate::message::Message;
use crate::retry::RetryPolicy;
use crate::webhook::{self, Webhook, WebhookConfig};

/// Sends approval notifications to approver groups' webhooks. One per Postern; cheap to clone
/// (all clones share the webhooks, the client and the delivery list).
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One HTTP client for every webhook, so connections to the same host are reused.
    client: reqwest::Client,
    /// By approver group.
    webhooks: BTreeMap<String, Arc<Webhook>>,
    policy: RetryPolicy,
    /// Recent deliveries, for the console and the admin API.
    log: DeliveryLog,
    /// Deliveries not finished yet: [`Notifier::idle`] waits for zero, and
    /// [`MAX_PENDING`] bounds it.
    pending: watch::Sender<usize>,
    /// Each delivery once it is finished, for the caller's audit log.
    outcomes: broadcast::Sender<Delivery>,
}

impl Notifier {
    /// A notifier for `webhooks` (by approver group), delivering per `policy`. Reports every
    /// problem at once: a bad URL (not https, plain http to anything but loopback), a short
    /// secret, a policy out of range.
    pub fn new(
        webhooks: BTreeMap<String, WebhookConfig>,
        policy: RetryPolicy,
    ) -> Result<Self, NotifyError> {
        let mut problems = Vec::new();
        if let Err(problem) = policy.validate() {
            problems.push(problem);
        }
        let mut checked = BTreeMap::new();
        for (group, config) in &webhooks {
            match Webhook::new(group, config) {
                Ok(webhook) => {
                    checked.insert(group.clone(), Arc::new(webhook));
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.len() == 1 {
            return Err(problems.remove(0));
        }
        if !problems.is_empty() {
            return Err(NotifyError::Several(problems));
        }
        let client = webhook::client(&policy)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                webhooks: checked,
                policy,
                log: DeliveryLog::new(DELIVERY_LOG_LEN),
                pending: watch::Sender::new(0),
                outcomes: broadcast::Sender::new(OUTCOME_CHANNEL_LEN),
            }),
        })
    }

    /// Whether `group` has a webhook.
    pub fn has_webhook(&self, group: &str) -> bool {
        self.inner.webhooks.contains_key(group)
    }

    /// Queues `message` for every group in `groups` that has a webhook (each group once, however
    /// often it is named) and returns how many were queued, at once: delivery runs on spawned
    /// tasks. Must be called within a tokio runtime; outside one, or with more than
    /// [`MAX_PENDING`] deliveries in flight, the delivery is recorded as failed instead (and
    /// reported to [`Notifier::outcomes`]).
    pub fn notify(&self, groups: &[String], message: &Message) -> usize {
        let inner = &self.inner;
        let runtime = tokio::runtime::Handle::try_current();
        let mut body = None;
        let mut seen = BTreeSet::new();
        let mut queued = 0;
        for group in groups {
            if !seen.insert(group.as_str()) {
                continue;
            }
            let Some(webhook) = inner.webhooks.get(group) else {
                continue;
            };
            let delivery = Delivery {
                id: delivery_id(),
                group: group.clone(),
                host: webhook.host().to_owned(),
                event: message.event.clone(),
                request_id: message.request_id.clone(),
                state: DeliveryState::Pending,
                attempts: 0,
                last_status: None,
                last_error: None,
                queued_at: SystemTime::now(),
                last_attempt_at: None,
                next_attempt_at: None,
                finished_at: None,
            };
            let Ok(runtime) = &runtime else {
                inner.refuse(delivery, DeliveryError::NoRuntime);
                continue;
            };
            let Some(slot) = PendingSlot::take(&inner.pending) else {
                inner.refuse(delivery, DeliveryError::QueueFull);
                continue;
            };
            let body = Arc::clone(body.get_or_insert_with(|| Arc::new(message.body())));
            inner.log.push(delivery.clone());
            runtime.spawn(Arc::clone(inner).deliver(Arc::clone(webhook), delivery, body, slot));
            queued += 1;
        }
        queued
    }

    /// Recent deliveries (the last [`crate::limits::DELIVERY_LOG_LEN`]), newest first, finished
    /// or not.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.log.snapshot()
    }

    /// Resolves once no delivery is in flight: every queued one delivered or given up. For
    /// shutdown (bound it with a timeout: with the default policy a dead receiver takes about
    /// a minute to give up on) and for tests. Cancel safe.
    pub async fn idle(&self) {
        let mut pending = self.inner.pending.subscribe();
        // Fails only if the sender is gone, and `self` holds it.
        let _ = pending.wait_for(|count| *count == 0).await;
    }

    /// Every delivery from now on, once finished (delivered or failed), so the caller can
    /// record `notified` or `notify_failed`. A subscriber that falls more than
    /// [`crate::limits::OUTCOME_CHANNEL_LEN`] behind gets `Lagged`.
    pub fn outcomes(&self) -> broadcast::Receiver<Delivery> {
        self.inner.outcomes.subscribe()
    }
}

impl Inner {
    /// Tries `delivery` until it is delivered, refused for good, or out of attempts.
    async fn deliver(
        self: Arc<Self>,
        webhook: Arc<Webhook>,
        mut delivery: Delivery,
        body: Arc<Vec<u8>>,
        _slot: PendingSlot,
    ) {
        let policy = self.policy;
        loop {
            delivery.attempts += 1;
            delivery.last_attempt_at = Some(SystemTime::now());
            delivery.next_attempt_at = None;
            self.log.update(&delivery);
            let result =
                webhook::attempt(&self.client, &webhook, &delivery.id, &body, policy.timeout).await;
            let failure = match result {
                Ok(status) => {
                    delivery.state = DeliveryState::Delivered;
                    delivery.last_status = Some(status);
                    delivery.last_error = None;
                    tracing::info!(
                        group = %delivery.group,
                        host = %delivery.host,
                        delivery = %delivery.id,
                        request_id = %delivery.request_id,
                        event = %delivery.event,
                        attempts = delivery.attempts,
                        status,
                        "webhook notification delivered"
                    );
                    break;
                }
                Err(failure) => failure,
            };
            delivery.last_status = failure.error.status();
            let give_up = !failure.error.is_retryable() || delivery.attempts >= policy.attempts;
            if give_up {
                tracing::error!(
                    group = %delivery.group,
                    host = %delivery.host,
                    delivery = %delivery.id,
                    request_id = %delivery.request_id,
                    event = %delivery.event,
                    attempts = delivery.attempts,
                    status = delivery.last_status,
                    error = %failure.error,
                    permanent = !failure.error.is_retryable(),
                    "webhook notification failed; giving up"
                );
                delivery.state = DeliveryState::Failed;
                delivery.last_error = Some(failure.error);
                break;
            }
            let wait = policy.backoff(delivery.attempts, failure.retry_after);
            tracing::warn!(
                group = %delivery.group,
                host = %delivery.host,
                delivery = %delivery.id,
                request_id = %delivery.request_id,
                event = %delivery.event,
                attempt = delivery.attempts,
                status = delivery.last_status,
                error = %failure.error,
                retry_in = %humantime::format_duration(wait),
                "webhook notification attempt failed; will retry"
            );
            delivery.last_error = Some(failure.error);
            delivery.next_attempt_at = SystemTime::now().checked_add(wait);
            self.log.update(&delivery);
            tokio::time::sleep(wait).await;
        }
        self.finish(delivery);
    }

    /// Records a delivery that could not even be queued.
    fn refuse(&self, mut delivery: Delivery, error: DeliveryError) {
        tracing::error!(
            group = %delivery.group,
            host = %delivery.host,
            delivery = %delivery.id,
            request_id = %delivery.request_id,
            event = %delivery.event,
            error = %error,
            "webhook notification not sent"
        );
        delivery.state = DeliveryState::Failed;
        delivery.last_error = Some(error);
        self.log.push(delivery.clone());
        self.finish(delivery);
    }

    /// Stamps a finished delivery and publishes it.
    fn finish(&self, mut delivery: Delivery) {
        delivery.finished_at = Some(SystemTime::now());
        delivery.next_attempt_at = None;
        self.log.update(&delivery);
        // No subscriber is not an error: outcomes are an option for the caller.
        let _ = self.outcomes.send(delivery);
    }
}

/// One delivery's place among the [`MAX_PENDING`] in flight, given back when dropped — also
/// when the task is dropped unfinished, at runtime shutdown — so [`Notifier::idle`] never waits
/// for a delivery that will not finish.
#[derive(Debug)]
struct PendingSlot {
    pending: watch::Sender<usize>,
}

impl PendingSlot {
    fn take(pending: &watch::Sender<usize>) -> Option<Self> {
        let taken = pending.send_if_modified(|count| {
            if *count >= MAX_PENDING {
                false
            } else {
                *count += 1;
                true
            }
        });
        taken.then(|| Self {
            pending: pending.clone(),
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.pending
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// A random id for `X-Postern-Delivery` (128 bits, hex). Should the system's random source fail,
/// the time and a counter still make it unique, which is all a receiver needs of it.
fn delivery_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0_u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&nanos.to_be_bytes()[8..]);
        bytes[8..].copy_from_slice(&count.to_be_bytes());
    }
    hex::encode(bytes)
}
