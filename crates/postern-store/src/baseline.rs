//! Baselines of service identities: the statement fingerprints and client networks each machine
//! identity has been seen with on each target. Deciding what is an anomaly, and refusing what a
//! baseline does not hold, is the proxy's business; this keeps what was seen, so that it survives
//! restarts and every Postern sharing the store learns from and enforces one baseline.

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use crate::revocation::MAX_NAME_BYTES;
use crate::{Store, StoreError};

/// The longest sample statement kept with an entry; longer ones are cut at a character boundary.
pub const MAX_SAMPLE_BYTES: usize = 2048;

/// The longest fingerprint or network an entry may name.
const MAX_VALUE_BYTES: usize = 128;

/// Whose baseline, on which target. As JSON (the admin API's bodies and query strings):
/// `{"issuer", "subject", "target"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineKey {
    /// The token's `iss` (for a client certificate, its SPIFFE trust domain as an issuer).
    pub issuer: String,
    /// The identity's subject.
    pub subject: String,
    /// The target it connects to.
    pub target: String,
}

impl BaselineKey {
    /// Checks what the store would refuse: an empty or oversized name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        for (field, value) in [
            ("issuer", &self.issuer),
            ("subject", &self.subject),
            ("target", &self.target),
        ] {
            if value.is_empty() || value.len() > MAX_NAME_BYTES {
                return Err(StoreError::Invalid {
                    field,
                    problem: "must be 1 to 1024 bytes",
                });
            }
        }
        Ok(())
    }
}

/// What an entry's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineEntryKind {
    /// pg_query's fingerprint of a statement text.
    Fingerprint,
    /// The client's address masked to the configured prefix, as CIDR.
    Network,
}

impl BaselineEntryKind {
    /// The name stored in the `kind` column, and used in the admin API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fingerprint => "fingerprint",
            Self::Network => "network",
        }
    }

    /// The kind named `name`, if any.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fingerprint" => Some(Self::Fingerprint),
            "network" => Some(Self::Network),
            _ => None,
        }
    }
}

/// One fingerprint or network a baseline holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaselineEntry {
    pub kind: BaselineEntryKind,
    pub value: String,
    /// Part of the baseline: first seen within the observation window, or accepted by an
    /// operator. `false` for an anomaly: first seen after the window and not accepted.
    pub learned: bool,
    /// When it was first seen (unix seconds).
    pub first_seen: i64,
    /// The redacted statement first seen with a fingerprint; the client address for a network.
    pub sample: String,
    /// Who accepted an anomaly into the baseline.
    pub accepted_by: Option<String>,
}

/// A baseline whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Baseline {
    #[serde(flatten)]
    pub key: BaselineKey,
    /// When its observation window began: the identity's first connection to the target, or
    /// the last reset.
    pub started_at: i64,
    pub entries: Vec<BaselineEntry>,
}

/// A baseline in a list: its counts, not its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaselineSummary {
    #[serde(flatten)]
    pub key: BaselineKey,
    pub started_at: i64,
    /// Learned (or accepted) fingerprints.
    pub fingerprints: i64,
    /// Learned (or accepted) networks.
    pub networks: i64,
    /// Entries first seen after the window and not accepted.
    pub anomalies: i64,
}

impl Store {
    /// The baseline of `key`, begun at `now` if this is its first use.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or oversized name, [`StoreError::Query`] if the
    /// store cannot be read or written.
    pub async fn open_baseline(&self, key: &BaselineKey, now: i64) -> Result<Baseline, StoreError> {
        key.validate()?;
        self.begin_baseline(key, now).await?;
        self.baseline(key)
            .await?
            .ok_or_else(|| StoreError::Invalid {
                field: "baseline",
                problem: "was reset and removed while being opened; try again",
            })
    }

