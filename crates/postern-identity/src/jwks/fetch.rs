//! Getting key documents: OIDC discovery and JWKS over HTTP(S), and key files on disk. Every
//! read is bounded ([`MAX_JWKS_BODY_BYTES`], read incrementally) and every network wait timed
//! out ([`CONNECT_TIMEOUT`], [`FETCH_TIMEOUT`]). Plain HTTP is refused except to loopback, so
//! keys cannot be replaced by anyone on the network path.
//!
//! Errors are [`FetchError`]s whose `Display` is short and safe to show a client; the full
//! cause (URL, I/O error) is logged here, where it happens.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::ACCEPT;
use serde_json::Value;

use crate::error::IdentityError;
use crate::limits::{CONNECT_TIMEOUT, FETCH_TIMEOUT, MAX_JWKS_BODY_BYTES, MAX_REDIRECTS};

/// Path of the OIDC discovery document under the issuer URL.
/// <https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig>
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Why keys could not be obtained; the `Display` is the short reason shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("the configured URL is not a valid http(s) URL")]
    BadUrl,
    #[error("plain http is allowed only to loopback addresses; use https")]
    Plaintext,
    #[error("timed out")]
    Timeout,
    #[error("could not connect{}", .0.map(|kind| format!(" ({kind})")).unwrap_or_default())]
    Connect(Option<std::io::ErrorKind>),
    #[error("too many redirects, or a redirect to plain http")]
    Redirect,
    #[error("request failed")]
    Request,
    #[error("the identity provider answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {MAX_JWKS_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the document is not JSON")]
    NotJson,
    #[error("the discovery document has no 'jwks_uri'")]
    NoJwksUri,
    #[error("the discovery document names a different issuer")]
    IssuerMismatch,
    #[error("the document is not a JWK Set (no 'keys' array)")]
    NotJwks,
    #[error("the key file cannot be read ({0})")]
    File(std::io::ErrorKind),
    #[error(
        "the shared secret is shorter than {} bytes",
        crate::limits::MIN_HMAC_SECRET_BYTES
    )]
    ShortSecret,
}

/// Fetches key documents. Cheap to clone (the HTTP client is reference-counted).
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// An HTTP client with rustls on aws-lc-rs, the Mozilla root store, no proxy, and the
    /// timeouts and redirect limit of [`crate::limits`].
    pub fn new() -> Result<Self, IdentityError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(IdentityError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS || check_url(attempt.url()).is_err() {
                attempt.error(FetchError::Redirect)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .redirect(redirects)
            .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(IdentityError::HttpClient)?;
        Ok(Self { client })
    }

    /// The `jwks_uri` of `issuer`'s OIDC discovery document, which must name `issuer` itself
    /// (OIDC Discovery §4.3).
    pub async fn discover(&self, issuer: &str) -> Result<String, FetchError> {
        let url = format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'));
        let document = self.get_json(&url).await?;
        if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
            tracing::warn!(issuer, %url, "discovery document names a different issuer");
            return Err(FetchError::IssuerMismatch);
        }
        match document.get("jwks_uri").and_then(Value::as_str) {
            Some(jwks_uri) => Ok(jwks_uri.to_owned()),
            None => Err(FetchError::NoJwksUri),
        }
    }

    /// GETs `url` and parses the body as JSON. Not cancel safe in the sense that a dropped
    /// future abandons the request; nothing is left half-done.
    pub async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::BadUrl)?;
        check_url(&parsed)?;
        let fetch = async {
            let mut response = self
                .client
                .get(parsed)
                .header(ACCEPT, "application/json")
                .send()
                .await
                .map_err(|err| classify(url, &err))?;
            let status = response.status();
            if !status.is_success() {
                tracing::warn!(%url, %status, "identity provider refused a key request");
                return Err(FetchError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|length| length > MAX_JWKS_BODY_BYTES as u64)
            {
                return Err(FetchError::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|err| classify(url, &err))? {
                if body.len() + chunk.len() > MAX_JWKS_BODY_BYTES {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            serde_json::from_slice(&body).map_err(|_| FetchError::NotJson)
        };
        // The client's own timeout covers the body too; this is the backstop.
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

/// Refuses URLs that are not https, or http to a loopback address.
fn check_url(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(FetchError::Plaintext)
            }
        }
        _ => Err(FetchError::BadUrl),
    }
}

/// The short reason for a failed request, the full error going to the log.
fn classify(url: &str, err: &reqwest::Error) -> FetchError {
    tracing::warn!(%url, error = %err, "fetching keys failed");
    if err.is_timeout() {
        FetchError::Timeout
    } else if err.is_redirect() {
        FetchError::Redirect
    } else if err.is_connect() {
        let mut source = std::error::Error::source(err);
        let mut kind = None;
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
                break;
            }
            source = cause.source();
        }
        FetchError::Connect(kind)
    } else {
        FetchError::Request
    }
}

/// Reads a local key file, refusing one larger than [`MAX_JWKS_BODY_BYTES`]. Blocking.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, FetchError> {
    let failed = |err: std::io::Error| {
        tracing::warn!(path = %path.display(), error = %err, "reading a key file failed");
        FetchError::File(err.kind())
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut contents = Vec::new();
    file.take(MAX_JWKS_BODY_BYTES as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(failed)?;
    if contents.len() > MAX_JWKS_BODY_BYTES {
        return Err(FetchError::TooLarge);
    }
    Ok(contents)
}

/// [`read_file`] off the async reactor.
pub(crate) async fn read_file_async(path: PathBuf) -> Result<Vec<u8>, FetchError> {
    tokio::task::spawn_blocking(move || read_file(&path))
        .await
        .unwrap_or(Err(FetchError::File(std::io::ErrorKind::Interrupted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        let verdict = |url: &str| check_url(&Url::parse(url).unwrap());
        assert_eq!(verdict("https://idp.example.com/jwks"), Ok(()));
        assert_eq!(verdict("http://127.0.0.1:8080/jwks"), Ok(()));
        assert_eq!(verdict("http://127.5.5.5/jwks"), Ok(()));
        assert_eq!(verdict("http://[::1]:80/jwks"), Ok(()));
        assert_eq!(verdict("http://localhost/jwks"), Ok(()));
        assert_eq!(
            verdict("http://idp.example.com/jwks"),
            Err(FetchError::Plaintext)
        );
        assert_eq!(verdict("http://10.0.0.1/jwks"), Err(FetchError::Plaintext));
        assert_eq!(
            verdict("http://localhost.evil.com/jwks"),
            Err(FetchError::Plaintext)
        );
        assert_eq!(verdict("file:///etc/passwd"), Err(FetchError::BadUrl));
        assert_eq!(verdict("ftp://idp/jwks"), Err(FetchError::BadUrl));
    }

    #[test]
    fn key_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b' '; MAX_JWKS_BODY_BYTES + 1]).unwrap();
        assert_eq!(read_file(&big), Err(FetchError::TooLarge));
        let small = dir.path().join("small");
        std::fs::write(&small, b"{}").unwrap();
        assert_eq!(read_file(&small).unwrap(), b"{}");
        assert_eq!(
            read_file(&dir.path().join("absent")),
            Err(FetchError::File(std::io::ErrorKind::NotFound))
        );
    }
}
