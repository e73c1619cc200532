//! The audit log against a real file system: chain, verification, restarts, concurrency and the
//! fail-closed paths (full disk, file removed, partial writes, corrupt tails).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on failure, as the tests do"
)]

use std::path::{Path, PathBuf};

use postern_audit::{
    AuditError, AuditLog, AuditOptions, Durability, GENESIS_PREV, Problem, VerifyError, verify,
};
use serde_json::{Map, Value, json};

fn event(n: u64) -> Map<String, Value> {
    match json!({
        "kind": "statement",
        "session": format!("s-{}", n % 7),
        "identity": {"issuer": "https://idp.example", "subject": "alice"},
        "sql": format!("SELECT {n} FROM orders WHERE note = 'it''s \"quoted\" ✓'"),
        "decision": "allow",
    }) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.jsonl")
}

async fn write_events(path: &Path, count: u64) -> Vec<postern_audit::EventReceipt> {
    let log = AuditLog::open(path).await.unwrap();
    let mut receipts = Vec::new();
    for n in 0..count {
        receipts.push(log.record(event(n)).await.unwrap());
    }
    log.close().await;
    receipts
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[tokio::test]
async fn chain_is_written_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let receipts = write_events(&path, 10).await;

    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let report = verify(&path).unwrap();
    assert_eq!(report.events, 10);
    assert_eq!((report.first_seq, report.last_seq), (1, 10));
    assert_eq!(report.last_hash, receipts[9].hash);

    let first: Value = serde_json::from_slice(&lines(&path)[0]).unwrap();
    assert_eq!(first["prev"], GENESIS_PREV);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["identity"]["subject"], "alice");
    assert!(first.get("hash").is_none());
    let time = first["time"].as_str().unwrap();
    assert_eq!(time, receipts[0].time);
    // 2025-01-02T03:04:05.123456Z
    assert_eq!(time.len(), 27, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
}

#[tokio::test]
async fn changing_any_byte_of_a_middle_line_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_events(&path, 9).await;
    let original = lines(&path);
    let tampered_path = dir.path().join("tampered.jsonl");

    for index in 0..original[4].len() {
        let mut tampered = original.clone();
        let byte = &mut tampered[4][index];
        *byte = if *byte == b'1' { b'2' } else { b'1' };
        std::fs::write(&tampered_path, tampered.concat()).unwrap();

        let error = verify(&tampered_path).unwrap_err();
        let message = error.to_string();
        let VerifyError::Broken { line, .. } = error else {
            panic!("unexpected {message}");
        };
        assert!(
            line == 5 || line == 6,
            "byte {index} of line 5 changed, but verify reported: {message}"
        );
        assert!(message.contains(&format!("line {line}")), "{message}");
    }
}

#[tokio::test]
async fn verify_messages_name_the_event_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_events(&path, 20).await;
    let original = lines(&path);
    let tampered_path = dir.path().join("tampered.jsonl");

    // An edit that keeps the line valid JSON shows at the next event.
    let mut tampered = original.clone();
    tampered[15] = String::from_utf8(tampered[15].clone())
        .unwrap()
        .replace("allow", "ALLOW")
        .into_bytes();
    std::fs::write(&tampered_path, tampered.concat()).unwrap();
    assert_eq!(
        verify(&tampered_path).unwrap_err().to_string(),
        "event 17 (line 17): prev does not match the hash of event 16 — the log was changed at or before line 16"
    );

    let mut tampered = original.clone();
    tampered[4] = b"{not json\n".to_vec();
    std::fs::write(&tampered_path, tampered.concat()).unwrap();
    let message = verify(&tampered_path).unwrap_err().to_string();
    assert!(message.starts_with("line 5 is not valid JSON"), "{message}");

    // A cut in the middle of the last line.
    let mut bytes = original.concat();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&tampered_path, bytes).unwrap();
    let message = verify(&tampered_path).unwrap_err().to_string();
    assert!(message.starts_with("line 20 is incomplete"), "{message}");

    // The first event must link to 64 zeros.
    let mut tampered = original.clone();
    tampered[0] = String::from_utf8(tampered[0].clone())
        .unwrap()
        .replace(GENESIS_PREV, &"1".repeat(64))
        .into_bytes();
    std::fs::write(&tampered_path, tampered.concat()).unwrap();
    assert!(matches!(
        verify(&tampered_path).unwrap_err(),
        VerifyError::Broken {
            line: 1,
            seq: Some(1),
            problem: Problem::GenesisPrev
        }
    ));

    assert!(matches!(
        verify(&dir.path().join("missing.jsonl")),
        Err(VerifyError::Read { .. })
    ));
}

