//! Postern's counters, and their rendering in the Prometheus text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>), written by
//! hand: counters and one histogram need no library.
//!
//! Every label value is a fixed label from Postern's code (an enum here, or the `&'static str`
//! label of a refusal or error), never a name, text or number a client sent, so the number of
//! series stays small whatever clients do. What this module does not own: deciding what to count
//! (the handshake, the relay and the approval wait call in) and serving the text (the admin API).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::UpstreamError;

/// Upper bounds of the approval wait histogram's buckets, in seconds: from a reply within the
/// second to half an hour, the longest wait worth telling apart.
pub const APPROVAL_WAIT_BUCKETS: [f64; 9] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Most distinct labels a labelled counter keeps; later ones are counted under `other`. Labels
/// come from code, so this is never reached unless a bug starts making them up.
const MAX_LABELS: usize = 64;

/// How a statement was decided: once per statement, when policy decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementDecision {
    Allowed,
    Refused,
    /// Needs approval: how its wait ends is [`ApprovalOutcome`].
    Held,
}

impl StatementDecision {
    const ALL: [Self; 3] = [Self::Allowed, Self::Refused, Self::Held];

    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Refused => "refused",
            Self::Held => "held",
        }
    }
}

/// How a held statement's wait for approval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApprovalOutcome {
    /// A live grant covered it: it ran without waiting for anyone.
    Granted,
    Approved,
    Denied,
    /// Postern's wait ran out; the request stays open.
    Timeout,
    /// Cancelled by the client, its disconnect, the session's end, or withdrawn in the store.
    Withdrawn,
    /// The request lapsed in the store while the statement waited.
    Expired,
    /// The control store or the audit log failed, so nobody could be asked.
    Error,
}

