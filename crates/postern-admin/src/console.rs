//! The web console: a page served by Postern itself (HTML, JavaScript and CSS built into the
//! binary, nothing fetched from elsewhere) where approvers see pending and past requests, decide
//! them, and look at live sessions, the audit trail and webhook deliveries — all through the
//! same admin API the CLI uses.
//!
//! People sign in with OpenID Connect against the configured identity provider (authorization
//! code flow with PKCE, RFC 7636). The access token the provider returns is verified exactly as a
//! database client's token is (`Control::authenticate`) and then kept **server-side only**: the
//! browser holds a random session id in an `HttpOnly; SameSite=Strict` cookie and never sees a
//! token, in a URL or anywhere script could read it. A layer in front of the API turns that cookie
//! back into the caller's bearer token, after checking, for anything but GET and HEAD, that the
//! request carries the session's CSRF token in `X-CSRF-Token` (a header another site's page
//! cannot set). Every response carries a strict content security policy: scripts, styles and
//! connections from this origin only, no inline script or style, no framing.
//!
//! Console sessions live in this process's memory: they end with the token, at sign-out, or when
//! Postern restarts; each Postern instance has its own.
//!
//! # Layout
//! - [`oidc`]: discovery and the code exchange with the identity provider.
//! - [`sessions`]: sign-ins in progress and console sessions, bounded and expiring.
//! - [`signin`]: `/console/login`, `/console/callback`, `/console/session`, `/console/logout`.
//! - this file: options, routes, the static assets, the cookie layer in front of the API and the
//!   security headers.

mod oidc;
mod sessions;
mod signin;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use postern_proxy::control::Control;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ApiError;

/// The console's page, script and style, built into the binary.
const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");
const FAVICON_SVG: &str = include_str!("../console/favicon.svg");

/// The content security policy of every response: this origin's scripts, styles, images and
/// connections only (no inline code, no `eval`), forms posting back here only, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The header the console sends its CSRF token in, on every request that changes something.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Where the identity provider sends the browser back, relative to the admin API.
pub const CALLBACK_PATH: &str = "/console/callback";

/// What the console needs to sign people in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOptions {
    /// The issuer's URL, exactly as its tokens' `iss`: the console finds the provider's
    /// authorization and token endpoints in `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id the console signs in as (registered with the provider as a public client
    /// with [`Self::redirect_uri`]).
    pub client_id: String,
    /// Where the provider sends the browser back: `http://<admin address>/console/callback`.
    pub redirect_uri: String,
}

impl ConsoleOptions {
    /// Options for a console served at `admin_address` (the address the admin API is bound to).
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        admin_address: SocketAddr,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            redirect_uri: format!("http://{admin_address}{CALLBACK_PATH}"),
        }
    }

    /// The console's options from `[admin]` (`[admin.console]`) and `[issuers]`, for an admin
    /// API bound to `admin_address` (the listener's own address, so that port 0 works). `None`
    /// when there is no admin API, the console is turned off, or no issuer is named while
    /// several are configured (logged, saying what to write).
    ///
    /// # Errors
    /// When `[admin.console] issuer` names no configured issuer.
    pub fn from_config(
        config: &postern_config::Config,
        admin_address: SocketAddr,
    ) -> Result<Option<Self>, ConsoleError> {
        let Some(admin) = &config.admin else {
            return Ok(None);
        };
        match admin.console_issuer(&config.issuers) {
            Ok(Some((_, issuer))) => Ok(Some(Self::new(
                issuer.issuer.clone(),
                admin.console.client_id.clone(),
                admin_address,
            ))),
            Ok(None) => {
                if admin.console.enabled {
                    tracing::warn!(
                        "the web console is off: several issuers are configured and \
                         [admin.console] issuer names none of them (or set enabled = false)"
                    );
                }
                Ok(None)
            }
            Err(problem) => Err(ConsoleError::Config(format!(
                "{}: {}",
                problem.key, problem.message
            ))),
        }
    }
}

