//! An issuer's verification keys: parsing a JWK Set into keys Postern will use, choosing the
//! keys that may verify a given token, and (in submodules) fetching and caching them.
//!
//! A key is only ever used for the algorithm family it belongs to, and HMAC keys never come
//! from a JWKS (only from a configured shared-secret file), so a token cannot pick its own
//! verification scheme (<https://www.rfc-editor.org/rfc/rfc8725#section-2.1>).
//!
//! # Layout
//! - this file: [`VerificationKey`], [`KeySet`], JWKS parsing, key selection.
//! - [`fetch`]: HTTP (discovery, JWKS) and file reads, bounded and timed out.
//! - [`cache`]: the per-issuer cache with single-flight, rate-limited refresh.

mod cache;
mod fetch;

use std::sync::Arc;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

pub use cache::LocalJwks;
pub(crate) use cache::{IssuerKeys, KeySource};
pub(crate) use fetch::{FetchError, Fetcher};

use crate::error::echo;
use crate::limits::{MAX_JWKS_KEYS, MIN_HMAC_SECRET_BYTES};

/// One key that may verify signatures, with what it may verify.
pub(crate) struct VerificationKey {
    /// The JWK's `kid`, matched against the token header's.
    pub kid: Option<String>,
    /// The JWK's `alg`, when it pins one.
    alg: Option<Algorithm>,
    /// RSA, EC, Ed or HMAC: a key verifies only algorithms of its own family.
    family: AlgorithmFamily,
    /// For EC and Ed keys: ES256 needs P-256, ES384 P-384, EdDSA Ed25519.
    curve: Option<EllipticCurve>,
    /// Set for a shared secret, which has no `kid` and verifies tokens whatever their `kid`.
    any_kid: bool,
    /// The key material, as `jsonwebtoken` wants it.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// A key from a shared-secret file: HMAC, any `kid`.
    pub fn shared_secret(secret: &[u8]) -> Result<Self, FetchError> {
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(FetchError::ShortSecret);
        }
        Ok(Self {
            kid: None,
            alg: None,
            family: AlgorithmFamily::Hmac,
            curve: None,
            any_kid: true,
            key: DecodingKey::from_secret(secret),
        })
    }

    /// Whether this key may verify an `alg` signature.
    fn fits(&self, alg: Algorithm) -> bool {
        if self.family != alg.family() || self.alg.is_some_and(|pinned| pinned != alg) {
            return false;
        }
        match alg {
            Algorithm::ES256 => self.curve == Some(EllipticCurve::P256),
            Algorithm::ES384 => self.curve == Some(EllipticCurve::P384),
            Algorithm::EdDSA => self.curve == Some(EllipticCurve::Ed25519),
            _ => true,
        }
    }

    /// The key described by one JWK, or why it is not usable for verifying signatures.
    fn from_jwk(jwk: &Jwk) -> Result<Self, &'static str> {
        match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => {}
            Some(_) => return Err("its 'use' is not 'sig'"),
        }
        if let Some(operations) = &jwk.common.key_operations
            && !operations.contains(&KeyOperations::Verify)
        {
            return Err("its 'key_ops' do not include 'verify'");
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(alg) => Some(
                signing_algorithm(alg).ok_or("its 'alg' is not a supported signature algorithm")?,
            ),
        };
        let (family, curve) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => (AlgorithmFamily::Rsa, None),
            AlgorithmParameters::EllipticCurve(params) => match params.curve {
                EllipticCurve::P256 | EllipticCurve::P384 => {
                    (AlgorithmFamily::Ec, Some(params.curve.clone()))
                }
                _ => return Err("its curve is not P-256 or P-384"),
            },
            AlgorithmParameters::OctetKeyPair(params) => match params.curve {
                EllipticCurve::Ed25519 => (AlgorithmFamily::Ed, Some(EllipticCurve::Ed25519)),
                _ => return Err("its curve is not Ed25519"),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err(
                    "it is a symmetric key; HMAC secrets are only taken from a shared_secret_file",
                );
            }
        };
        if alg.is_some_and(|alg| alg.family() != family) {
            return Err("its 'alg' does not match its key type");
        }
        let key =
            DecodingKey::from_jwk(jwk).map_err(|_| "its key material is not valid base64url")?;
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            curve,
            any_kid: false,
            key,
        })
    }
}

/// The JWS algorithm a JWK's `alg` names, if it is a signature algorithm Postern supports.
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The usable keys of a JWK Set document. Keys that cannot be used are skipped with a warning
/// (one bad key must not lock everyone out); a document without a `keys` array is an error.
pub(crate) fn parse_jwks(
    document: &Value,
    issuer: &str,
) -> Result<Vec<VerificationKey>, FetchError> {
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(FetchError::NotJwks)?;
    if entries.len() > MAX_JWKS_KEYS {
        tracing::warn!(
            issuer,
            published = entries.len(),
            kept = MAX_JWKS_KEYS,
            "JWKS has too many keys; ignoring the rest"
        );
    }
    let mut keys = Vec::new();
    for entry in entries.iter().take(MAX_JWKS_KEYS) {
        let kid = entry.get("kid").and_then(Value::as_str).map(echo);
        let parsed = serde_json::from_value::<Jwk>(entry.clone())
            .map_err(|_| "it is not a JWK of a known key type")
            .and_then(|jwk| VerificationKey::from_jwk(&jwk));
        match parsed {
            Ok(key) => keys.push(key),
            Err(reason) => tracing::warn!(issuer, kid, reason, "skipping a key of the JWKS"),
        }
    }
    Ok(keys)
}

