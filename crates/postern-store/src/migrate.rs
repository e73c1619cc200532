//! The store's schema, as numbered migrations embedded in the binary.
//!
//! sqlx's own migrator is not used: its `migrate!` macro needs the `macros` feature, and on SQLite
//! its lock is a no-op, so two Postern processes starting on one new file at once could both apply
//! the first migration and one would fail. Here every migration is applied inside one
//! `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock *before* reading the schema
//! version: a second process waits (busy timeout), then finds the work done.
//!
//! Migrations are append-only: a shipped file is never edited, a change is a new file. A store
//! whose version is newer than the newest migration known here is refused ([`StoreError::TooNew`])
//! rather than used with a schema this code does not understand.

use std::path::Path;
use std::time::SystemTime;

use sqlx::{Row as _, SqliteConnection, SqlitePool};

use crate::{StoreError, unix_seconds};

/// One schema step.
struct Migration {
    /// Applied in increasing order, each once; recorded in `postern_schema`.
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "revocations",
        sql: include_str!("../migrations/0001_revocations.sql"),
    },
    Migration {
        version: 2,
        description: "approvals",
        sql: include_str!("../migrations/0002_approvals.sql"),
    },
    Migration {
        version: 3,
        description: "logout tokens",
        sql: include_str!("../migrations/0003_logout_tokens.sql"),
    },
    Migration {
        version: 4,
        description: "SCIM users",
        sql: include_str!("../migrations/0004_scim_users.sql"),
    },
    Migration {
        version: 5,
        description: "signing keys",
        sql: include_str!("../migrations/0005_signing_keys.sql"),
    },
    Migration {
        version: 6,
        description: "baselines",
        sql: include_str!("../migrations/0006_baselines.sql"),
    },
];

/// Which migrations have been applied to this file.
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS postern_schema (
    version     INTEGER NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL,
    applied_at  INTEGER NOT NULL
) STRICT";

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Brings the store to [`latest_version`], under SQLite's write lock.
pub(crate) async fn run(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let query = |source| StoreError::Query {
        path: path.to_owned(),
        operation: "read the schema version",
        source,
    };
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(query)?;
    refuse_foreign(&mut tx, path).await?;
    sqlx::query(SCHEMA_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(query)?;
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM postern_schema")
        .fetch_one(&mut *tx)
        .await
        .map_err(query)?;
    let known = latest_version();
    if current > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            known,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| StoreError::Migrate {
            path: path.to_owned(),
            version: migration.version,
            source,
        };
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO postern_schema (version, description, applied_at) VALUES (?, ?, ?)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(unix_seconds(SystemTime::now()))
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(|source| StoreError::Migrate {
        path: path.to_owned(),
        version: known,
        source,
    })
}

/// Refuses an SQLite file that holds tables but no `postern_schema`: another program's database,
/// to which Postern must not add its own tables.
async fn refuse_foreign(conn: &mut SqliteConnection, path: &Path) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
         ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|source| StoreError::Query {
        path: path.to_owned(),
        operation: "list the tables",
        source,
    })?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get("name").map_err(|error| StoreError::Corrupt {
            path: path.to_owned(),
            operation: "list the tables",
            detail: error.to_string(),
        })?;
        tables.push(name);
    }
    if tables.is_empty() || tables.iter().any(|name| name == "postern_schema") {
        return Ok(());
    }
    Err(StoreError::ForeignDatabase {
        path: path.to_owned(),
        tables: tables.join(", "),
    })
}