#[tokio::test]
async fn deleting_a_line_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_events(&path, 9).await;
    let mut tampered = lines(&path);
    tampered.remove(4);
    std::fs::write(&path, tampered.concat()).unwrap();

    let error = verify(&path).unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::Broken {
                line: 5,
                seq: Some(6),
                problem: Problem::SeqGap {
                    expected: 5,
                    found: 6
                }
            }
        ),
        "{error}"
    );

    // Renumbering the rest does not help: the chain still breaks at the gap.
    let lines_before_renumbering = lines(&path);
    let renumbered: Vec<Vec<u8>> = lines(&path)
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let mut value: Value = serde_json::from_slice(&line).unwrap();
            value["seq"] = json!(i + 1);
            let mut line = serde_json::to_vec(&value).unwrap();
            line.push(b'\n');
            line
        })
        .collect();
    // Re-serialising keeps each line's bytes only if serde_json keeps key order (its
    // `preserve_order` feature, which another crate in the build may turn on): then the chain
    // breaks exactly at the gap, otherwise already at line 2.
    let unchanged_before_gap = renumbered[..4] == lines_before_renumbering[..4];
    std::fs::write(&path, renumbered.concat()).unwrap();
    let message = verify(&path).unwrap_err().to_string();
    let expected = if unchanged_before_gap {
        "event 5 (line 5): prev does not match"
    } else {
        "event 2 (line 2): prev does not match"
    };
    assert!(message.starts_with(expected), "{message}");
}

#[tokio::test]
async fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_events(&path, 3).await;
    let receipts = write_events(&path, 4).await;
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    let report = verify(&path).unwrap();
    assert_eq!(report.events, 7);
    assert_eq!(report.last_hash, receipts[3].hash);
}

#[tokio::test]
async fn a_file_with_a_broken_last_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_events(&path, 3).await;
    let good = std::fs::read(&path).unwrap();

    let cases: [(&[u8], &str); 3] = [
        (br#"{"seq":4,"time":"t","pr"#, "is incomplete"),
        (b"garbage\n", "is not valid JSON"),
        (b"{\"seq\":4}\n", "has no valid \"prev\" field"),
    ];
    for (tail, needle) in cases {
        std::fs::write(&path, [good.as_slice(), tail].concat()).unwrap();
        let error = AuditLog::open(&path).await.unwrap_err();
        assert_eq!(error.label(), "corrupt_tail");
        let message = error.to_string();
        assert!(message.contains(needle), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        // Nothing was appended to the refused file.
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [good.as_slice(), tail].concat()
        );
    }

    // A single line without its newline.
    std::fs::write(&path, br#"{"seq":1"#).unwrap();
    assert_eq!(
        AuditLog::open(&path).await.unwrap_err().label(),
        "corrupt_tail"
    );

    // An empty file starts a chain.
    std::fs::write(&path, b"").unwrap();
    assert_eq!(write_events(&path, 1).await[0].seq, 1);
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).await.unwrap();
    let error = AuditLog::open(&path).await.unwrap_err();
    assert_eq!(error.label(), "locked");
    log.record(event(1)).await.unwrap();
    log.close().await;
    verify(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_land_in_order_with_consecutive_seq() {
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open_with(
        &path,
        AuditOptions {
            durability: Durability::Fsync,
        },
    )
    .await
    .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let log = log.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..PER_TASK {
                let mut event = event(n);
                event.insert("task".into(), json!(task));
                seqs.push(log.record(event).await.unwrap().seq);
            }
            seqs
        });
    }
    let mut all = Vec::new();
    while let Some(seqs) = tasks.join_next().await {
        let seqs = seqs.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    log.close().await;

    all.sort_unstable();
    assert_eq!(all, (1..=TASKS * PER_TASK).collect::<Vec<_>>());
    let report = verify(&path).unwrap();
    assert_eq!(report.events, TASKS * PER_TASK);
    // Each line's seq is its line number.
    for (i, line) in lines(&path).iter().enumerate() {
        let value: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(value["seq"], json!(i + 1));
    }
}

#[tokio::test]
async fn a_full_disk_fails_every_record() {
    let log = AuditLog::open(Path::new("/dev/full")).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let log = log.clone();
        tasks.spawn(async move { log.record(event(n)).await });
    }
    while let Some(result) = tasks.join_next().await {
        let error = result.unwrap().unwrap_err();
        // The first batch fails to write; later batches are refused because bytes may have gone
        // out to a device that cannot take them back.
        assert!(
            ["write_failed", "unrepaired"].contains(&error.label()),
            "{error}"
        );
    }
    // A fresh handle, first batch: the error is the device's.
    log.close().await;
    let log = AuditLog::open(Path::new("/dev/full")).await.unwrap();
    let error = log.record(event(1)).await.unwrap_err();
    assert_eq!(error.label(), "write_failed");
    assert!(
        error.to_string().to_lowercase().contains("no space"),
        "{error}"
    );
    let client = error.client_message();
    assert!(client.to_lowercase().contains("no space"), "{client}");
    assert!(client.contains("/dev/full"), "{client}");
    assert!(!client.contains("os error"), "{client}");
}