impl ApprovalOutcome {
    const ALL: [Self; 7] = [
        Self::Granted,
        Self::Approved,
        Self::Denied,
        Self::Timeout,
        Self::Withdrawn,
        Self::Expired,
        Self::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Timeout => "timeout",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
            Self::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters by a label from code (a refusal's reason, an error's kind).
#[derive(Debug, Default)]
struct Labelled {
    /// A std mutex: held only to bump or copy the map, never across `.await`.
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Labelled {
    fn add(&self, label: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let label = if counts.len() >= MAX_LABELS && !counts.contains_key(label) {
            "other"
        } else {
            label
        };
        *counts.entry(label).or_insert(0) += 1;
    }

    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A histogram with [`APPROVAL_WAIT_BUCKETS`]: per-bucket counts (made cumulative when
/// rendered), the sum in microseconds and the count.
#[derive(Debug, Default)]
struct Histogram {
    /// One per bound, then one for `+Inf`.
    buckets: [AtomicU64; APPROVAL_WAIT_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = APPROVAL_WAIT_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(APPROVAL_WAIT_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every counter Postern keeps, shared by all connections. Cheap to bump: atomics, and a short
/// lock for counters labelled by reason (connection refusals, errors — not per statement).
#[derive(Debug, Default)]
pub struct Metrics {
    connections_accepted: AtomicU64,
    connections_refused: Labelled,
    /// Database logins refused for their token or identity (a subset of the refusals).
    auth_failures: Labelled,
    /// Admin API requests whose bearer token did not verify.
    admin_auth_failures: Labelled,
    statements: [AtomicU64; StatementDecision::ALL.len()],
    /// Approval requests opened (a held statement no grant covered).
    approval_requests_opened: AtomicU64,
    /// How held statements' waits ended, and how long they took.
    approval_waits: [Histogram; ApprovalOutcome::ALL.len()],
    upstream_errors: Labelled,
    /// Service identities' anomalies: a statement or network first seen after the observation
    /// window.
    anomalies: Labelled,
}

impl Metrics {
    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// `reason` is the refusal's label ([`crate::error::Refused::reason`]).
    pub(crate) fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.add(reason);
    }

    /// A login refused for its token or identity: `reason` is the verifier's error label,
    /// `no_token` or `revoked`.
    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.add(reason);
    }

    /// An admin API request whose bearer token did not verify.
    pub(crate) fn admin_auth_failure(&self, reason: &'static str) {
        self.admin_auth_failures.add(reason);
    }

    pub(crate) fn statement(&self, decision: StatementDecision) {
        self.statements[decision as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn approval_request_opened(&self) {
        self.approval_requests_opened
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Starts timing a held statement's wait; see [`ApprovalWait`].
    pub(crate) fn approval_wait(self: &Arc<Self>) -> ApprovalWait {
        ApprovalWait {
            metrics: Arc::clone(self),
            started: Instant::now(),
            outcome: ApprovalOutcome::Withdrawn,
        }
    }

    /// A baseline anomaly: `what` is `statement` or `network`.
    pub(crate) fn anomaly(&self, what: &'static str) {
        self.anomalies.add(what);
    }

    /// A failure to connect or log in to a target's database.
    pub(crate) fn upstream_error(&self, error: &UpstreamError) {
        self.upstream_errors.add(upstream_error_kind(error));
    }

    /// Everything, in the Prometheus text format; `sessions` is the number of live sessions.
    #[must_use]
    pub fn render(&self, sessions: usize) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "postern_build_info",
            "gauge",
            "Postern's version; always 1.",
        );
        sample(
            &mut out,
            "postern_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );

        family(
            &mut out,
            "postern_sessions",
            "gauge",
            "Client sessions open now.",
        );
        sample(&mut out, "postern_sessions", &[], sessions as u64);

        let name = "postern_connections_total";
        family(
            &mut out,
            name,
            "counter",
            "Client connections: accepted (the session started), or refused and why.",
        );
        sample(
            &mut out,
            name,
            &[("outcome", "accepted")],
            self.connections_accepted.load(Ordering::Relaxed),
        );
        for (reason, count) in self.connections_refused.snapshot() {
            sample(
                &mut out,
                name,
                &[("outcome", "refused"), ("reason", reason)],
                count,
            );
        }

        labelled(
            &mut out,
            "postern_auth_failures_total",
            "Database logins refused for their token or identity, by reason.",
            "reason",
            &self.auth_failures,
        );
        labelled(
            &mut out,
            "postern_admin_auth_failures_total",
            "Admin API requests whose bearer token did not verify, by reason.",
            "reason",
            &self.admin_auth_failures,
        );

        let name = "postern_statements_total";
        family(
            &mut out,
            name,
            "counter",
            "Statements decided: allowed, refused, or held for approval.",
        );
        for decision in StatementDecision::ALL {
            let count = self.statements[decision as usize].load(Ordering::Relaxed);
            sample(&mut out, name, &[("decision", decision.label())], count);
        }

        let name = "postern_approval_requests_total";
        family(
            &mut out,
            name,
            "counter",
            "Approval requests opened, and how held statements' waits ended.",
        );
        sample(
            &mut out,
            name,
            &[("outcome", "opened")],
            self.approval_requests_opened.load(Ordering::Relaxed),
        );
        for outcome in ApprovalOutcome::ALL {
            let count = self.approval_waits[outcome.index()]
                .count
                .load(Ordering::Relaxed);
            sample(&mut out, name, &[("outcome", outcome.label())], count);
        }

        self.render_approval_wait(&mut out);

        labelled(
            &mut out,
            "postern_upstream_errors_total",
            "Failures to connect or log in to a target's database, by kind.",
            "kind",
            &self.upstream_errors,
        );
        labelled(
            &mut out,
            "postern_baseline_anomalies_total",
            "What service identities were first seen doing after their observation window: a \
             statement or a network.",
            "kind",
            &self.anomalies,
        );
        out
    }

    fn render_approval_wait(&self, out: &mut String) {
        let name = "postern_approval_wait_seconds";
        family(
            out,
            name,
            "histogram",
            "How long held statements waited for approval, by how the wait ended.",
        );
        let bucket_name = format!("{name}_bucket");
        for outcome in ApprovalOutcome::ALL {
            let histogram = &self.approval_waits[outcome.index()];
            let mut cumulative = 0;
            for (i, bucket) in histogram.buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                let bound = APPROVAL_WAIT_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
                sample(
                    out,
                    &bucket_name,
                    &[("outcome", outcome.label()), ("le", &bound)],
                    cumulative,
                );
            }
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{outcome=\"{}\"}} {sum}", outcome.label());
            // The count as the buckets add up, so a scrape between two updates stays coherent.
            sample(
                out,
                &format!("{name}_count"),
                &[("outcome", outcome.label())],
                cumulative,
            );
        }
    }
}

/// Times one held statement's wait from when it was held until it is dropped, and records it
/// under the outcome last set with [`ApprovalWait::end`] — `withdrawn` if none was: the wait was
/// abandoned (the client left, the session was ended, Postern stopped).
pub(crate) struct ApprovalWait {
    metrics: Arc<Metrics>,
    started: Instant,
    outcome: ApprovalOutcome,
}

impl ApprovalWait {
    /// How the wait ended; recorded when this is dropped.
    pub(crate) fn end(&mut self, outcome: ApprovalOutcome) {
        self.outcome = outcome;
    }
}

impl Drop for ApprovalWait {
    fn drop(&mut self) {
        self.metrics.approval_waits[self.outcome.index()].observe(self.started.elapsed());
    }
}

/// The `kind` label of an upstream failure.
fn upstream_error_kind(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::Connect { .. } => "connect",
        UpstreamError::Timeout { .. } => "timeout",
        UpstreamError::TlsRefused { .. } | UpstreamError::Tls { .. } => "tls",
        UpstreamError::ServerName(_) | UpstreamError::Secret(_) => "configuration",
        UpstreamError::Io(_) | UpstreamError::Closed => "io",
        UpstreamError::Protocol(_) => "protocol",
        UpstreamError::PoolBusy { .. } => "pool_busy",
        UpstreamError::NotReset(_) => "reset",
        UpstreamError::Server { .. } => "server_error",
        UpstreamError::UnsupportedAuth(_)
        | UpstreamError::NoPassword { .. }
        | UpstreamError::Scram(_) => "authentication",
        UpstreamError::EphemeralRole(_) => "ephemeral_role",
    }
}

/// `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line: `name{label="value",…} count`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A counter family with one sample per label seen.
fn labelled(out: &mut String, name: &str, help: &str, label: &str, counts: &Labelled) {
    family(out, name, "counter", help);
    for (value, count) in counts.snapshot() {
        sample(out, name, &[(label, value)], count);
    }
}

/// Label values escape `\`, `"` and newlines (the text format's only escapes).
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{ApprovalOutcome, Metrics, StatementDecision};

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[test]
    fn counters_render_in_the_text_format() {
        let metrics = Arc::new(Metrics::default());
        metrics.connection_accepted();
        metrics.connection_refused("expired");
        metrics.connection_refused("expired");
        metrics.auth_failure("expired");
        metrics.statement(StatementDecision::Allowed);
        metrics.statement(StatementDecision::Refused);
        metrics.statement(StatementDecision::Refused);
        metrics.upstream_error(&crate::UpstreamError::Closed);
        let text = metrics.render(3);
        assert_eq!(line(&text, "postern_sessions "), "postern_sessions 3");
        assert_eq!(
            line(&text, "postern_connections_total{outcome=\"accepted\"}"),
            "postern_connections_total{outcome=\"accepted\"} 1"
        );
        assert_eq!(
            line(&text, "postern_connections_total{outcome=\"refused\""),
            "postern_connections_total{outcome=\"refused\",reason=\"expired\"} 2"
        );
        assert_eq!(
            line(&text, "postern_auth_failures_total{"),
            "postern_auth_failures_total{reason=\"expired\"} 1"
        );
        assert!(text.contains("postern_statements_total{decision=\"refused\"} 2\n"));
        assert!(text.contains("postern_statements_total{decision=\"held\"} 0\n"));
        assert!(text.contains("postern_upstream_errors_total{kind=\"io\"} 1\n"));
        metrics.anomaly("statement");
        assert!(
            metrics
                .render(0)
                .contains("postern_baseline_anomalies_total{kind=\"statement\"} 1\n")
        );
        assert!(text.contains("# TYPE postern_approval_wait_seconds histogram\n"));
        // Every sample line is `name[{labels}] value` with a number for value.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = sample.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{sample}");
        }
    }

    #[test]
    fn approval_waits_fill_cumulative_buckets() {
        let metrics = Arc::new(Metrics::default());
        metrics.approval_waits[ApprovalOutcome::Approved.index()].observe(Duration::from_secs(20));
        metrics.approval_waits[ApprovalOutcome::Approved.index()]
            .observe(Duration::from_secs(4000));
        let mut wait = metrics.approval_wait();
        wait.end(ApprovalOutcome::Denied);
        drop(wait);
        // Never ended: the wait was abandoned.
        drop(metrics.approval_wait());
        let text = metrics.render(0);
        let bucket = "postern_approval_wait_seconds_bucket{outcome=\"approved\"";
        assert!(
            text.contains(&format!("{bucket},le=\"15\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket},le=\"30\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket},le=\"1800\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket},le=\"+Inf\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains("postern_approval_wait_seconds_sum{outcome=\"approved\"} 4020\n"));
        assert!(text.contains("postern_approval_wait_seconds_count{outcome=\"denied\"} 1\n"));
        assert!(text.contains("postern_approval_requests_total{outcome=\"withdrawn\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped_and_bounded() {
        let metrics = Metrics::default();
        metrics.connection_refused("a\"b\\c\nd");
        let text = metrics.render(0);
        assert!(text.contains("reason=\"a\\\"b\\\\c\\nd\"} 1\n"), "{text}");
        let many: Vec<&'static str> = (0..100)
            .map(|n| &*Box::leak(format!("r{n}").into_boxed_str()))
            .collect();
        for label in many {
            metrics.upstream_errors.add(label);
        }
        let text = metrics.render(0);
        assert!(
            text.contains("postern_upstream_errors_total{kind=\"other\"} 36\n"),
            "{text}"
        );
    }
}
