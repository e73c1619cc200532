//! The device authorization grant (RFC 8628), for a command line signing in without a browser of
//! its own: `POST /device_authorization` gives the device a `device_code` and the person a short
//! `user_code`; `GET /device` is the development sign-in form where the person enters that code
//! with a subject and groups (no password, like `/authorize`) and approves or denies; the device
//! polls `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:device_code` and hears
//! `authorization_pending`, `slow_down` (polled sooner than the interval, which then grows by
//! [`SLOW_DOWN_STEP`]), `access_denied`, `expired_token`, or the tokens.
//!
//! Device codes live [`DEVICE_CODE_TTL`], at most [`MAX_PENDING_DEVICE_CODES`] at once, and are
//! spent by the answer that ends them (tokens, denial, expiry). User codes are eight letters of
//! RFC 8628 §6.1's twenty-consonant alphabet (about 34 bits), shown as `BCDF-GHJK`; entry ignores
//! case and punctuation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ServerState;
use super::authorize::{
    asks_for_mfa, form_params, page, random_token, refused, sign_in_fields, sign_in_inputs,
};
use super::form::{Params, encode, escape_html};
use super::grant::{SignIn, issue, token_error};

/// Path of the device authorization endpoint, relative to the issuer.
pub const DEVICE_AUTHORIZATION_PATH: &str = "/device_authorization";
/// Path of the page where the person enters the user code (`verification_uri`).
pub const DEVICE_PATH: &str = "/device";
/// How long a device code waits for the person. RFC 8628 §3.2 leaves it to the provider; ten
/// minutes is what most give.
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// The polling interval given when the provider is not told otherwise (RFC 8628 §3.2: 5 s when
/// absent).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How much a device's interval grows each time it polls too soon (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Most device codes outstanding at once; past it (after dropping expired ones) requests are
/// refused.
pub const MAX_PENDING_DEVICE_CODES: usize = 1024;
/// RFC 8628 §6.1: consonants only (no words, no vowels mistaken for digits).
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code.
const USER_CODE_LETTERS: usize = 8;
/// Longest `client_id` accepted.
const MAX_CLIENT_ID_CHARS: usize = 256;

/// Device codes issued and not yet ended, and the interval new ones get.
pub(super) struct DeviceCodes {
    pub(super) pending: Mutex<HashMap<String, Device>>,
    /// Seconds; tests shorten it.
    pub(super) interval_secs: AtomicU64,
}

impl Default for DeviceCodes {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            interval_secs: AtomicU64::new(DEFAULT_POLL_INTERVAL.as_secs()),
        }
    }
}

/// One device's sign-in.
pub(super) struct Device {
    client_id: String,
    /// Eight letters, without the dash.
    user_code: String,
    /// The client asked for a multi-factor sign-in: the form's box starts ticked.
    mfa_requested: bool,
    state: DeviceState,
    pub(super) expires: Instant,
    /// How often the device may poll; grows with each `slow_down`.
    interval: Duration,
    last_poll: Option<Instant>,
}

enum DeviceState {
    Pending,
    Approved(SignIn),
    Denied,
}

/// A new user code, eight letters.
fn new_user_code() -> Option<String> {
    let mut code = String::with_capacity(USER_CODE_LETTERS);
    while code.len() < USER_CODE_LETTERS {
        let mut bytes = [0_u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        // 240 is the largest multiple of 20 under 256: rejecting above it keeps letters uniform.
        for byte in bytes.into_iter().filter(|&b| b < 240) {
            if code.len() < USER_CODE_LETTERS {
                code.push(char::from(USER_CODE_ALPHABET[usize::from(byte % 20)]));
            }
        }
    }
    Some(code)
}

/// `BCDFGHJK` as `BCDF-GHJK`.
fn display_user_code(code: &str) -> String {
    let (first, second) = code.split_at(code.len() / 2);
    format!("{first}-{second}")
}

/// What a person typed, as a user code: letters only, upper case (RFC 8628 §6.1).
fn normalize_user_code(typed: &str) -> String {
    typed
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase())
        .take(USER_CODE_LETTERS + 1)
        .collect()
}

