//! The console over HTTP against a real Postern control plane and the development identity
//! provider: signing in with the code flow and PKCE, the cookie standing for the token on the
//! API, CSRF, sign-out, the security headers, and the ways a sign-in is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::net::SocketAddr;

use postern_sandbox::idp::{DEV_AUDIENCE, DevIdentityProvider};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::*;

const OPERATORS: &str = "@id(\"operators\")\npermit (principal in Group::\"operators\", \
     action in [Action::\"view_sessions\", Action::\"end_session\"], resource);\n";

/// A Postern (no database behind it: the console needs only the control plane) whose admin API
/// serves the console, and the development provider it trusts.
struct Console {
    idp: DevIdentityProvider,
    /// A second provider Postern does not trust.
    stranger: DevIdentityProvider,
    admin: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Console {
    async fn start() -> Self {
        Self::start_with(|idp, _| idp.issuer().to_owned()).await
    }

    /// Starts with the console signing in at the provider `issuer` picks.
    async fn start_with(
        issuer: impl FnOnce(&DevIdentityProvider, &DevIdentityProvider) -> String,
    ) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let idp = DevIdentityProvider::start(&dir.path().join("idp"))
            .await
            .unwrap();
        let stranger = DevIdentityProvider::start(&dir.path().join("stranger"))
            .await
            .unwrap();
        let policy = dir.path().join("operators.cedar");
        std::fs::write(&policy, OPERATORS).unwrap();
        let text = format!(
            r#"
            [listen]
            address = "127.0.0.1:0"
            allow_plaintext_loopback = true

            [issuers.dev]
            issuer = "{issuer}"
            audience = ["{DEV_AUDIENCE}"]

            [targets.demo]
            host = "127.0.0.1"
            port = 1
            database = "demo"
            admin = {{ user = "postern_admin" }}

            [[targets.demo.roles]]
            roles = ["reader"]
            groups = ["analysts"]

            [audit]
            path = "{audit}"

            [store]
            path = "{store}"

            [policy]
            files = ["{policy}"]
            "#,
            issuer = idp.issuer(),
            audit = dir.path().join("audit.jsonl").display(),
            store = dir.path().join("state.db").display(),
            policy = policy.display(),
        );
        let config = postern_config::Config::from_toml(&text, "test").unwrap();
        config.validate().unwrap();
        let proxy = postern_proxy::Proxy::bind(&config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let options = ConsoleOptions::new(issuer(&idp, &stranger), "postern-console", admin);
        let shutdown = proxy.shutdown_handle();
        tokio::spawn(serve_with(
            listener,
            proxy.control(),
            Some(options),
            shutdown.clone(),
        ));
        tokio::spawn(proxy.serve());
        Self {
            idp,
            stranger,
            admin,
            shutdown,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

/// A browser, as far as the console can tell: follows nothing by itself, keeps cookies by name.
struct Browser {
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sends `request` with the cookies; keeps the ones set (a `Max-Age=0` deletes).
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, String) {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header(reqwest::header::COOKIE, self.cookie_header())
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !attributes.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        (status, headers, response.text().await.unwrap())
    }

    async fn get(&mut self, url: &str) -> (StatusCode, HeaderMap, String) {
        let request = self.client.get(url);
        self.send(request).await
    }

    /// Signs in at `console` as `subject` in `groups` through the provider's form; returns the
    /// callback's answer.
    async fn sign_in(
        &mut self,
        console: &Console,
        subject: &str,
        groups: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let callback = self.authorize(console, subject, groups).await;
        self.get(&callback).await
    }

    /// The sign-in up to the provider's redirect back; returns the callback URL.
    async fn authorize(&mut self, console: &Console, subject: &str, groups: &str) -> String {
        let (status, headers, _) = self.get(&console.url("/console/login")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let authorize = location(&headers);
        let (status, _, page) = self.get(&authorize).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let url = reqwest::Url::parse(&authorize).unwrap();
        let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        form.retain(|(name, _)| name != "scope");
        form.push(("subject".into(), subject.into()));
        form.push(("groups".into(), groups.into()));
        let endpoint = format!("{}://{}{}", url.scheme(), url.authority(), url.path());
        let request = self.client.post(endpoint).form(&form);
        let (status, headers, _) = self.send(request).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let callback = location(&headers);
        assert!(
            callback.starts_with(&console.url(CALLBACK_PATH)),
            "{callback}"
        );
        callback
    }

    /// A request that changes something, with the CSRF header when `csrf` is given.
    async fn post(
        &mut self,
        url: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = self.client.post(url);
        if let Some(csrf) = csrf {
            request = request.header(CSRF_HEADER, csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }
}

fn location(headers: &HeaderMap) -> String {
    headers
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

fn set_cookie<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap())
        .find(|value| value.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {headers:?}"))
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy() {
    let console = Console::start().await;
    let mut browser = Browser::new();
    for (path, content_type, cache) in [
        ("/console/", "text/html", "no-store"),
        ("/console/app.js", "text/javascript", "no-cache"),
        ("/console/app.css", "text/css", "no-cache"),
        ("/console/session", "application/json", "no-store"),
        ("/healthz", "text/plain", "no-store"),
    ] {
        let (_, headers, _) = browser.get(&console.url(path)).await;
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header("content-security-policy"), CONTENT_SECURITY_POLICY);
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert_eq!(header("cache-control"), cache, "{path}");
    }
    let (status, _, page) = browser.get(&console.url("/console/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"<script src="/console/app.js" defer></script>"#));
    // Nothing inline and nothing from elsewhere: the policy would block it anyway.
    assert_eq!(page.matches("<script").count(), 1);
    assert!(!page.contains("<style") && !page.contains(" style="));
    let handlers = page.split(" on").skip(1).filter(|rest| {
        let name_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        name_end > 0 && rest[name_end..].starts_with('=')
    });
    assert_eq!(handlers.count(), 0, "no inline event handlers");
    assert!(!page.contains("http://") && !page.contains("https://"));
    for sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(
            !APP_JS.contains(sink),
            "the script builds nodes, never HTML: {sink}"
        );
    }
    let (status, headers, _) = browser.get(&console.url("/console")).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location(&headers), "/console/");
}

#[tokio::test]
async fn a_person_signs_in_with_the_development_provider_and_uses_the_api_by_cookie() {
    let console = Console::start().await;
    let mut browser = Browser::new();
    let (status, _, body) = browser.get(&console.url("/console/session")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The login redirect: PKCE S256, state and nonce, the registered redirect URI; the login
    // cookie is for the callback's trip back from another site, hence Lax.
    let (status, headers, _) = browser.get(&console.url("/console/login")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let authorize = reqwest::Url::parse(&location(&headers)).unwrap();
    assert_eq!(
        authorize.as_str().split('?').next(),
        Some(format!("{}/authorize", console.idp.issuer()).as_str())
    );
    let params: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], "postern-console");
    assert_eq!(params["redirect_uri"], console.url("/console/callback"));
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["code_challenge"].len(), 43);
    assert_eq!(params["state"].len(), 43);
    assert_eq!(params["nonce"].len(), 43);
    let login = set_cookie(&headers, sessions::LOGIN_COOKIE);
    assert!(
        login.contains("HttpOnly; SameSite=Lax; Path=/console/; Max-Age=600"),
        "{login}"
    );

    let mut browser = Browser::new();
    let (status, headers, body) = browser
        .sign_in(&console, "olga@example.com", "operators, dbas")
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location(&headers), "/console/");
    let session_cookie = set_cookie(&headers, sessions::SESSION_COOKIE);
    assert!(
        session_cookie.contains("; HttpOnly; SameSite=Strict; Path=/; Max-Age="),
        "{session_cookie}"
    );
    assert!(
        browser.cookie(sessions::LOGIN_COOKIE).is_none(),
        "the login cookie is spent"
    );
    let cookie = browser.cookie(sessions::SESSION_COOKIE).unwrap().to_owned();
    assert_eq!(cookie.len(), 43);

    let (status, _, body) = browser.get(&console.url("/console/session")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.contains("eyJ"),
        "no token reaches the browser: {body}"
    );
    let session: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(session["subject"], "olga@example.com");
    assert_eq!(session["issuer"], console.idp.issuer());
    assert_eq!(session["groups"], serde_json::json!(["operators", "dbas"]));
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(csrf.len(), 43);
    assert_ne!(csrf, cookie);

    // The cookie stands for the token on the API.
    let (status, _, body) = browser.get(&console.url("/v1/sessions")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["sessions"],
        serde_json::json!([])
    );

    // Anything but GET needs the CSRF token too.
    let end = console.url("/v1/sessions/nope/end");
    let reason = Some(serde_json::json!({ "reason": "test" }));
    let (status, _, body) = browser.post(&end, None, reason.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("X-CSRF-Token"), "{body}");
    let (status, _, body) = browser.post(&end, Some("forged"), reason.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("does not match"), "{body}");
    let (status, _, body) = browser.post(&end, Some(&csrf), reason.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A bearer token still works, and wins over a cookie.
    let token = console.idp.mint("alice@example.com", &["analysts"]);
    let request = browser
        .client
        .get(console.url("/v1/sessions"))
        .bearer_auth(&token);
    let (status, _, body) = browser.send(request).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "alice may not view sessions: {body}"
    );

    // Sign-out is CSRF-checked, ends the session and deletes the cookie.
    let logout = console.url("/console/logout");
    assert_eq!(
        browser.post(&logout, None, None).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, headers, _) = browser.post(&logout, Some(&csrf), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(set_cookie(&headers, sessions::SESSION_COOKIE).contains("Max-Age=0"));
    let mut stale = Browser::new();
    stale
        .cookies
        .push((sessions::SESSION_COOKIE.into(), cookie));
    let (status, _, body) = stale.get(&console.url("/console/session")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = stale.get(&console.url("/v1/sessions")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("console session has ended"), "{body}");
}

#[tokio::test]
async fn a_sign_in_is_finished_once_by_the_browser_that_started_it() {
    let console = Console::start().await;

    // A replayed callback: the login is spent, and so is the code.
    let mut browser = Browser::new();
    let callback = browser.authorize(&console, "dana", "dbas").await;
    let login_cookie = browser.cookie(sessions::LOGIN_COOKIE).unwrap().to_owned();
    let (status, _, page) = browser.get(&callback).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    browser.cookies.clear();
    browser
        .cookies
        .push((sessions::LOGIN_COOKIE.into(), login_cookie));
    let (status, _, page) = browser.get(&callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("was not started in this browser"), "{page}");

    // A callback without the login cookie (another browser, or a forged link).
    let mut other = Browser::new();
    let (status, _, page) = other
        .get(&console.url("/console/callback?code=abc&state=def"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("was not started in this browser"), "{page}");

    // The right browser but a state that is not its own.
    let mut browser = Browser::new();
    browser.get(&console.url("/console/login")).await;
    let login_cookie = browser.cookie(sessions::LOGIN_COOKIE).unwrap().to_owned();
    let (status, _, page) = browser
        .get(&console.url("/console/callback?code=abc&state=def"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("state differs"), "{page}");
    // ...which spent the login.
    browser
        .cookies
        .push((sessions::LOGIN_COOKIE.into(), login_cookie));
    let (_, _, page) = browser
        .get(&console.url("/console/callback?code=abc&state=def"))
        .await;
    assert!(page.contains("was not started in this browser"), "{page}");

    // The provider's refusal is shown, escaped.
    let mut refused = Browser::new();
    let (_, headers, _) = refused.get(&console.url("/console/login")).await;
    let authorize = reqwest::Url::parse(&location(&headers)).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(name, _)| name == "state")
        .unwrap()
        .1
        .into_owned();
    let mut callback = reqwest::Url::parse(&console.url(CALLBACK_PATH)).unwrap();
    callback
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "<script>alert(1)</script>")
        .append_pair("state", &state);
    let (status, headers, page) = refused.get(callback.as_str()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        page.contains("access_denied &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"));
    assert!(set_cookie(&headers, sessions::LOGIN_COOKIE).contains("Max-Age=0"));
}

#[tokio::test]
async fn a_token_postern_does_not_trust_opens_no_session() {
    // The console signs in at a provider that is not among Postern's issuers.
    let console = Console::start_with(|_, stranger| stranger.issuer().to_owned()).await;
    assert_ne!(console.stranger.issuer(), console.idp.issuer());
    let mut browser = Browser::new();
    let (status, headers, page) = browser.sign_in(&console, "mallory", "operators").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("Postern does not accept the token"), "{page}");
    assert!(
        headers
            .get_all(SET_COOKIE)
            .iter()
            .all(|v| !v.to_str().unwrap().starts_with("postern_console=")),
        "no session cookie"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_reported() {
    let console = Console::start_with(|_, _| "http://127.0.0.1:1".to_owned()).await;
    let mut browser = Browser::new();
    let (status, _, page) = browser.get(&console.url("/console/login")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(page.contains("cannot be reached"), "{page}");
    assert!(page.contains("http://127.0.0.1:1"), "{page}");
}

#[test]
fn options_come_from_the_admin_section() {
    let config = |extra: &str| {
        let text = format!(
            r#"
            [issuers.corp]
            issuer = "https://idp.example.com"
            audience = ["postern"]
            {extra}
            [admin]
            address = "127.0.0.1:6480"
            "#
        );
        postern_config::Config::from_toml(&text, "test").unwrap()
    };
    let bound: SocketAddr = "127.0.0.1:6480".parse().unwrap();
    let options = ConsoleOptions::from_config(&config(""), bound)
        .unwrap()
        .unwrap();
    assert_eq!(
        options,
        ConsoleOptions {
            issuer: "https://idp.example.com".into(),
            client_id: "postern-console".into(),
            redirect_uri: "http://127.0.0.1:6480/console/callback".into(),
        }
    );
    let two = "[issuers.ci]\nissuer = \"https://ci.example.com\"\naudience = [\"postern\"]\n";
    assert!(
        ConsoleOptions::from_config(&config(two), bound)
            .unwrap()
            .is_none()
    );
    let mut named = config(two);
    if let Some(admin) = named.admin.as_mut() {
        admin.console.issuer = Some("ci".into());
        admin.console.client_id = "console".into();
    }
    let options = ConsoleOptions::from_config(&named, "[::1]:7000".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(options.issuer, "https://ci.example.com");
    assert_eq!(options.client_id, "console");
    assert_eq!(options.redirect_uri, "http://[::1]:7000/console/callback");
    if let Some(admin) = named.admin.as_mut() {
        admin.console.issuer = Some("nope".into());
    }
    let error = ConsoleOptions::from_config(&named, bound).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("admin.console.issuer: no issuer \"nope\""),
        "{error}"
    );
}
