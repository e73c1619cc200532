//! The web console in a real browser: a writer's DELETE is held for approval; headless
//! Chromium (driven by Playwright, `tests/console/approve.mjs`) signs in to the console through
//! the development identity provider as a member of `dbas`, finds the request and approves it;
//! the writer's DELETE then completes. The screenshot is left in
//! `target/console-screenshot.png`.
//!
//! Needs Node.js 20+ (what playwright-core asks for), a Chromium (Debian: `apt-get install -y chromium`; or set
//! `POSTERN_CHROMIUM` to a Chromium or Chrome executable) and `npm ci --prefix
//! crates/postern/tests/console`. Without them the test fails and says what to install.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_testkit::{Stack, StackOptions};
use tokio_postgres::SimpleQueryMessage;

/// Writers may write, but a DELETE needs one approval from group `dbas`, whose members may
/// approve.
const POLICY: &str = r#"
@id("connect") permit (principal, action in [Action::"connect"], resource);
@id("read") permit (principal, action == Action::"read", resource);
@id("writes") permit (principal, action == Action::"write", resource)
    unless { context.command == "DELETE" };
@id("deletes-need-a-dba") @approval("dbas")
permit (principal, action == Action::"write", resource) when { context.command == "DELETE" };
@id("approvers") permit (principal in Group::"dbas", action == Action::"approve", resource);
"#;

const SCRIPT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console");

/// What the browser test needs installed; `Err` says what is missing and how to get it.
struct Tools {
    node: PathBuf,
    chromium: PathBuf,
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn tools() -> Result<Tools, String> {
    let mut missing = Vec::new();
    let node = std::env::var_os("POSTERN_NODE")
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .or_else(|| on_path(&["node", "nodejs"]));
    let version = node.as_ref().and_then(|node| {
        let output = std::process::Command::new(node)
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.trim()
            .trim_start_matches('v')
            .split('.')
            .next()?
            .parse::<u32>()
            .ok()
    });
    if version.is_none_or(|major| major < 20) {
        missing.push(
            "Node.js 20 or later (Debian 12's own nodejs is 18: use NodeSource's or Debian 13's \
             `nodejs` and `npm`; or set POSTERN_NODE)",
        );
    }
    let chromium = std::env::var_os("POSTERN_CHROMIUM")
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .or_else(|| {
            on_path(&[
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ])
        });
    if chromium.is_none() {
        missing.push(
            "Chromium (Debian: `apt-get install -y chromium`; or set POSTERN_CHROMIUM to a \
             Chromium or Chrome executable)",
        );
    }
    if !Path::new(SCRIPT_DIR)
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("playwright-core (`npm ci --prefix crates/postern/tests/console`)");
    }
    match (node, chromium) {
        (Some(node), Some(chromium)) if missing.is_empty() => Ok(Tools { node, chromium }),
        _ => Err(format!(
            "the console browser test needs: {}",
            missing.join("; ")
        )),
    }
}

/// `target/` of the workspace (or `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

#[tokio::test]
async fn an_approver_approves_a_held_delete_in_the_console() {
    let tools = tools().unwrap_or_else(|missing| panic!("{missing}"));
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    // The demo stack, then Postern run here with the console on its admin API.
    let mut stack = Stack::start(StackOptions {
        policies: vec![POLICY.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.stop_proxy().await;
    stack.config.policy.include_defaults = false;
    stack.config.approvals.wait = Duration::from_secs(120);
    stack.config.approvals.keepalive = Duration::from_secs(1);
    stack.config.listen.address = "127.0.0.1:0".parse().unwrap();
    let proxy = postern_proxy::Proxy::bind(&stack.config).await.unwrap();
    stack.addr = proxy.local_addr().unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let console =
        postern_admin::ConsoleOptions::new(stack.idp.issuer(), "postern-console", admin_addr);
    let shutdown = proxy.shutdown_handle();
    tokio::spawn(postern_admin::serve_with(
        admin,
        proxy.control(),
        Some(console),
        shutdown.clone(),
    ));
    tokio::spawn(proxy.serve());

    // The writer's DELETE waits for a decision.
    let writer = stack.token("wes@example.com", &["engineers"]);
    let client = stack.connect("writer", &writer).await.unwrap();
    let delete = tokio::spawn(async move {
        client
            .simple_query(
                "-- reason: INC-42 duplicate order\n\
                 DELETE FROM orders WHERE customer = 'Alan Turing'",
            )
            .await
    });

    // The approver, in the browser.
    let screenshot = target_dir().join("console-screenshot.png");
    let _ = std::fs::create_dir_all(target_dir());
    let run = tokio::process::Command::new(&tools.node)
        .arg("approve.mjs")
        .current_dir(SCRIPT_DIR)
        .env("CONSOLE_URL", format!("http://{admin_addr}/console/"))
        .env("CHROMIUM", &tools.chromium)
        .env("APPROVER_SUBJECT", "dana@example.com")
        .env("APPROVER_GROUPS", "dbas")
        .env("REQUESTER_SUBJECT", "wes@example.com")
        .env("STATEMENT_FRAGMENT", "Alan Turing")
        .env("SCREENSHOT", &screenshot)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser script finishes within two minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );

    // The DELETE ran, once.
    let result = tokio::time::timeout(common::NETWORK_WAIT, delete)
        .await
        .expect("the DELETE completes once approved")
        .unwrap()
        .expect("the DELETE succeeds");
    let deleted = result.iter().find_map(|message| match message {
        SimpleQueryMessage::CommandComplete(rows) => Some(*rows),
        _ => None,
    });
    assert_eq!(deleted, Some(1), "{seen}");

    // The audit trail names the approver who decided in the console.
    let events = stack.audit_events();
    let request = seen["approved"].as_str().unwrap();
    assert!(
        events
            .iter()
            .any(|event| event.to_string().contains(request)
                && event.to_string().contains("dana@example.com")),
        "no audit event names the request {request} and its approver"
    );
    shutdown.cancel();
}
