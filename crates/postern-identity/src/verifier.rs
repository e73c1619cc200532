//! [`Verifier`]: from a token string to an [`Identity`], for the issuers in the configuration.
//!
//! The order matters: the token is size-bounded and split, the *unverified* `iss` only picks the
//! configured issuer, the header `alg` must be one that issuer accepts (never `none`, HMAC only
//! with a configured shared secret) before any key is looked at, the key comes from that
//! issuer's cache by `kid`, and only after the signature verifies are the claims believed.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::SystemTime;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use postern_config::{IssuerConfig, JwksSource};
use serde_json::{Map, Value};

use crate::claims::{self, ClaimRules};
use crate::error::{AuthError, IdentityError, echo};
use crate::identity::Identity;
use crate::jwks::{Fetcher, IssuerKeys, KeySource, VerificationKey};
use crate::limits::MAX_CLOCK_SKEW;
use crate::token::UnverifiedToken;
use crate::verified::{self, VerifiedTokens};

/// Verifies tokens from the configured issuers. `Send + Sync`; share it behind an `Arc`.
///
/// Dropping it stops any key refresh running in the background.
#[derive(Debug)]
pub struct Verifier {
    /// Shared by every issuer's key cache.
    fetcher: Fetcher,
    /// Keyed by the exact `iss` value.
    issuers: HashMap<String, Issuer>,
    /// Tokens verified lately, so a reconnect with the same token skips the signature check.
    verified: VerifiedTokens,
}

/// One configured issuer, ready to verify.
#[derive(Debug)]
struct Issuer {
    /// The key under `[issuers]`, reported in [`Identity::issuer_name`].
    name: String,
    config: IssuerConfig,
    /// `config.algorithms`, parsed.
    algorithms: Vec<Algorithm>,
    keys: Arc<IssuerKeys>,
}

impl Verifier {
    /// Prepares verification for `issuers` (the `[issuers]` table of the configuration).
    ///
    /// Refuses configurations that would weaken verification even if `postern-config` let them
    /// through (unknown or `none` algorithms, HMAC without a shared secret, no audience, a clock
    /// skew over [`MAX_CLOCK_SKEW`], two names for one issuer URL). Keys in local files are read
    /// now, so a missing file is reported here; keys behind URLs are fetched on first use (or by
    /// [`Verifier::prefetch_keys`]). Blocking (file reads).
    pub fn new(issuers: &BTreeMap<String, IssuerConfig>) -> Result<Self, IdentityError> {
        Self::with_local_issuer(issuers, None)
    }

    /// [`Verifier::new`], also trusting an issuer in this process (Postern's own, for exchanged
    /// tokens) whose keys are read from `local` rather than fetched: `(name, config, keys)`.
    pub fn with_local_issuer(
        issuers: &BTreeMap<String, IssuerConfig>,
        local: Option<(String, IssuerConfig, crate::jwks::LocalJwks)>,
    ) -> Result<Self, IdentityError> {
        let fetcher = Fetcher::new()?;
        let local_jwks = local
            .as_ref()
            .map(|(_, config, jwks)| (config.issuer.clone(), jwks.clone()));
        let local_issuer = local.as_ref().map(|(name, config, _)| (name, config));
        let mut by_url: HashMap<String, Issuer> = HashMap::new();
        for (name, config) in issuers.iter().chain(local_issuer) {
            let invalid = |problem: String| IdentityError::InvalidIssuer {
                name: name.clone(),
                problem,
            };
            if config.issuer.is_empty() {
                return Err(invalid("issuer must not be empty".into()));
            }
            if config.audience.is_empty() {
                return Err(invalid("list at least one audience".into()));
            }
            if config.clock_skew > MAX_CLOCK_SKEW {
                return Err(invalid(format!(
                    "clock_skew of {} is more than the {} allowed",
                    humantime::format_duration(config.clock_skew),
                    humantime::format_duration(MAX_CLOCK_SKEW)
                )));
            }
            let algorithms = parse_algorithms(config).map_err(invalid)?;
            let source = match &local_jwks {
                Some((url, jwks)) if *url == config.issuer => KeySource::Local(jwks.clone()),
                _ => KeySource::from(&config.jwks),
            };
            let keys = IssuerKeys::new(
                config.issuer.clone(),
                source,
                config.refresh_interval,
                config.min_refresh_interval,
            );
            keys.load_local().map_err(|err| IdentityError::Keys {
                name: name.clone(),
                problem: err.to_string(),
            })?;
            let issuer = Issuer {
                name: name.clone(),
                config: config.clone(),
                algorithms,
                keys: Arc::new(keys),
            };
            if let Some(first) = by_url.insert(config.issuer.clone(), issuer) {
                return Err(IdentityError::DuplicateIssuer {
                    first: first.name,
                    second: name.clone(),
                    issuer: config.issuer.clone(),
                });
            }
        }
        Ok(Self {
            fetcher,
            issuers: by_url,
            verified: VerifiedTokens::default(),
        })
    }