/// Why the console cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The HTTP client for the identity provider could not be built.
    #[error("the console's HTTP client cannot be built: {0}")]
    Client(String),
    /// The configuration does not say how the console signs in.
    #[error("{0}")]
    Config(String),
}

/// Everything the console's handlers share.
struct Console {
    /// Verifies the tokens the provider returns, as clients' tokens are verified.
    control: Control,
    options: ConsoleOptions,
    /// Talks to the identity provider.
    oidc: oidc::Oidc,
    /// Sign-ins in progress and signed-in browsers.
    sessions: sessions::Sessions,
    /// Whether cookies get `Secure` (the redirect URI is https, so the console is reached over
    /// TLS through a proxy in front).
    secure_cookies: bool,
}

/// The admin API's routes over `control` with the web console under `/console/`, and console
/// cookies accepted in place of bearer tokens on the API.
///
/// # Errors
/// When the HTTP client for the identity provider cannot be built.
pub fn router_with(control: Control, options: ConsoleOptions) -> Result<Router, ConsoleError> {
    let console = Arc::new(Console {
        control: control.clone(),
        oidc: oidc::Oidc::new(&options.issuer)?,
        secure_cookies: options.redirect_uri.starts_with("https://"),
        options,
        sessions: sessions::Sessions::default(),
    });
    let pages = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
        .route("/console/favicon.svg", get(icon))
        .route("/console/login", get(signin::login))
        .route(CALLBACK_PATH, get(signin::callback))
        .route("/console/session", get(signin::session))
        .route("/console/logout", post(signin::logout))
        .with_state(Arc::clone(&console));
    Ok(crate::router(control)
        .merge(pages)
        .layer(middleware::from_fn_with_state(console, cookie_to_bearer))
        .layer(middleware::map_response(security_headers)))
}

/// Serves the admin API, with the console when `console` is given, on `listener` until
/// `shutdown` is cancelled.
pub async fn serve_with(
    listener: TcpListener,
    control: Control,
    console: Option<ConsoleOptions>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = match console {
        Some(options) => router_with(control, options).map_err(std::io::Error::other)?,
        None => crate::router(control),
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8", "no-store")
}

async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8", "no-cache")
}

async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8", "no-cache")
}

async fn icon() -> Response {
    asset(FAVICON_SVG, "image/svg+xml", "no-cache")
}

fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// In front of the API (`/v1/…`): a request without `Authorization` but with a console cookie is
/// the signed-in person's. Their token, kept server-side, is put in `Authorization` for the
/// handlers (which verify it again, as every bearer token), once the CSRF token is checked for
/// any method but GET and HEAD. A request that brings its own `Authorization` is left alone:
/// another site's page cannot send one without a CORS preflight, which this API never answers.
async fn cookie_to_bearer(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/v1/")
        || request.headers().contains_key(header::AUTHORIZATION)
    {
        return next.run(request).await;
    }
    let Some(id) = sessions::cookie(request.headers(), sessions::SESSION_COOKIE) else {
        return next.run(request).await;
    };
    let Some(session) = console.sessions.get(id) else {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "your console session has ended (signed out, expired or Postern restarted): sign in \
             again"
                .into(),
        )
        .into_response();
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD)
        && let Err(why) = session.check_csrf(request.headers())
    {
        return ApiError(StatusCode::FORBIDDEN, why.into()).into_response();
    }
    let Ok(mut bearer) = HeaderValue::from_str(&format!("Bearer {}", session.token)) else {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "your console session's token cannot be used: sign in again".into(),
        )
        .into_response();
    };
    bearer.set_sensitive(true);
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    next.run(request).await
}

/// Headers on every response: the content security policy, no MIME sniffing, no referrer, and
/// `no-store` unless the handler chose its own caching.
async fn security_headers(mut response: Response) -> Response {
    add_security_headers(response.headers_mut());
    response
}

fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Escapes text for HTML element content or a double-quoted attribute.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;
