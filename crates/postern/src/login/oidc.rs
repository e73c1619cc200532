//! The CLI's client of the identity provider: discovery (OIDC Discovery 1.0) and the token
//! endpoint (RFC 6749 §5), for the grants `postern login` and `postern psql` use. Only https
//! URLs are used, or plain http to a loopback address (where the quickstart's provider lives);
//! every wait is timed out and every body bounded. Nothing here verifies tokens: Postern does.
//!
//! A provider's words (error descriptions, user codes) are shown to the user, clipped and
//! without control characters, so a hostile provider cannot drive the terminal.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::Url;
use reqwest::header::ACCEPT;
use serde_json::Value;

/// Path of the discovery document under the issuer.
/// <https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig>
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Time allowed to connect to the provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one whole request to the provider, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest discovery document or token response read (the console bounds them the same way).
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest text from the provider shown to the user.
const MAX_SHOWN_CHARS: usize = 300;

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: Option<Url>,
    pub token: Url,
    pub device_authorization: Option<Url>,
}

/// What the token endpoint gave. Deliberately not `Debug`: it holds tokens.
pub struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    /// Seconds from now, as the provider said.
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

/// Why the token endpoint gave no tokens.
#[derive(Debug)]
pub enum TokenFailure {
    /// The provider answered with an OAuth error (RFC 6749 §5.2): its code and description.
    Refused {
        error: String,
        description: Option<String>,
    },
    /// No usable answer: the provider could not be reached, or its answer is not one.
    Other(anyhow::Error),
}

impl std::fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused {
                error,
                description: Some(description),
            } => write!(f, "{error}: {description}"),
            Self::Refused { error, .. } => f.write_str(error),
            Self::Other(error) => write!(f, "{error:#}"),
        }
    }
}

/// An HTTP client for `issuer`: no redirects followed, the timeouts above, and no proxy for a
/// loopback issuer (a proxy from the environment elsewhere).
pub fn http_client(issuer: &str) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("postern-cli/", env!("CARGO_PKG_VERSION")));
    if Url::parse(issuer).is_ok_and(|url| is_loopback(&url)) {
        builder = builder.no_proxy();
    }
    builder.build().context("cannot build an HTTP client")
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `url` parsed, if it is https, or http to a loopback address.
pub fn checked_url(url: &str, what: &str) -> anyhow::Result<Url> {
    let parsed = Url::parse(url).with_context(|| format!("{what} is not a URL: {}", clip(url)))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        _ => bail!(
            "{what} ({}) is not https (plain http is accepted to loopback addresses only)",
            clip(url)
        ),
    }
}

/// At most [`MAX_SHOWN_CHARS`] characters of a provider's text, without control characters.
pub fn clip(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_SHOWN_CHARS)
        .collect()
}

/// The provider's endpoints. The document must name `issuer` (OIDC Discovery §4.3; a trailing
/// slash aside).
pub async fn discover(http: &reqwest::Client, issuer: &str) -> anyhow::Result<Endpoints> {
    let url = checked_url(&format!("{issuer}{DISCOVERY_PATH}"), "the issuer")?;
    let response = http
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unreachable(issuer, &e))?;
    let (status, document) = read_json(response).await?;
    if !status.is_success() {
        bail!("{issuer} answered HTTP {status} to discovery: is it an OpenID Connect issuer?");
    }
    let named = document
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if named.trim_end_matches('/') != issuer {
        bail!(
            "the discovery document of {issuer} names another issuer ({})",
            clip(named)
        );
    }
    let endpoint = |name: &str| -> anyhow::Result<Option<Url>> {
        document
            .get(name)
            .and_then(Value::as_str)
            .map(|url| checked_url(url, name))
            .transpose()
    };
    let token = endpoint("token_endpoint")?
        .ok_or_else(|| anyhow!("{issuer}'s discovery document has no token_endpoint"))?;
    if let Some(methods) = document
        .get("code_challenge_methods_supported")
        .and_then(Value::as_array)
        && !methods.iter().any(|m| m.as_str() == Some("S256"))
    {
        bail!("{issuer} does not support PKCE with S256");
    }
    Ok(Endpoints {
        authorization: endpoint("authorization_endpoint")?,
        token,
        device_authorization: endpoint("device_authorization_endpoint")?,
    })
}

/// POSTs `form` to the token endpoint. Not cancel safe: a dropped future abandons whatever
/// single-use code or refresh token the form carries.
pub async fn token_request(
    http: &reqwest::Client,
    endpoint: &Url,
    form: &[(&str, &str)],
) -> Result<Tokens, TokenFailure> {
    let response = http
        .post(endpoint.clone())
        .header(ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| TokenFailure::Other(unreachable(endpoint.as_str(), &e)))?;
    let (status, body) = read_json(response).await.map_err(TokenFailure::Other)?;
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    if !status.is_success() {
        return Err(match text("error") {
            Some(error) => TokenFailure::Refused {
                error: clip(&error),
                description: text("error_description").map(|d| clip(&d)),
            },
            None => TokenFailure::Other(anyhow!("the token endpoint answered HTTP {status}")),
        });
    }
    if let Some(kind) = text("token_type")
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(TokenFailure::Other(anyhow!(
            "the provider gave a {} token, not a bearer token",
            clip(&kind)
        )));
    }
    let access_token = text("access_token")
        .filter(|token| !token.is_empty())
        .ok_or_else(|| TokenFailure::Other(anyhow!("the token response has no access_token")))?;
    Ok(Tokens {
        access_token,
        id_token: text("id_token"),
        refresh_token: text("refresh_token"),
        expires_in: body.get("expires_in").and_then(Value::as_u64),
        scope: text("scope"),
    })
}

/// POSTs `form` to an endpoint answering JSON (the device authorization endpoint): the status
/// and the body.
pub async fn post_form(
    http: &reqwest::Client,
    endpoint: &Url,
    form: &[(&str, &str)],
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let response = http
        .post(endpoint.clone())
        .header(ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| unreachable(endpoint.as_str(), &e))?;
    read_json(response).await
}

/// Why a request failed, in a few words, with the URL (never a body: it may hold a token).
fn unreachable(url: &str, error: &reqwest::Error) -> anyhow::Error {
    let why = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    anyhow!("cannot reach the identity provider at {url}: {why}")
}

/// The status and the JSON body, read incrementally up to [`MAX_BODY_BYTES`].
async fn read_json(
    mut response: reqwest::Response,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
    {
        bail!("the identity provider's answer is larger than {MAX_BODY_BYTES} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the identity provider's answer was cut off")?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            bail!("the identity provider's answer is larger than {MAX_BODY_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    let value = serde_json::from_slice(&body)
        .map_err(|_| anyhow!("the identity provider answered HTTP {status} without JSON"))?;
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback() {
        for ok in [
            "https://login.example.com/token",
            "http://127.0.0.1:8080/token",
            "http://localhost/x",
            "http://[::1]:1/x",
        ] {
            assert!(checked_url(ok, "x").is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com/token",
            "http://127.0.0.1.example.com/",
            "ftp://127.0.0.1/",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(checked_url(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn provider_text_is_clipped_and_loses_control_characters() {
        assert_eq!(clip("a\u{1b}[31mb\nc"), "a[31mbc");
        assert_eq!(clip(&"x".repeat(1000)).len(), MAX_SHOWN_CHARS);
    }
}