/// `POST /device_authorization` (RFC 8628 §3.1, §3.2).
pub(super) async fn authorize(State(state): State<ServerState>, body: Bytes) -> Response {
    let invalid =
        |description: &str| token_error(StatusCode::BAD_REQUEST, "invalid_request", description);
    let params = match form_params(&body) {
        Some(Ok(params)) => params,
        Some(Err(why)) => return invalid(&why),
        None => return invalid("the body is larger than allowed or not form data"),
    };
    let client_id = match params.require("client_id") {
        Ok(id) if id.chars().count() <= MAX_CLIENT_ID_CHARS => id.to_owned(),
        Ok(_) => return invalid("client_id is too long"),
        Err(why) => return invalid(&why),
    };
    let (Some(device_code), Some(mut user_code)) = (random_token(), new_user_code()) else {
        return token_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the provider could not generate a code",
        );
    };
    let interval = Duration::from_secs(state.devices.interval_secs.load(Ordering::SeqCst).max(1));
    {
        let mut pending = state
            .devices
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if pending.len() >= MAX_PENDING_DEVICE_CODES {
            pending.retain(|_, device| device.expires > now);
        }
        if pending.len() >= MAX_PENDING_DEVICE_CODES {
            return token_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many sign-ins are in progress; try again in a minute",
            );
        }
        // A user code names one sign-in: draw again on the rare collision.
        while pending.values().any(|device| device.user_code == user_code) {
            match new_user_code() {
                Some(code) => user_code = code,
                None => {
                    return token_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the provider could not generate a code",
                    );
                }
            }
        }
        pending.insert(
            device_code.clone(),
            Device {
                client_id,
                user_code: user_code.clone(),
                mfa_requested: asks_for_mfa(params.get("acr_values")),
                state: DeviceState::Pending,
                expires: now + DEVICE_CODE_TTL,
                interval,
                last_poll: None,
            },
        );
    }
    let shown = display_user_code(&user_code);
    let verification_uri = format!("{}{DEVICE_PATH}", state.issuer);
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONNECTION, "close"),
        ],
        axum::Json(json!({
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?user_code={}", encode(&shown)),
            "expires_in": DEVICE_CODE_TTL.as_secs(),
            "interval": interval.as_secs(),
        })),
    )
        .into_response()
}

/// `GET /device`: the form where the person enters the user code and signs in.
pub(super) async fn form(State(state): State<ServerState>, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let typed = params.get("user_code").unwrap_or_default();
    let code = normalize_user_code(typed);
    let mfa_requested = state
        .devices
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .any(|device| device.user_code == code && device.mfa_requested);
    let shown = if code.len() == USER_CODE_LETTERS {
        display_user_code(&code)
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Sign in a device</h1>\n\
         <p class=\"note\">Development sign-in — no password: this provider is for trying \
         Postern. Anyone who can reach it can sign in as anyone.</p>\n\
         <p><small>Enter the code your device shows, then who you are.</small></p>\n\
         <form method=\"post\" action=\"{DEVICE_PATH}\">\n\
         <label for=\"user_code\">Code</label>\n\
         <input id=\"user_code\" name=\"user_code\" type=\"text\" required \
         autocomplete=\"off\" placeholder=\"BCDF-GHJK\" value=\"{code}\">\n{inputs}\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Sign in</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n</form>\n",
        code = escape_html(&shown),
        inputs = sign_in_inputs(mfa_requested),
    );
    page(StatusCode::OK, "Sign in a device", &body, "'self'")
}

