//! Why a [`crate::Notifier`] could not be built ([`NotifyError`], shown to the operator at
//! start-up) and why one delivery attempt failed ([`DeliveryError`], logged and shown in the
//! console).
//!
//! Neither ever names a webhook's full URL or its secret: Slack's incoming-webhook URLs are
//! credentials in themselves, so only the group and the host appear.

use serde::ser::SerializeStruct as _;

use crate::limits::{MAX_ATTEMPTS, MIN_SECRET_BYTES};

/// A configuration problem found by [`crate::Notifier::new`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The URL does not parse, or is not `http`/`https`.
    #[error("webhook of approver group '{group}': the URL is not a valid http(s) URL")]
    BadUrl { group: String },
    /// Plain `http` to anything but loopback: the statement and the requester would cross the
    /// network readable by anyone on the path.
    #[error(
        "webhook of approver group '{group}': plain http is allowed only to loopback addresses; use https"
    )]
    Plaintext { group: String },
    /// The HMAC key is too short to be worth the signature.
    #[error(
        "webhook of approver group '{group}': the secret must be at least {MIN_SECRET_BYTES} bytes"
    )]
    ShortSecret { group: String },
    /// [`crate::RetryPolicy::attempts`] is 0 or above [`MAX_ATTEMPTS`].
    #[error("retry policy: attempts must be between 1 and {MAX_ATTEMPTS}, not {0}")]
    Attempts(u32),
    /// Another [`crate::RetryPolicy`] value out of range.
    #[error("retry policy: {0}")]
    Policy(&'static str),
    /// More than one of the above, each listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<NotifyError>),
    /// rustls refused its own default protocol versions for the aws-lc-rs provider.
    #[error("TLS configuration for webhooks failed: {0}")]
    Tls(#[source] rustls::Error),
    /// reqwest could not build its client.
    #[error("HTTP client for webhooks could not be built: {0}")]
    HttpClient(#[source] reqwest::Error),
}

impl NotifyError {
    /// A short, stable name of the problem, usable as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadUrl { .. } => "bad_url",
            Self::Plaintext { .. } => "plaintext",
            Self::ShortSecret { .. } => "short_secret",
            Self::Attempts(_) | Self::Policy(_) => "policy",
            Self::Several(_) => "several",
            Self::Tls(_) => "tls",
            Self::HttpClient(_) => "http_client",
        }
    }
}

/// Why a delivery attempt failed, or why a notification could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// No answer within the policy's per-attempt timeout.
    #[error("timed out")]
    Timeout,
    /// The TCP or TLS connection could not be set up.
    #[error("could not connect{}", .0.map(|kind| format!(" ({kind})")).unwrap_or_default())]
    Connect(Option<std::io::ErrorKind>),
    /// Any other transport failure (connection reset mid-request, malformed response). The
    /// text is reqwest's, with the URL removed.
    #[error("request failed: {0}")]
    Request(String),
    /// The receiver answered with a status other than 2xx or 3xx; `body` is the start of its
    /// answer, printable ASCII only.
    #[error("HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status { status: u16, body: String },
    /// The receiver answered with a redirect, which is never followed: the configured URL is
    /// wrong, and following it would send the signed body somewhere nobody configured.
    #[error("HTTP {0}: the webhook redirects; configure the final URL")]
    Redirected(u16),
    /// More than [`crate::limits::MAX_PENDING`] deliveries were already in flight.
    #[error("too many deliveries in flight; dropped")]
    QueueFull,
    /// [`crate::Notifier::notify`] was called outside a tokio runtime.
    #[error("no async runtime to deliver on")]
    NoRuntime,
}

impl DeliveryError {
    /// A short, stable name of the failure, usable as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Request(_) => "request",
            Self::Status { .. } => "status",
            Self::Redirected(_) => "redirected",
            Self::QueueFull => "queue_full",
            Self::NoRuntime => "no_runtime",
        }
    }

    /// Whether trying again may help: transport failures, 408 Request Timeout, 429 Too Many
    /// Requests and 5xx. Any other answer is the receiver refusing this request for good.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout | Self::Connect(_) | Self::Request(_) => true,
            Self::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Self::Redirected(_) | Self::QueueFull | Self::NoRuntime => false,
        }
    }

    /// The HTTP status the receiver answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } | Self::Redirected(status) => Some(*status),
            _ => None,
        }
    }
}

/// As `{"kind": "...", "message": "..."}`, for the admin API and the console.
impl serde::Serialize for DeliveryError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("DeliveryError", 2)?;
        out.serialize_field("kind", self.kind())?;
        out.serialize_field("message", &self.to_string())?;
        out.end()
    }
}
