//! Revocations as plain data: what a revocation covers, and the in-memory check the proxy runs on
//! every connection and every live session.
//!
//! Nothing here does I/O. The proxy keeps a [`RevocationSet`] snapshot (refreshed from
//! [`Store::active_revocations`](crate::Store::active_revocations)) and asks it
//! [`covering`](RevocationSet::covering) for each identity, so a check never waits on the file.
//! Reading and writing revocations is in `revocation/table.rs`.
//!
//! Matching is exact and case-sensitive: OIDC subjects and issuers are case-sensitive strings
//! (OpenID Connect Core 1.0, §2 and §5.7), and a revocation that matched more loosely than the
//! identity it names could end someone else's sessions.

mod table;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The longest subject, issuer, group, token id or person's name a revocation, approval request,
/// vote or grant may hold (and the longest target, role, policy, action or resource).
pub const MAX_NAME_BYTES: usize = 1024;

/// The longest reason a revocation may give.
pub const MAX_REASON_BYTES: usize = 4096;

/// Which identities a revocation covers.
///
/// As JSON: `{"kind": "subject", "subject": "alice"}`, `{"kind": "issuer_subject", "issuer":
/// "https://idp.example.com", "subject": "alice"}`, `{"kind": "group", "group": "contractors"}`,
/// `{"kind": "token_id", "token_id": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RevocationScope {
    /// Every identity with this subject, whichever issuer vouches for it: a person leaving is
    /// revoked once, though several issuers may know them under the same name.
    Subject { subject: String },
    /// The identity with this subject from this issuer (the token's `iss`) only.
    IssuerSubject { issuer: String, subject: String },
    /// Every identity whose token lists this group.
    Group { group: String },
    /// The token with this `jti`, from any issuer; other tokens of the same identity still work.
    TokenId { token_id: String },
}

impl RevocationScope {
    /// Whether an identity with these verified attributes is covered. `issuer` is the token's
    /// `iss`, `groups` its groups, `token_id` its `jti` if it has one.
    #[must_use]
    pub fn covers(
        &self,
        issuer: &str,
        subject: &str,
        groups: &[String],
        token_id: Option<&str>,
    ) -> bool {
        match self {
            Self::Subject { subject: revoked } => revoked == subject,
            Self::IssuerSubject {
                issuer: revoked_issuer,
                subject: revoked,
            } => revoked_issuer == issuer && revoked == subject,
            Self::Group { group } => groups.iter().any(|member_of| member_of == group),
            Self::TokenId { token_id: revoked } => token_id == Some(revoked.as_str()),
        }
    }

    /// The name stored in the `kind` column.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Subject { .. } => "subject",
            Self::IssuerSubject { .. } => "issuer_subject",
            Self::Group { .. } => "group",
            Self::TokenId { .. } => "token_id",
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        match self {
            Self::Subject { subject } => check_name("subject", subject),
            Self::IssuerSubject { issuer, subject } => {
                check_name("issuer", issuer)?;
                check_name("subject", subject)
            }
            Self::Group { group } => check_name("group", group),
            Self::TokenId { token_id } => check_name("token_id", token_id),
        }
    }
}

/// A revocation to be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    /// Who is revoked.
    pub scope: RevocationScope,
    /// Why, for whoever later reads the list (may be empty).
    pub reason: String,
    /// The verified subject of whoever revoked: the approver, an operator, or the system that
    /// sent a deprovisioning signal.
    pub created_by: String,
    /// When, in unix seconds.
    pub created_at: i64,
    /// When the revocation lapses by itself, in unix seconds; `None` lasts until lifted.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl NewRevocation {
    /// Checks what [`Store::add_revocation`](crate::Store::add_revocation) would refuse.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the first field at fault.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.scope.validate()?;
        check_name("created_by", &self.created_by)?;
        if self.reason.len() > MAX_REASON_BYTES {
            return Err(StoreError::Invalid {
                field: "reason",
                problem: "longer than 4096 bytes",
            });
        }
        if self
            .expires_at
            .is_some_and(|expires_at| expires_at <= self.created_at)
        {
            return Err(StoreError::Invalid {
                field: "expires_at",
                problem: "not after created_at: the revocation would never be in force",
            });
        }
        Ok(())
    }
}

/// A stored revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// 12 lowercase hex digits, random.
    pub id: String,
    /// Who is revoked.
    pub scope: RevocationScope,
    /// Why.
    pub reason: String,
    /// The verified subject of whoever revoked.
    pub created_by: String,
    /// When it was made, in unix seconds.
    pub created_at: i64,
    /// When it lapses by itself, in unix seconds; `None` lasts until lifted.
    pub expires_at: Option<i64>,
    /// When it was lifted, in unix seconds.
    pub lifted_at: Option<i64>,
    /// The verified subject of whoever lifted it.
    pub lifted_by: Option<String>,
}

