//! `ephemeral_user` mode against a real PostgreSQL: each identity and mapped role gets its own
//! login role, valid until the token expires, shared by that identity's sessions and dropped after
//! the last one, whatever it created; long names are shortened with a hash; roles left by an
//! earlier run are swept at start while roles Postern did not make are left alone; and the role
//! cannot change its own password.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{sqlstate, wait_until};
use postern_config::{EphemeralConfig, OnOwnedObjects, UpstreamMode};
use postern_testkit::{Stack, StackOptions};

const ANALYST: &str = "alice@example.com";
const ANALYST_ROLE: &str = "pst_alice_example_com__reader";
const ENGINEER: &str = "erin@example.com";
const ENGINEER_ROLE: &str = "pst_erin_example_com__writer";

async fn ephemeral_stack() -> Stack {
    Stack::start(StackOptions {
        mode: UpstreamMode::EphemeralUser,
        ..StackOptions::default()
    })
    .await
    .expect("the test stack starts")
}

/// A whole-second expiry `ttl` from now.
fn expiry_in(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `subject` in `group` that expires at `exp` (seconds since the epoch).
fn token(stack: &Stack, subject: &str, group: &str, exp: u64) -> String {
    let mut request = stack.request(subject);
    request.groups = vec![group.to_owned()];
    request
        .extra_claims
        .insert("exp".to_owned(), serde_json::json!(exp));
    stack.mint(&request).unwrap()
}

async fn connect(stack: &Stack, role: &str, token: &str) -> tokio_postgres::Client {
    stack
        .connect(role, token)
        .await
        .unwrap_or_else(|e| panic!("{role} connects: {e:?}"))
}

/// `(session_user, current_user)`.
async fn users(client: &tokio_postgres::Client) -> (String, String) {
    let row = client
        .query_one("SELECT session_user::text, current_user::text", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// `rolvaliduntil` in seconds, the marker comment and `rolcanlogin` of `name`, if it exists.
async fn role_row(
    direct: &tokio_postgres::Client,
    name: &str,
) -> Option<(Option<i64>, Option<String>, bool)> {
    direct
        .query_opt(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint, \
                    shobj_description(oid, 'pg_authid'), rolcanlogin \
             FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
}

async fn role_exists(direct: &tokio_postgres::Client, name: &str) -> bool {
    role_row(direct, name).await.is_some()
}

async fn wait_for_role_gone(direct: &tokio_postgres::Client, name: &str) {
    wait_until(&format!("role {name} is dropped"), || async {
        !role_exists(direct, name).await
    })
    .await;
}

/// Waits until `name` has `remaining` backends on the server (the ended sessions' upstream
/// connections have closed), then a moment more for Postern's release of those sessions to run.
async fn wait_for_backends(direct: &tokio_postgres::Client, name: &str, remaining: i64) {
    wait_until(&format!("{name} has {remaining} backends"), || async {
        let row = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&name],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == remaining
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_session_runs_as_its_own_role_until_the_last_one_ends() {
    let stack = ephemeral_stack().await;
    let direct = stack.direct().await.unwrap();
    let exp = expiry_in(Duration::from_secs(600));
    let first = connect(&stack, "reader", &token(&stack, ANALYST, "analysts", exp)).await;

    assert_eq!(
        users(&first).await,
        (ANALYST_ROLE.to_owned(), ANALYST_ROLE.to_owned())
    );
    let orders: i64 = first
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 4);
    let subject: Option<String> = first
        .query_one("SELECT postern.subject()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(subject.as_deref(), Some(ANALYST), "signed claims work");
    // The database enforces the mapped role's privileges itself.
    let error = first
        .execute(
            "INSERT INTO orders (tenant_id, customer, amount) VALUES ('acme', 'x', 1)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "42501", "{error:?}");

    let (valid_until, comment, can_login) = role_row(&direct, ANALYST_ROLE).await.unwrap();
    assert_eq!(valid_until, Some(i64::try_from(exp).unwrap()));
    assert_eq!(
        comment.as_deref(),
        Some(format!("postern ephemeral: {} {ANALYST} reader", stack.idp.issuer()).as_str())
    );
    assert!(can_login);
    let member: bool = direct
        .query_one(
            "SELECT pg_has_role($1, 'reader', 'USAGE')",
            &[&ANALYST_ROLE],
        )
        .await
        .unwrap()
        .get(0);
    assert!(member, "the role inherits the mapped role's privileges");

    // A second session with a later token shares the role and moves its expiry on.
    let later = exp + 300;
    let second = connect(&stack, "reader", &token(&stack, ANALYST, "analysts", later)).await;
    assert_eq!(users(&second).await.0, ANALYST_ROLE);
    let (valid_until, _, _) = role_row(&direct, ANALYST_ROLE).await.unwrap();
    assert_eq!(valid_until, Some(i64::try_from(later).unwrap()));
    // A third with an earlier token does not move it back.
    let third = connect(&stack, "reader", &token(&stack, ANALYST, "analysts", exp)).await;
    let (valid_until, _, _) = role_row(&direct, ANALYST_ROLE).await.unwrap();
    assert_eq!(valid_until, Some(i64::try_from(later).unwrap()));

    // The first two end; the role stays for the third, which keeps working.
    drop(first);
    drop(second);
    wait_for_backends(&direct, ANALYST_ROLE, 1).await;
    let (_, _, can_login) = role_row(&direct, ANALYST_ROLE)
        .await
        .expect("the role survives while a session remains");
    assert!(can_login);
    assert_eq!(users(&third).await.0, ANALYST_ROLE);

    drop(third);
    wait_for_role_gone(&direct, ANALYST_ROLE).await;
}

#[tokio::test]
async fn each_mapped_role_gets_its_own_login_role() {
    let stack = ephemeral_stack().await;
    let direct = stack.direct().await.unwrap();
    let subject = "pat@example.com";
    let mut request = stack.request(subject);
    request.groups = vec!["analysts".to_owned(), "engineers".to_owned()];
    let both = stack.mint(&request).unwrap();
    let reader = connect(&stack, "reader", &both).await;
    let writer = connect(&stack, "writer", &both).await;
    assert_eq!(users(&reader).await.0, "pst_pat_example_com__reader");
    assert_eq!(users(&writer).await.0, "pst_pat_example_com__writer");
    let error = reader
        .execute("DELETE FROM orders WHERE tenant_id = 'none'", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "42501", "{error:?}");
    writer
        .execute("DELETE FROM orders WHERE tenant_id = 'none'", &[])
        .await
        .unwrap();
    let crossed: bool = direct
        .query_one(
            "SELECT pg_has_role('pst_pat_example_com__reader', 'writer', 'USAGE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!crossed, "the reader's login role has no writer rights");
}

#[tokio::test]
async fn long_names_are_shortened_with_a_hash() {
    let stack = ephemeral_stack().await;
    let long = "a".repeat(70);
    let exp = expiry_in(Duration::from_secs(600));
    let one = connect(
        &stack,
        "reader",
        &token(&stack, &format!("{long}1@example.com"), "analysts", exp),
    )
    .await;
    let two = connect(
        &stack,
        "reader",
        &token(&stack, &format!("{long}2@example.com"), "analysts", exp),
    )
    .await;
    let (name_one, name_two) = (users(&one).await.0, users(&two).await.0);
    for name in [&name_one, &name_two] {
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with("pst_aaaaaaaa"), "{name}");
        let (_, hash) = name.rsplit_once('_').unwrap();
        assert_eq!(hash.len(), 12, "{name}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    }
    assert_ne!(name_one, name_two);
    let direct = stack.direct().await.unwrap();
    drop(one);
    drop(two);
    wait_for_role_gone(&direct, &name_one).await;
    wait_for_role_gone(&direct, &name_two).await;
}

#[tokio::test]
async fn a_name_taken_by_another_role_is_left_alone() {
    let stack = ephemeral_stack().await;
    let direct = stack.direct().await.unwrap();
    // Someone else's role with the name alice's would have.
    direct
        .batch_execute(&format!("CREATE ROLE {ANALYST_ROLE} NOLOGIN"))
        .await
        .unwrap();
    // And another identity that sanitises to the same name.
    direct
        .batch_execute(
            "CREATE ROLE pst_bob_example_com__reader NOLOGIN; \
             COMMENT ON ROLE pst_bob_example_com__reader IS 'postern ephemeral: x bob_example.com reader'",
        )
        .await
        .unwrap();
    let exp = expiry_in(Duration::from_secs(600));
    for (subject, taken) in [
        (ANALYST, ANALYST_ROLE),
        ("bob@example.com", "pst_bob_example_com__reader"),
    ] {
        let client = connect(&stack, "reader", &token(&stack, subject, "analysts", exp)).await;
        let name = users(&client).await.0;
        assert_ne!(name, taken);
        assert!(name.starts_with(&format!("{taken}_")), "{name}");
        drop(client);
        wait_for_role_gone(&direct, &name).await;
        assert!(role_exists(&direct, taken).await, "{taken} is untouched");
    }
    let (_, comment, can_login) = role_row(&direct, ANALYST_ROLE).await.unwrap();
    assert_eq!(comment, None);
    assert!(!can_login);
}

/// Has the writer's ephemeral role create a table, ends the session, and returns the table's
/// owner once the role is gone (`None`: the table went with it).
async fn table_after_the_drop(stack: &Stack, table: &str) -> Option<String> {
    let direct = stack.direct().await.unwrap();
    let exp = expiry_in(Duration::from_secs(600));
    let writer = connect(stack, "writer", &token(stack, ENGINEER, "engineers", exp)).await;
    writer
        .batch_execute(&format!(
            "CREATE TABLE public.{table} (id int); \
             INSERT INTO public.{table} VALUES (1); \
             GRANT SELECT ON public.{table} TO reader"
        ))
        .await
        .unwrap();
    let owner: String = direct
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, ENGINEER_ROLE);
    drop(writer);
    wait_for_role_gone(&direct, ENGINEER_ROLE).await;
    direct
        .query_opt(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
            &[&table],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test]
async fn owned_objects_do_not_block_the_drop() {
    let mut stack = ephemeral_stack().await;
    let direct = stack.direct().await.unwrap();
    direct
        .batch_execute("GRANT CREATE ON SCHEMA public TO writer")
        .await
        .unwrap();
    // The writer also grants on its table (a privilege the drop must handle too): GRANT is
    // `dcl`, which Postern's shipped policies leave closed.
    let policy = stack.dir().join("engineers-grant.cedar");
    std::fs::write(
        &policy,
        "@id(\"engineers-grant\")\npermit (principal in Group::\"engineers\", action == Action::\"dcl\", resource);\n",
    )
    .unwrap();
    stack.config.policy.files.push(policy);
    stack.start_proxy().await.unwrap();

    // Default: what the role created goes with it.
    assert_eq!(table_after_the_drop(&stack, "scratch_dropped").await, None);

    // Reassign: it passes to the admin login.
    stack.config.targets.get_mut("demo").unwrap().ephemeral = Some(EphemeralConfig {
        on_owned_objects: OnOwnedObjects::Reassign,
        ..EphemeralConfig::default()
    });
    stack.start_proxy().await.unwrap();
    assert_eq!(
        table_after_the_drop(&stack, "scratch_kept")
            .await
            .as_deref(),
        Some(stack.cluster.superuser())
    );
}

#[tokio::test]
async fn leftovers_are_swept_at_start_and_other_roles_left_alone() {
    let mut stack = ephemeral_stack().await;
    let direct = stack.direct().await.unwrap();
    direct
        .batch_execute(
            "GRANT CREATE ON SCHEMA public TO writer; \
             CREATE ROLE pst_crashed__writer LOGIN IN ROLE writer; \
             COMMENT ON ROLE pst_crashed__writer IS 'postern ephemeral: https://idp crashed writer'; \
             SET ROLE pst_crashed__writer; CREATE TABLE public.left_behind (id int); RESET ROLE; \
             CREATE ROLE pst_unmarked__reader LOGIN; \
             CREATE ROLE pst_other_comment__reader LOGIN; \
             COMMENT ON ROLE pst_other_comment__reader IS 'made by hand'; \
             CREATE ROLE elsewhere__reader LOGIN; \
             COMMENT ON ROLE elsewhere__reader IS 'postern ephemeral: https://idp other reader'",
        )
        .await
        .unwrap();
    stack.start_proxy().await.unwrap();
    // The sweep runs before Postern serves, so it is done once the proxy has started.
    assert!(!role_exists(&direct, "pst_crashed__writer").await);
    let table = direct
        .query_opt(
            "SELECT 1 FROM pg_tables WHERE tablename = 'left_behind'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        table.is_none(),
        "what the leftover owned is dropped with it"
    );
    for untouched in [
        "pst_unmarked__reader",
        "pst_other_comment__reader",
        // Another name prefix: another Postern's.
        "elsewhere__reader",
    ] {
        let (_, _, can_login) = role_row(&direct, untouched)
            .await
            .unwrap_or_else(|| panic!("{untouched} was dropped"));
        assert!(can_login, "{untouched} was altered");
    }
    // A database that cannot be reached does not stop Postern from starting.
    stack.stop_proxy().await;
    let port = stack.config.targets["demo"].port;
    stack.config.targets.get_mut("demo").unwrap().port = 1;
    stack
        .start_proxy()
        .await
        .expect("starts without its database");
    stack.config.targets.get_mut("demo").unwrap().port = port;
}

#[tokio::test]
async fn the_role_cannot_change_its_own_password() {
    let stack = ephemeral_stack().await;
    let direct = stack.direct().await.unwrap();
    let exp = expiry_in(Duration::from_secs(600));
    let client = connect(&stack, "reader", &token(&stack, ANALYST, "analysts", exp)).await;
    let verifier = |row: tokio_postgres::Row| row.get::<_, Option<String>>(0);
    let before = verifier(
        direct
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&ANALYST_ROLE],
            )
            .await
            .unwrap(),
    );
    for statement in [
        "ALTER ROLE CURRENT_USER PASSWORD 'x'".to_owned(),
        format!("ALTER ROLE \"{ANALYST_ROLE}\" PASSWORD 'x'"),
        format!("ALTER USER {ANALYST_ROLE} WITH PASSWORD 'x' VALID UNTIL 'infinity'"),
    ] {
        let error = client.batch_execute(&statement).await.unwrap_err();
        assert_eq!(sqlstate(&error), "42501", "{statement}: {error:?}");
        assert_eq!(
            users(&client).await.0,
            ANALYST_ROLE,
            "the session stays usable"
        );
    }
    let after = verifier(
        direct
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&ANALYST_ROLE],
            )
            .await
            .unwrap(),
    );
    assert!(before.is_some());
    assert_eq!(before, after);
}

#[tokio::test]
async fn sessions_coming_and_going_never_lose_their_role() {
    let stack = ephemeral_stack().await;
    let direct = stack.direct().await.unwrap();
    let exp = expiry_in(Duration::from_secs(600));
    let token = token(&stack, ANALYST, "analysts", exp);

    // A new session while the previous one's release may be in flight.
    for _ in 0..5 {
        let before = connect(&stack, "reader", &token).await;
        drop(before);
        let after = connect(&stack, "reader", &token).await;
        wait_for_backends(&direct, ANALYST_ROLE, 1).await;
        assert!(
            role_exists(&direct, ANALYST_ROLE).await,
            "the role exists while a session uses it"
        );
        assert_eq!(users(&after).await.0, ANALYST_ROLE);
        drop(after);
        wait_for_role_gone(&direct, ANALYST_ROLE).await;
    }

    // Many at once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let config = stack.client_config("reader", &token);
        tasks.spawn(async move {
            for _ in 0..3 {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
                let connection = tokio::spawn(connection);
                let row = client.query_one("SELECT count(*) FROM orders", &[]).await;
                assert_eq!(row.unwrap().get::<_, i64>(0), 4);
                drop(client);
                let _ = connection.await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    wait_for_role_gone(&direct, ANALYST_ROLE).await;
}
