//! `postern login --device`: the device authorization grant (RFC 8628) from the device's side.
//! Ask the provider for a device code, tell the person where to enter the user code, then poll
//! the token endpoint at the interval the provider gave, five seconds slower after each
//! `slow_down` (§3.5), until the tokens come, the person denies, or the code expires.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use super::oidc::{self, Endpoints, TokenFailure, Tokens, clip};

/// The device code grant type (RFC 8628 §3.4).
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The interval when the provider gives none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// How much longer to wait after each `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Bounds on the interval, whatever the provider says or asks.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// The longest wait for the person, whatever the provider's `expires_in`.
const MAX_WAIT: Duration = Duration::from_secs(30 * 60);
/// The wait when the provider gives no `expires_in`.
const DEFAULT_WAIT: Duration = Duration::from_secs(10 * 60);
/// Longest user code shown (RFC 8628 §6.1 recommends short ones; longer means a hostile
/// provider).
const MAX_USER_CODE_CHARS: usize = 32;

/// What to do after a poll that gave no tokens.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Poll again after this interval.
    Wait(Duration),
    /// Stop: why.
    Stop(String),
}

/// The next step after `failure`, polling every `interval` until now.
fn after(failure: &TokenFailure, interval: Duration, login_again: &str) -> Next {
    match failure {
        TokenFailure::Refused { error, .. } if error == "authorization_pending" => {
            Next::Wait(interval)
        }
        TokenFailure::Refused { error, .. } if error == "slow_down" => {
            Next::Wait((interval + SLOW_DOWN_STEP).min(MAX_INTERVAL))
        }
        TokenFailure::Refused { error, .. } if error == "access_denied" => {
            Next::Stop("the sign-in was denied".to_owned())
        }
        TokenFailure::Refused { error, .. } if error == "expired_token" => Next::Stop(format!(
            "the code expired before the sign-in was completed: run `{login_again}` again"
        )),
        // RFC 8628 §3.5: on a connection timeout, back off exponentially.
        TokenFailure::Other(_) => Next::Wait((interval * 2).min(MAX_INTERVAL)),
        TokenFailure::Refused { .. } => Next::Stop(format!(
            "the identity provider refused the sign-in: {failure}"
        )),
    }
}

/// Signs in with the device flow; returns the tokens.
pub async fn sign_in(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client_id: &str,
    scope: &str,
    acr_values: Option<&str>,
    login_again: &str,
) -> anyhow::Result<Tokens> {
    let endpoint = endpoints.device_authorization.as_ref().ok_or_else(|| {
        anyhow!(
            "the identity provider does not offer the device flow (no \
             device_authorization_endpoint): use `postern login --browser`"
        )
    })?;
    let mut form = vec![("client_id", client_id), ("scope", scope)];
    if let Some(acr_values) = acr_values {
        form.push(("acr_values", acr_values));
    }
    let (status, answer) = oidc::post_form(http, endpoint, &form).await?;
    let text = |name: &str| answer.get(name).and_then(Value::as_str);
    if !status.is_success() {
        bail!(
            "the identity provider refused to start a device sign-in: {}{}",
            clip(text("error").unwrap_or("no error code")),
            text("error_description")
                .map(|d| format!(": {}", clip(d)))
                .unwrap_or_default()
        );
    }
    let device_code = text("device_code").context("the provider gave no device_code")?;
    let user_code = text("user_code").context("the provider gave no user_code")?;
    if user_code.chars().count() > MAX_USER_CODE_CHARS || user_code.chars().any(char::is_control) {
        bail!("the provider's user code is not one a person can type");
    }
    // Google once spelled it verification_url.
    let verification = text("verification_uri")
        .or_else(|| text("verification_url"))
        .context("the provider gave no verification_uri")?;
    let verification = oidc::checked_url(verification, "the verification URI")?;
    let complete = text("verification_uri_complete")
        .map(|url| oidc::checked_url(url, "the verification URI"))
        .transpose()?;
    let mut interval = answer
        .get("interval")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_INTERVAL, Duration::from_secs)
        .clamp(MIN_INTERVAL, MAX_INTERVAL);
    let wait = answer
        .get("expires_in")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_WAIT, Duration::from_secs)
        .min(MAX_WAIT);

    eprintln!("To sign in, open {verification} in a browser on any device and enter the code\n");
    eprintln!("    {user_code}\n");
    if let Some(complete) = &complete {
        eprintln!("(or open {complete}, which has the code filled in).");
    }
    eprintln!(
        "Waiting for the sign-in (up to {} minutes) ...",
        wait.as_secs().div_ceil(60)
    );

    let deadline = Instant::now() + wait;
    loop {
        if Instant::now() + interval > deadline {
            bail!("the code expired before the sign-in was completed: run `{login_again}` again");
        }
        tokio::time::sleep(interval).await;
        let polled = oidc::token_request(
            http,
            &endpoints.token,
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
        )
        .await;
        match polled {
            Ok(tokens) => return Ok(tokens),
            Err(failure) => match after(&failure, interval, login_again) {
                Next::Wait(next) => {
                    if next > interval && matches!(failure, TokenFailure::Refused { .. }) {
                        eprintln!(
                            "The provider asks to poll less often: every {} seconds.",
                            next.as_secs()
                        );
                    }
                    interval = next;
                }
                Next::Stop(why) => bail!(why),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(error: &str) -> TokenFailure {
        TokenFailure::Refused {
            error: error.to_owned(),
            description: Some("why".to_owned()),
        }
    }

    #[test]
    fn polling_follows_rfc_8628() {
        let five = Duration::from_secs(5);
        assert_eq!(
            after(&refused("authorization_pending"), five, "postern login"),
            Next::Wait(five)
        );
        assert_eq!(
            after(&refused("slow_down"), five, "postern login"),
            Next::Wait(Duration::from_secs(10))
        );
        assert_eq!(
            after(&refused("slow_down"), MAX_INTERVAL, "postern login"),
            Next::Wait(MAX_INTERVAL)
        );
        assert_eq!(
            after(&refused("access_denied"), five, "postern login"),
            Next::Stop("the sign-in was denied".to_owned())
        );
        let Next::Stop(why) = after(&refused("expired_token"), five, "postern login --device")
        else {
            panic!("expired_token must stop");
        };
        assert!(why.contains("run `postern login --device` again"), "{why}");
        let Next::Stop(why) = after(&refused("invalid_client"), five, "postern login") else {
            panic!("an unknown error must stop");
        };
        assert!(why.contains("invalid_client: why"), "{why}");
        assert_eq!(
            after(
                &TokenFailure::Other(anyhow!("timed out")),
                five,
                "postern login"
            ),
            Next::Wait(Duration::from_secs(10))
        );
    }
}
