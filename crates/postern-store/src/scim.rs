//! SCIM 2.0 users (RFC 7643 section 4.1) that the identity provider provisions to Postern, and
//! the revocations SCIM made.
//!
//! A user is kept as the few attributes Postern acts on — `userName` (unique, compared without
//! regard to case), `externalId`, `active` — plus every other attribute the provider sent, as a
//! JSON object returned as it came. What a user's state means for access (a deactivated or
//! deleted person is revoked) is the proxy's control plane; this file only stores. The SCIM
//! protocol itself (resources, filters, PATCH) is the admin API's.
//!
//! SCIM's revocations are recorded by the person they cover (issuer and subject) in
//! `scim_revocations`, beside the revocation itself and in the same transaction, so that
//! reactivation lifts exactly those: never a revocation an operator made, whatever its
//! `created_by` says.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row as _, SqliteConnection};

use crate::revocation::check_name;
use crate::{NewRevocation, Revocation, RevocationScope, Store, StoreError};

/// The largest `attributes` object kept for one user, as JSON text. A directory entry with
/// name, emails, phone numbers, addresses and the enterprise extension is a few kilobytes.
pub const MAX_SCIM_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// The most users one listing returns (the `filter.maxResults` Postern announces).
pub const MAX_SCIM_PAGE: u32 = 200;

/// The user columns read back, in the order [`user_from_row`] expects.
const USER_COLUMNS: &str =
    "id, user_name, external_id, active, attributes, created_at, modified_at";

/// Random revocation ids are 48 bits (as an operator's); a clash is retried this many times.
const ID_ATTEMPTS: usize = 4;

/// What the provider says about a user: what [`Store::create_scim_user`] creates and
/// [`Store::replace_scim_user`] puts in place of what was there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimUserData {
    /// `userName`: unique among users, compared without regard to case.
    pub user_name: String,
    /// `externalId`: the provider's own id of the user.
    pub external_id: Option<String>,
    /// `active`: whether the person may use Postern, as far as the provider is concerned.
    pub active: bool,
    /// Every other attribute, as the provider sent it.
    pub attributes: Map<String, Value>,
}