/// `POST /device`: approves or denies the device sign-in the user code names.
pub(super) async fn submit(State(state): State<ServerState>, body: Bytes) -> Response {
    let params = match form_params(&body) {
        Some(Ok(params)) => params,
        Some(Err(why)) => return refused(&why),
        None => return refused("the form is larger than allowed or not valid form data"),
    };
    let code = normalize_user_code(params.get("user_code").unwrap_or_default());
    let approve = match params.get("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => return refused("decision must be approve or deny"),
    };
    let fields = if approve {
        match sign_in_fields(&params) {
            Ok(fields) => Some(fields),
            Err(why) => return refused(&why),
        }
    } else {
        None
    };
    let mut pending = state
        .devices
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let Some(device) = pending.values_mut().find(|device| {
        device.user_code == code
            && device.expires > now
            && matches!(device.state, DeviceState::Pending)
    }) else {
        return refused(
            "that code is unknown, was already used or has expired: check the code your device \
             shows, or start again there",
        );
    };
    let (title, text) = match fields {
        Some((subject, groups, amr)) => {
            device.state = DeviceState::Approved(SignIn {
                client_id: device.client_id.clone(),
                subject,
                groups,
                amr,
            });
            (
                "Device signed in",
                "Your device is signed in; go back to it. You may close this window.",
            )
        }
        None => {
            device.state = DeviceState::Denied;
            (
                "Sign-in denied",
                "The device's sign-in was denied. You may close this window.",
            )
        }
    };
    drop(pending);
    page(
        StatusCode::OK,
        title,
        &format!("<h1>{title}</h1>\n<p>{text}</p>\n"),
        "'none'",
    )
}

/// `POST /token` with the device code grant (RFC 8628 §3.4, §3.5).
pub(super) fn exchange(state: &ServerState, params: &Params) -> Response {
    let error =
        |code: &str, description: &str| token_error(StatusCode::BAD_REQUEST, code, description);
    let (device_code, client_id) =
        match (params.require("device_code"), params.require("client_id")) {
            (Ok(device_code), Ok(client_id)) => (device_code, client_id),
            (Err(why), _) | (_, Err(why)) => return error("invalid_request", &why),
        };
    let mut pending = state
        .devices
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let Some(device) = pending.get_mut(device_code) else {
        return error(
            "invalid_grant",
            "the device code is unknown or was already used",
        );
    };
    if device.client_id != client_id {
        return error(
            "invalid_grant",
            "the device code was issued to another client",
        );
    }
    if device.expires <= now {
        pending.remove(device_code);
        return error(
            "expired_token",
            "the device code has expired: start the sign-in again",
        );
    }
    let too_soon = device
        .last_poll
        .is_some_and(|last| now.duration_since(last) < device.interval);
    device.last_poll = Some(now);
    if too_soon {
        device.interval += SLOW_DOWN_STEP;
        let description = format!(
            "polled sooner than the interval; poll every {} seconds from now on",
            device.interval.as_secs()
        );
        return error("slow_down", &description);
    }
    match device.state {
        DeviceState::Pending => error(
            "authorization_pending",
            "the sign-in has not been completed yet",
        ),
        DeviceState::Denied => {
            pending.remove(device_code);
            error("access_denied", "the sign-in was denied")
        }
        DeviceState::Approved(_) => {
            let Some(Device {
                state: DeviceState::Approved(sign_in),
                ..
            }) = pending.remove(device_code)
            else {
                return error("invalid_grant", "the device code is unknown");
            };
            drop(pending);
            issue(state, sign_in, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_follow_rfc_8628() {
        for _ in 0..100 {
            let code = new_user_code().unwrap();
            assert_eq!(code.len(), USER_CODE_LETTERS);
            assert!(
                code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)),
                "{code}"
            );
            assert_eq!(normalize_user_code(&display_user_code(&code)), code);
        }
        assert_eq!(display_user_code("BCDFGHJK"), "BCDF-GHJK");
        assert_eq!(normalize_user_code(" bcdf ghjk\n"), "BCDFGHJK");
        assert_eq!(
            normalize_user_code("bcdf-ghjk-lmnp").len(),
            USER_CODE_LETTERS + 1
        );
        assert_eq!(normalize_user_code("1234-ééé"), "");
    }
}
