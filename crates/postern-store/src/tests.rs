//! The store against real SQLite files in a temporary directory.

use std::path::Path;

use super::*;

const ADMIN: &str = "admin@example.com";
const ISSUER: &str = "https://idp.example.com";

fn subject(name: &str) -> RevocationScope {
    RevocationScope::Subject {
        subject: name.to_owned(),
    }
}

fn new(scope: RevocationScope, created_at: i64, expires_at: Option<i64>) -> NewRevocation {
    NewRevocation {
        scope,
        reason: "left the company".to_owned(),
        created_by: ADMIN.to_owned(),
        created_at,
        expires_at,
    }
}

fn ids(revocations: &[Revocation]) -> Vec<&str> {
    revocations.iter().map(|r| r.id.as_str()).collect()
}

async fn open(path: &Path) -> Store {
    match Store::open(path).await {
        Ok(store) => store,
        Err(error) => panic!("open {}: {error}", path.display()),
    }
}

#[tokio::test]
async fn add_list_lift_and_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("state.db")).await;
    assert!(store.all_revocations().await.unwrap().is_empty());

    let forever = store
        .add_revocation(new(subject("alice"), 100, None))
        .await
        .unwrap();
    let group = RevocationScope::Group {
        group: "contractors".to_owned(),
    };
    let brief = store
        .add_revocation(new(group, 110, Some(200)))
        .await
        .unwrap();
    let pair = RevocationScope::IssuerSubject {
        issuer: ISSUER.to_owned(),
        subject: "bob".to_owned(),
    };
    let bob = store
        .add_revocation(new(pair.clone(), 120, None))
        .await
        .unwrap();

    assert_eq!(forever.id.len(), 12);
    assert!(
        forever
            .id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_ne!(forever.id, brief.id);
    assert_eq!(bob.scope, pair);
    assert_eq!(bob.created_by, ADMIN);
    assert_eq!(bob.reason, "left the company");
    assert_eq!(
        (bob.created_at, bob.lifted_at, bob.lifted_by.as_deref()),
        (120, None, None)
    );
    assert_eq!(brief.expires_at, Some(200));

    let active = store.active_revocations(150).await.unwrap();
    assert_eq!(ids(&active), [&forever.id, &brief.id, &bob.id]);
    assert_eq!(active[2], bob);

    // Lapses at expires_at, by itself.
    let active = store.active_revocations(200).await.unwrap();
    assert_eq!(ids(&active), [&forever.id, &bob.id]);

    let lifted = store
        .lift_revocation(&bob.id, "carol", 300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lifted.lifted_at, Some(300));
    assert_eq!(lifted.lifted_by.as_deref(), Some("carol"));
    assert_eq!(lifted.scope, pair);
    assert!(
        store
            .lift_revocation(&bob.id, "carol", 301)
            .await
            .unwrap()
            .is_none(),
        "twice"
    );
    assert!(
        store
            .lift_revocation("000000000000", "carol", 301)
            .await
            .unwrap()
            .is_none()
    );

    let active = store.active_revocations(300).await.unwrap();
    assert_eq!(ids(&active), [&forever.id]);
    let all = store.all_revocations().await.unwrap();
    assert_eq!(ids(&all), [&forever.id, &brief.id, &bob.id]);
    assert_eq!(all[2], lifted);

    let set = store.revocation_set(300).await.unwrap();
    assert_eq!(
        set.covering("any", "alice", &[], None, 300).map(|r| &r.id),
        Some(&forever.id)
    );
    assert!(set.covering(ISSUER, "bob", &[], None, 300).is_none());
}

#[tokio::test]
async fn invalid_revocations_are_refused_before_sql() {
    let store = Store::open_in_memory().await.unwrap();
    let error = store
        .add_revocation(new(subject(""), 100, None))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "invalid");
    assert!(error.to_string().contains("subject"), "{error}");
    let error = store.lift_revocation("x", " ", 1).await.unwrap_err();
    assert_eq!(error.kind(), "invalid");
    assert!(store.all_revocations().await.unwrap().is_empty());
}

