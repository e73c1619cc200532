//! The console's side of OpenID Connect: the provider's endpoints from its discovery document
//! (cached [`DISCOVERY_TTL`]), and the exchange of an authorization code and its PKCE verifier
//! for tokens. Only https URLs are used, or plain http to a loopback address; every wait is
//! timed out and every body bounded. Verifying the tokens is not done here: the access token is
//! verified by Postern's own verifier, like any client's.
//!
//! Errors are [`OidcError`]s whose `Display` is shown to the person signing in; it never holds a
//! token or a provider's response body, which go to the log only when they must.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::ACCEPT;
use serde_json::Value;

use super::ConsoleError;

/// Path of the discovery document under the issuer.
/// <https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig>
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// How long the provider's endpoints are used before discovery is asked again.
pub(super) const DISCOVERY_TTL: Duration = Duration::from_secs(5 * 60);
/// Time allowed to connect to the provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one whole request to the provider, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or token response read (postern-identity bounds key documents
/// the same way).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why talking to the identity provider failed; the `Display` is shown to the person signing in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum OidcError {
    #[error("the identity provider cannot be reached ({0})")]
    Unreachable(&'static str),
    #[error("the identity provider answered HTTP {0}")]
    Status(u16),
    #[error("the identity provider refused: {0}")]
    Refused(String),
    #[error("the identity provider's answer is not usable: {0}")]
    Malformed(&'static str),
    #[error("{0} is not https (plain http is accepted to loopback addresses only)")]
    Insecure(&'static str),
}

/// Where to send the browser, and where to exchange the code.
#[derive(Debug)]
pub(super) struct Endpoints {
    pub authorization: Url,
    pub token: Url,
}

/// What the token endpoint returned.
pub(super) struct Tokens {
    pub access_token: String,
    pub id_token: String,
}

/// The console's client of the identity provider.
pub(super) struct Oidc {
    client: reqwest::Client,
    issuer: String,
    cached: Mutex<Option<(Instant, Arc<Endpoints>)>>,
}

impl Oidc {
    /// A client of `issuer`, with rustls on aws-lc-rs, the Mozilla roots, no proxy, no redirects
    /// followed, and the timeouts above.
    pub(super) fn new(issuer: &str) -> Result<Self, ConsoleError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConsoleError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("postern-console/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConsoleError::Client(e.to_string()))?;
        Ok(Self {
            client,
            issuer: issuer.to_owned(),
            cached: Mutex::new(None),
        })
    }

    /// The provider's endpoints, from discovery (cached).
    pub(super) async fn endpoints(&self) -> Result<Arc<Endpoints>, OidcError> {
        if let Some((fetched, endpoints)) =
            &*self.cached.lock().unwrap_or_else(PoisonError::into_inner)
            && fetched.elapsed() < DISCOVERY_TTL
        {
            return Ok(Arc::clone(endpoints));
        }
        let url = format!("{}{DISCOVERY_PATH}", self.issuer.trim_end_matches('/'));
        let url = checked(&url, "the issuer")?;
        let response = self
            .client
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unreachable(&self.issuer, &e))?;
        let (status, document) = read_json(response).await?;
        if !status.is_success() {
            return Err(OidcError::Status(status.as_u16()));
        }
        // OIDC Discovery §4.3: the document must name the issuer it was fetched for.
        if document.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(OidcError::Malformed(
                "the discovery document names a different issuer",
            ));
        }
        let endpoint = |name: &'static str| -> Result<Url, OidcError> {
            let url = document
                .get(name)
                .and_then(Value::as_str)
                .ok_or(OidcError::Malformed(
                    "the discovery document lacks authorization_endpoint or token_endpoint",
                ))?;
            checked(url, name)
        };
        if let Some(methods) = document
            .get("code_challenge_methods_supported")
            .and_then(Value::as_array)
            && !methods.iter().any(|m| m.as_str() == Some("S256"))
        {
            return Err(OidcError::Malformed(
                "the provider does not support PKCE with S256",
            ));
        }
        let endpoints = Arc::new(Endpoints {
            authorization: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
        });
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&endpoints)));
        Ok(endpoints)
    }

    /// Exchanges `code` and its PKCE `verifier` for tokens (RFC 6749 §4.1.3, RFC 7636 §4.5).
    /// Not cancel safe in the sense that a dropped future abandons the exchange, and with it the
    /// single-use code.
    pub(super) async fn exchange(
        &self,
        endpoints: &Endpoints,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        client_id: &str,
    ) -> Result<Tokens, OidcError> {
        let response = self
            .client
            .post(endpoints.token.clone())
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect_uri),
                ("client_id", client_id),
            ])
            .send()
            .await
            .map_err(|e| unreachable(&self.issuer, &e))?;
        let (status, body) = read_json(response).await?;
        if !status.is_success() {
            // RFC 6749 §5.2: `error` and `error_description` say why; both are the provider's
            // words for the person signing in.
            let error = body.get("error").and_then(Value::as_str);
            let description = body.get("error_description").and_then(Value::as_str);
            return Err(match (error, description) {
                (Some(error), Some(description)) => {
                    OidcError::Refused(format!("{}: {}", clip(error), clip(description)))
                }
                (Some(error), None) => OidcError::Refused(clip(error)),
                _ => OidcError::Status(status.as_u16()),
            });
        }
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        if let Some(kind) = body.get("token_type").and_then(Value::as_str)
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(OidcError::Malformed("the token type is not Bearer"));
        }
        match (text("access_token"), text("id_token")) {
            (Some(access_token), Some(id_token)) => Ok(Tokens {
                access_token,
                id_token,
            }),
            _ => Err(OidcError::Malformed(
                "the token response lacks access_token or id_token",
            )),
        }
    }
}

