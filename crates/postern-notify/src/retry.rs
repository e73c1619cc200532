//! When to try a delivery again ([`RetryPolicy`]): exponential backoff from `first_backoff`,
//! doubled per failure and capped at `max_backoff`, unless the receiver said when with
//! `Retry-After`. No jitter: each notification goes to a receiver once, from one Postern, so
//! there is no herd of clients to spread out.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::NotifyError;
use crate::limits::MAX_ATTEMPTS;

/// How often and how patiently each delivery is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 to [`MAX_ATTEMPTS`]).
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub first_backoff: Duration,
    /// Longest wait between attempts, `Retry-After` included.
    pub max_backoff: Duration,
    /// Longest one attempt may take, from connecting to the end of the response.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts over about 15 seconds of backoff (1 + 2 + 4 + 8), 10 seconds each.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Refuses a policy that could never deliver or would wait forever.
    pub(crate) fn validate(&self) -> Result<(), NotifyError> {
        if self.attempts == 0 || self.attempts > MAX_ATTEMPTS {
            return Err(NotifyError::Attempts(self.attempts));
        }
        if self.timeout.is_zero() {
            return Err(NotifyError::Policy("timeout must be more than zero"));
        }
        if self.first_backoff > self.max_backoff {
            return Err(NotifyError::Policy(
                "first_backoff must not exceed max_backoff",
            ));
        }
        Ok(())
    }

    /// The wait after the `failed`-th failed attempt (1 for the first): the receiver's
    /// `Retry-After` if it gave one, else the exponential backoff; never above `max_backoff`.
    pub(crate) fn backoff(&self, failed: u32, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.unwrap_or_else(|| {
            let factor = 1_u32
                .checked_shl(failed.saturating_sub(1))
                .unwrap_or(u32::MAX);
            self.first_backoff.saturating_mul(factor)
        });
        wait.min(self.max_backoff)
    }
}

/// The `Retry-After` of a response, in its delay-seconds form
/// (<https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3>). The HTTP-date form is ignored
/// (the exponential backoff applies instead): no receiver we know of sends it on webhooks.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Absurdly large values saturate; `backoff` caps them anyway.
    Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn exponential_then_capped() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (1..=8)
            .map(|failed| policy.backoff(failed, None).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.backoff(u32::MAX, None), policy.max_backoff);
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let policy = RetryPolicy::default();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(policy.backoff(4, secs(0)), Duration::ZERO);
        assert_eq!(policy.backoff(1, secs(30)), Duration::from_secs(30));
        assert_eq!(policy.backoff(1, secs(3600)), Duration::from_secs(60));
    }

    #[test]
    fn parses_delay_seconds_only() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers)
        };
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("1.5"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn validation() {
        let ok = RetryPolicy::default();
        assert!(ok.validate().is_ok());
        let cases = [
            RetryPolicy { attempts: 0, ..ok },
            RetryPolicy {
                attempts: MAX_ATTEMPTS + 1,
                ..ok
            },
            RetryPolicy {
                timeout: Duration::ZERO,
                ..ok
            },
            RetryPolicy {
                first_backoff: Duration::from_secs(61),
                ..ok
            },
        ];
        for policy in cases {
            assert!(policy.validate().is_err(), "{policy:?}");
        }
    }
}
