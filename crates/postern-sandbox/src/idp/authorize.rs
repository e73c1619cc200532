//! The authorization code flow with PKCE (RFC 6749 §4.1, RFC 7636 with `S256` only), as much of
//! it as a browser signing in to Postern's console needs: `GET /authorize` shows a sign-in form
//! asking for a subject and groups (no password: this provider is for trying Postern), `POST
//! /authorize` issues a one-time code and redirects back to the client, and `POST /token` with
//! `grant_type=authorization_code` ([`exchange`], reached through [`super::grant`]) exchanges
//! the code and its PKCE verifier for the tokens [`super::grant::issue`] makes. A box on the form
//! says the sign-in used a second factor (`amr` then says `otp`); it starts ticked when the
//! client asks for multi-factor with `acr_values` ([`MFA_ACR`]).
//!
//! Every parameter is checked again at each step, redirect URIs must be http(s) on a loopback
//! host (nothing here may send a code across a network), codes live [`CODE_TTL`] and are used at
//! most once, and at most [`MAX_PENDING_CODES`] are outstanding.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::ServerState;
use super::form::{Params, encode, escape_html};
use super::grant::{SignIn, issue, token_error};

/// Path of the authorization endpoint, relative to the issuer.
pub const AUTHORIZE_PATH: &str = "/authorize";
/// Path of the token endpoint, relative to the issuer.
pub const TOKEN_PATH: &str = "/token";
/// How long an authorization code may wait for its exchange. RFC 6749 §4.1.2 recommends at most
/// ten minutes; the exchange follows the redirect within a second.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// Most codes outstanding at once; past it (after dropping expired ones) sign-ins are refused.
pub const MAX_PENDING_CODES: usize = 1024;
/// Largest form body accepted by `POST /authorize` and `POST /token`.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Longest parameter value accepted (URLs, state, nonce).
const MAX_PARAM_CHARS: usize = 2048;
/// Longest subject accepted.
const MAX_SUBJECT_CHARS: usize = 256;
/// Most groups, and longest group name, accepted on the form.
const MAX_GROUPS: usize = 64;
const MAX_GROUP_CHARS: usize = 128;
/// The `acr_values` entry asking for a multi-factor sign-in: the OpenID Provider Authentication
/// Policy Extension's multi-factor policy, which several providers (Auth0 among them) honour.
/// This provider also takes any value containing `mfa`.
/// <https://openid.net/specs/openid-provider-authentication-policy-extension-1_0.html#rfc.section.4>
pub const MFA_ACR: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";

