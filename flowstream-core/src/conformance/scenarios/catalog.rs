//! What the admin API stands on: listing logs and records, deleting a log whole, deleting a
//! record by compare-and-swap (revisions going on past the delete).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::conformance::{DriverFactory, produce};
use crate::driver::{DriverError, Expected, Revision};
use crate::{NewMessage, Producer};

/// `logs` lists every log with its head (trimmed ones too), in name order; `records` lists
/// the records under a prefix, in key order, and nothing else.
pub(crate) async fn logs_and_records_are_listed(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    assert_eq!(driver.logs().await.expect("logs"), Vec::new());
    produce(&driver, "b", "m", 3).await;
    produce(&driver, "a", "m", 1).await;
    // A partition's log, as the engine names it (the driver knows nothing of partitions).
    driver
        .append(vec![
            NewMessage::new("a/1", "m0"),
            NewMessage::new("a/1", "m1"),
        ])
        .await
        .expect("append to a partition's log");
    driver.trim("b", 3).await.expect("trim");
    assert_eq!(
        driver.logs().await.expect("logs"),
        vec![
            ("a".to_owned(), 1),
            ("a/1".to_owned(), 2),
            ("b".to_owned(), 3)
        ],
        "every log with its head, a trimmed one included, in name order"
    );

    for key in [
        "group/a/g2",
        "group/a/g1",
        "group/a/1/g1",
        "group/ab/g",
        "roster/a/g1",
    ] {
        driver
            .put_record(key, json!({ "k": key }), Expected::Absent, false)
            .await
            .expect("create");
    }
    let listed = driver.records("group/a/").await.expect("records");
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["group/a/1/g1", "group/a/g1", "group/a/g2"]);
    for (key, record) in &listed {
        assert_eq!(record.value, json!({ "k": key }), "{key}");
        assert_eq!(record.revision, Revision(1));
    }
    assert!(
        driver
            .records("nothing/")
            .await
            .expect("records")
            .is_empty()
    );
    assert_eq!(driver.records("").await.expect("records").len(), 5);
}

/// A deleted log is gone whole: head 0, nothing to read, not listed, and the next append
/// starts again at offset 1. Deleting a log that does not exist says so.
pub(crate) async fn a_deleted_log_starts_again_at_one(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "gone", "old", 5).await;
    produce(&driver, "kept", "k", 2).await;
    assert!(driver.delete_log("gone").await.expect("delete"));
    assert_eq!(driver.head("gone").await.expect("head"), 0);
    assert!(driver.read("gone", 0, 10).await.expect("read").is_empty());
    assert_eq!(
        driver.logs().await.expect("logs"),
        vec![("kept".to_owned(), 2)]
    );
    assert!(
        !driver.delete_log("gone").await.expect("delete again"),
        "nothing left to delete"
    );
    let offsets = produce(&driver, "gone", "new", 2).await;
    assert_eq!(offsets, vec![1, 2], "a new log under the old name");
    let read = driver.read("gone", 0, 10).await.expect("read");
    let bodies: Vec<&str> = read.iter().filter_map(|m| m.body_str()).collect();
    assert_eq!(
        bodies,
        ["new0", "new1"],
        "nothing of the old log shows through"
    );
    assert_eq!(driver.head("kept").await.expect("head"), 2);
    assert!(matches!(
        driver.delete_log("bad name!").await,
        Err(DriverError::InvalidInput(_))
    ));
}

/// A delete racing appends leaves one dense log: every append either went with the old log
/// or is in the new one, and the new one's offsets run from 1 without a gap or a clash.
pub(crate) async fn a_log_deleted_under_appends_stays_dense(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..4 {
        let producer = Producer::new(driver.clone());
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while !stop.load(Ordering::SeqCst) {
                producer
                    .send(NewMessage::new("busy", format!("{task}-{sent}")))
                    .await
                    .expect("every append succeeds, before or after the delete");
                sent += 1;
            }
        }));
    }
    crate::conformance::eventually_async(
        "appends are flowing",
        crate::conformance::BOUND,
        async || driver.head("busy").await.expect("head") >= 20,
    )
    .await;
    assert!(driver.delete_log("busy").await.expect("delete"));
    crate::conformance::eventually_async(
        "appends go on into the new log",
        crate::conformance::BOUND,
        async || driver.head("busy").await.expect("head") >= 20,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("producer task");
    }
    let head = driver.head("busy").await.expect("head");
    let mut offsets = Vec::new();
    let mut after = 0;
    loop {
        let read = driver.read("busy", after, 1000).await.expect("read");
        let Some(last) = read.last() else { break };
        after = last.offset();
        offsets.extend(read.iter().map(|m| m.offset()));
    }
    assert_eq!(
        offsets,
        (1..=head).collect::<Vec<u64>>(),
        "the new log is dense from 1 to its head"
    );
}

/// A deleted record reads as absent and is not listed; a write holding a revision from before
/// the delete conflicts, and so does a second delete; created again, its revision is greater
/// than any it had.
pub(crate) async fn a_deleted_record_reads_absent_and_its_revisions_go_on(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    let key = "group/s/g";
    let first = driver
        .put_record(key, json!({"v": 1}), Expected::Absent, false)
        .await
        .expect("create");
    let second = driver
        .put_record(key, json!({"v": 2}), Expected::Revision(first), false)
        .await
        .expect("update");
    match driver.delete_record(key, first, false).await {
        Err(DriverError::Conflict { current, .. }) => {
            let current = current.expect("still there");
            assert_eq!((current.revision, current.value), (second, json!({"v": 2})));
        }
        other => panic!("a delete at a stale revision must conflict, got {other:?}"),
    }
    driver
        .delete_record(key, second, true)
        .await
        .expect("delete at the current revision");
    assert_eq!(driver.get_record(key).await.expect("get"), None);
    assert!(driver.records("group/").await.expect("records").is_empty());
    match driver
        .put_record(
            key,
            json!({"v": "zombie"}),
            Expected::Revision(second),
            false,
        )
        .await
    {
        Err(DriverError::Conflict { current, .. }) => assert_eq!(current, None),
        other => panic!("a write from before the delete must conflict, got {other:?}"),
    }
    assert!(matches!(
        driver.delete_record(key, second, false).await,
        Err(DriverError::Conflict { current: None, .. })
    ));
    let again = driver
        .put_record(key, json!({"v": "new"}), Expected::Absent, false)
        .await
        .expect("create again");
    assert!(again > second, "{again:?} must be past {second:?}");
    let record = driver.get_record(key).await.expect("get").expect("exists");
    assert_eq!(
        (record.revision, record.value),
        (again, json!({"v": "new"}))
    );
}
