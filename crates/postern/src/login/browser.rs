//! `postern login --browser`: the authorization code flow with PKCE (RFC 7636, S256) and a
//! loopback redirect (RFC 8252 §7.3). The CLI listens on `127.0.0.1` on a port the system
//! picks, sends the person's browser to the provider, and takes the one callback that carries
//! its `state`; the code is then exchanged with the PKCE verifier, which never left this
//! process.
//!
//! The callback server is as small as it can be: it reads one bounded request head per
//! connection (each connection on a task of its own, so a browser's idle pre-connection does not
//! hold up the real one), answers with a short page, and stops as soon as it has the code, an
//! error from the provider, or [`LOGIN_TIMEOUT`] has passed.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::claims;
use super::oidc::{self, Endpoints, Tokens, clip};

/// How long the person has to sign in.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The callback's path on the loopback server.
const CALLBACK_PATH: &str = "/callback";
/// Largest request head read from a connection to the loopback server.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a connection to the loopback server may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections to the loopback server handled at once; others wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// What the sign-in asks of the provider besides the code.
pub struct Request<'a> {
    pub client_id: &'a str,
    pub scope: &'a str,
    /// `acr_values` for a multi-factor sign-in (with `prompt=login`), when asked for.
    pub mfa_acr_values: Option<&'a str>,
    /// Try to open the person's browser (the URL is printed either way).
    pub open_browser: bool,
}

/// What a callback said.
enum Callback {
    /// The code, its state checked.
    Code(String),
    /// The provider's error (RFC 6749 §4.1.2.1).
    Error(String),
}

/// 32 random bytes, base64url: 43 characters, a valid PKCE verifier (RFC 7636 §4.1), state or
/// nonce.
fn random() -> anyhow::Result<String> {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow!("the system gave no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The S256 challenge of `verifier` (RFC 7636 §4.2).
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// Signs in with the browser; returns the tokens.
pub async fn sign_in(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    issuer: &str,
    request: &Request<'_>,
) -> anyhow::Result<Tokens> {
    let authorization = endpoints.authorization.as_ref().ok_or_else(|| {
        anyhow!("the identity provider has no authorization_endpoint: use `postern login --device`")
    })?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen on 127.0.0.1 for the sign-in's redirect")?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}{CALLBACK_PATH}",
        listener.local_addr()?.port()
    );
    let (state, nonce, verifier) = (random()?, random()?, random()?);
    let mut url = authorization.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", request.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", request.scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        if let Some(acr_values) = request.mfa_acr_values {
            query
                .append_pair("acr_values", acr_values)
                .append_pair("prompt", "login");
        }
    }
    eprintln!("Open this address in a browser to sign in:\n\n    {url}\n");
    if request.open_browser && open(url.as_str()) {
        eprintln!("(A browser was asked to open it.)");
    }
    eprintln!(
        "Waiting for the sign-in (up to {} minutes) ...",
        LOGIN_TIMEOUT.as_secs() / 60
    );
    let callback = tokio::time::timeout(LOGIN_TIMEOUT, wait_for_callback(listener, &state, issuer))
        .await
        .map_err(|_| {
            anyhow!(
                "no sign-in came back within {} minutes",
                LOGIN_TIMEOUT.as_secs() / 60
            )
        })??;
    let code = match callback {
        Callback::Code(code) => code,
        Callback::Error(why) => bail!("the identity provider refused the sign-in: {why}"),
    };
    let tokens = oidc::token_request(
        http,
        &endpoints.token,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", &redirect_uri),
            ("client_id", request.client_id),
        ],
    )
    .await
    .map_err(|failure| anyhow!("the code exchange failed: {failure}"))?;
    // OIDC Core §3.1.3.7: the ID token must carry the nonce this sign-in sent (its signature may
    // go unchecked for a token taken straight from the token endpoint over TLS).
    if let Some(id_token) = &tokens.id_token
        && let Some(claims) = claims::unverified(id_token)
        && claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce.as_str())
    {
        bail!("the ID token does not carry this sign-in's nonce: the sign-in was not this one");
    }
    Ok(tokens)
}