/// The style of the sign-in page, allowed by its hash in the page's content security policy.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;\
padding:0 1rem;color:#1d2430}h1{font-size:1.4rem}.note{background:#fff6d6;border:1px solid \
#e8d48a;padding:.6rem .8rem;border-radius:4px}label{display:block;margin:1rem 0 .3rem;\
font-weight:600}input{box-sizing:border-box;width:100%;padding:.45rem;font:inherit}\
button{margin-top:1.2rem;padding:.5rem 1.2rem;font:inherit}small{color:#5a6472}";

/// Codes issued and not yet exchanged, by code.
#[derive(Default)]
pub(super) struct Codes {
    pub(super) pending: Mutex<HashMap<String, Pending>>,
}

/// What a code stands for.
pub(super) struct Pending {
    /// Who signed in, for which client.
    sign_in: SignIn,
    redirect_uri: String,
    /// The PKCE `code_challenge` (S256): the exchange must bring the verifier hashing to it.
    challenge: String,
    /// Goes into the ID token, so the client can tie it to the sign-in it started.
    nonce: String,
    pub(super) expires: Instant,
}

/// A checked authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OIDC Core §3.1.2.1).
struct AuthorizationRequest {
    client_id: String,
    redirect_uri: String,
    /// `scheme://authority` of `redirect_uri`, for the sign-in page's `form-action`.
    redirect_origin: String,
    state: String,
    nonce: String,
    code_challenge: String,
    /// The client asked for a multi-factor sign-in (`acr_values`): the form's box starts ticked.
    mfa_requested: bool,
}

impl AuthorizationRequest {
    fn from_params(params: &Params) -> Result<Self, String> {
        let response_type = params.require("response_type")?;
        if response_type != "code" {
            return Err(format!(
                "response_type {response_type:?} is not supported: this provider does the \
                 authorization code flow only (response_type=code)"
            ));
        }
        let method = params.require("code_challenge_method")?;
        if method != "S256" {
            return Err(format!(
                "code_challenge_method {method:?} is not supported: use S256"
            ));
        }
        let code_challenge = params.require("code_challenge")?;
        if code_challenge.len() != 43 || !code_challenge.bytes().all(is_base64url) {
            return Err(
                "code_challenge must be the base64url SHA-256 of the verifier (43 characters)"
                    .into(),
            );
        }
        let bounded = |name: &str| -> Result<String, String> {
            let value = params.require(name)?;
            if value.chars().count() > MAX_PARAM_CHARS {
                return Err(format!(
                    "{name} is longer than {MAX_PARAM_CHARS} characters"
                ));
            }
            Ok(value.to_owned())
        };
        let redirect_uri = bounded("redirect_uri")?;
        let redirect_origin = loopback_origin(&redirect_uri)?.to_owned();
        Ok(Self {
            client_id: bounded("client_id")?,
            redirect_uri,
            redirect_origin,
            state: bounded("state")?,
            nonce: bounded("nonce")?,
            code_challenge: code_challenge.to_owned(),
            mfa_requested: asks_for_mfa(params.get("acr_values")),
        })
    }

    /// The parameters again, as hidden fields of the sign-in form.
    fn hidden_fields(&self) -> String {
        [
            ("response_type", "code"),
            ("code_challenge_method", "S256"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("state", self.state.as_str()),
            ("nonce", self.nonce.as_str()),
            ("code_challenge", self.code_challenge.as_str()),
        ]
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape_html(value)
            )
        })
        .collect()
    }
}

/// Whether `acr_values` (space-separated) asks for a multi-factor sign-in.
pub(super) fn asks_for_mfa(acr_values: Option<&str>) -> bool {
    acr_values.is_some_and(|values| {
        values
            .split(' ')
            .any(|value| value == MFA_ACR || value.to_ascii_lowercase().contains("mfa"))
    })
}

/// The form fields of a development sign-in: subject, groups, and the second-factor box.
pub(super) fn sign_in_inputs(mfa_checked: bool) -> String {
    format!(
        "<label for=\"subject\">Subject</label>\n\
         <input id=\"subject\" name=\"subject\" type=\"text\" required autofocus \
         autocomplete=\"username\" placeholder=\"alice@example.com\">\n\
         <label for=\"groups\">Groups <small>(separated by commas or spaces)</small></label>\n\
         <input id=\"groups\" name=\"groups\" type=\"text\" placeholder=\"dbas, analysts\">\n\
         <label><input name=\"mfa\" type=\"checkbox\" value=\"1\"{checked}> Signed in with a \
         second factor <small>(the token's <code>amr</code> says <code>otp</code>)</small></label>\n",
        checked = if mfa_checked { " checked" } else { "" },
    )
}