/// At most 200 characters of a provider's message, without control characters.
fn clip(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// `url` parsed, if it is https or http to a loopback address.
fn checked(url: &str, what: &'static str) -> Result<Url, OidcError> {
    let parsed = Url::parse(url).map_err(|_| OidcError::Malformed("an endpoint is not a URL"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(parsed)
            } else {
                Err(OidcError::Insecure(what))
            }
        }
        _ => Err(OidcError::Insecure(what)),
    }
}

/// The short reason a request failed, the full error going to the log.
fn unreachable(issuer: &str, error: &reqwest::Error) -> OidcError {
    tracing::warn!(%issuer, error = %error, "the console cannot reach the identity provider");
    if error.is_timeout() {
        OidcError::Unreachable("timed out")
    } else if error.is_connect() {
        OidcError::Unreachable("could not connect")
    } else {
        OidcError::Unreachable("the request failed")
    }
}

/// The status and the JSON body, read incrementally up to [`MAX_BODY_BYTES`].
async fn read_json(
    mut response: reqwest::Response,
) -> Result<(reqwest::StatusCode, Value), OidcError> {
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
    {
        return Err(OidcError::Malformed("the answer is too large"));
    }
    let mut body = Vec::new();
    let read = async {
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| OidcError::Unreachable("the answer was cut short"))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(OidcError::Malformed("the answer is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| OidcError::Unreachable("timed out"))??;
    match serde_json::from_slice(&body) {
        Ok(value) => Ok((status, value)),
        Err(_) if !status.is_success() => Ok((status, Value::Null)),
        Err(_) => Err(OidcError::Malformed("the answer is not JSON")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_or_loopback() {
        for good in [
            "https://idp.example.com/authorize",
            "http://127.0.0.1:5556/token",
            "http://[::1]/token",
            "http://localhost:8080/authorize",
        ] {
            assert!(checked(good, "x").is_ok(), "{good}");
        }
        for bad in [
            "http://idp.example.com/token",
            "http://127.0.0.1.nip.io/token",
            "ftp://127.0.0.1/x",
            "javascript:alert(1)",
            "/relative",
        ] {
            assert!(checked(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn provider_messages_are_clipped() {
        assert_eq!(clip("a\u{1b}[31mb\nc"), "a[31mbc");
        assert_eq!(clip(&"x".repeat(500)).len(), 200);
    }
}