/// Tries the platform's way of opening a URL; whether it started.
fn open(url: &str) -> bool {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open"
    } else {
        return false;
    };
    std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Serves the loopback address until a callback with `state` (or the provider's error) comes.
async fn wait_for_callback(
    listener: TcpListener,
    state: &str,
    issuer: &str,
) -> anyhow::Result<Callback> {
    let (found, mut found_rx) = mpsc::channel::<Callback>(1);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(callback) = found_rx.recv() => {
                tasks.shutdown().await;
                return Ok(callback);
            }
            accepted = listener.accept(), if tasks.len() < MAX_CONNECTIONS => {
                let (stream, _) = accepted.context("the loopback listener failed")?;
                let (found, state, issuer) = (found.clone(), state.to_owned(), issuer.to_owned());
                tasks.spawn(async move {
                    if let Ok(Some(callback)) = serve(stream, &state, &issuer).await {
                        let _ = found.send(callback).await;
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Answers one connection; the callback it carried, if it is the one awaited.
async fn serve(
    mut stream: TcpStream,
    state: &str,
    issuer: &str,
) -> std::io::Result<Option<Callback>> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        _ => return Ok(None),
    };
    let (status, page, callback) = answer(&head, state, issuer);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nContent-Security-Policy: default-src 'none'\r\n\
         Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(callback)
}

/// The request head, up to the blank line; `None` if the peer closed or sent too much first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() + read > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(String::from_utf8(head).ok())
}

/// The status, page and callback for a request head (pure, so it is tested without sockets).
fn answer(head: &str, state: &str, issuer: &str) -> (&'static str, String, Option<Callback>) {
    let page = |title: &str, text: &str| {
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}\
             </title></head><body><h1>{title}</h1><p>{text}</p></body></html>\n"
        )
    };
    let not_found = ("404 Not Found", page("Not found", "Nothing here."), None);
    let target = match head
        .split("\r\n")
        .next()
        .map(|line| line.split(' ').collect::<Vec<_>>())
    {
        Some(parts) if parts.len() == 3 && parts[0] == "GET" => parts[1],
        _ => return not_found,
    };
    let Ok(url) = Url::parse(&format!("http://127.0.0.1{target}")) else {
        return not_found;
    };
    if url.path() != CALLBACK_PATH {
        return not_found;
    }
    let mut params = HashMap::new();
    for (name, value) in url.query_pairs() {
        // RFC 6749 §3.1: no parameter twice.
        if params
            .insert(name.into_owned(), value.into_owned())
            .is_some()
        {
            return (
                "400 Bad Request",
                page("Sign-in refused", "A parameter is repeated."),
                None,
            );
        }
    }
    let given_state = params.get("state").map(String::as_str).unwrap_or_default();
    let same_state =
        aws_lc_rs::constant_time::verify_slices_are_equal(given_state.as_bytes(), state.as_bytes())
            .is_ok();
    if !same_state {
        eprintln!("(A sign-in for another login came back to this address; it was ignored.)");
        return (
            "400 Bad Request",
            page(
                "Not this sign-in",
                "This is not the sign-in postern is waiting for. Use the address postern printed \
                 last.",
            ),
            None,
        );
    }
    // RFC 9207: a provider that names itself must be the one asked.
    if let Some(iss) = params.get("iss")
        && iss.trim_end_matches('/') != issuer
    {
        return (
            "400 Bad Request",
            page(
                "Sign-in refused",
                "The sign-in came back from another identity provider.",
            ),
            Some(Callback::Error(format!(
                "the answer came from another issuer ({})",
                clip(iss)
            ))),
        );
    }
    if let Some(error) = params.get("error") {
        let why = match params.get("error_description") {
            Some(description) => format!("{}: {}", clip(error), clip(description)),
            None => clip(error),
        };
        return (
            "200 OK",
            page(
                "Sign-in failed",
                "The identity provider refused the sign-in; the terminal says why.",
            ),
            Some(Callback::Error(why)),
        );
    }
    match params.remove("code").filter(|code| !code.is_empty()) {
        Some(code) => (
            "200 OK",
            page(
                "Signed in",
                "postern has your sign-in. You may close this window and go back to the \
                 terminal.",
            ),
            Some(Callback::Code(code)),
        ),
        None => (
            "400 Bad Request",
            page("Sign-in refused", "The answer has no code."),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    fn get(target: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    }

    const ISSUER: &str = "https://login.example.com";

    #[test]
    fn pkce_values_follow_rfc_7636() {
        let verifier = random().unwrap();
        assert_eq!(verifier.len(), 43);
        assert_ne!(verifier, random().unwrap());
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn only_the_awaited_callback_is_taken() {
        let (status, page, callback) = answer(&get("/callback?code=c1&state=s1"), "s1", ISSUER);
        assert_eq!(status, "200 OK");
        assert!(page.contains("Signed in"));
        assert!(matches!(callback, Some(Callback::Code(code)) if code == "c1"));

        for (target, expected) in [
            ("/callback?code=c1&state=other", "400 Bad Request"),
            ("/callback?code=c1", "400 Bad Request"),
            ("/callback?code=c1&state=s1&state=s1", "400 Bad Request"),
            ("/callback?state=s1", "400 Bad Request"),
            ("/favicon.ico", "404 Not Found"),
            ("/callback/../x?code=c1&state=s1", "404 Not Found"),
        ] {
            let (status, _, callback) = answer(&get(target), "s1", ISSUER);
            assert_eq!(status, expected, "{target}");
            assert!(callback.is_none(), "{target}");
        }
        let (status, _, callback) = answer(
            "POST /callback?code=c1&state=s1 HTTP/1.1\r\n\r\n",
            "s1",
            ISSUER,
        );
        assert_eq!(status, "404 Not Found");
        assert!(callback.is_none());
    }

    #[test]
    fn the_providers_error_and_a_foreign_issuer_end_the_wait() {
        let (_, _, callback) = answer(
            &get("/callback?error=access_denied&error_description=no%1b[31m&state=s1"),
            "s1",
            ISSUER,
        );
        assert!(matches!(&callback, Some(Callback::Error(why)) if why == "access_denied: no[31m"),);
        let (status, _, callback) = answer(
            &get("/callback?code=c&state=s1&iss=https%3A%2F%2Fevil.example"),
            "s1",
            ISSUER,
        );
        assert_eq!(status, "400 Bad Request");
        assert!(matches!(callback, Some(Callback::Error(_))));
        let (_, _, callback) = answer(
            &get("/callback?code=c&state=s1&iss=https%3A%2F%2Flogin.example.com%2F"),
            "s1",
            ISSUER,
        );
        assert!(matches!(callback, Some(Callback::Code(_))));
    }
}
