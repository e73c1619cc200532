//! The development identity provider's signing keys: generated with aws-lc-rs, persisted as
//! PKCS#8 PEM files (mode 0600) in a directory so that another process (`postern token --dev
//! --dir DIR`) can mint tokens with the same keys, and published as a JWK Set.
//!
//! This module owns key material and signing; it does not serve HTTP (see [`super`]).

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::IdpError;

/// Key id of the persisted RSA-2048 key, used for `RS256`.
pub const RSA_KID: &str = "dev-rs256";
/// Key id of the persisted EC P-256 key, used for `ES256`.
pub const EC_KID: &str = "dev-es256";
/// File (inside the key directory) holding the RSA key, PKCS#8 PEM.
pub const RSA_KEY_FILE: &str = "dev-rs256.pem";
/// File (inside the key directory) holding the EC key, PKCS#8 PEM.
pub const EC_KEY_FILE: &str = "dev-es256.pem";

const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// Signature algorithms the development identity provider signs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DevAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, signed by the RSA key.
    #[default]
    Rs256,
    /// ECDSA P-256 with SHA-256, signed by the EC key.
    Es256,
}

impl DevAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// One signing key with its key id.
struct DevKey {
    /// The `kid` published in the JWKS and put in token headers.
    kid: String,
    /// The key pair itself; its type decides the algorithm.
    pair: KeyPair,
}

enum KeyPair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl DevKey {
    fn algorithm(&self) -> DevAlgorithm {
        match self.pair {
            KeyPair::Rsa(_) => DevAlgorithm::Rs256,
            KeyPair::Ec(_) => DevAlgorithm::Es256,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IdpError> {
        match &self.pair {
            KeyPair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| IdpError::Signing)?;
                Ok(signature)
            }
            KeyPair::Ec(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| IdpError::Signing),
        }
    }

    fn jwk(&self) -> Value {
        match &self.pair {
            KeyPair::Rsa(pair) => {
                let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({
                    "kty": "RSA",
                    "kid": self.kid,
                    "use": "sig",
                    "alg": "RS256",
                    "n": URL_SAFE_NO_PAD.encode(&components.n),
                    "e": URL_SAFE_NO_PAD.encode(&components.e),
                })
            }
            KeyPair::Ec(pair) => {
                // Uncompressed SEC1 point: 0x04 || x || y, 32 bytes each for P-256.
                let (x, y) = match pair.public_key().as_ref() {
                    [0x04, coordinates @ ..] => coordinates.split_at(coordinates.len() / 2),
                    _ => (&[][..], &[][..]),
                };
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "kid": self.kid,
                    "use": "sig",
                    "alg": "ES256",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        }
    }
}

/// The development identity provider's signing keys.
///
/// Two keys are persisted (RSA-2048 `dev-rs256`, EC P-256 `dev-es256`); [`DevKeys::rotate`] adds
/// further RSA keys that live only in memory, for key-rotation tests.
pub struct DevKeys {
    /// Every key, persisted ones first. Behind a lock so that `rotate` works through a shared
    /// reference while the HTTP server publishes the same set.
    keys: RwLock<Vec<Arc<DevKey>>>,
}

impl std::fmt::Debug for DevKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self.read().iter().map(|key| key.kid.clone()).collect();
        f.debug_struct("DevKeys")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl DevKeys {
    /// Loads the keys persisted in `dir`, generating (and persisting) any that are missing.
    ///
    /// The directory is created with mode 0700 and the key files with mode 0600. Creation is
    /// safe against a concurrent process doing the same: a key file appears atomically, and the
    /// loser of a race loads the winner's key. Blocking (file I/O, RSA key generation): call it
    /// from `spawn_blocking` in async code.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdpError> {
        create_private_dir(dir)?;
        let rsa_path = dir.join(RSA_KEY_FILE);
        let rsa_der = load_or_create_pem(&rsa_path, || {
            let pair =
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| IdpError::KeyGeneration)?;
            let der = pair.as_der().map_err(|_| IdpError::KeyGeneration)?;
            Ok(der.as_ref().to_vec())
        })?;
        let rsa = RsaKeyPair::from_pkcs8(&rsa_der).map_err(|_| IdpError::BadKey {
            path: rsa_path.clone(),
            what: "RSA",
        })?;