/// What a [`KeySet`] offers for one token.
#[derive(Debug)]
pub(crate) enum Selection {
    /// These keys may verify it; try each.
    Found(Vec<Arc<VerificationKey>>),
    /// Keys with the token's `kid` exist, but none for its algorithm.
    Mismatch,
    /// No key with the token's `kid` (or, without `kid`, none for its algorithm).
    Missing,
}

/// One generation of an issuer's keys.
#[derive(Debug)]
pub(crate) struct KeySet {
    pub keys: Vec<Arc<VerificationKey>>,
    /// When these keys were loaded, to refresh them after `refresh_interval`.
    pub loaded_at: tokio::time::Instant,
    /// Increases with every successful load; waiters compare it to see whether someone else
    /// refreshed while they waited.
    pub generation: u64,
}

impl KeySet {
    /// The keys that may verify an `alg` token with header `kid`.
    pub fn select(&self, alg: Algorithm, kid: Option<&str>) -> Selection {
        let named: Vec<&Arc<VerificationKey>> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|key| key.any_kid || key.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        let fitting: Vec<Arc<VerificationKey>> = named
            .iter()
            .filter(|key| key.fits(alg))
            .map(|&key| Arc::clone(key))
            .collect();
        match (named.is_empty(), fitting.is_empty()) {
            (_, false) => Selection::Found(fitting),
            (false, true) if kid.is_some() => Selection::Mismatch,
            _ => Selection::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(document: Value) -> KeySet {
        let keys = parse_jwks(&document, "https://idp")
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect();
        KeySet {
            keys,
            loaded_at: tokio::time::Instant::now(),
            generation: 1,
        }
    }

    // Public values from RFC 7517 appendix A.1 and RFC 8037 appendix A.2.
    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    const EC_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
    const EC_Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn document() -> Value {
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-any", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": EC_X, "y": EC_Y},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": ED_X},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "mixed", "alg": "ES256", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": EC_X, "y": EC_Y},
            {"kty": "RSA", "kid": "bad", "n": "!!!", "e": "AQAB"},
            {"kty": "weird", "kid": "weird"},
            "not even an object",
        ]})
    }

    #[test]
    fn keeps_only_usable_signature_keys() {
        let set = set(document());
        let kids: Vec<_> = set
            .keys
            .iter()
            .map(|key| key.kid.clone().unwrap())
            .collect();
        assert_eq!(kids, ["rsa", "rsa-any", "ec", "ed"]);
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        for document in [json!({}), json!({"keys": {}}), json!([])] {
            assert!(
                matches!(parse_jwks(&document, "i"), Err(FetchError::NotJwks)),
                "{document}"
            );
        }
    }

    #[test]
    fn too_many_keys_are_cut() {
        let key = json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X});
        let document = json!({"keys": vec![key; MAX_JWKS_KEYS + 10]});
        assert_eq!(parse_jwks(&document, "i").unwrap().len(), MAX_JWKS_KEYS);
    }

    #[test]
    fn selection_respects_kid_family_alg_and_curve() {
        let set = set(document());
        let found = |alg, kid| match set.select(alg, kid) {
            Selection::Found(keys) => keys
                .iter()
                .map(|key| key.kid.clone().unwrap())
                .collect::<Vec<_>>(),
            other => panic!("{alg:?} {kid:?}: {other:?}"),
        };
        assert_eq!(found(Algorithm::RS256, Some("rsa")), ["rsa"]);
        assert_eq!(found(Algorithm::PS256, Some("rsa-any")), ["rsa-any"]);
        assert_eq!(found(Algorithm::RS256, None), ["rsa", "rsa-any"]);
        assert_eq!(found(Algorithm::ES256, None), ["ec"]);
        assert_eq!(found(Algorithm::EdDSA, Some("ed")), ["ed"]);
        assert!(matches!(
            set.select(Algorithm::RS384, Some("rsa")),
            Selection::Mismatch
        ));
        assert!(matches!(
            set.select(Algorithm::ES384, Some("ec")),
            Selection::Mismatch
        ));
        assert!(matches!(
            set.select(Algorithm::HS256, Some("rsa")),
            Selection::Mismatch
        ));
        assert!(matches!(
            set.select(Algorithm::RS256, Some("nope")),
            Selection::Missing
        ));
        assert!(matches!(
            set.select(Algorithm::ES384, None),
            Selection::Missing
        ));
        assert!(matches!(
            set.select(Algorithm::HS256, None),
            Selection::Missing
        ));
    }

    #[test]
    fn shared_secrets_match_any_kid_but_only_hmac() {
        assert!(matches!(
            VerificationKey::shared_secret(b"short"),
            Err(FetchError::ShortSecret)
        ));
        let key = Arc::new(VerificationKey::shared_secret(&[7; 32]).unwrap());
        let set = KeySet {
            keys: vec![key],
            loaded_at: tokio::time::Instant::now(),
            generation: 1,
        };
        assert!(matches!(
            set.select(Algorithm::HS256, Some("whatever")),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Algorithm::HS512, None),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Algorithm::RS256, Some("whatever")),
            Selection::Mismatch
        ));
    }
}
