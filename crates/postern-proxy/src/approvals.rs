//! Just-in-time approval: the requests sessions wait on, the grants approvals make, and the
//! signals that wake a waiting session.
//!
//! The state lives in the control store (`postern-store`), so it survives restarts and every
//! Postern sharing the store sees it. A vote taken by this process wakes the waiting session at
//! once; a vote taken by another process sharing the store is seen within [`POLL`]. Requests that
//! lapse and grants that expire are found by a sweep every [`SWEEP`] and audited once each.
//!
//! Policy says *which* statements need approval (`@approval` on a permit); the session decides
//! when to hold one (`session/hold.rs`); this module keeps the books.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use postern_audit::AuditLog;
use postern_config::ApprovalsConfig;
use postern_policy::cedar::ApprovalRequirement;
use postern_store::{
    ActionOn, ApprovalRequest, Grant, NewApprovalRequest, RequestState, Requirement, Store,
    StoreError, unix_seconds,
};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

use crate::Clock;

/// How often a waiting session looks in the store for a vote taken by another process.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// How often lapsed requests and expired grants are looked for.
pub(crate) const SWEEP: Duration = Duration::from_secs(1);

/// The approval books of one Postern.
pub struct Approvals {
    store: Store,
    pub(crate) config: ApprovalsConfig,
    /// Where approvers find the console, for notices and webhooks.
    console_url: Option<String>,
    audit: AuditLog,
    clock: Clock,
    notifier: Option<postern_notify::Notifier>,
    /// Requests a session of this process waits on, each with a signal a local vote sends.
    waiting: Mutex<HashMap<String, watch::Sender<()>>>,
    /// Every change of a request, for the console's live updates.
    changes: broadcast::Sender<ApprovalRequest>,
}

/// A waiting session's handle on its request. Dropping it stops the local wake-ups.
pub(crate) struct Waiter {
    approvals: Arc<Approvals>,
    id: String,
    woken: watch::Receiver<()>,
}

impl Waiter {
    /// Resolves when the request may have changed: a local vote, or the poll interval.
    pub(crate) async fn changed(&mut self) {
        let _ = tokio::time::timeout(POLL, self.woken.changed()).await;
    }

    /// The request as the store has it now.
    pub(crate) async fn current(&self) -> Result<Option<ApprovalRequest>, StoreError> {
        self.approvals.store.approval_request(&self.id).await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.approvals
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// What a session asks approval for.
pub(crate) struct Asked<'a> {
    pub identity: &'a postern_identity::Identity,
    pub target: &'a str,
    pub role: &'a str,
    pub session_id: &'a str,
    pub client_ip: String,
    pub analysis: &'a postern_sql::Analysis,
    pub statement_key: String,
    pub params_hash: Option<String>,
    pub reason: Option<String>,
    pub requirements: &'a [ApprovalRequirement],
    pub context: Value,
}

impl Approvals {
    pub(crate) fn new(
        store: Store,
        config: ApprovalsConfig,
        console_url: Option<String>,
        audit: AuditLog,
        clock: Clock,
        notifier: Option<postern_notify::Notifier>,
    ) -> Self {
        let (changes, _) = broadcast::channel(256);
        Self {
            store,
            config,
            console_url,
            audit,
            clock,
            notifier,
            waiting: Mutex::new(HashMap::new()),
            changes,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn now(&self) -> i64 {
        unix_seconds((self.clock)())
    }

    /// Subscribes to every change of a request (created, voted on, decided, withdrawn, lapsed).
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalRequest> {
        self.changes.subscribe()
    }

    /// The webhook deliveries tried lately.
    pub fn deliveries(&self) -> Vec<postern_notify::Delivery> {
        self.notifier
            .as_ref()
            .map(postern_notify::Notifier::deliveries)
            .unwrap_or_default()
    }

    /// Tells waiters and subscribers that `request` changed.
    pub(crate) fn changed(&self, request: &ApprovalRequest) {
        if let Some(signal) = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&request.id)
        {
            signal.send_replace(());
        }
        let _ = self.changes.send(request.clone());
    }

    /// Takes one use of a grant that covers the statement already, if there is one: one for
    /// this exact text and these parameters first, then one for every action it needs.
    pub(crate) async fn use_grant(&self, asked: &Asked<'_>) -> Result<Option<Grant>, StoreError> {
        let now = self.now();
        let identity = asked.identity;
        if let Some(grant) = self
            .store
            .consume_statement_grant(
                &identity.subject,
                &identity.issuer,
                asked.target,
                asked.role,
                &asked.statement_key,
                now,
            )
            .await?
        {
            return Ok(Some(grant));
        }
        self.store
            .consume_action_grant(
                &identity.subject,
                &identity.issuer,
                asked.target,
                asked.role,
                &actions_of(asked.requirements),
                now,
            )
            .await
    }

    /// Opens a request, and starts watching it for the session that waits.
    pub(crate) async fn open(
        self: &Arc<Self>,
        asked: &Asked<'_>,
    ) -> Result<(ApprovalRequest, Waiter), StoreError> {
        let now = self.now();
        let new = NewApprovalRequest {
            requester_subject: asked.identity.subject.clone(),
            requester_issuer: asked.identity.issuer.clone(),
            target: asked.target.to_owned(),
            role: asked.role.to_owned(),
            session_id: asked.session_id.to_owned(),
            client_ip: asked.client_ip.clone(),
            statement: asked.analysis.redacted.clone(),
            statement_key: asked.statement_key.clone(),
            fingerprint: asked.analysis.fingerprint.clone().unwrap_or_default(),
            params_hash: asked.params_hash.clone(),
            reason: asked.reason.clone(),
            actions: actions_of(asked.requirements),
            requirements: requirements_of(asked.requirements),
            context: asked.context.clone(),
            created_at: now,
            expires_at: now.saturating_add(seconds(self.config.request_ttl)),
        };
        let request = self.store.create_request(new).await?;
        let (signal, woken) = watch::channel(());
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.id.clone(), signal);
        let _ = self.changes.send(request.clone());
        let waiter = Waiter {
            approvals: Arc::clone(self),
            id: request.id.clone(),
            woken,
        };
        Ok((request, waiter))
    }

