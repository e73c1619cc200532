//! Identities from client certificates ([`CertificateIdentities`]): an X.509-SVID the TLS
//! handshake has verified against the configured trust bundle becomes a `Service` identity named
//! by its SPIFFE ID, with the same workload attributes as a JWT-SVID from an issuer with
//! `preset = "spiffe"`, so one Cedar policy serves both.
//!
//! Verifying the chain, the signatures, the validity and the key usage is rustls' (webpki)
//! business, done before this module sees the certificate; it reads the validity and the
//! subjectAltName URIs (`der.rs`) and holds them to the X.509-SVID standard: exactly one URI, a
//! SPIFFE ID with a path, in the configured trust domain.
//! <https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md>

mod der;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_config::ClientIdentityConfig;
use serde_json::{Map, Value, json};

use crate::error::{AuthError, echo};
use crate::identity::{Identity, IdentityKind};
use crate::workload::{Workload, parse_spiffe_id};

/// URIs named in a refusal for holding several; the rest are counted.
const MAX_URIS_NAMED: usize = 4;

/// The claim carrying the certificate's SHA-256 thumbprint, base64url: JOSE's name for it
/// (RFC 7515 section 4.1.8, and RFC 8705 section 3.1 for a certificate bound to a token).
pub const THUMBPRINT_CLAIM: &str = "x5t#S256";

/// Turns verified client certificates into identities, as `[listen.tls.client_identity]` says.
#[derive(Debug, Clone)]
pub struct CertificateIdentities {
    /// `issuer_name`: what role rules' `issuers` and Cedar's `principal.issuer_name` see.
    issuer_name: String,
    /// `spiffe://<trust domain>`: the identities' `issuer`.
    issuer: String,
    /// The only trust domain a SPIFFE ID may be in.
    trust_domain: String,
}

impl CertificateIdentities {
    #[must_use]
    pub fn new(config: &ClientIdentityConfig) -> Self {
        Self {
            issuer_name: config.issuer_name.clone(),
            issuer: config.issuer(),
            trust_domain: config.trust_domain.clone(),
        }
    }

    /// The identity a client certificate names.
    ///
    /// `der` is the end-entity certificate, which the TLS handshake has verified against the
    /// trust bundle. Its validity is checked again at `now`, since a resumed TLS session does
    /// not present the certificate anew.
    ///
    /// # Errors
    /// [`AuthError::Certificate`], naming what the certificate holds instead of one SPIFFE ID
    /// in the trust domain, or when it is outside its validity.
    pub fn identify(&self, der: &[u8], now: SystemTime) -> Result<Identity, AuthError> {
        let refuse =
            |problem: String| AuthError::Certificate(format!("client certificate {problem}"));
        let fields = der::read(der).map_err(|why| refuse(format!("cannot be read: {why}")))?;
        let not_before = at(fields.not_before);
        let not_after = at(fields.not_after);
        if now < not_before {
            return Err(refuse(format!(
                "is not valid before {}",
                humantime::format_rfc3339_seconds(not_before)
            )));
        }
        // notAfter is the last second of validity (RFC 5280 section 4.1.2.5).
        if now >= not_after + Duration::from_secs(1) {
            return Err(refuse(format!(
                "expired at {}",
                humantime::format_rfc3339_seconds(not_after)
            )));
        }
        let uri = match fields.uris.as_slice() {
            [uri] => *uri,
            [] => {
                return Err(refuse(
                    "names no SPIFFE ID: its subjectAltName holds no URI, and an X.509-SVID \
                     holds exactly one, spiffe://<trust domain>/<path>"
                        .to_owned(),
                ));
            }
            uris => {
                let mut named: Vec<String> = uris
                    .iter()
                    .take(MAX_URIS_NAMED)
                    .map(|uri| format!("'{}'", echo(uri)))
                    .collect();
                if uris.len() > MAX_URIS_NAMED {
                    named.push(format!("and {} more", uris.len() - MAX_URIS_NAMED));
                }
                return Err(refuse(format!(
                    "holds {} URIs in its subjectAltName ({}), and an X.509-SVID holds exactly \
                     one, its SPIFFE ID",
                    uris.len(),
                    named.join(", ")
                )));
            }
        };
        let id = parse_spiffe_id(uri)
            .map_err(|problem| refuse(format!("URI '{}' {problem}", echo(uri))))?;
        if id.trust_domain != self.trust_domain {
            return Err(refuse(format!(
                "names SPIFFE ID '{}', which is not in trust domain '{}', the only one client \
                 certificates are accepted for",
                echo(uri),
                self.trust_domain
            )));
        }
        let thumbprint = certificate_thumbprint(der);
        let claims: Map<String, Value> = [
            ("iss", json!(self.issuer)),
            ("sub", json!(uri)),
            ("nbf", json!(fields.not_before)),
            ("exp", json!(fields.not_after)),
            (THUMBPRINT_CLAIM, json!(thumbprint)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        Ok(Identity {
            issuer_name: self.issuer_name.clone(),
            issuer: self.issuer.clone(),
            subject: uri.to_owned(),
            kind: IdentityKind::Service,
            groups: Vec::new(),
            claims,
            expires_at: not_after,
            issued_at: Some(not_before),
            token_id: None,
            mfa: false,
            workload: Some(Workload::Spiffe(id)),
        })
    }
}

impl Identity {
    /// Whether this identity comes from a client certificate rather than a token: its issuer is
    /// a trust domain's SPIFFE ID and its claims carry the certificate's thumbprint, which no
    /// verified token's identity has at the top level.
    #[must_use]
    pub fn is_from_certificate(&self) -> bool {
        self.issuer.starts_with("spiffe://")
            && self.token_id.is_none()
            && self.claims.contains_key(THUMBPRINT_CLAIM)
    }
}

/// A certificate's SHA-256 thumbprint, base64url without padding: JOSE's `x5t#S256`.
#[must_use]
pub fn certificate_thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, der))
}

