//! redb file handling: a file held by another process, and files that are not redb stores.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use flowstream_core::StorageErrorKind;
use flowstream_redb::RedbDriver;

#[tokio::test]
async fn file_open_in_another_process_is_a_locked_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("held.redb");
    let mut holder = Command::new(env!("CARGO_BIN_EXE_redb-open"))
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start holder process");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("holder reports");
    assert_eq!(line.trim(), "opened");

    let result = RedbDriver::open(&path).await;
    match result {
        Err(error) if error.storage_kind() == Some(StorageErrorKind::Locked) => {
            let shown = error.to_string();
            assert!(shown.contains("held.redb"), "{shown}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }

    // Once the other process is gone, the file opens.
    drop(holder.stdin.take());
    holder.wait().expect("holder exits");
    RedbDriver::open(&path)
        .await
        .expect("opens after the holder exited");
}

#[tokio::test]
async fn second_process_sees_the_lock_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mine.redb");
    let _driver = RedbDriver::open(&path).await.expect("open");
    let output = Command::new(env!("CARGO_BIN_EXE_redb-open"))
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run other process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("open in another process"), "{stdout}");
}

#[tokio::test]
async fn file_that_is_not_a_redb_store_is_a_corrupt_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notes.txt");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(&b"this is not a database\n".repeat(200))
        .expect("write");
    drop(file);
    let result = RedbDriver::open(&path).await;
    assert!(
        matches!(&result, Err(e) if e.storage_kind() == Some(StorageErrorKind::Corrupt)),
        "{result:?}"
    );
    let after = std::fs::read(&path).expect("read back");
    assert_eq!(
        after,
        b"this is not a database\n".repeat(200),
        "the file is left untouched"
    );
}

/// A valid store with some data; returns its bytes.
async fn valid_store(path: &std::path::Path) -> Vec<u8> {
    let driver = std::sync::Arc::new(RedbDriver::open(path).await.expect("open"));
    let producer = flowstream_core::Producer::new(driver);
    for i in 0..200 {
        producer
            .send(flowstream_core::NewMessage::new(
                "s",
                format!("message {i} {}", "x".repeat(100)),
            ))
            .await
            .expect("send");
    }
    drop(producer);
    std::fs::read(path).expect("read the store")
}

#[tokio::test]
async fn truncated_or_damaged_file_is_a_corrupt_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = valid_store(&dir.path().join("good.redb")).await;

    let truncated = dir.path().join("truncated.redb");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let result = RedbDriver::open(&truncated).await;
    assert!(
        matches!(&result, Err(e) if e.storage_kind() == Some(StorageErrorKind::Corrupt)),
        "truncated: {result:?}"
    );

    // Damage the header, then a page of the tree: redb rejects both.
    for at in [100, 8192] {
        let mut damaged = bytes.clone();
        for byte in damaged.iter_mut().skip(at).take(64) {
            *byte ^= 0xA5;
        }
        let path = dir.path().join(format!("damaged-{at}.redb"));
        std::fs::write(&path, &damaged).expect("write");
        let result = RedbDriver::open(&path).await;
        assert!(
            matches!(&result, Err(e) if e.storage_kind() == Some(StorageErrorKind::Corrupt)),
            "damaged at {at}: {result:?}"
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            damaged,
            "the file is left as it was"
        );
    }
}