    /// Tells the approver groups' webhooks about a new request.
    pub(crate) fn notify_requested(&self, request: &ApprovalRequest) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let groups: Vec<String> = request
            .requirements
            .iter()
            .map(|r| r.group.clone())
            .collect();
        let how = self.how_to_approve(&request.id);
        let reason = request
            .reason
            .as_deref()
            .map(|r| format!("\nReason: {r}"))
            .unwrap_or_default();
        let message = postern_notify::Message {
            event: "approval.requested".to_owned(),
            request_id: request.id.clone(),
            text: format!(
                "{} asks to run a statement as {} on {} that needs approval (request {}).{reason}\n{how}",
                request.requester_subject, request.role, request.target, request.id
            ),
            fields: json!({
                "requester": request.requester_subject,
                "issuer": request.requester_issuer,
                "role": request.role,
                "target": request.target,
                "statement": request.statement,
                "reason": request.reason,
                "needs": request.requirements,
                "actions": request.actions,
                "client_ip": request.client_ip,
            }),
        };
        notifier.notify(&groups, &message);
    }

    /// How an approver acts on request `id`: the CLI command, and the console when there is
    /// one.
    pub(crate) fn how_to_approve(&self, id: &str) -> String {
        match &self.console_url {
            Some(url) => format!("Approve with: postern approve {id}   or in the console: {url}"),
            None => format!("Approve with: postern approve {id}"),
        }
    }

    /// Marks a request this session stopped waiting on as withdrawn (the client cancelled or
    /// left, or its session ended), and records it.
    pub(crate) async fn withdraw(&self, id: &str, why: &str) {
        let now = self.now();
        match self
            .store
            .set_request_state(id, RequestState::Pending, RequestState::Withdrawn, now)
            .await
        {
            Ok(true) => {
                self.record(id, "withdrawn", json!({ "why": why })).await;
                if let Ok(Some(request)) = self.store.approval_request(id).await {
                    let _ = self.changes.send(request);
                }
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(request = id, error = %error, "could not withdraw an approval request");
            }
        }
    }

    /// Records an approval event (kind `approval`), logging rather than failing when the log
    /// cannot take it: these follow changes already made.
    pub(crate) async fn record(&self, id: &str, action: &str, details: Value) {
        let event = approval_event(id, action, details);
        if let Err(error) = self.audit.record(event).await {
            tracing::error!(request = id, action, error = %error, "audit log: cannot record an approval event");
        }
    }

    /// Records an approval event and fails if the log cannot take it: for events that must be
    /// on record before the change they describe goes ahead.
    pub(crate) async fn record_first(
        &self,
        id: &str,
        action: &str,
        details: Value,
    ) -> Result<(), postern_audit::AuditError> {
        self.audit
            .record(approval_event(id, action, details))
            .await
            .map(|_| ())
    }

