//! The `postern` binary tried as a new user would: quickstart, a development token, psql with the
//! token in PGPASSWORD, Ctrl-C cleaning up; and `postern audit verify` on a real audit log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use postern_testkit::{Stack, StackOptions};

const POSTERN: &str = env!("CARGO_BIN_EXE_postern");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn psql(port: u16, user: &str, token: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=demo user={user} connect_timeout=10"
        ))
        .env("PGPASSWORD", token)
        .env_remove("PGSSLMODE")
        .output()
        .unwrap()
}

fn dev_token(dir: &Path, groups: &str) -> String {
    dev_token_for(dir, "alice@example.com", groups)
}

fn dev_token_for(dir: &Path, subject: &str, groups: &str) -> String {
    let output = Command::new(POSTERN)
        .args([
            "token", "--dev", "--sub", subject, "--groups", groups, "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn quickstart_serves_psql_with_a_dev_token_and_cleans_up_on_ctrl_c() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("qs");
    let port = free_port();
    let admin_port = free_port();
    let mut child = Command::new(POSTERN)
        .args([
            "quickstart",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("quickstart did not get ready");
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert!(
        printed.contains(&format!(
            "psql \"host=127.0.0.1 port={port} dbname=demo user=reader\""
        )),
        "{printed}"
    );
    assert!(printed.contains("token --dev"), "{printed}");

    let token = dev_token(&dir, "analysts");
    let output = psql(
        port,
        "reader",
        &token,
        "SELECT current_user, postern.subject(), count(*) FROM orders",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "reader|alice@example.com|4"
    );

    let output = psql(port, "reader", &token, "DELETE FROM orders");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("permission denied by policy \"analysts-read-only\": write on public.orders is not allowed for alice@example.com as reader"));

    let output = psql(port, "writer", &token, "SELECT 1");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("may not assume role \"writer\"")
            && stderr.contains("roles you may use: reader"),
        "{stderr}"
    );

    // An operator lists the live sessions as the instructions say (none is open now): the CLI
    // finds the quickstart's admin API (on a port of its own here) from --dir alone.
    let operator = dev_token(&dir, "operators");
    let output = Command::new(POSTERN)
        .args(["sessions", "--dir"])
        .arg(&dir)
        .env("POSTERN_TOKEN", &operator)
        .env_remove("POSTERN_ADMIN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("(0 sessions)"));
    assert!(
        printed.contains(&format!(
            "sessions --dir {}",
            dir.canonicalize().unwrap().display()
        )),
        "{printed}"
    );
    assert!(printed.contains("/console/"), "{printed}");

    // The demo's DELETE waits for a dba, as the instructions show: psql prints the notice and
    // waits; `postern approve` as another person lets it run.
    let engineer = dev_token_for(&dir, "erin@example.com", "engineers");
    let deleting = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("DELETE FROM orders WHERE customer = 'Alan Turing'")
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=demo user=writer connect_timeout=10"
        ))
        .env("PGPASSWORD", &engineer)
        .env_remove("PGSSLMODE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dba = dev_token_for(&dir, "dana@example.com", "dbas");
    let postern = |args: &[&str], token: &str| {
        let output = Command::new(POSTERN)
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .env("POSTERN_TOKEN", token)
            .env_remove("POSTERN_ADMIN")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        let (ok, stdout, stderr) = postern(&["requests"], &dba);
        assert!(ok, "{stderr}");
        let id = stdout
            .lines()
            .find(|line| line.contains("erin@example.com"))
            .and_then(|line| line.split_whitespace().next().map(str::to_owned));
        if let Some(id) = id {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pending request: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The requester cannot approve their own request, even if they were a dba.
    let (ok, _, stderr) = postern(
        &["approve", &id],
        &dev_token_for(&dir, "erin@example.com", "dbas"),
    );
    assert!(!ok);
    assert!(stderr.contains("own request"), "{stderr}");
    let (ok, stdout, stderr) = postern(&["approve", &id, "--comment", "duplicate"], &dba);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("request {id} approved")),
        "{stdout}"
    );
    let output = deleting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "NOTICE:  statement held for approval: request {id}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("postern approve"), "{stderr}");
    let output = psql(port, "reader", &token, "SELECT count(*) FROM orders");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "3");

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let exit = done
        .recv_timeout(Duration::from_secs(60))
        .expect("quickstart did not stop on Ctrl-C")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!dir.exists(), "quickstart left {} behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "Postern still listening"
    );
}

#[test]
fn token_without_a_quickstart_says_what_to_do() {
    let scratch = tempfile::tempdir().unwrap();
    let output = Command::new(POSTERN)
        .args(["token", "--dev", "--sub", "a@example.com", "--dir"])
        .arg(scratch.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("start `postern quickstart` first"));
}

#[tokio::test]
async fn audit_verify_passes_then_names_the_event_after_a_changed_byte() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let token = stack.token("alice@example.com", &["analysts"]);
    let client = stack.connect("reader", &token).await.unwrap();
    for _ in 0..3 {
        client
            .simple_query("SELECT count(*) FROM orders")
            .await
            .unwrap();
    }
    drop(client);
    stack.stop_proxy().await;
    let path = stack.audit_path();

    let output = Command::new(POSTERN)
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: "));

    // Change one byte inside the third event: "alice" becomes "alicf".
    let mut bytes = std::fs::read(&path).unwrap();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let third = &bytes[line_starts[2]..line_starts[3]];
    let offset = line_starts[2] + find(third, b"alice@example.com").unwrap() + 4;
    bytes[offset] = b'f';
    std::fs::write(&path, &bytes).unwrap();

    let output = Command::new(POSTERN)
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("event 4 (line 4): prev does not match the hash of event 3"),
        "{stdout}"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