impl Revocation {
    /// Whether an identity with these verified attributes is within this revocation's scope
    /// (whether or not it is still in force: see [`in_force`](Self::in_force)).
    #[must_use]
    pub fn covers(
        &self,
        issuer: &str,
        subject: &str,
        groups: &[String],
        token_id: Option<&str>,
    ) -> bool {
        self.scope.covers(issuer, subject, groups, token_id)
    }

    /// Not lifted, and not lapsed at `now` (unix seconds): a revocation is in force up to, but
    /// not at, its `expires_at`.
    #[must_use]
    pub fn in_force(&self, now: i64) -> bool {
        self.lifted_at.is_none() && self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// A snapshot of revocations, checked in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevocationSet {
    revocations: Vec<Revocation>,
}

impl RevocationSet {
    /// A snapshot of these revocations (typically [`Store::active_revocations`]'s result; lifted
    /// ones are allowed and ignored).
    ///
    /// [`Store::active_revocations`]: crate::Store::active_revocations
    #[must_use]
    pub fn new(revocations: Vec<Revocation>) -> Self {
        Self { revocations }
    }

    /// The first revocation in force at `now` (unix seconds) that covers the identity, if any.
    /// Lapsed and lifted revocations are skipped, so a snapshot stays right between refreshes as
    /// revocations lapse.
    #[must_use]
    pub fn covering(
        &self,
        issuer: &str,
        subject: &str,
        groups: &[String],
        token_id: Option<&str>,
        now: i64,
    ) -> Option<&Revocation> {
        self.revocations.iter().find(|revocation| {
            revocation.in_force(now) && revocation.covers(issuer, subject, groups, token_id)
        })
    }

    /// The revocations in the snapshot.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> {
        self.revocations.iter()
    }

    /// How many revocations the snapshot holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.revocations.len()
    }

    /// Whether the snapshot holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.revocations.is_empty()
    }
}

impl From<Vec<Revocation>> for RevocationSet {
    fn from(revocations: Vec<Revocation>) -> Self {
        Self::new(revocations)
    }
}

