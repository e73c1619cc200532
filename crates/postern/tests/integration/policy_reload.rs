//! Replacing the policy set while sessions run statements: after `reload()` returns, every
//! session's next write is decided by the new set, and no session is dropped; a set that does not
//! load is refused with its file and line, and the one in force stays; and the file watcher
//! reloads on its own when a policy file changes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::common::{assert_db_error, wait_until};
use postern_config::UpstreamMode;
use postern_testkit::{Stack, StackOptions};

const SESSIONS: usize = 6;

/// What the file says first: a policy that forbids nothing anyone here does.
const OPEN: &str = r#"
@id("contractors-read-only")
forbid (principal in Group::"contractors", action in [Action::"write", Action::"ddl"], resource);
"#;

/// The change: engineers may no longer write.
const FROZEN: &str = r#"
@id("contractors-read-only")
forbid (principal in Group::"contractors", action in [Action::"write", Action::"ddl"], resource);

@id("change-freeze")
forbid (principal in Group::"engineers", action in [Action::"write"], resource);
"#;

/// A typo: `context.sourceip` is not an attribute of the context.
const TYPO: &str = r#"
@id("change-freeze")
forbid (principal in Group::"engineers", action in [Action::"write"], resource);

@id("office-only")
forbid (principal, action, resource)
unless { context.sourceip.isInRange(ip("10.0.0.0/8")) };
"#;

/// After the freeze is lifted by editing the file.
const THAWED: &str = r#"
@id("contractors-read-only")
forbid (principal in Group::"contractors", action in [Action::"write", Action::"ddl"], resource);

@id("no-ddl-during-thaw")
forbid (principal in Group::"engineers", action == Action::"ddl", resource);
"#;

const FREEZE_REFUSAL: &str =
    "permission denied by policy \"change-freeze\": write on public.orders";