    /// Verifies `token` and returns who it names, or why it is refused.
    ///
    /// Never panics, whatever the input. Cancel safe: dropping the future abandons only this
    /// verification; a key fetch it started completes for the verifications waiting on it.
    ///
    /// A token verified before is answered from memory until it expires, for at most
    /// [`crate::limits::MAX_VERIFICATION_REUSE`].
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        let token = token.trim();
        let now = SystemTime::now();
        let digest = verified::digest(token);
        if let Some(identity) = self.verified.get(&digest, now) {
            return Ok(identity);
        }
        let identity = Arc::new(self.verify_fully(token, now).await?);
        self.verified.insert(digest, &identity, now);
        Ok(identity)
    }

    async fn verify_fully(&self, token: &str, now: SystemTime) -> Result<Identity, AuthError> {
        let unverified = UnverifiedToken::parse(token)?;
        let issuer = self.issuer_of(&unverified)?;
        let alg = issuer.accept(&unverified.alg)?;
        let keys = issuer
            .keys
            .select(&self.fetcher, alg, unverified.kid.as_deref())
            .await?;
        let claims = issuer.verify_signature(token, alg, &keys, &unverified, &|_| {})?;
        let times = claims::check(&claims, issuer.rules(), now)?;
        let mut identity = Identity::from_verified(&issuer.name, &issuer.config, claims, times)?;
        if issuer.name == postern_config::POSTERN_ISSUER_NAME {
            // A token Postern issued by exchange names the kind of the identity it came from.
            identity.kind = match identity.claims.get("postern_kind").and_then(Value::as_str) {
                Some("service") => crate::IdentityKind::Service,
                _ => crate::IdentityKind::Human,
            };
        }
        tracing::debug!(issuer = %identity.issuer_name, subject = %identity.subject, "token verified");
        Ok(identity)
    }

    /// Verifies a token's signature, `iss` and `aud` as for access tokens, with `tweak` applied
    /// to the validation (for tokens with other required claims); returns the issuer's name,
    /// `iss`, clock skew, and the verified claims.
    pub(crate) async fn verify_signed(
        &self,
        token: &str,
        unverified: &UnverifiedToken,
        tweak: impl Fn(&mut jsonwebtoken::Validation),
    ) -> Result<((String, String, std::time::Duration), Map<String, Value>), AuthError> {
        let issuer = self.issuer_of(unverified)?;
        let alg = issuer.accept(&unverified.alg)?;
        let keys = issuer
            .keys
            .select(&self.fetcher, alg, unverified.kid.as_deref())
            .await?;
        let claims = issuer.verify_signature(token, alg, &keys, unverified, &tweak)?;
        Ok((
            (
                issuer.name.clone(),
                issuer.config.issuer.clone(),
                issuer.config.clock_skew,
            ),
            claims,
        ))
    }

    /// The configured issuer the token's (unverified) `iss` names.
    fn issuer_of(&self, unverified: &UnverifiedToken) -> Result<&Issuer, AuthError> {
        let iss = match unverified.claims.get("iss") {
            Some(Value::String(iss)) => iss,
            None | Some(Value::Null) => return Err(AuthError::MissingClaim("iss".into())),
            Some(_) => {
                return Err(AuthError::InvalidClaim {
                    claim: "iss".into(),
                    problem: "is not a string",
                });
            }
        };
        self.issuers
            .get(iss)
            .ok_or_else(|| AuthError::UntrustedIssuer(iss.clone()))
    }

    /// Fetches every issuer's keys now (e.g. at start-up, so the first sign-in does not wait),
    /// returning the issuers whose keys could not be fetched.
    pub async fn prefetch_keys(&self) -> Vec<(String, AuthError)> {
        let mut failures = Vec::new();
        for issuer in self.issuers.values() {
            if let Err(err) = issuer.keys.refresh_now(&self.fetcher).await {
                failures.push((issuer.name.clone(), err));
            }
        }
        failures
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        for issuer in self.issuers.values() {
            issuer.keys.abort_background();
        }
    }
}

