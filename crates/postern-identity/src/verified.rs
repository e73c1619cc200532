//! Tokens already verified, by the SHA-256 of their exact text: a client that reconnects with the
//! same token (a pool of connections opened at start, `pgbench -C`, a BI tool opening one
//! connection per query) costs one hash and a lookup instead of a signature check.
//!
//! An entry is honoured until the token's own expiry — checked here without the clock-skew
//! leeway verification allows, so a cached token never outlives a fresh check — and at most
//! [`MAX_VERIFICATION_REUSE`] after it was verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::identity::Identity;
use crate::limits::{MAX_VERIFICATION_REUSE, MAX_VERIFIED_TOKENS};

type Digest = [u8; 32];

#[derive(Debug, Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<Digest, Entry>>,
}

#[derive(Debug)]
struct Entry {
    identity: Arc<Identity>,
    until: SystemTime,
}

pub(crate) fn digest(token: &str) -> Digest {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

impl VerifiedTokens {
    /// The identity of a token verified before, if its entry still holds at `now`.
    pub(crate) fn get(&self, digest: &Digest, now: SystemTime) -> Option<Arc<Identity>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(digest)
            .filter(|entry| now < entry.until)
            .map(|entry| Arc::clone(&entry.identity))
    }

    /// Remembers a token verified at `now`.
    pub(crate) fn insert(&self, digest: Digest, identity: &Arc<Identity>, now: SystemTime) {
        let until = identity.expires_at.min(now + MAX_VERIFICATION_REUSE);
        if until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_VERIFIED_TOKENS {
            entries.retain(|_, entry| now < entry.until);
            if entries.len() >= MAX_VERIFIED_TOKENS {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                identity: Arc::clone(identity),
                until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::IdentityKind;

    fn identity(expires_at: SystemTime) -> Arc<Identity> {
        Arc::new(Identity {
            issuer_name: "corp".into(),
            issuer: "https://login.example".into(),
            subject: "alice".into(),
            kind: IdentityKind::Human,
            groups: Vec::new(),
            claims: serde_json::Map::new(),
            expires_at,
            issued_at: None,
            token_id: None,
            mfa: false,
            workload: None,
        })
    }

    #[test]
    fn a_verification_is_reused_until_the_token_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cache = VerifiedTokens::default();
        let key = digest("header.claims.signature");
        cache.insert(key, &identity(now + Duration::from_secs(60)), now);
        assert!(cache.get(&key, now + Duration::from_secs(59)).is_some());
        assert!(cache.get(&key, now + Duration::from_secs(60)).is_none());
        assert!(cache.get(&digest("header.claims.signaturE"), now).is_none());
    }

    #[test]
    fn a_verification_is_reused_for_a_bounded_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cache = VerifiedTokens::default();
        let key = digest("long.lived.token");
        cache.insert(key, &identity(now + Duration::from_secs(86_400)), now);
        assert!(
            cache
                .get(&key, now + MAX_VERIFICATION_REUSE - Duration::from_secs(1))
                .is_some()
        );
        assert!(cache.get(&key, now + MAX_VERIFICATION_REUSE).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cache = VerifiedTokens::default();
        let valid = identity(now + Duration::from_secs(60));
        for i in 0..=MAX_VERIFIED_TOKENS {
            cache.insert(digest(&i.to_string()), &valid, now);
        }
        let entries = cache.entries.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(entries.len() <= MAX_VERIFIED_TOKENS, "{}", entries.len());
    }
}