async fn stack(mode: UpstreamMode) -> Stack {
    Stack::start(StackOptions {
        mode,
        policies: vec![OPEN.to_owned()],
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts")
}

both_modes!(reload_under_load);

/// One write, alternating between the protocols.
async fn write(client: &tokio_postgres::Client, n: usize) -> Result<(), tokio_postgres::Error> {
    if n.is_multiple_of(2) {
        client
            .simple_query("UPDATE orders SET amount = amount WHERE id = 1")
            .await
            .map(|_| ())
    } else {
        client
            .execute("UPDATE orders SET amount = amount WHERE id = $1", &[&1i32])
            .await
            .map(|_| ())
    }
}

/// What one session saw while the policy changed under it.
#[derive(Debug, Default)]
struct Tally {
    /// Writes sent before `reload()` returned that ran.
    ran_before: usize,
    /// Writes sent before `reload()` returned that the new set refused (they raced it).
    refused_before: usize,
    /// Writes sent after `reload()` returned, all refused.
    refused_after: usize,
}

async fn reload_under_load(mode: UpstreamMode) {
    let stack = stack(mode).await;
    let policy_file = stack.config.policy.files[0].clone();
    let reloaded = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for n in 0..SESSIONS {
        let token = stack.token(&format!("engineer-{n}@example.com"), &["engineers"]);
        clients.push(Arc::new(stack.connect("writer", &token).await.unwrap()));
    }

    let mut tasks = Vec::new();
    for client in &clients {
        let (client, reloaded, stop, started) = (
            Arc::clone(client),
            Arc::clone(&reloaded),
            Arc::clone(&stop),
            Arc::clone(&started),
        );
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut n = 0;
            loop {
                // Sampled before the write is sent: if the reload had returned by then, the new
                // set decides this write.
                let after = reloaded.load(Ordering::SeqCst);
                let result = write(&client, n).await;
                n += 1;
                if n == 1 {
                    started.fetch_add(1, Ordering::SeqCst);
                }
                match (after, result) {
                    (false, Ok(())) => tally.ran_before += 1,
                    (true, Ok(())) => panic!("a write after the reload ran"),
                    (after, Err(error)) => {
                        assert_db_error(&error, "42501", FREEZE_REFUSAL);
                        if after {
                            tally.refused_after += 1;
                        } else {
                            tally.refused_before += 1;
                        }
                    }
                }
                // Reads keep running, whatever the policy says about writes.
                client
                    .simple_query("SELECT count(*) FROM orders")
                    .await
                    .unwrap();
                if stop.load(Ordering::SeqCst) && tally.refused_after >= 2 {
                    return tally;
                }
            }
        }));
    }

    wait_until("every session is writing", || {
        let started = Arc::clone(&started);
        async move { started.load(Ordering::SeqCst) == SESSIONS }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    std::fs::write(&policy_file, FROZEN).unwrap();
    let count = stack
        .policies()
        .unwrap()
        .reload()
        .expect("the frozen set loads");
    reloaded.store(true, Ordering::SeqCst);
    assert!(count > 2, "{count} policies");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let tally = tokio::time::timeout(common::NETWORK_WAIT, task)
            .await
            .expect("the session loop ends")
            .expect("the session loop saw only what it expected");
        assert!(tally.ran_before > 0, "{tally:?}");
        assert!(tally.refused_after >= 2, "{tally:?}");
    }
    // No session was dropped, and each is still its role.
    for client in &clients {
        client.simple_query("SELECT 1").await.unwrap();
        assert_eq!(common::current_user(client).await, "writer");
    }
    // A session opened after the reload is under the new set from its first statement.
    let late = stack
        .connect("writer", &stack.token("late@example.com", &["engineers"]))
        .await
        .unwrap();
    let error = write(&late, 0).await.unwrap_err();
    assert_db_error(&error, "42501", FREEZE_REFUSAL);
    let refusals = stack
        .audit_events()
        .into_iter()
        .filter(|e| e["kind"] == "statement" && e["decision"] == "refused")
        .collect::<Vec<_>>();
    assert!(!refusals.is_empty());
    for event in &refusals {
        assert_eq!(
            event["policies"],
            serde_json::json!(["change-freeze"]),
            "{event}"
        );
    }

    // A set that does not load: the error names the file and the line, and the frozen set stays.
    std::fs::write(&policy_file, TYPO).unwrap();
    let error = stack
        .policies()
        .unwrap()
        .reload()
        .expect_err("a policy with a typo does not load")
        .to_string();
    let file = policy_file.display().to_string();
    assert!(error.contains(&format!("{file}:7:")), "{error}");
    assert!(error.contains("sourceip"), "{error}");
    let client = &clients[0];
    let error2 = write(client, 0).await.unwrap_err();
    assert_db_error(&error2, "42501", FREEZE_REFUSAL);
    let error2 = write(client, 1).await.unwrap_err();
    assert_db_error(&error2, "42501", FREEZE_REFUSAL);
    client
        .simple_query("SELECT count(*) FROM orders")
        .await
        .unwrap();
    // The watcher saw the typo too, and refused it the same way: still frozen.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_db_error(
        &write(client, 0).await.unwrap_err(),
        "42501",
        FREEZE_REFUSAL,
    );
    let contractor = stack
        .connect(
            "writer",
            &stack.token("carl@example.com", &["engineers", "contractors"]),
        )
        .await
        .unwrap();
    assert_db_error(
        &write(&contractor, 0).await.unwrap_err(),
        "42501",
        "permission denied by policy",
    );

    // The watcher: the file changes and nobody calls reload(); the sessions follow.
    std::fs::write(&policy_file, THAWED).unwrap();
    wait_until("the watcher puts the thawed set in force", || async {
        write(client, 0).await.is_ok()
    })
    .await;
    for (n, client) in clients.iter().enumerate() {
        write(client, n).await.unwrap();
        let error = client
            .simple_query("CREATE TABLE thaw_check (id int)")
            .await
            .unwrap_err();
        assert_db_error(
            &error,
            "42501",
            "permission denied by policy \"no-ddl-during-thaw\"",
        );
    }
    // The contractor is read-only under every set.
    let error = write(&contractor, 1).await.unwrap_err();
    assert_db_error(
        &error,
        "42501",
        "permission denied by policy \"contractors-read-only\"",
    );
}