    async fn begin_baseline(&self, key: &BaselineKey, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO baselines (issuer, subject, target, started_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (issuer, subject, target) DO NOTHING",
        )
        .bind(&key.issuer)
        .bind(&key.subject)
        .bind(&key.target)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_error("begin a baseline", e))?;
        Ok(())
    }

    /// The baseline of `key`, if it has one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] if the store cannot be read.
    pub async fn baseline(&self, key: &BaselineKey) -> Result<Option<Baseline>, StoreError> {
        let row = sqlx::query(
            "SELECT started_at FROM baselines WHERE issuer = ? AND subject = ? AND target = ?",
        )
        .bind(&key.issuer)
        .bind(&key.subject)
        .bind(&key.target)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.query_error("read a baseline", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let started_at: i64 = row.get("started_at");
        let rows = sqlx::query(
            "SELECT kind, value, learned, first_seen, sample, accepted_by FROM baseline_entries \
             WHERE issuer = ? AND subject = ? AND target = ? ORDER BY first_seen, kind, value",
        )
        .bind(&key.issuer)
        .bind(&key.subject)
        .bind(&key.target)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.query_error("read a baseline's entries", e))?;
        let entries = rows
            .into_iter()
            .filter_map(|row| {
                let kind: String = row.get("kind");
                Some(BaselineEntry {
                    kind: BaselineEntryKind::parse(&kind)?,
                    value: row.get("value"),
                    learned: row.get::<i64, _>("learned") == 1,
                    first_seen: row.get("first_seen"),
                    sample: row.get("sample"),
                    accepted_by: row.get("accepted_by"),
                })
            })
            .collect();
        Ok(Some(Baseline {
            key: key.clone(),
            started_at,
            entries,
        }))
    }

    /// Records an entry first seen now. `false` when the baseline already held it (another
    /// Postern saw it first): what was recorded first stands.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or oversized name or value, [`StoreError::Query`] if
    /// the store cannot be written.
    pub async fn record_baseline_entry(
        &self,
        key: &BaselineKey,
        entry: &BaselineEntry,
    ) -> Result<bool, StoreError> {
        key.validate()?;
        if entry.value.is_empty() || entry.value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Invalid {
                field: "value",
                problem: "must be 1 to 128 bytes",
            });
        }
        // A reset may have removed the baseline since it was opened: begin it again, so that
        // the entry is not lost to the foreign key.
        self.begin_baseline(key, entry.first_seen).await?;
        let inserted = sqlx::query(
            "INSERT INTO baseline_entries \
             (issuer, subject, target, kind, value, learned, first_seen, sample, accepted_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (issuer, subject, target, kind, value) DO NOTHING",
        )
        .bind(&key.issuer)
        .bind(&key.subject)
        .bind(&key.target)
        .bind(entry.kind.as_str())
        .bind(&entry.value)
        .bind(i64::from(entry.learned))
        .bind(entry.first_seen)
        .bind(truncated(&entry.sample, MAX_SAMPLE_BYTES))
        .bind(&entry.accepted_by)
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_error("record a baseline entry", e))?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Accepts an anomaly into the baseline: from now on it is allowed where the baseline is
    /// enforced. `false` when the baseline holds no such entry.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty or oversized name, [`StoreError::Query`] if the
    /// store cannot be written.
    pub async fn accept_baseline_entry(
        &self,
        key: &BaselineKey,
        kind: BaselineEntryKind,
        value: &str,
        accepted_by: &str,
    ) -> Result<bool, StoreError> {
        key.validate()?;
        if accepted_by.is_empty() || accepted_by.len() > MAX_NAME_BYTES {
            return Err(StoreError::Invalid {
                field: "accepted_by",
                problem: "must be 1 to 1024 bytes",
            });
        }
        let updated = sqlx::query(
            "UPDATE baseline_entries SET learned = 1, accepted_by = ? \
             WHERE issuer = ? AND subject = ? AND target = ? AND kind = ? AND value = ?",
        )
        .bind(accepted_by)
        .bind(&key.issuer)
        .bind(&key.subject)
        .bind(&key.target)
        .bind(kind.as_str())
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(|e| self.query_error("accept a baseline entry", e))?;
        Ok(updated.rows_affected() == 1)
    }

    /// Forgets everything the baseline of `key` holds and starts its observation window again
    /// at `now`. `false` when there was no such baseline.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] if the store cannot be written.
    pub async fn reset_baseline(&self, key: &BaselineKey, now: i64) -> Result<bool, StoreError> {
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(|e| self.query_error("begin a baseline reset", e))?;
        let updated = sqlx::query(
            "UPDATE baselines SET started_at = ? WHERE issuer = ? AND subject = ? AND target = ?",
        )
        .bind(now)
        .bind(&key.issuer)
        .bind(&key.subject)
        .bind(&key.target)
        .execute(&mut *transaction)
        .await
        .map_err(|e| self.query_error("restart a baseline", e))?;
        sqlx::query("DELETE FROM baseline_entries WHERE issuer = ? AND subject = ? AND target = ?")
            .bind(&key.issuer)
            .bind(&key.subject)
            .bind(&key.target)
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.query_error("forget a baseline's entries", e))?;
        transaction
            .commit()
            .await
            .map_err(|e| self.query_error("commit a baseline reset", e))?;
        Ok(updated.rows_affected() == 1)
    }

    /// Every baseline with its counts, by issuer, subject and target.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] if the store cannot be read.
    pub async fn baselines(&self) -> Result<Vec<BaselineSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.issuer, b.subject, b.target, b.started_at, \
               COUNT(CASE WHEN e.learned = 1 AND e.kind = 'fingerprint' THEN 1 END) AS fingerprints, \
               COUNT(CASE WHEN e.learned = 1 AND e.kind = 'network' THEN 1 END) AS networks, \
               COUNT(CASE WHEN e.learned = 0 THEN 1 END) AS anomalies \
             FROM baselines b LEFT JOIN baseline_entries e \
               ON e.issuer = b.issuer AND e.subject = b.subject AND e.target = b.target \
             GROUP BY b.issuer, b.subject, b.target \
             ORDER BY b.issuer, b.subject, b.target",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.query_error("list baselines", e))?;
        Ok(rows
            .into_iter()
            .map(|row| BaselineSummary {
                key: BaselineKey {
                    issuer: row.get("issuer"),
                    subject: row.get("subject"),
                    target: row.get("target"),
                },
                started_at: row.get("started_at"),
                fingerprints: row.get("fingerprints"),
                networks: row.get("networks"),
                anomalies: row.get("anomalies"),
            })
            .collect())
    }
}

