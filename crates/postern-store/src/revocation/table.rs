//! The `revocations` table: adding, listing and lifting revocations.
//!
//! Each write is one autocommitted statement, so it takes SQLite's write lock once (waiting up to
//! the busy timeout for another process) and is on disk (`synchronous=FULL`) when it returns.

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use super::{NewRevocation, Revocation, RevocationScope, RevocationSet, check_name};
use crate::{Store, StoreError};

/// The columns read back, in the order [`from_row`] expects.
const COLUMNS: &str =
    "id, kind, issuer, value, reason, created_by, created_at, expires_at, lifted_at, lifted_by";

/// Random ids are 48 bits; a clash with an existing one is retried this many times in all.
const ID_ATTEMPTS: usize = 4;

impl Store {
    /// Stores a new revocation and returns it with its id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for what [`NewRevocation::validate`] refuses, [`StoreError::Query`]
    /// if it could not be written.
    pub async fn add_revocation(&self, new: NewRevocation) -> Result<Revocation, StoreError> {
        const OPERATION: &str = "add a revocation";
        new.validate()?;
        let (kind, issuer, value) = columns(&new.scope);
        let sql = format!(
            "INSERT INTO revocations \
             (id, kind, issuer, value, reason, created_by, created_at, expires_at) \
             VALUES (lower(hex(randomblob(6))), ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        );
        let mut attempt = 1;
        let row = loop {
            let inserted = sqlx::query(&sql)
                .bind(kind)
                .bind(issuer)
                .bind(value)
                .bind(&new.reason)
                .bind(&new.created_by)
                .bind(new.created_at)
                .bind(new.expires_at)
                .fetch_one(&self.pool)
                .await;
            match inserted {
                Err(sqlx::Error::Database(error))
                    if error.is_unique_violation() && attempt < ID_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => break other.map_err(|source| self.query_error(OPERATION, source))?,
            }
        };
        self.revocation(OPERATION, &row)
    }

    /// The revocations in force at `now` (unix seconds): not lifted, not lapsed. Oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if they could not be read.
    pub async fn active_revocations(&self, now: i64) -> Result<Vec<Revocation>, StoreError> {
        const OPERATION: &str = "list the active revocations";
        let sql = format!(
            "SELECT {COLUMNS} FROM revocations \
             WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) \
             ORDER BY created_at, rowid"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        rows.iter()
            .map(|row| self.revocation(OPERATION, row))
            .collect()
    }

    /// [`active_revocations`](Self::active_revocations) as a snapshot for in-memory checks.
    ///
    /// # Errors
    ///
    /// As [`active_revocations`](Self::active_revocations).
    pub async fn revocation_set(&self, now: i64) -> Result<RevocationSet, StoreError> {
        self.active_revocations(now).await.map(RevocationSet::new)
    }

    /// Every revocation ever made, lifted and lapsed ones included. Oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if they could not be read.
    pub async fn all_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        const OPERATION: &str = "list the revocations";
        let sql = format!("SELECT {COLUMNS} FROM revocations ORDER BY created_at, rowid");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        rows.iter()
            .map(|row| self.revocation(OPERATION, row))
            .collect()
    }

    /// Lifts revocation `id` at `now` (unix seconds) on behalf of `by` (a verified subject), and
    /// returns it as it now stands. `None` if there is no such revocation or it was already
    /// lifted. A lapsed revocation can still be lifted, which records who closed it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or oversized `by`, [`StoreError::Query`] if it could
    /// not be written.
    pub async fn lift_revocation(
        &self,
        id: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<Revocation>, StoreError> {
        const OPERATION: &str = "lift a revocation";
        check_name("lifted_by", by)?;
        let sql = format!(
            "UPDATE revocations SET lifted_at = ?, lifted_by = ? \
             WHERE id = ? AND lifted_at IS NULL RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(now)
            .bind(by)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| self.query_error(OPERATION, source))?;
        row.map(|row| self.revocation(OPERATION, &row)).transpose()
    }

    fn revocation(
        &self,
        operation: &'static str,
        row: &SqliteRow,
    ) -> Result<Revocation, StoreError> {
        from_row(row).map_err(|detail| StoreError::Corrupt {
            path: self.location(),
            operation,
            detail,
        })
    }
}

/// The scope as the `kind`, `issuer` and `value` columns.
fn columns(scope: &RevocationScope) -> (&'static str, Option<&str>, &str) {
    let kind = scope.kind();
    match scope {
        RevocationScope::Subject { subject } => (kind, None, subject),
        RevocationScope::IssuerSubject { issuer, subject } => (kind, Some(issuer), subject),
        RevocationScope::Group { group } => (kind, None, group),
        RevocationScope::TokenId { token_id } => (kind, None, token_id),
    }
}

fn from_row(row: &SqliteRow) -> Result<Revocation, String> {
    let get_error = |error: sqlx::Error| error.to_string();
    let id: String = row.try_get("id").map_err(get_error)?;
    let kind: String = row.try_get("kind").map_err(get_error)?;
    let issuer: Option<String> = row.try_get("issuer").map_err(get_error)?;
    let value: String = row.try_get("value").map_err(get_error)?;
    let scope = match (kind.as_str(), issuer) {
        ("subject", None) => RevocationScope::Subject { subject: value },
        ("issuer_subject", Some(issuer)) => RevocationScope::IssuerSubject {
            issuer,
            subject: value,
        },
        ("group", None) => RevocationScope::Group { group: value },
        ("token_id", None) => RevocationScope::TokenId { token_id: value },
        (kind, issuer) => {
            return Err(format!(
                "revocation {id}: kind {kind:?} with issuer {issuer:?} is not one this Postern knows"
            ));
        }
    };
    Ok(Revocation {
        scope,
        reason: row.try_get("reason").map_err(get_error)?,
        created_by: row.try_get("created_by").map_err(get_error)?,
        created_at: row.try_get("created_at").map_err(get_error)?,
        expires_at: row.try_get("expires_at").map_err(get_error)?,
        lifted_at: row.try_get("lifted_at").map_err(get_error)?,
        lifted_by: row.try_get("lifted_by").map_err(get_error)?,
        id,
    })
}