/// The subject, groups and authentication methods (`amr`, RFC 8176) a sign-in form gives.
pub(super) fn sign_in_fields(
    params: &Params,
) -> Result<(String, Vec<String>, Vec<String>), String> {
    let subject = match params.require("subject") {
        Ok(subject) if subject.trim().chars().count() <= MAX_SUBJECT_CHARS => subject.trim(),
        Ok(_) => return Err("the subject is too long".into()),
        Err(why) => return Err(why),
    };
    if subject.is_empty() {
        return Err("subject is missing".into());
    }
    let groups: Vec<String> = params
        .get("groups")
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|group| !group.is_empty())
        .map(str::to_owned)
        .collect();
    if groups.len() > MAX_GROUPS || groups.iter().any(|g| g.chars().count() > MAX_GROUP_CHARS) {
        return Err(format!(
            "give at most {MAX_GROUPS} groups of at most {MAX_GROUP_CHARS} characters"
        ));
    }
    let amr = if params.get("mfa").is_some() {
        vec!["pwd".to_owned(), "otp".to_owned()]
    } else {
        vec!["pwd".to_owned()]
    };
    Ok((subject.to_owned(), groups, amr))
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The origin (`scheme://authority`) of `uri` if it is an http(s) URL on a loopback host, with
/// no user information and no fragment (RFC 6749 §3.1.2); otherwise why not.
fn loopback_origin(uri: &str) -> Result<&str, String> {
    let refuse = |why: &str| {
        Err(format!(
            "redirect_uri must be an http(s) URL on a loopback host (127.0.0.1, [::1] or \
             localhost): {why}"
        ))
    };
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse("it holds spaces, control or non-ASCII characters");
    }
    if uri.contains('#') {
        return refuse("it has a fragment");
    }
    let Some(rest) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    else {
        return refuse("it is not http or https");
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return refuse("it has user information");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':').unwrap_or(after)),
            None => return refuse("its IPv6 address is not closed"),
        },
        None => authority.split_once(':').unwrap_or((authority, "")),
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return refuse("its port is not a number");
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || (authority.starts_with('[')
            && host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()));
    if !loopback {
        return refuse("its host is not loopback");
    }
    Ok(&uri[..uri.len() - rest.len() + end])
}

/// A small HTML page; `body` must already be escaped.
pub(super) fn page(status: StatusCode, title: &str, body: &str, form_action: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n"
    );
    let style_hash = STANDARD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        STYLE.as_bytes(),
    ));
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{style_hash}'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The page shown for a request that cannot go on. Not redirected back: the redirect URI or the
/// client may be what is wrong (RFC 6749 §4.1.2.1).
pub(super) fn refused(why: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in refused",
        &format!("<h1>Sign-in refused</h1>\n<p>{}</p>\n", escape_html(why)),
        "'none'",
    )
}

/// `GET /authorize`: the sign-in form.
pub(super) async fn form(RawQuery(query): RawQuery) -> Response {
    let request = match Params::parse(query.as_deref().unwrap_or_default())
        .and_then(|params| AuthorizationRequest::from_params(&params))
    {
        Ok(request) => request,
        Err(why) => return refused(&why),
    };
    let body = format!(
        "<h1>Development sign-in</h1>\n\
         <p class=\"note\">Development sign-in — no password: this provider is for trying \
         Postern. Anyone who can reach it can sign in as anyone.</p>\n\
         <p><small>Signing in to <strong>{client}</strong>, which will be sent back to \
         {origin}.</small></p>\n\
         <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n{hidden}{inputs}\
         <button type=\"submit\">Sign in</button>\n</form>\n",
        client = escape_html(&request.client_id),
        origin = escape_html(&request.redirect_origin),
        hidden = request.hidden_fields(),
        inputs = sign_in_inputs(request.mfa_requested),
    );
    // Browsers apply `form-action` to the redirect that answers the form too.
    let form_action = format!("'self' {}", request.redirect_origin);
    page(StatusCode::OK, "Development sign-in", &body, &form_action)
}

/// `POST /authorize`: issues a code for the subject and groups on the form, and sends the browser
/// back to the client with it.
pub(super) async fn submit(State(state): State<ServerState>, body: Bytes) -> Response {
    let Some(params) = form_params(&body) else {
        return refused("the form is larger than allowed or not valid form data");
    };
    let params = match params {
        Ok(params) => params,
        Err(why) => return refused(&why),
    };
    let request = match AuthorizationRequest::from_params(&params) {
        Ok(request) => request,
        Err(why) => return refused(&why),
    };
    let (subject, groups, amr) = match sign_in_fields(&params) {
        Ok(fields) => fields,
        Err(why) => return refused(&why),
    };
    let Some(code) = random_token() else {
        return refused("the provider could not generate a code");
    };
    let pending = Pending {
        sign_in: SignIn {
            client_id: request.client_id,
            subject,
            groups,
            amr,
        },
        redirect_uri: request.redirect_uri.clone(),
        challenge: request.code_challenge,
        nonce: request.nonce,
        expires: Instant::now() + CODE_TTL,
    };
    {
        let mut codes = state
            .codes
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if codes.len() >= MAX_PENDING_CODES {
            let now = Instant::now();
            codes.retain(|_, pending| pending.expires > now);
        }
        if codes.len() >= MAX_PENDING_CODES {
            return refused("too many sign-ins are in progress; try again in a minute");
        }
        codes.insert(code.clone(), pending);
    }
    let separator = if request.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!(
        "{}{separator}code={}&state={}",
        request.redirect_uri,
        encode(&code),
        encode(&request.state)
    );
    let Ok(location) = HeaderValue::from_str(&location) else {
        return refused("the redirect URI cannot be put in a Location header");
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONNECTION, HeaderValue::from_static("close")),
        ],
    )
        .into_response()
}

