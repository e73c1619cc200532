//! TLS material for a cluster started with `tls: true`: a throwaway CA and a server certificate
//! for `localhost` and `127.0.0.1` signed by it, written as PEM files PostgreSQL and libpq read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::ClusterError;
use super::server_user::ServerUser;

/// Names the server certificate is valid for: what clients of the sandbox connect to.
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Paths of the written files.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// The CA certificate: what clients pass as `sslrootcert`.
    pub(crate) ca_certificate: PathBuf,
    pub(crate) server_certificate: PathBuf,
    /// 0600 and owned by the server account: PostgreSQL refuses a key others can read.
    pub(crate) server_key: PathBuf,
}

/// Generates the CA and server certificate into `dir`. Blocking.
pub(crate) fn generate(dir: &Path, user: &ServerUser) -> Result<TlsFiles, ClusterError> {
    // A distinct name per CA: OpenSSL finds issuers by name, and two sandbox CAs with one name
    // would make a mismatch look like a broken signature instead of an unknown issuer.
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ClusterError::Random)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "Postern sandbox CA {}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce)
        ),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec())?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    let files = TlsFiles {
        ca_certificate: dir.join("ca.crt"),
        server_certificate: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    write(&files.ca_certificate, &ca.pem(), 0o644, user)?;
    write(&files.server_certificate, &server_cert.pem(), 0o644, user)?;
    write(&files.server_key, &server_key.serialize_pem(), 0o600, user)?;
    Ok(files)
}

fn write(path: &Path, contents: &str, mode: u32, user: &ServerUser) -> Result<(), ClusterError> {
    let io_error = |source| ClusterError::Io {
        action: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, contents).map_err(io_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error)?;
    user.own(path)
}
