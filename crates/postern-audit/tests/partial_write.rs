//! A genuinely partial write (the kernel writes what fits below a file size limit) is cut back to
//! the last complete event. In a test binary of its own: the child process it forks would
//! otherwise briefly inherit other tests' open audit files, and with them their locks.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on failure, as the tests do"
)]

use std::path::Path;

use postern_audit::{AuditLog, verify};
use serde_json::{Map, Value, json};

fn event(n: u64) -> Map<String, Value> {
    match json!({
        "kind": "statement",
        "session": format!("s-{}", n % 7),
        "sql": format!("SELECT {n} FROM orders"),
        "decision": "allow",
    }) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Environment variable that turns [`partial_write_child`] on; holds the directory to write in.
const CHILD_DIR: &str = "POSTERN_AUDIT_PARTIAL_WRITE_DIR";

/// Runs [`partial_write_child`] under a file size limit (`ulimit -f`, with `SIGXFSZ` ignored so
/// writes past it fail with `EFBIG` instead of killing the process). The kernel writes what fits
/// below the limit, so the failing write is a genuinely partial one.
#[test]
fn a_partial_write_is_cut_back_to_the_last_complete_event() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 8 && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "partial_write_child", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
#[ignore = "run by a_partial_write_is_cut_back_to_the_last_complete_event under a file size limit"]
async fn partial_write_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let limit: u64 = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .expect("a finite file size limit");
    let path = Path::new(&dir).join("audit.jsonl");
    let log = AuditLog::open(&path).await.unwrap();

    let mut receipts = Vec::new();
    let error = loop {
        match log.record(event(receipts.len() as u64)).await {
            Ok(receipt) => receipts.push(receipt),
            Err(error) => break error,
        }
        assert!(receipts.len() < 10_000, "the file size limit never hit");
    };
    assert_eq!(error.label(), "write_failed", "{error}");

    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len < limit, "the failed write was partial: {len} < {limit}");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'), "no partial line left");
    let report = verify(&path).unwrap();
    assert_eq!(report.events, receipts.len() as u64);
    assert_eq!(report.last_hash, receipts.last().unwrap().hash);

    // Still failing, still clean, chain not advanced.
    assert_eq!(
        log.record(event(0)).await.unwrap_err().label(),
        "write_failed"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    log.close().await;
    // And the file continues where it was.
    drop(AuditLog::open(&path).await.unwrap());
    assert_eq!(verify(&path).unwrap().events, receipts.len() as u64);
}