    /// Lapses requests past their lifetime and reports grants that expired; each once.
    pub(crate) async fn sweep(&self) {
        let now = self.now();
        match self.store.expire_requests(now).await {
            Ok(lapsed) => {
                for request in lapsed {
                    self.record(&request.id, "expired", json!({"what": "request"}))
                        .await;
                    self.changed(&request);
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not lapse old approval requests"),
        }
        match self.store.lapse_grants(now).await {
            Ok(grants) => {
                for grant in grants {
                    self.record(
                        &grant.request_id,
                        "expired",
                        json!({"what": "grant", "grant": grant.id, "uses": grant.uses}),
                    )
                    .await;
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not look for expired grants"),
        }
    }

    /// Runs [`Self::sweep`] until `shutdown`, and audits webhook outcomes as they come.
    pub(crate) async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut outcomes = self
            .notifier
            .as_ref()
            .map(postern_notify::Notifier::outcomes);
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.sweep().await,
                outcome = next_outcome(&mut outcomes) => {
                    if let Some(delivery) = outcome {
                        let action = if delivery.delivered() { "notified" } else { "notify_failed" };
                        let error = delivery.last_error.as_ref().map(ToString::to_string);
                        self.record(
                            &delivery.request_id,
                            action,
                            json!({"group": delivery.group, "host": delivery.host, "attempts": delivery.attempts, "error": error}),
                        )
                        .await;
                    }
                }
            }
        }
    }
}

async fn next_outcome(
    outcomes: &mut Option<broadcast::Receiver<postern_notify::Delivery>>,
) -> Option<postern_notify::Delivery> {
    match outcomes {
        Some(receiver) => loop {
            match receiver.recv().await {
                Ok(delivery) => return Some(delivery),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    *outcomes = None;
                    return None;
                }
            }
        },
        None => std::future::pending().await,
    }
}

/// The approver groups' webhooks, with their secrets read from file or environment; `None`
/// when no group has one.
pub(crate) fn notifier(
    config: &ApprovalsConfig,
) -> Result<Option<postern_notify::Notifier>, crate::SetupError> {
    if config.webhooks.is_empty() {
        return Ok(None);
    }
    let mut webhooks = std::collections::BTreeMap::new();
    for (group, webhook) in &config.webhooks {
        let secret = match (&webhook.secret_file, &webhook.secret_env) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| {
                    crate::SetupError::Approvals(format!(
                        "webhook of group {group}: cannot read secret_file {}: {e}",
                        path.display()
                    ))
                })?,
            (None, Some(variable)) => std::env::var(variable).map_err(|_| {
                crate::SetupError::Approvals(format!(
                    "webhook of group {group}: environment variable {variable} (secret_env) is \
                     not set"
                ))
            })?,
            (None, None) => {
                return Err(crate::SetupError::Approvals(format!(
                    "webhook of group {group}: no secret"
                )));
            }
        };
        webhooks.insert(
            group.clone(),
            postern_notify::WebhookConfig {
                url: webhook.url.clone(),
                secret,
            },
        );
    }
    postern_notify::Notifier::new(webhooks, postern_notify::RetryPolicy::default())
        .map(Some)
        .map_err(|e| crate::SetupError::Approvals(e.to_string()))
}

/// An audit event of kind `approval`.
pub(crate) fn approval_event(id: &str, action: &str, details: Value) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("kind".into(), json!("approval"));
    event.insert("action".into(), json!(action));
    event.insert("request".into(), json!(id));
    if let Value::Object(details) = details {
        event.extend(details);
    }
    event
}

/// The (action, resource) pairs a statement needs approval for, each once.
pub(crate) fn actions_of(requirements: &[ApprovalRequirement]) -> Vec<ActionOn> {
    let mut actions: Vec<ActionOn> = Vec::new();
    for requirement in requirements {
        let action = ActionOn {
            action: requirement.action.as_str().to_owned(),
            resource: requirement.resource.to_string(),
        };
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    actions
}

/// What must be satisfied: one entry per approver group. Several policies naming one group ask
/// for the most approvers and the shortest grant any of them names.
pub(crate) fn requirements_of(requirements: &[ApprovalRequirement]) -> Vec<Requirement> {
    let mut merged: Vec<Requirement> = Vec::new();
    for requirement in requirements {
        let spec = &requirement.spec;
        let ttl = seconds(spec.grant_ttl);
        match merged.iter_mut().find(|m| m.group == spec.group) {
            Some(existing) => {
                existing.approvers = existing.approvers.max(spec.approvers);
                existing.grant_ttl_secs = existing.grant_ttl_secs.min(ttl);
                existing.preview |= spec.preview;
            }
            None => merged.push(Requirement {
                policy: requirement.policy.clone(),
                group: spec.group.clone(),
                approvers: spec.approvers,
                grant_ttl_secs: ttl,
                preview: spec.preview,
            }),
        }
    }
    merged
}

pub(crate) fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