        let ec_path = dir.join(EC_KEY_FILE);
        let ec_der = load_or_create_pem(&ec_path, || {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|_| IdpError::KeyGeneration)?;
            let document = pair.to_pkcs8v1().map_err(|_| IdpError::KeyGeneration)?;
            Ok(document.as_ref().to_vec())
        })?;
        let ec =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec_der).map_err(|_| {
                IdpError::BadKey {
                    path: ec_path.clone(),
                    what: "EC P-256",
                }
            })?;

        Ok(Self {
            keys: RwLock::new(vec![
                Arc::new(DevKey {
                    kid: RSA_KID.to_owned(),
                    pair: KeyPair::Rsa(rsa),
                }),
                Arc::new(DevKey {
                    kid: EC_KID.to_owned(),
                    pair: KeyPair::Ec(ec),
                }),
            ]),
        })
    }

    /// The public JWK Set: every key with `kid`, `use: sig` and `alg`.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.read().iter().map(|key| key.jwk()).collect();
        json!({ "keys": keys })
    }

    /// The persisted RSA key's public half as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), for
    /// tests that forge HS256 tokens using the public key as the HMAC secret.
    pub fn rsa_public_key_pem(&self) -> String {
        let keys = self.read();
        let der = keys
            .iter()
            .find(|key| key.kid == RSA_KID)
            .and_then(|key| match &key.pair {
                KeyPair::Rsa(pair) => pair
                    .public_key()
                    .as_der()
                    .ok()
                    .map(|der| der.as_ref().to_vec()),
                KeyPair::Ec(_) => None,
            });
        // The RSA key is created by `load_or_create` and never removed, and serialising a valid
        // public key does not fail; an empty PEM would only make a forged token fail to verify.
        pem_encode(PUBLIC_KEY_LABEL, &der.unwrap_or_default())
    }

    /// Adds a new in-memory RSA key with a fresh `kid` (`dev-rs256-2`, `dev-rs256-3`, …) to the
    /// published set and returns the `kid`. Not persisted. Blocking (RSA key generation).
    pub fn rotate(&self) -> Result<String, IdpError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| IdpError::KeyGeneration)?;
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let kid = format!("{RSA_KID}-{}", keys.len());
        keys.push(Arc::new(DevKey {
            kid: kid.clone(),
            pair: KeyPair::Rsa(pair),
        }));
        Ok(kid)
    }

    /// Signs a token as described by `request`.
    ///
    /// The signing key is the one whose `kid` is `request.kid` when there is such a key;
    /// otherwise the persisted key for `request.algorithm`, with `request.kid` (if any) still
    /// written into the header — which is how tests produce tokens naming unknown keys.
    pub fn mint(&self, request: &super::TokenRequest) -> Result<String, IdpError> {
        let key = {
            let keys = self.read();
            let named = request
                .kid
                .as_deref()
                .and_then(|kid| keys.iter().find(|key| key.kid == kid));
            let by_alg = || {
                let kid = match request.algorithm {
                    DevAlgorithm::Rs256 => RSA_KID,
                    DevAlgorithm::Es256 => EC_KID,
                };
                keys.iter().find(|key| key.kid == kid)
            };
            named.or_else(by_alg).cloned().ok_or(IdpError::Signing)?
        };
        let kid = request.kid.clone().unwrap_or_else(|| key.kid.clone());
        let header = json!({ "alg": key.algorithm().as_str(), "typ": "JWT", "kid": kid });
        let claims = super::token::claims(request)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = key.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<DevKey>>> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates `dir` (and parents) if needed; a directory created here is private (0700).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), IdpError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| IdpError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

/// Reads the PKCS#8 DER in the PEM file at `path`, or generates one with `generate` and
/// publishes it there atomically (write a private temporary file, then hard-link it into place,
/// which fails rather than overwrites if another process got there first).
fn load_or_create_pem(
    path: &Path,
    generate: impl FnOnce() -> Result<Vec<u8>, IdpError>,
) -> Result<Vec<u8>, IdpError> {
    match fs::read_to_string(path) {
        Ok(text) => return pem_decode(&text, PRIVATE_KEY_LABEL).ok_or_else(|| bad_pem(path)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(IdpError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    }
    let der = generate()?;
    let pem = pem_encode(PRIVATE_KEY_LABEL, &der);
    let temporary = temporary_sibling(path);
    write_private(&temporary, pem.as_bytes())?;
    let linked = fs::hard_link(&temporary, path);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(der),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(path).map_err(|source| IdpError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            })?;
            pem_decode(&text, PRIVATE_KEY_LABEL).ok_or_else(|| bad_pem(path))
        }
        Err(source) => Err(IdpError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        }),
    }
}

fn bad_pem(path: &Path) -> IdpError {
    IdpError::BadKey {
        path: path.to_owned(),
        what: "PKCS#8 PEM",
    }
}

/// A name next to `path` that no other process uses at the same time.
pub(crate) fn temporary_sibling(path: &Path) -> PathBuf {
    let mut nonce = [0_u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let mut name = path
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        URL_SAFE_NO_PAD.encode(nonce)
    ));
    path.with_file_name(name)
}

/// Writes a new file readable only by its owner (0600 on Unix).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), IdpError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io_error = |source| IdpError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text.get(start..)?.find(&end)?;
    let body: String = text.get(start..stop)?.split_whitespace().collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = pem_encode("PRIVATE KEY", &der);
        assert!(pem.lines().all(|line| line.len() <= 64));
        assert_eq!(pem_decode(&pem, "PRIVATE KEY"), Some(der));
        assert_eq!(pem_decode(&pem, "PUBLIC KEY"), None);
        assert_eq!(pem_decode("garbage", "PRIVATE KEY"), None);
    }

    #[test]
    fn keys_persist_privately_and_reload_identically() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DevKeys::load_or_create(dir.path()).unwrap();
        let again = DevKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(keys.jwks(), again.jwks());
        assert_eq!(keys.rsa_public_key_pem(), again.rsa_public_key_pem());
        assert!(
            keys.rsa_public_key_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
        #[cfg(unix)]
        for file in [RSA_KEY_FILE, EC_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn jwks_publishes_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DevKeys::load_or_create(dir.path()).unwrap();
        let jwks = keys.jwks();
        let published = jwks["keys"].as_array().unwrap();
        assert_eq!(published.len(), 2);
        assert_eq!(published[0]["kid"], RSA_KID);
        assert_eq!(published[0]["kty"], "RSA");
        assert_eq!(published[1]["kid"], EC_KID);
        assert_eq!(published[1]["crv"], "P-256");
        for coordinate in ["x", "y"] {
            let bytes = URL_SAFE_NO_PAD
                .decode(published[1][coordinate].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), 32);
        }
        let kid = keys.rotate().unwrap();
        assert_eq!(kid, "dev-rs256-2");
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn corrupt_key_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(RSA_KEY_FILE), "not a key").unwrap();
        let err = DevKeys::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdpError::BadKey { .. }), "{err}");
    }
}
