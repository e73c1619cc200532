//! One approver group's webhook: its checked configuration ([`Webhook`]), the HTTP client all
//! webhooks share, and a single signed POST ([`attempt`]). Retrying is the caller's
//! ([`crate::notifier`]) business; this module makes exactly one request per call.
//!
//! What is logged or recorded about a webhook is its group and host only: the path of a Slack
//! incoming-webhook URL is the credential, so reqwest errors lose their URL before they go
//! anywhere.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;

use crate::error::{DeliveryError, NotifyError};
use crate::limits::{MAX_ERROR_BODY_BYTES, MIN_SECRET_BYTES};
use crate::retry::{RetryPolicy, retry_after};
use crate::signature::{self, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Where one approver group's notifications go, and the key they are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `https://…`, or `http://…` to a loopback address (a local relay). Redirects are not
    /// followed, so this must be the final URL.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Postern-Signature`, shared with the receiver; at least
    /// [`MIN_SECRET_BYTES`] bytes.
    pub secret: String,
}

/// Shows the host only: both the URL's path and the secret are credentials.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = Url::parse(&self.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned));
        f.debug_struct("WebhookConfig")
            .field("host", &host)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A checked [`WebhookConfig`], ready to sign and send.
pub(crate) struct Webhook {
    url: Url,
    /// `host[:port]`, what logs and the console show.
    host: String,
    key: hmac::Key,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    pub fn new(group: &str, config: &WebhookConfig) -> Result<Self, NotifyError> {
        let url = Url::parse(&config.url).map_err(|_| NotifyError::BadUrl {
            group: group.to_owned(),
        })?;
        check_url(group, &url)?;
        if config.secret.len() < MIN_SECRET_BYTES {
            return Err(NotifyError::ShortSecret {
                group: group.to_owned(),
            });
        }
        let host = url.host_str().unwrap_or_default();
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self {
            host,
            key: signature::key(config.secret.as_bytes()),
            url,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

/// A failed attempt, with the receiver's `Retry-After` if it sent one.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: DeliveryError,
    pub retry_after: Option<Duration>,
}

impl From<DeliveryError> for Failure {
    fn from(error: DeliveryError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// The client every webhook is sent with: rustls on aws-lc-rs (the workspace's one crypto
/// provider) with the Mozilla roots, no redirects, connections bounded by the policy's timeout.
pub(crate) fn client(policy: &RetryPolicy) -> Result<reqwest::Client, NotifyError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(NotifyError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(policy.timeout)
        .timeout(policy.timeout)
        // A webhook that redirects is misconfigured; following it would send the signed body
        // to a place nobody configured.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(NotifyError::HttpClient)
}

/// POSTs `body` to `webhook` once, freshly signed, and returns the 2xx status it was accepted
/// with. Cancel safe: dropping the future abandons the request and nothing else.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    webhook: &Webhook,
    delivery_id: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<u16, Failure> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let send = async {
        let response = client
            .post(webhook.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                signature::sign(&webhook.key, timestamp, body),
            )
            .header(DELIVERY_HEADER, delivery_id)
            .timeout(timeout)
            .body(body.to_vec())
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        if status.is_redirection() {
            return Err(DeliveryError::Redirected(status.as_u16()).into());
        }
        let retry_after = retry_after(response.headers());
        Err(Failure {
            error: DeliveryError::Status {
                status: status.as_u16(),
                body: error_body(response).await,
            },
            retry_after,
        })
    };
    // The client's own timeout covers the whole exchange; this is the backstop.
    tokio::time::timeout(timeout, send)
        .await
        .unwrap_or_else(|_| Err(DeliveryError::Timeout.into()))
}

/// The start of a refusing receiver's body, printable ASCII only so it cannot forge log lines.
/// A body that cannot be read leaves what was read so far.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_ERROR_BODY_BYTES);
    bytes
        .iter()
        .map(|&byte| {
            if byte.is_ascii_graphic() || byte == b' ' {
                char::from(byte)
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A transport failure as a [`DeliveryError`], without the URL reqwest puts in its messages.
fn classify(err: reqwest::Error) -> Failure {
    let err = err.without_url();
    let error = if err.is_timeout() {
        DeliveryError::Timeout
    } else if err.is_connect() {
        let mut source = std::error::Error::source(&err);
        let mut kind = None;
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
                break;
            }
            source = cause.source();
        }
        DeliveryError::Connect(kind)
    } else {
        // reqwest's own message is generic ("error sending request"); the causes say what.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        DeliveryError::Request(message)
    };
    error.into()
}

/// Refuses URLs that are not https, or http to a loopback address.
fn check_url(group: &str, url: &Url) -> Result<(), NotifyError> {
    let group = group.to_owned();
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(()),
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(NotifyError::Plaintext { group })
            }
        }
        _ => Err(NotifyError::BadUrl { group }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn check(url: &str, secret: &str) -> Result<Webhook, NotifyError> {
        Webhook::new(
            "dba",
            &WebhookConfig {
                url: url.into(),
                secret: secret.into(),
            },
        )
    }

    #[test]
    fn only_https_or_loopback_http() {
        for url in [
            "https://hooks.slack.com/services/T0/B0/XYZ",
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://localhost:9000/hook",
        ] {
            assert!(check(url, SECRET).is_ok(), "{url}");
        }
        for (url, kind) in [
            ("http://hooks.example.com/hook", "plaintext"),
            ("http://10.0.0.1/hook", "plaintext"),
            ("http://localhost.evil.com/hook", "plaintext"),
            ("ftp://hooks.example.com/hook", "bad_url"),
            ("file:///etc/passwd", "bad_url"),
            ("not a url", "bad_url"),
        ] {
            assert_eq!(check(url, SECRET).unwrap_err().kind(), kind, "{url}");
        }
    }

    #[test]
    fn secrets_must_be_long_enough() {
        let err = check("https://hooks.example.com/x", "short").unwrap_err();
        assert_eq!(err.kind(), "short_secret");
        assert!(err.to_string().contains("'dba'"));
    }

    #[test]
    fn shows_the_host_never_the_path_or_secret() {
        let config = WebhookConfig {
            url: "https://hooks.slack.com:8443/services/T0/B0/XYZ".into(),
            secret: SECRET.into(),
        };
        let shown = format!("{config:?} {:?}", Webhook::new("dba", &config).unwrap());
        assert!(shown.contains("hooks.slack.com"));
        assert!(!shown.contains("XYZ"), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert_eq!(
            Webhook::new("dba", &config).unwrap().host(),
            "hooks.slack.com:8443"
        );
    }
}