/// The issuer's algorithm list, refusing what must never be accepted.
fn parse_algorithms(config: &IssuerConfig) -> Result<Vec<Algorithm>, String> {
    let shared_secret = matches!(config.jwks, JwksSource::SharedSecretFile(_));
    if config.algorithms.is_empty() {
        return Err("list at least one algorithm".into());
    }
    config
        .algorithms
        .iter()
        .map(|name| {
            let alg = Algorithm::from_str(name)
                .map_err(|_| format!("algorithm '{name}' is not supported"))?;
            match (alg.family() == AlgorithmFamily::Hmac, shared_secret) {
                (true, false) => Err(format!(
                    "{name} needs jwks = {{ shared_secret_file = \"…\" }}"
                )),
                (false, true) => Err(format!("{name} cannot be verified with a shared secret")),
                _ => Ok(alg),
            }
        })
        .collect()
}

impl Issuer {
    /// The token's `alg`, if this issuer accepts it.
    fn accept(&self, alg: &str) -> Result<Algorithm, AuthError> {
        let refused = || AuthError::AlgorithmNotAccepted {
            alg: alg.to_owned(),
            issuer: self.config.issuer.clone(),
        };
        // `none` and unknown names fail to parse; the list only holds what `parse_algorithms`
        // allowed for this issuer's key source.
        let parsed = Algorithm::from_str(alg).map_err(|_| refused())?;
        if self.algorithms.contains(&parsed) {
            Ok(parsed)
        } else {
            Err(refused())
        }
    }

    fn rules(&self) -> ClaimRules<'_> {
        ClaimRules {
            issuer: &self.config.issuer,
            audience: &self.config.audience,
            clock_skew: self.config.clock_skew,
        }
    }

    /// Verifies the signature with each candidate key (one, when the token names its `kid`) and
    /// returns the claims. `jsonwebtoken` checks `exp`, `nbf`, `aud` and `iss` as well; when it
    /// refuses those, [`claims::check`] on the same (now authenticated) payload says precisely why.
    fn verify_signature(
        &self,
        token: &str,
        alg: Algorithm,
        keys: &[Arc<VerificationKey>],
        unverified: &UnverifiedToken,
        tweak: &dyn Fn(&mut Validation),
    ) -> Result<Map<String, Value>, AuthError> {
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.clock_skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&self.config.audience);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        tweak(&mut validation);

        for key in keys {
            let err = match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            {
                Ok(data) => return Ok(data.claims),
                Err(err) => err,
            };
            match err.kind() {
                ErrorKind::InvalidSignature => {}
                ErrorKind::ExpiredSignature
                | ErrorKind::ImmatureSignature
                | ErrorKind::InvalidAudience
                | ErrorKind::InvalidIssuer
                | ErrorKind::InvalidSubject
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_) => {
                    // jsonwebtoken validates claims only once the signature has verified.
                    return Err(
                        match claims::check(&unverified.claims, self.rules(), SystemTime::now()) {
                            Err(precise) => precise,
                            Ok(_) => AuthError::InvalidClaim {
                                claim: claim_of(err.kind()),
                                problem: "is not acceptable",
                            },
                        },
                    );
                }
                ErrorKind::Base64(_) => {
                    return Err(AuthError::malformed("signature is not base64url"));
                }
                ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                    return Err(AuthError::malformed(
                        "header has a field of an unexpected type",
                    ));
                }
                _ => {
                    tracing::warn!(
                        issuer = %self.config.issuer,
                        kid = key.kid.as_deref().map(echo),
                        error = %err,
                        "a published key could not verify a signature"
                    );
                }
            }
        }
        Err(AuthError::BadSignature)
    }
}

fn claim_of(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "exp".into(),
        ErrorKind::ImmatureSignature => "nbf".into(),
        ErrorKind::InvalidAudience => "aud".into(),
        ErrorKind::InvalidIssuer => "iss".into(),
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            claim.clone()
        }
        _ => "sub".into(),
    }
}