/// Seconds since the Unix epoch as a time (before it for certificates of the 1950s).
fn at(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use rcgen::{CertificateParams, KeyPair, SanType, date_time_ymd};

    use super::*;

    fn identities() -> CertificateIdentities {
        CertificateIdentities::new(&ClientIdentityConfig {
            trust_domain: "example.org".to_owned(),
            issuer_name: "mesh".to_owned(),
        })
    }

    /// A certificate valid in 2030 with these URIs in its subjectAltName.
    fn certificate(uris: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.not_before = date_time_ymd(2030, 1, 1);
        params.not_after = date_time_ymd(2030, 1, 2);
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn in_2030(hours: u64) -> SystemTime {
        at(1_893_456_000) + Duration::from_secs(hours * 3600)
    }

    #[test]
    fn a_spiffe_id_in_the_trust_domain_is_a_service() {
        let der = certificate(&["spiffe://example.org/ns/prod/sa/api"]);
        let identity = identities().identify(&der, in_2030(12)).unwrap();
        assert_eq!(identity.issuer_name, "mesh");
        assert_eq!(identity.issuer, "spiffe://example.org");
        assert_eq!(identity.subject, "spiffe://example.org/ns/prod/sa/api");
        assert_eq!(identity.kind, IdentityKind::Service);
        assert!(identity.groups.is_empty());
        assert_eq!(identity.expires_at, in_2030(24));
        assert_eq!(identity.issued_at, Some(in_2030(0)));
        let workload = identity.workload.as_ref().unwrap();
        assert_eq!(workload.kind(), "spiffe");
        assert_eq!(workload.attribute("trust_domain"), Some("example.org"));
        assert_eq!(workload.attribute("path"), Some("/ns/prod/sa/api"));
        assert_eq!(
            identity.claims["sub"],
            "spiffe://example.org/ns/prod/sa/api"
        );
        assert_eq!(identity.claims["exp"], 1_893_542_400);
        let thumbprint = identity.claims[THUMBPRINT_CLAIM].as_str().unwrap();
        assert_eq!(thumbprint, certificate_thumbprint(&der));
        assert_eq!(thumbprint.len(), 43);
        assert!(identity.is_from_certificate());
    }

    #[test]
    fn anything_else_is_refused_naming_what_was_found() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[],
                "client certificate names no SPIFFE ID: its subjectAltName holds no URI",
            ),
            (
                &["spiffe://example.org/a", "spiffe://example.org/b"],
                "client certificate holds 2 URIs in its subjectAltName \
                 ('spiffe://example.org/a', 'spiffe://example.org/b'), and an X.509-SVID holds \
                 exactly one, its SPIFFE ID",
            ),
            (
                &["a:1", "a:2", "a:3", "a:4", "a:5", "a:6"],
                "holds 6 URIs in its subjectAltName ('a:1', 'a:2', 'a:3', 'a:4', and 2 more)",
            ),
            (
                &["spiffe://other.org/api"],
                "client certificate names SPIFFE ID 'spiffe://other.org/api', which is not in \
                 trust domain 'example.org', the only one client certificates are accepted for",
            ),
            (
                &["https://example.org/api"],
                "client certificate URI 'https://example.org/api' is not a SPIFFE ID: it does \
                 not start with spiffe://",
            ),
            (
                &["spiffe://example.org"],
                "URI 'spiffe://example.org' names a trust domain, not a workload",
            ),
            (&["spiffe://example.org/a/../b"], "'..' segment"),
        ];
        for (uris, message) in cases {
            let error = identities()
                .identify(&certificate(uris), in_2030(1))
                .unwrap_err();
            assert!(error.to_string().contains(message), "{error}");
            assert_eq!(error.sqlstate(), "28000");
            assert_eq!(error.label(), "client_certificate");
        }
    }

    #[test]
    fn outside_its_validity_it_is_refused() {
        let der = certificate(&["spiffe://example.org/api"]);
        let identities = identities();
        assert!(
            identities.identify(&der, in_2030(24)).is_ok(),
            "the last second"
        );
        let late = identities
            .identify(&der, in_2030(24) + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(
            late.to_string(),
            "client certificate expired at 2030-01-02T00:00:00Z"
        );
        let early = identities
            .identify(&der, in_2030(0) - Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(
            early.to_string(),
            "client certificate is not valid before 2030-01-01T00:00:00Z"
        );
        let error = identities.identify(b"\x30\x00", in_2030(1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "client certificate cannot be read: it ends inside a field"
        );
    }

    #[test]
    fn times_before_the_epoch() {
        assert_eq!(at(-1), UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(at(0), UNIX_EPOCH);
    }
}