#[tokio::test]
async fn revocations_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path).await;
    let kept = store
        .add_revocation(new(subject("alice"), 100, None))
        .await
        .unwrap();
    let token = RevocationScope::TokenId {
        token_id: "jti-1".to_owned(),
    };
    let lifted = store
        .add_revocation(new(token, 101, Some(10_000)))
        .await
        .unwrap();
    let lifted = store
        .lift_revocation(&lifted.id, "carol", 102)
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    drop(store);

    let store = open(&path).await;
    assert_eq!(
        store.active_revocations(200).await.unwrap(),
        std::slice::from_ref(&kept)
    );
    assert_eq!(store.all_revocations().await.unwrap(), [kept, lifted]);
}

#[tokio::test]
async fn two_stores_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // Both open a new file at once: the migration runs once, under the write lock.
    let (first, second) = tokio::join!(Store::open(&path), Store::open(&path));
    let (first, second) = (first.unwrap(), second.unwrap());

    let made = first
        .add_revocation(new(subject("alice"), 100, None))
        .await
        .unwrap();
    assert_eq!(
        second.active_revocations(100).await.unwrap(),
        std::slice::from_ref(&made)
    );

    let lifted = second
        .lift_revocation(&made.id, "carol", 150)
        .await
        .unwrap()
        .unwrap();
    assert!(first.active_revocations(150).await.unwrap().is_empty());
    assert_eq!(first.all_revocations().await.unwrap(), [lifted]);
    assert!(
        first
            .lift_revocation(&made.id, "dave", 160)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn creates_the_directory_and_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/state.db");
    let store = open(&path).await;
    assert_eq!(store.path(), path);
    store
        .add_revocation(new(subject("alice"), 100, None))
        .await
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("nested/deeper")), 0o700);
        let wal = dir.path().join("nested/deeper/state.db-wal");
        assert_eq!(
            mode(&wal),
            0o600,
            "SQLite copies the file's mode to the WAL"
        );
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, "[store]\npath = \"state.db\"\n".repeat(200)).unwrap();
    let error = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not an SQLite database"), "{message}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("[store]"), "the file is left as it was");
}

#[tokio::test]
async fn another_programs_database_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let error = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(error, StoreError::ForeignDatabase { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("invoices"), "{error}");
}

#[tokio::test]
async fn a_store_migrated_by_a_newer_postern_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path).await;
    sqlx::query("INSERT INTO postern_schema (version, description, applied_at) VALUES (?, ?, 0)")
        .bind(migrate::latest_version() + 1)
        .bind("from the future")
        .execute(&store.pool)
        .await
        .unwrap();
    store.close().await;

    let error = Store::open(&path).await.unwrap_err();
    assert!(matches!(error, StoreError::TooNew { .. }), "{error:?}");
    assert_eq!(error.kind(), "too_new");
}

#[tokio::test]
async fn reopening_does_not_apply_migrations_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    open(&path).await.close().await;
    let store = open(&path).await;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM postern_schema ORDER BY version")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    let each_once: Vec<i64> = (1..=migrate::latest_version()).collect();
    assert_eq!(versions, each_once);
}

#[tokio::test]
async fn the_file_is_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("state.db")).await;
    let mut conn = store.pool.acquire().await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 2, "FULL");
}

#[tokio::test]
async fn in_memory_store_works_and_is_shared_by_clones() {
    let store = Store::open_in_memory().await.unwrap();
    let clone = store.clone();
    let made = store
        .add_revocation(new(subject("alice"), 1, None))
        .await
        .unwrap();
    assert_eq!(clone.all_revocations().await.unwrap(), [made]);
    assert_eq!(store.path(), Path::new(":memory:"));
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<RevocationSet>();
}

#[test]
fn unix_seconds_around_the_epoch() {
    use std::time::Duration;
    assert_eq!(unix_seconds(UNIX_EPOCH), 0);
    assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
    assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
}

mod approvals;
