//! A statement prepared while policy allowed it is decided again when it runs: through the
//! extended protocol (Execute) and through SQL (`EXECUTE name`), after a policy reload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use crate::common::{
    RawClient, bind_execute, cycle, encode_bind, encode_close_statement, encode_execute, parse,
};
use bytes::BytesMut;
use postern_testkit::{Stack, StackOptions};
use postern_wire::{backend, frontend};

const ALLOW: &str =
    "@id(\"nothing-forbidden\")\nforbid (principal, action, resource) when { false };\n";
const FORBID_WRITES: &str = "@id(\"engineers-frozen\")\nforbid (principal in Group::\"engineers\", action == Action::\"write\", resource);\n";

#[tokio::test]
async fn prepared_statements_are_decided_again_at_execution() {
    let stack = Stack::start(StackOptions {
        policies: vec![ALLOW.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let token = stack.token("erin@example.com", &["engineers"]);
    let client = stack.connect("writer", &token).await.unwrap();
    client
        .batch_execute("PREPARE bump AS UPDATE orders SET amount = amount WHERE id = 1")
        .await
        .unwrap();
    let update = client
        .prepare("UPDATE orders SET amount = amount WHERE id = $1")
        .await
        .unwrap();
    client.batch_execute("EXECUTE bump").await.unwrap();
    client.execute(&update, &[&1i32]).await.unwrap();

    std::fs::write(&stack.config.policy.files[0], FORBID_WRITES).unwrap();
    stack.policies().unwrap().reload().unwrap();

    for error in [
        client.batch_execute("EXECUTE bump").await.unwrap_err(),
        client.execute(&update, &[&1i32]).await.unwrap_err(),
    ] {
        let db = error.as_db_error().expect("a refusal");
        assert_eq!(db.code().code(), "42501");
        assert!(
            db.message().starts_with(
                "permission denied by policy \"engineers-frozen\": write on public.orders"
            ),
            "{}",
            db.message()
        );
        let detail = db.detail().expect("the deciding policy in the detail");
        assert!(
            detail.starts_with("decided by policy \"engineers-frozen\" ("),
            "{detail}"
        );
        assert!(detail.contains("policy-0.cedar:1:1"), "{detail}");
    }
    // Reads still run in the same session.
    let row = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
}

/// The server skips every message after an error up to Sync, so a Close and a Parse it skipped
/// change nothing there: the name still holds its first statement. Postern must decide (and
/// record) an Execute of that name as what the server will run, not as the text it skipped.
#[tokio::test]
async fn a_skipped_close_and_parse_cannot_relabel_a_prepared_statement() {
    let stack = Stack::start(StackOptions {
        policies: vec![ALLOW.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let token = stack.token("erin@example.com", &["engineers"]);
    let (mut client, _) = RawClient::login(stack.addr, "writer", &token).await;
    const WRITE: &str = "UPDATE orders SET amount = amount WHERE id = 1";
    let (errors, _) = cycle(&mut client, parse("s1", WRITE)).await;
    assert!(errors.is_empty(), "{errors:?}");

    // One cycle: a Parse that fails, then Close s1 and Parse s1 of a read, which the server
    // skips.
    let mut skipped = parse("", "SELECT * FROM no_such_table");
    encode_close_statement("s1", &mut skipped);
    skipped.extend_from_slice(&parse("s1", "SELECT 'harmless'"));
    let (errors, _) = cycle(&mut client, skipped).await;
    assert_eq!(errors, ["42P01"]);

    std::fs::write(&stack.config.policy.files[0], FORBID_WRITES).unwrap();
    stack.policies().unwrap().reload().unwrap();

    // s1 still holds the write on the server: its Execute is refused by the new policy.
    let (errors, value) = cycle(&mut client, bind_execute("s1")).await;
    assert_eq!(errors, ["42501"], "{value:?}");

    // The same without waiting for the answers: the Execute is decided before the server has
    // said whether the Close and Parse ran, so with every statement s1 may hold.
    let mut pipelined = parse("", "SELECT * FROM no_such_table");
    encode_close_statement("s1", &mut pipelined);
    pipelined.extend_from_slice(&parse("s1", "SELECT 'harmless'"));
    frontend::encode_sync(&mut pipelined);
    pipelined.extend_from_slice(&bind_execute("s1"));
    frontend::encode_sync(&mut pipelined);
    client.send(&pipelined).await;
    let codes = |messages: Vec<common::Message>| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m.tag == backend::ERROR_RESPONSE)
            .map(|m| m.error().code)
            .collect()
    };
    assert_eq!(codes(client.read_until_ready().await), ["42P01"]);
    let second = client.read_until_ready().await;
    assert!(
        !second.iter().any(|m| m.tag == backend::COMMAND_COMPLETE),
        "the write ran: {second:?}"
    );
    assert_eq!(codes(second), ["42501"]);

    // Close and Parse in the cycle of the Execute run whenever the Execute does: the read is
    // what runs, and it is allowed.
    let mut reused = BytesMut::new();
    encode_close_statement("s1", &mut reused);
    reused.extend_from_slice(&parse("s1", "SELECT 'harmless'"));
    encode_bind("s1", &mut reused);
    encode_execute(&mut reused);
    let (errors, value) = cycle(&mut client, reused).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value.as_deref(), Some("harmless"));

    // The audit trail names what was decided: the write, twice refused, never the skipped read.
    drop(client);
    let refused: Vec<String> = stack
        .audit_events()
        .iter()
        .filter(|e| e["kind"] == "statement" && e["decision"] == "refused")
        .map(|e| e["sql"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused.iter().all(|sql| sql.starts_with("UPDATE orders")),
        "{refused:?}"
    );
}

const FORBID_ORDERS: &str = "@id(\"orders-closed\")\nforbid (principal, action == Action::\"read\", resource == Table::\"public.orders\");\n";

/// A cursor opened while policy allowed its query is decided again at every FETCH, through SQL
/// and through an Execute of the cursor's portal; a cursor on another table keeps working.
#[tokio::test]
async fn open_cursors_are_decided_again_at_fetch() {
    let stack = Stack::start(StackOptions {
        policies: vec![ALLOW.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;
    let errors = |messages: &[common::Message]| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m.tag == backend::ERROR_RESPONSE)
            .map(|m| m.error().code)
            .collect()
    };
    client
        .query(
            "BEGIN; DECLARE c CURSOR FOR SELECT id FROM orders ORDER BY id; \
             DECLARE other CURSOR FOR SELECT 1; FETCH 1 FROM c",
        )
        .await;
    let answers = client.read_until_ready().await;
    assert!(errors(&answers).is_empty(), "{answers:?}");

    std::fs::write(&stack.config.policy.files[0], FORBID_ORDERS).unwrap();
    stack.policies().unwrap().reload().unwrap();

    client.query("FETCH 1 FROM other").await;
    let answers = client.read_until_ready().await;
    assert!(errors(&answers).is_empty(), "{answers:?}");
    client.query("FETCH 1 FROM c").await;
    let answers = client.read_until_ready().await;
    assert_eq!(errors(&answers), ["42501"]);
    let message = answers
        .iter()
        .find(|m| m.tag == backend::ERROR_RESPONSE)
        .unwrap()
        .error()
        .message;
    assert!(message.contains("public.orders"), "{message}");

    // The same cursor through the extended protocol, in a new transaction.
    client.query("ROLLBACK").await;
    client.read_until_ready().await;
    std::fs::write(&stack.config.policy.files[0], ALLOW).unwrap();
    stack.policies().unwrap().reload().unwrap();
    client
        .query("BEGIN; DECLARE c CURSOR FOR SELECT id FROM orders ORDER BY id")
        .await;
    assert!(errors(&client.read_until_ready().await).is_empty());
    std::fs::write(&stack.config.policy.files[0], FORBID_ORDERS).unwrap();
    stack.policies().unwrap().reload().unwrap();
    let mut execute = BytesMut::new();
    common::encode_execute_portal("c", 1, &mut execute);
    let (codes, value) = cycle(&mut client, execute).await;
    assert_eq!(codes, ["42501"], "{value:?}");

    // After the transaction the cursor is gone and forgotten: a new cursor under the same name
    // on another query is decided as itself.
    client.query("ROLLBACK").await;
    client.read_until_ready().await;
    client
        .query("BEGIN; DECLARE c CURSOR FOR SELECT 'not orders'; FETCH 1 FROM c")
        .await;
    let answers = client.read_until_ready().await;
    assert!(errors(&answers).is_empty(), "{answers:?}");
}
