//! A policy on a table holds whatever `search_path` the session sets: a table written without a
//! schema is asked about in every schema the session's paths have named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use postern_testkit::{Stack, StackOptions};

const ARCHIVE_CLOSED: &str = "@id(\"archive-closed\")\nforbid (principal, action == Action::\"read\", resource == Table::\"archive.orders\");\n";

fn refused_by_archive_policy(error: &tokio_postgres::Error, sql: &str) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: {error}"));
    assert_eq!(db.code().code(), "42501", "{sql}: {}", db.message());
    assert!(
        db.message()
            .starts_with("permission denied by policy \"archive-closed\": read on archive.orders"),
        "{sql}: {}",
        db.message()
    );
}

#[tokio::test]
async fn set_search_path_cannot_move_a_name_past_a_table_policy() {
    let stack = Stack::start(StackOptions {
        policies: vec![ARCHIVE_CLOSED.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack
        .direct()
        .await
        .unwrap()
        .batch_execute(
            "CREATE SCHEMA archive;
             CREATE TABLE archive.orders (id int);
             GRANT USAGE ON SCHEMA archive TO reader;
             GRANT SELECT ON archive.orders TO reader;",
        )
        .await
        .unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);

    // In one message, and in two.
    let client = stack.connect("reader", &token).await.unwrap();
    let sql = "SET search_path = archive; SELECT count(*) FROM orders";
    refused_by_archive_policy(&client.simple_query(sql).await.unwrap_err(), sql);
    client
        .simple_query("SET search_path TO archive, public")
        .await
        .unwrap();
    let sql = "SELECT count(*) FROM orders";
    refused_by_archive_policy(&client.simple_query(sql).await.unwrap_err(), sql);
    refused_by_archive_policy(
        &client
            .query("SELECT count(*) FROM orders", &[])
            .await
            .unwrap_err(),
        sql,
    );

    // Through set_config, with a quoted, mixed-case name folded as the server folds it.
    let client = stack.connect("reader", &token).await.unwrap();
    client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap();
    client
        .simple_query("SELECT set_config('search_path', 'ARCHIVE', false)")
        .await
        .unwrap();
    refused_by_archive_policy(&client.simple_query(sql).await.unwrap_err(), sql);

    // A path computed at run time cannot be followed, so it is refused.
    let client = stack.connect("reader", &token).await.unwrap();
    let error = client
        .simple_query("SELECT set_config('search_path', current_user || ',archive', false)")
        .await
        .unwrap_err();
    let db = error.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message()
            .contains("search_path to a value computed at run time"),
        "{}",
        db.message()
    );
    // The schema-qualified public table is unaffected throughout.
    let row = client
        .query_one("SELECT count(*) FROM public.orders", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
}
