//! TLS configuration for both sides: the certificate Postern presents to clients and the trust
//! bundle their certificates are verified against, and the roots it trusts when it connects to
//! an upstream database.

use std::path::Path;
use std::sync::Arc;

use postern_config::TlsFiles;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::SetupError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the acceptor for client connections from PEM files: Postern's certificate and key,
/// and when `client_ca` is set, client certificates verified against that trust bundle
/// (required or optional as `client_certificates` says). A certificate that does not chain to
/// the bundle, is outside its validity or is not for client authentication fails the TLS
/// handshake; whom a valid one names is decided after it (`postern-identity`).
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, SetupError> {
    let TlsFiles {
        certificate,
        private_key,
        client_ca,
        ..
    } = files;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            SetupError::Tls(format!(
                "cannot read certificate {}: {e}",
                certificate.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(SetupError::Tls(format!(
            "{} holds no PEM certificate",
            certificate.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| {
        SetupError::Tls(format!(
            "cannot read private key {}: {e}",
            private_key.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(path)?), provider());
            let verifier = if files.client_certificate_required() {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| {
                SetupError::Tls(format!(
                    "cannot verify client certificates with {}: {e}",
                    path.display()
                ))
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        SetupError::Tls(format!(
            "certificate and key do not form a usable pair: {e}"
        ))
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The CA certificates of a PEM file, as trust anchors.
fn roots(path: &Path) -> Result<RootCertStore, SetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| SetupError::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(SetupError::Tls(format!(
            "CA file {} holds no usable certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// Builds the connector for upstream databases: the CAs in `ca_file`, or the public web roots.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, SetupError> {
    let roots = match ca_file {
        Some(path) => roots(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        }
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