#[tokio::test]
async fn removing_or_replacing_the_file_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).await.unwrap();
    log.record(event(1)).await.unwrap();

    std::fs::remove_file(&path).unwrap();
    let error = log.record(event(2)).await.unwrap_err();
    assert!(matches!(error, AuditError::FileGone { .. }), "{error}");
    assert_eq!(error.label(), "file_gone");
    assert_eq!(
        error.to_string(),
        format!(
            "audit log {} was removed or replaced; refusing to run statements that cannot be recorded",
            path.display()
        )
    );
    // Recreating the path does not resurrect the old handle.
    std::fs::write(&path, b"").unwrap();
    assert_eq!(log.record(event(3)).await.unwrap_err().label(), "file_gone");
    assert!(std::fs::read(&path).unwrap().is_empty());
    log.close().await;

    // Rotation by rename: the handle refuses rather than writing into the renamed file.
    let path = dir.path().join("rotated.jsonl");
    let log = AuditLog::open(&path).await.unwrap();
    log.record(event(1)).await.unwrap();
    std::fs::rename(&path, dir.path().join("rotated.jsonl.1")).unwrap();
    assert_eq!(log.record(event(2)).await.unwrap_err().label(), "file_gone");
}

#[tokio::test]
async fn another_writer_appending_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).await.unwrap();
    log.record(event(1)).await.unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"forged\":true}\n");
    // Same inode, more bytes.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"forged\":true}\n"))
        .unwrap();
    let error = log.record(event(2)).await.unwrap_err();
    assert_eq!(error.label(), "modified");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn the_handle_is_shareable_across_tasks() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<AuditLog>();
    shareable::<AuditError>();
}

/// The value under `key` of every line of the log, in order.
fn field_of_each_line(path: &Path, key: &str) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_slice(line).unwrap();
            value[key].clone()
        })
        .collect()
}

fn sequence_numbers(path: &Path) -> Vec<u64> {
    field_of_each_line(path, "seq")
        .iter()
        .map(|seq| seq.as_u64().unwrap())
        .collect()
}

fn numbers_written(path: &Path) -> Vec<Value> {
    field_of_each_line(path, "n")
}

fn numbered(n: u64) -> Map<String, Value> {
    let mut event = event(n);
    event.insert("n".into(), json!(n));
    event
}

#[tokio::test]
async fn a_detached_event_goes_out_with_the_next_recorded_one_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).await.unwrap();
    log.record_detached(numbered(1)).unwrap();
    log.record_detached(numbered(2)).unwrap();
    let receipt = log.record(numbered(3)).await.unwrap();
    // Both detached events are on disk before the recorded one is acknowledged, ahead of it.
    assert_eq!(receipt.seq, 3);
    assert_eq!(numbers_written(&path), vec![json!(1), json!(2), json!(3)]);
    log.close().await;
    assert_eq!(verify(&path).unwrap().events, 3);
}

#[tokio::test]
async fn a_detached_event_alone_is_written_without_another_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).await.unwrap();
    log.record(numbered(1)).await.unwrap();
    log.record_detached(numbered(2)).unwrap();
    // Nothing else is recorded: the scheduled write must bring it to disk on its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sequence_numbers(&path).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the detached event was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(numbers_written(&path), vec![json!(1), json!(2)]);
    log.close().await;
}

#[tokio::test]
async fn closing_writes_detached_events_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).await.unwrap();
    let other = log.clone();
    for n in 1..=3 {
        log.record_detached(numbered(n)).unwrap();
    }
    // Another handle is alive: closing this one leaves the log open.
    log.close().await;
    other.record_detached(numbered(4)).unwrap();
    other.close().await;
    assert_eq!(sequence_numbers(&path), vec![1, 2, 3, 4]);
    assert_eq!(
        numbers_written(&path),
        vec![json!(1), json!(2), json!(3), json!(4)]
    );
    // The file is closed and unlocked: it can be opened again at once.
    let reopened = AuditLog::open(&path).await.unwrap();
    assert_eq!(reopened.record(numbered(5)).await.unwrap().seq, 5);
    reopened.close().await;
}

#[tokio::test]
async fn a_detached_event_on_a_removed_file_fails_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path).await.unwrap();
    log.record(numbered(1)).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    log.record_detached(numbered(2)).unwrap();
    let error = log.record(numbered(3)).await.unwrap_err();
    assert_eq!(error.label(), "file_gone", "{error}");
    log.close().await;
}