/// A subject, issuer, group, token id or person's name: present, and bounded.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        return Err(StoreError::Invalid {
            field,
            problem: "empty",
        });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(StoreError::Invalid {
            field,
            problem: "longer than 1024 bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://idp.example.com";
    const OTHER_ISSUER: &str = "https://other.example.com";

    fn revocation(scope: RevocationScope) -> Revocation {
        Revocation {
            id: "0123456789ab".to_owned(),
            scope,
            reason: "left the company".to_owned(),
            created_by: "admin@example.com".to_owned(),
            created_at: 1_000,
            expires_at: None,
            lifted_at: None,
            lifted_by: None,
        }
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn subject_covers_that_subject_from_every_issuer() {
        let r = revocation(RevocationScope::Subject {
            subject: "alice".to_owned(),
        });
        assert!(r.covers(ISSUER, "alice", &[], None));
        assert!(r.covers(OTHER_ISSUER, "alice", &groups(&["dbas"]), Some("t1")));
        assert!(!r.covers(ISSUER, "bob", &[], None));
        assert!(!r.covers(ISSUER, "Alice", &[], None), "case-sensitive");
        assert!(!r.covers(ISSUER, "alice ", &[], None), "exact");
        assert!(!r.covers(ISSUER, "bob", &groups(&["alice"]), Some("alice")));
    }

    #[test]
    fn issuer_subject_covers_only_that_pair() {
        let r = revocation(RevocationScope::IssuerSubject {
            issuer: ISSUER.to_owned(),
            subject: "alice".to_owned(),
        });
        assert!(r.covers(ISSUER, "alice", &[], None));
        assert!(!r.covers(OTHER_ISSUER, "alice", &[], None));
        assert!(!r.covers(ISSUER, "bob", &[], None));
        assert!(!r.covers(&format!("{ISSUER}/"), "alice", &[], None));
    }

    #[test]
    fn group_covers_its_members() {
        let r = revocation(RevocationScope::Group {
            group: "contractors".to_owned(),
        });
        assert!(r.covers(ISSUER, "alice", &groups(&["staff", "contractors"]), None));
        assert!(r.covers(OTHER_ISSUER, "bob", &groups(&["contractors"]), None));
        assert!(!r.covers(ISSUER, "alice", &groups(&["staff"]), None));
        assert!(!r.covers(ISSUER, "alice", &[], None));
        assert!(!r.covers(ISSUER, "contractors", &[], Some("contractors")));
        assert!(!r.covers(ISSUER, "alice", &groups(&["Contractors"]), None));
    }

    #[test]
    fn token_id_covers_that_token_only() {
        let r = revocation(RevocationScope::TokenId {
            token_id: "jti-1".to_owned(),
        });
        assert!(r.covers(ISSUER, "alice", &[], Some("jti-1")));
        assert!(r.covers(OTHER_ISSUER, "bob", &[], Some("jti-1")));
        assert!(!r.covers(ISSUER, "alice", &[], Some("jti-2")));
        assert!(!r.covers(ISSUER, "alice", &[], None), "a token without jti");
        assert!(!r.covers(ISSUER, "jti-1", &groups(&["jti-1"]), None));
    }

    #[test]
    fn in_force_until_lifted_or_lapsed() {
        let mut r = revocation(RevocationScope::Subject {
            subject: "alice".to_owned(),
        });
        assert!(r.in_force(i64::MAX));
        r.expires_at = Some(2_000);
        assert!(r.in_force(1_999));
        assert!(!r.in_force(2_000), "lapses at expires_at");
        r.expires_at = None;
        r.lifted_at = Some(1_500);
        r.lifted_by = Some("admin@example.com".to_owned());
        assert!(!r.in_force(1_000));
    }

    #[test]
    fn set_finds_the_revocation_in_force() {
        let subject = |name: &str| RevocationScope::Subject {
            subject: name.to_owned(),
        };
        let mut lapsed = revocation(subject("alice"));
        lapsed.id = "lapsed".to_owned();
        lapsed.expires_at = Some(1_500);
        let mut lifted = revocation(subject("alice"));
        lifted.id = "lifted".to_owned();
        lifted.lifted_at = Some(1_200);
        lifted.lifted_by = Some("admin@example.com".to_owned());
        let mut later = revocation(RevocationScope::Group {
            group: "staff".to_owned(),
        });
        later.id = "group".to_owned();
        later.expires_at = Some(3_000);
        let set = RevocationSet::new(vec![lapsed, lifted, later]);
        let staff = groups(&["staff"]);

        assert_eq!(
            set.covering(ISSUER, "alice", &[], None, 1_400)
                .map(|r| r.id.as_str()),
            Some("lapsed")
        );
        assert!(set.covering(ISSUER, "alice", &[], None, 1_500).is_none());
        assert_eq!(
            set.covering(ISSUER, "alice", &staff, None, 2_000)
                .map(|r| r.id.as_str()),
            Some("group")
        );
        assert!(set.covering(ISSUER, "alice", &staff, None, 3_000).is_none());
        assert!(
            RevocationSet::default()
                .covering(ISSUER, "alice", &staff, None, 0)
                .is_none()
        );
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn validation_refuses_empty_and_oversized_names_and_past_expiry() {
        let good = NewRevocation {
            scope: RevocationScope::IssuerSubject {
                issuer: ISSUER.to_owned(),
                subject: "alice".to_owned(),
            },
            reason: String::new(),
            created_by: "admin@example.com".to_owned(),
            created_at: 1_000,
            expires_at: Some(1_001),
        };
        assert!(good.validate().is_ok());
        let cases: Vec<(&str, NewRevocation)> = vec![
            (
                "issuer",
                NewRevocation {
                    scope: RevocationScope::IssuerSubject {
                        issuer: " ".to_owned(),
                        subject: "alice".to_owned(),
                    },
                    ..good.clone()
                },
            ),
            (
                "group",
                NewRevocation {
                    scope: RevocationScope::Group {
                        group: String::new(),
                    },
                    ..good.clone()
                },
            ),
            (
                "token_id",
                NewRevocation {
                    scope: RevocationScope::TokenId {
                        token_id: "x".repeat(MAX_NAME_BYTES + 1),
                    },
                    ..good.clone()
                },
            ),
            (
                "created_by",
                NewRevocation {
                    created_by: String::new(),
                    ..good.clone()
                },
            ),
            (
                "reason",
                NewRevocation {
                    reason: "x".repeat(MAX_REASON_BYTES + 1),
                    ..good.clone()
                },
            ),
            (
                "expires_at",
                NewRevocation {
                    expires_at: Some(1_000),
                    ..good.clone()
                },
            ),
        ];
        for (field, new) in cases {
            match new.validate() {
                Err(StoreError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn json_shape() {
        let r = revocation(RevocationScope::IssuerSubject {
            issuer: ISSUER.to_owned(),
            subject: "alice".to_owned(),
        });
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["scope"],
            serde_json::json!({"kind": "issuer_subject", "issuer": ISSUER, "subject": "alice"})
        );
        assert_eq!(json["expires_at"], serde_json::Value::Null);
        let back: Revocation = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);

        let new: NewRevocation = serde_json::from_str(
            r#"{"scope": {"kind": "group", "group": "contractors"}, "reason": "audit",
                "created_by": "admin", "created_at": 5}"#,
        )
        .unwrap();
        assert_eq!(new.expires_at, None);
        let unknown = serde_json::from_str::<RevocationScope>(
            r#"{"kind": "subject", "subject": "a", "issuer": "b"}"#,
        );
        assert!(unknown.is_err(), "unknown fields are refused");
    }
}
