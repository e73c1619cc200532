//! Who is behind a connection: verification of identity tokens (OIDC/JWT) from the configured
//! issuers, and of client certificates' SPIFFE IDs, producing an [`Identity`].
//!
//! This crate owns issuers, OIDC discovery, the JWKS cache (single-flight refresh, bounded
//! bodies, rate-limited refresh on an unknown `kid`) and JWT verification. It does not read
//! startup parameters or decide what an identity may do: the proxy hands it the token from the
//! password message, and `postern-policy` takes the [`Identity`] from there.
//!
//! # Layout
//! - [`Verifier`] (`verifier.rs`): the flow from token to identity.
//! - `token.rs`: size bound and parsing of the still-unverified token.
//! - `jwks/`: verification keys — parsing and selection, fetching (`fetch.rs`), caching
//!   (`cache.rs`).
//! - `claims.rs`: `iss`, `aud`, `exp`, `nbf` checks with messages that name the fault.
//! - [`Identity`] (`identity.rs`): claims mapped to subject, groups, kind, MFA.
//! - [`Workload`] (`workload.rs`): what a workload issuer's preset reads from its claims.
//! - [`CertificateIdentities`] (`certificate.rs`): a verified client certificate (X.509-SVID)
//!   to an identity; `certificate/der.rs` reads its validity and subjectAltName URIs.
//! - [`AuthError`], [`IdentityError`] (`error.rs`): client-safe refusals with SQLSTATE and label.
//! - [`limits`]: every bound, in one place.

mod certificate;
mod claims;
mod error;
mod identity;
mod jwks;
pub mod limits;
mod logout;
mod token;
mod verified;
mod verifier;
mod workload;

#[cfg(test)]
mod tests;

pub use certificate::{CertificateIdentities, THUMBPRINT_CLAIM, certificate_thumbprint};
pub use error::{AuthError, IdentityError};
pub use identity::{Identity, IdentityKind, MFA_METHODS};
pub use jwks::LocalJwks;
pub use logout::{BACKCHANNEL_LOGOUT_EVENT, LogoutToken, MAX_LOGOUT_TOKEN_AGE};
pub use verifier::Verifier;
pub use workload::{
    EXCHANGED_WORKLOAD_CLAIM, GithubActions, KubernetesServiceAccount, OauthClient, SpiffeId,
    WORKLOAD_ATTRIBUTES, Workload,
};
