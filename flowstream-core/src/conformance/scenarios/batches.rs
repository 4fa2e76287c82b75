//! [`Driver::apply`]: appends and record writes stored together or not at all.

use std::sync::Arc;

use serde_json::json;

use crate::conformance::{BOUND, DriverFactory, produce};
use crate::driver::{Batch, Driver, DriverError, Expected, NewMessage, Revision, Topic};

/// A batch appends to several streams and writes several records (a creation and a
/// compare-and-swap) in one call: offsets follow each stream's head, revisions grow, and the
/// streams' and the notified records' subscribers are woken.
pub(crate) async fn a_batch_applies_appends_and_records_together(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "a", "m", 2).await;
    let existing = driver
        .put_record("rec/old", json!({"v": 1}), Expected::Absent, false)
        .await
        .expect("create");
    let hub = driver.changes();
    let mut stream_a = hub.subscribe(Topic::Stream("a".into()));
    let mut stream_b = hub.subscribe(Topic::Stream("b".into()));
    let mut record = hub.subscribe(Topic::Record("rec/new".into()));
    let applied = driver
        .apply(
            Batch::new()
                .append(NewMessage::new("a", "a3"))
                .append(NewMessage::new("b", "b1").with_key("k"))
                .append(NewMessage::new("a", "a4"))
                .put_record("rec/new", json!({"v": "new"}), Expected::Absent, true)
                .put_record(
                    "rec/old",
                    json!({"v": 2}),
                    Expected::Revision(existing),
                    false,
                ),
        )
        .await
        .expect("apply");
    assert_eq!(applied.offsets, vec![3, 1, 4]);
    assert_eq!(applied.revisions.len(), 2);
    assert!(applied.revisions[1] > existing);
    let new = driver
        .get_record("rec/new")
        .await
        .expect("get")
        .expect("new");
    assert_eq!(
        (new.value, new.revision),
        (json!({"v": "new"}), applied.revisions[0])
    );
    let old = driver
        .get_record("rec/old")
        .await
        .expect("get")
        .expect("old");
    assert_eq!(
        (old.value, old.revision),
        (json!({"v": 2}), applied.revisions[1])
    );
    let bodies: Vec<Vec<u8>> = driver
        .read("a", 2, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|m| m.into_body())
        .collect();
    assert_eq!(bodies, [b"a3".to_vec(), b"a4".to_vec()]);
    let b = driver.read("b", 0, 10).await.expect("read");
    assert_eq!(b[0].key(), Some(&b"k"[..]));
    for (what, subscription) in [
        ("stream a", &mut stream_a),
        ("stream b", &mut stream_b),
        ("record rec/new", &mut record),
    ] {
        tokio::time::timeout(BOUND, subscription.changed())
            .await
            .unwrap_or_else(|_| panic!("{what} was not notified"));
    }

    // A batch of records alone, and an empty batch, are batches too.
    let alone = driver
        .apply(Batch::new().put_record("rec/alone", json!(1), Expected::Absent, false))
        .await
        .expect("records only");
    assert!(alone.offsets.is_empty() && alone.revisions.len() == 1);
    assert_eq!(
        driver.apply(Batch::new()).await.expect("empty"),
        Default::default()
    );
}

/// A batch whose precondition fails, or that holds a message no store keeps, or that writes
/// one record twice, stores nothing: no message, no record write, heads unmoved.
pub(crate) async fn a_failed_batch_stores_nothing(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "a", "m", 2).await;
    let first = driver
        .put_record("rec/x", json!("x1"), Expected::Absent, false)
        .await
        .expect("create x");
    let current = driver
        .put_record("rec/y", json!("y1"), Expected::Absent, false)
        .await
        .expect("create y");
    let stale = Revision(current.0 + 7);

    let lost = driver
        .apply(
            Batch::new()
                .append(NewMessage::new("a", "never"))
                .append(NewMessage::new("fresh", "never"))
                .put_record("rec/x", json!("x2"), Expected::Revision(first), false)
                .put_record("rec/y", json!("y2"), Expected::Revision(stale), true),
        )
        .await;
    match lost {
        Err(DriverError::Conflict {
            key,
            current: Some(record),
        }) => {
            assert_eq!(key, "rec/y");
            assert_eq!((record.value, record.revision), (json!("y1"), current));
        }
        other => panic!("expected a conflict on rec/y, got {other:?}"),
    }
    let absent = driver
        .apply(
            Batch::new()
                .append(NewMessage::new("a", "never"))
                .put_record("rec/x", json!("x2"), Expected::Absent, false),
        )
        .await;
    assert!(
        matches!(&absent, Err(DriverError::Conflict { key, current: Some(_) }) if key == "rec/x"),
        "{absent:?}"
    );
    let refused = driver
        .apply(
            Batch::new()
                .append(NewMessage::new("a", "never").with_header("h", "nul\0"))
                .put_record("rec/x", json!("x2"), Expected::Revision(first), false),
        )
        .await;
    assert!(
        matches!(refused, Err(DriverError::InvalidInput(_))),
        "{refused:?}"
    );
    let twice = driver
        .apply(
            Batch::new()
                .put_record("rec/x", json!("x2"), Expected::Revision(first), false)
                .put_record("rec/x", json!("x3"), Expected::Revision(first), false),
        )
        .await;
    assert!(
        matches!(twice, Err(DriverError::InvalidInput(_))),
        "{twice:?}"
    );

    assert_unchanged(&driver, first).await;

    // The store goes on working: the same batch with the right revisions applies.
    let applied = driver
        .apply(
            Batch::new()
                .append(NewMessage::new("a", "now"))
                .put_record("rec/x", json!("x2"), Expected::Revision(first), false)
                .put_record("rec/y", json!("y2"), Expected::Revision(current), false),
        )
        .await
        .expect("apply");
    assert_eq!(applied.offsets, vec![3]);
}

async fn assert_unchanged(driver: &Arc<dyn Driver>, x_revision: Revision) {
    assert_eq!(driver.head("a").await.expect("head"), 2);
    assert_eq!(driver.head("fresh").await.expect("head"), 0);
    assert_eq!(driver.read("a", 0, 10).await.expect("read").len(), 2);
    let x = driver.get_record("rec/x").await.expect("get").expect("x");
    assert_eq!((x.value, x.revision), (json!("x1"), x_revision));
    let y = driver.get_record("rec/y").await.expect("get").expect("y");
    assert_eq!(y.value, json!("y1"));
}
