//! The keys Postern signs exchanged tokens with (Postern as an issuer). Generating and using them
//! is the proxy's business; this keeps them, so that they survive restarts and every Postern
//! sharing the store signs with, and publishes, the same keys.

use sqlx::Row as _;

use crate::{Store, StoreError};

/// One signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The `kid` published in the JWKS and written in the tokens' headers.
    pub kid: String,
    /// `ES256` (the only one today).
    pub algorithm: String,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// When it started signing (unix seconds).
    pub created_at: i64,
    /// When it stops signing.
    pub retire_at: i64,
    /// When it stops being published: after the last token it signed has expired.
    pub expires_at: i64,
}

impl std::fmt::Debug for SigningKey {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Stores a new signing key.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for inconsistent times or an empty key, [`StoreError::Query`] if
    /// it cannot be written (a `kid` already used included).
    pub async fn add_signing_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        if key.kid.is_empty() || key.private_key.is_empty() {
            return Err(StoreError::Invalid {
                field: "signing key",
                problem: "needs a kid and a private key",
            });
        }
        if !(key.created_at <= key.retire_at && key.retire_at <= key.expires_at) {
            return Err(StoreError::Invalid {
                field: "signing key",
                problem: "must be created before it retires, and retire before it expires",
            });
        }
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, created_at, retire_at, \
             expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(key.created_at)
        .bind(key.retire_at)
        .bind(key.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_error("store a signing key", e))?;
        Ok(())
    }

    /// The keys still published at `now` (not expired), newest first; forgets expired ones.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] if the store cannot be read or written.
    pub async fn signing_keys(&self, now: i64) -> Result<Vec<SigningKey>, StoreError> {
        sqlx::query("DELETE FROM signing_keys WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| self.query_error("forget expired signing keys", e))?;
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_key, created_at, retire_at, expires_at \
             FROM signing_keys ORDER BY created_at DESC, rowid DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.query_error("read signing keys", e))?;
        rows.iter()
            .map(|row| {
                Ok(SigningKey {
                    kid: row.try_get("kid")?,
                    algorithm: row.try_get("algorithm")?,
                    private_key: row.try_get("private_key")?,
                    created_at: row.try_get("created_at")?,
                    retire_at: row.try_get("retire_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.query_error("read signing keys", e))
    }
}

#[cfg(test)]
mod tests {
    use super::SigningKey;
    use crate::Store;

    fn key(kid: &str, created_at: i64, retire_at: i64, expires_at: i64) -> SigningKey {
        SigningKey {
            kid: kid.to_owned(),
            algorithm: "ES256".to_owned(),
            private_key: vec![1, 2, 3],
            created_at,
            retire_at,
            expires_at,
        }
    }

    #[tokio::test]
    async fn keys_are_kept_newest_first_until_they_expire() {
        let store = Store::open_in_memory()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for k in [key("old", 0, 100, 200), key("new", 100, 300, 400)] {
            store
                .add_signing_key(&k)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let kids = |keys: Vec<SigningKey>| keys.into_iter().map(|k| k.kid).collect::<Vec<_>>();
        let now = store
            .signing_keys(150)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kids(now), ["new", "old"]);
        let later = store
            .signing_keys(250)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kids(later), ["new"]);
        assert!(store.add_signing_key(&key("bad", 10, 5, 20)).await.is_err());
        assert!(store.add_signing_key(&key("new", 1, 2, 3)).await.is_err());
        assert!(!format!("{:?}", key("k", 0, 1, 2)).contains("private_key"));
    }
}
