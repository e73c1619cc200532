#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use postern_testkit::{Stack, StackOptions};

#[tokio::test]
async fn reader_connects_and_reads() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    let client = stack.connect("reader", &token).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text, postern.subject()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "reader");
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("alice@example.com")
    );
    let rows = client
        .simple_query("SELECT count(*) FROM orders; SELECT 1")
        .await
        .unwrap();
    assert!(!rows.is_empty());
    let err = client.simple_query("SET ROLE postgres").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{err}");
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "reader");
}