/// `POST /token` with `grant_type=authorization_code`: exchanges a code and its PKCE verifier
/// for tokens.
pub(super) fn exchange(state: &ServerState, params: &Params) -> Response {
    let invalid =
        |description: &str| token_error(StatusCode::BAD_REQUEST, "invalid_request", description);
    let grant =
        |description: &str| token_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
    let (code, verifier, redirect_uri, client_id) = match (
        params.require("code"),
        params.require("code_verifier"),
        params.require("redirect_uri"),
        params.require("client_id"),
    ) {
        (Ok(code), Ok(verifier), Ok(redirect_uri), Ok(client_id)) => {
            (code, verifier, redirect_uri, client_id)
        }
        (Err(why), ..) | (_, Err(why), ..) | (_, _, Err(why), _) | (.., Err(why)) => {
            return invalid(&why);
        }
    };
    // Taken out whatever happens next: a code is tried once (RFC 6749 §4.1.2).
    let pending = state
        .codes
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(code);
    let Some(pending) = pending else {
        return grant("the code is unknown or was already used");
    };
    if pending.expires <= Instant::now() {
        return grant("the code has expired");
    }
    if pending.sign_in.client_id != client_id || pending.redirect_uri != redirect_uri {
        return grant("client_id or redirect_uri differ from the authorization request");
    }
    if !valid_verifier(verifier) {
        return grant("code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]");
    }
    let computed = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    if aws_lc_rs::constant_time::verify_slices_are_equal(
        computed.as_bytes(),
        pending.challenge.as_bytes(),
    )
    .is_err()
    {
        return grant("code_verifier does not match the code_challenge");
    }

    issue(state, pending.sign_in, Some(&pending.nonce))
}

/// The form in `body`; `None` when it is too large or not UTF-8.
pub(super) fn form_params(body: &[u8]) -> Option<Result<Params, String>> {
    if body.len() > MAX_FORM_BYTES {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    Some(Params::parse(text))
}

/// 256 random bits, base64url.
pub(super) fn random_token() -> Option<String> {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_loopback() {
        for (uri, origin) in [
            (
                "http://127.0.0.1:6480/console/callback",
                "http://127.0.0.1:6480",
            ),
            ("http://localhost/cb?x=1", "http://localhost"),
            ("https://[::1]:8443/cb", "https://[::1]:8443"),
            ("http://127.8.9.1", "http://127.8.9.1"),
        ] {
            assert_eq!(loopback_origin(uri), Ok(origin), "{uri}");
        }
        for uri in [
            "http://example.com/cb",
            "http://127.0.0.1.example.com/cb",
            "http://127.0.0.1@example.com/cb",
            "http://example.com@127.0.0.1/cb",
            "http://127.0.0.1/cb#frag",
            "ftp://127.0.0.1/cb",
            "http://[::1/cb",
            "http://[::2]/cb",
            "http://::1/cb",
            "http://127.0.0.1:x/cb",
            "http://127.0.0.1/c b",
            "javascript:alert(1)",
            "//127.0.0.1/cb",
        ] {
            assert!(loopback_origin(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn verifiers_follow_rfc_7636() {
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(valid_verifier(&"-._~".repeat(32)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}
