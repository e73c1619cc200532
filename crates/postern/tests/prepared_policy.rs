//! A statement prepared while policy allowed it is decided again when it runs: through the
//! extended protocol (Execute) and through SQL (`EXECUTE name`), after a policy reload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use postern_testkit::{Stack, StackOptions};

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