/// `text` cut to at most `limit` bytes at a character boundary.
fn truncated(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::{BaselineEntry, BaselineEntryKind, BaselineKey, truncated};
    use crate::Store;

    fn key() -> BaselineKey {
        BaselineKey {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "repo:acme/app:ref:refs/heads/main".into(),
            target: "demo".into(),
        }
    }

    fn entry(value: &str, learned: bool, first_seen: i64) -> BaselineEntry {
        BaselineEntry {
            kind: BaselineEntryKind::Fingerprint,
            value: value.into(),
            learned,
            first_seen,
            sample: "SELECT 1".into(),
            accepted_by: None,
        }
    }

    #[tokio::test]
    async fn a_baseline_keeps_what_was_first_seen_until_reset() {
        let store = Store::open_in_memory()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let opened = store
            .open_baseline(&key(), 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.started_at, 100);
        assert!(opened.entries.is_empty());
        // Opening again keeps the first start.
        let again = store
            .open_baseline(&key(), 500)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.started_at, 100);

        let record = |e: BaselineEntry| {
            let store = store.clone();
            async move {
                store
                    .record_baseline_entry(&key(), &e)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert!(record(entry("aa", true, 110)).await);
        assert!(
            !record(entry("aa", false, 900)).await,
            "the first record stands"
        );
        assert!(record(entry("bb", false, 900)).await);

        let summary = store.baselines().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(summary.len(), 1);
        assert_eq!((summary[0].fingerprints, summary[0].anomalies), (1, 1));

        assert!(
            store
                .accept_baseline_entry(&key(), BaselineEntryKind::Fingerprint, "bb", "alice")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            !store
                .accept_baseline_entry(&key(), BaselineEntryKind::Network, "bb", "alice")
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            "no such entry"
        );
        let baseline = store
            .baseline(&key())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the baseline exists"));
        let bb = baseline.entries.iter().find(|e| e.value == "bb");
        assert_eq!(
            bb.map(|e| (e.learned, e.accepted_by.as_deref())),
            Some((true, Some("alice")))
        );

        assert!(
            store
                .reset_baseline(&key(), 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        let reset = store
            .open_baseline(&key(), 2000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((reset.started_at, reset.entries.len()), (1000, 0));
    }

    #[tokio::test]
    async fn oversized_and_empty_names_are_refused() {
        let store = Store::open_in_memory()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut empty = key();
        empty.subject.clear();
        assert!(store.open_baseline(&empty, 1).await.is_err());
        assert!(
            store
                .record_baseline_entry(&key(), &entry(&"f".repeat(129), true, 1))
                .await
                .is_err()
        );
        assert!(
            store
                .baselines()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
    }

    #[test]
    fn samples_are_cut_at_a_character_boundary() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
