//! TLS configuration for both sides: the certificate Postern presents to clients, and the roots
//! it trusts when it connects to an upstream database.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::SetupError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the acceptor for client connections from PEM files.
pub fn acceptor(certificate: &Path, private_key: &Path) -> Result<TlsAcceptor, SetupError> {
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
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            SetupError::Tls(format!(
                "certificate and key do not form a usable pair: {e}"
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Builds the connector for upstream databases: the CAs in `ca_file`, or the public web roots.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, SetupError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    SetupError::Tls(format!("cannot read CA file {}: {e}", path.display()))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(SetupError::Tls(format!(
                    "CA file {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