impl ScimUserData {
    /// Checks what the store would refuse.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the first field at fault.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_name("userName", &self.user_name)?;
        if let Some(external_id) = &self.external_id {
            check_name("externalId", external_id)?;
        }
        if attributes_json(&self.attributes).len() > MAX_SCIM_ATTRIBUTES_BYTES {
            return Err(StoreError::Invalid {
                field: "attributes",
                problem: "larger than 64 KiB as JSON",
            });
        }
        Ok(())
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScimUser {
    /// Postern's id of the user: 32 lowercase hex digits, random, never reused.
    pub id: String,
    /// What the provider said, last.
    pub data: ScimUserData,
    /// When the user was created, in unix seconds.
    pub created_at: i64,
    /// When it last changed, in unix seconds.
    pub modified_at: i64,
}

/// Which users a listing returns: equality on one attribute (`userName` without regard to
/// case, the others exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScimUserFilter {
    UserName(String),
    ExternalId(String),
    Id(String),
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimUserPage {
    /// How many users match in all.
    pub total: u64,
    /// The users of this page, oldest first.
    pub users: Vec<ScimUser>,
}

impl Store {
    /// Creates a user with a new id, at `now` (unix seconds).
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`] when another user has this `userName`,
    /// [`StoreError::Invalid`] for what [`ScimUserData::validate`] refuses, and
    /// [`StoreError::Query`] if it cannot be written.
    pub async fn create_scim_user(
        &self,
        data: &ScimUserData,
        now: i64,
    ) -> Result<ScimUser, StoreError> {
        const OPERATION: &str = "create a SCIM user";
        data.validate()?;
        let query = |e| self.query_error(OPERATION, e);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(query)?;
        refuse_taken(&mut tx, &data.user_name, None)
            .await
            .map_err(|e| self.scim_fault(OPERATION, e))?;
        // 128 random bits: an id is never handed out twice (RFC 7643 section 3.1).
        let sql = format!(
            "INSERT INTO scim_users \
             (id, user_name, external_id, active, attributes, created_at, modified_at) \
             VALUES (lower(hex(randomblob(16))), ?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&data.user_name)
            .bind(&data.external_id)
            .bind(data.active)
            .bind(attributes_json(&data.attributes))
            .bind(now)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.taken_or(OPERATION, e, &data.user_name))?;
        let user = self.scim_user_row(OPERATION, &row)?;
        tx.commit().await.map_err(query)?;
        Ok(user)
    }

    /// The user `id`, if there is one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if it cannot be read.
    pub async fn scim_user(&self, id: &str) -> Result<Option<ScimUser>, StoreError> {
        const OPERATION: &str = "read a SCIM user";
        let sql = format!("SELECT {USER_COLUMNS} FROM scim_users WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.query_error(OPERATION, e))?;
        row.map(|row| self.scim_user_row(OPERATION, &row))
            .transpose()
    }

    /// The users `filter` matches (all when `None`), oldest first: `limit` of them (at most
    /// [`MAX_SCIM_PAGE`]) after skipping `offset`, and how many match in all, read in one
    /// snapshot.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if they cannot be read.
    pub async fn scim_users(
        &self,
        filter: Option<&ScimUserFilter>,
        offset: u64,
        limit: u32,
    ) -> Result<ScimUserPage, StoreError> {
        const OPERATION: &str = "list SCIM users";
        let query = |e| self.query_error(OPERATION, e);
        let (condition, value) = match filter {
            None => ("", None),
            Some(ScimUserFilter::UserName(v)) => ("WHERE user_name = ? COLLATE NOCASE", Some(v)),
            Some(ScimUserFilter::ExternalId(v)) => ("WHERE external_id = ?", Some(v)),
            Some(ScimUserFilter::Id(v)) => ("WHERE id = ?", Some(v)),
        };
        let mut tx = self.pool.begin().await.map_err(query)?;
        let count = format!("SELECT COUNT(*) FROM scim_users {condition}");
        let mut count = sqlx::query_scalar::<_, i64>(&count);
        if let Some(value) = value {
            count = count.bind(value);
        }
        let total = count.fetch_one(&mut *tx).await.map_err(query)?;
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM scim_users {condition} \
             ORDER BY created_at, rowid LIMIT ? OFFSET ?"
        );
        let mut page = sqlx::query(&sql);
        if let Some(value) = value {
            page = page.bind(value);
        }
        let rows = page
            .bind(i64::from(limit.min(MAX_SCIM_PAGE)))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(query)?;
        tx.commit().await.map_err(query)?;
        let users = rows
            .iter()
            .map(|row| self.scim_user_row(OPERATION, row))
            .collect::<Result<_, _>>()?;
        Ok(ScimUserPage {
            total: u64::try_from(total).unwrap_or(0),
            users,
        })
    }

    /// Replaces what is stored of user `id` by `data`, at `now`, and returns the user as it
    /// was and as it now is. `None` if there is no such user.
    ///
    /// # Errors
    ///
    /// As [`create_scim_user`](Self::create_scim_user).
    pub async fn replace_scim_user(
        &self,
        id: &str,
        data: &ScimUserData,
        now: i64,
    ) -> Result<Option<(ScimUser, ScimUser)>, StoreError> {
        const OPERATION: &str = "replace a SCIM user";
        data.validate()?;
        let query = |e| self.query_error(OPERATION, e);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(query)?;
        let sql = format!("SELECT {USER_COLUMNS} FROM scim_users WHERE id = ?");
        let Some(before) = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query)?
        else {
            return Ok(None);
        };
        let before = self.scim_user_row(OPERATION, &before)?;
        refuse_taken(&mut tx, &data.user_name, Some(id))
            .await
            .map_err(|e| self.scim_fault(OPERATION, e))?;
        let sql = format!(
            "UPDATE scim_users SET user_name = ?, external_id = ?, active = ?, attributes = ?, \
             modified_at = ? WHERE id = ? RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&data.user_name)
            .bind(&data.external_id)
            .bind(data.active)
            .bind(attributes_json(&data.attributes))
            .bind(now)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.taken_or(OPERATION, e, &data.user_name))?;
        let after = self.scim_user_row(OPERATION, &row)?;
        tx.commit().await.map_err(query)?;
        Ok(Some((before, after)))
    }

    /// Deletes user `id` and returns it as it was; `None` if there is no such user. Its id is
    /// never given to another user.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] or [`StoreError::Corrupt`] if it cannot be written.
    pub async fn delete_scim_user(&self, id: &str) -> Result<Option<ScimUser>, StoreError> {
        const OPERATION: &str = "delete a SCIM user";
        let sql = format!("DELETE FROM scim_users WHERE id = ? RETURNING {USER_COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.query_error(OPERATION, e))?;
        row.map(|row| self.scim_user_row(OPERATION, &row))
            .transpose()
    }

    /// Stores a revocation SCIM makes, recorded as SCIM's in the same transaction. Its scope
    /// must be an issuer and subject.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for another scope or what [`NewRevocation::validate`] refuses,
    /// [`StoreError::Query`] if it cannot be written.
    pub async fn add_scim_revocation(&self, new: NewRevocation) -> Result<Revocation, StoreError> {
        const OPERATION: &str = "add a SCIM revocation";
        new.validate()?;
        let RevocationScope::IssuerSubject { issuer, subject } = &new.scope else {
            return Err(StoreError::Invalid {
                field: "scope",
                problem: "a SCIM revocation covers one issuer's subject",
            });
        };
        let query = |e| self.query_error(OPERATION, e);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(query)?;
        let mut attempt = 1;
        let id: String = loop {
            let inserted = sqlx::query_scalar(
                "INSERT INTO revocations \
                 (id, kind, issuer, value, reason, created_by, created_at, expires_at) \
                 VALUES (lower(hex(randomblob(6))), ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(new.scope.kind())
            .bind(issuer)
            .bind(subject)
            .bind(&new.reason)
            .bind(&new.created_by)
            .bind(new.created_at)
            .bind(new.expires_at)
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Err(sqlx::Error::Database(error))
                    if error.is_unique_violation() && attempt < ID_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => break other.map_err(query)?,
            }
        };
        sqlx::query(
            "INSERT INTO scim_revocations (revocation_id, issuer, subject) VALUES (?, ?, ?)",
        )
        .bind(&id)
        .bind(issuer)
        .bind(subject)
        .execute(&mut *tx)
        .await
        .map_err(query)?;
        tx.commit().await.map_err(query)?;
        Ok(Revocation {
            id,
            scope: new.scope,
            reason: new.reason,
            created_by: new.created_by,
            created_at: new.created_at,
            expires_at: new.expires_at,
            lifted_at: None,
            lifted_by: None,
        })
    }

    /// The ids of the revocations SCIM made for `subject` of `issuer` that are in force at
    /// `now` (unix seconds), oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] if they cannot be read.
    pub async fn scim_revocations_in_force(
        &self,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT r.id FROM revocations r JOIN scim_revocations s ON s.revocation_id = r.id \
             WHERE s.issuer = ? AND s.subject = ? AND r.lifted_at IS NULL \
             AND (r.expires_at IS NULL OR r.expires_at > ?) ORDER BY r.created_at, r.rowid",
        )
        .bind(issuer)
        .bind(subject)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.query_error("list SCIM revocations", e))
    }

    /// Lifts, at `now` on behalf of `by`, the revocations SCIM made for `subject` of `issuer`
    /// and returns their ids; revocations anyone else made stay.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or oversized `by`, [`StoreError::Query`] if it
    /// cannot be written.
    pub async fn lift_scim_revocations(
        &self,
        issuer: &str,
        subject: &str,
        by: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        check_name("lifted_by", by)?;
        sqlx::query_scalar(
            "UPDATE revocations SET lifted_at = ?, lifted_by = ? WHERE lifted_at IS NULL \
             AND id IN (SELECT revocation_id FROM scim_revocations WHERE issuer = ? AND subject = ?) \
             RETURNING id",
        )
        .bind(now)
        .bind(by)
        .bind(issuer)
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.query_error("lift SCIM revocations", e))
    }

    fn scim_user_row(
        &self,
        operation: &'static str,
        row: &SqliteRow,
    ) -> Result<ScimUser, StoreError> {
        user_from_row(row).map_err(|detail| StoreError::Corrupt {
            path: self.location(),
            operation,
            detail,
        })
    }

    fn scim_fault(&self, operation: &'static str, fault: Fault) -> StoreError {
        match fault {
            Fault::Query(source) => self.query_error(operation, source),
            Fault::Taken(error) => error,
        }
    }

    /// A failed write: a unique violation is the `userName` (ids are 128 random bits).
    fn taken_or(&self, operation: &'static str, error: sqlx::Error, user_name: &str) -> StoreError {
        match error {
            sqlx::Error::Database(database) if database.is_unique_violation() => taken(user_name),
            other => self.query_error(operation, other),
        }
    }
}

/// What went wrong inside a transaction, before it is named.
enum Fault {
    Query(sqlx::Error),
    Taken(StoreError),
}

fn taken(user_name: &str) -> StoreError {
    StoreError::Duplicate {
        field: "userName",
        value: user_name.to_owned(),
    }
}

/// Refuses `user_name` when a user other than `except` has it (without regard to case).
async fn refuse_taken(
    conn: &mut SqliteConnection,
    user_name: &str,
    except: Option<&str>,
) -> Result<(), Fault> {
    let holder: Option<String> =
        sqlx::query_scalar("SELECT id FROM scim_users WHERE user_name = ? COLLATE NOCASE")
            .bind(user_name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(Fault::Query)?;
    match holder {
        Some(holder) if Some(holder.as_str()) != except => Err(Fault::Taken(taken(user_name))),
        _ => Ok(()),
    }
}

fn attributes_json(attributes: &Map<String, Value>) -> String {
    Value::Object(attributes.clone()).to_string()
}

fn user_from_row(row: &SqliteRow) -> Result<ScimUser, String> {
    let get_error = |error: sqlx::Error| error.to_string();
    let attributes: String = row.try_get("attributes").map_err(get_error)?;
    let attributes = match serde_json::from_str(&attributes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("attributes is not a JSON object".to_owned()),
        Err(error) => return Err(format!("attributes: {error}")),
    };
    Ok(ScimUser {
        id: row.try_get("id").map_err(get_error)?,
        data: ScimUserData {
            user_name: row.try_get("user_name").map_err(get_error)?,
            external_id: row.try_get("external_id").map_err(get_error)?,
            active: row.try_get("active").map_err(get_error)?,
            attributes,
        },
        created_at: row.try_get("created_at").map_err(get_error)?,
        modified_at: row.try_get("modified_at").map_err(get_error)?,
    })
}

#[cfg(test)]
mod tests;
