//! The `jti`s of OIDC back-channel logout tokens already acted on: a logout token is accepted
//! once (OpenID Connect Back-Channel Logout 1.0, section 2.6, step 7).

use crate::{Store, StoreError};

/// Longest issuer or `jti` kept (the message in `first_use_of_logout_token` says it too).
const MAX_FIELD_BYTES: usize = 1024;

impl Store {
    /// Records that the logout token `jti` from `issuer` is being acted on, until
    /// `remember_until` (unix seconds). `false` when it was recorded before: a replay. Forgets
    /// tokens past their time on the way.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or oversized field, [`StoreError::Query`] if the
    /// store cannot be written.
    pub async fn first_use_of_logout_token(
        &self,
        issuer: &str,
        jti: &str,
        remember_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        for (field, value) in [("issuer", issuer), ("jti", jti)] {
            if value.is_empty() || value.len() > MAX_FIELD_BYTES {
                return Err(StoreError::Invalid {
                    field,
                    problem: "must be 1 to 1024 bytes",
                });
            }
        }
        sqlx::query("DELETE FROM logout_tokens WHERE remember_until < ?")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| self.query_error("forget old logout tokens", e))?;
        let inserted = sqlx::query(
            "INSERT INTO logout_tokens (issuer, jti, remember_until) VALUES (?, ?, ?) \
             ON CONFLICT (issuer, jti) DO NOTHING",
        )
        .bind(issuer)
        .bind(jti)
        .bind(remember_until)
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_error("record a logout token", e))?;
        Ok(inserted.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[tokio::test]
    async fn a_logout_token_is_accepted_once_until_forgotten() {
        let store = Store::open_in_memory()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let first = |jti: &'static str, until: i64, now: i64| {
            let store = store.clone();
            async move {
                store
                    .first_use_of_logout_token("https://idp", jti, until, now)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert!(first("j1", 100, 10).await);
        assert!(!first("j1", 100, 20).await, "a replay");
        assert!(first("j2", 100, 20).await);
        // Past its time the jti is forgotten (the token itself is refused as too old by then).
        assert!(first("j1", 300, 200).await);
        assert!(
            store
                .first_use_of_logout_token("", "j", 1, 0)
                .await
                .is_err()
        );
    }
}
