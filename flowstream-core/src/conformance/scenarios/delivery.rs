//! Delivery: at least once, monotonic commits, batched reads, durability (guarantees 3, 7, 9,
//! 10), and the consumer API around them.

use std::time::Duration;

use crate::{Error, StartFrom, Wake};
use futures_util::StreamExt;

use crate::conformance::{
    BOUND, DriverFactory, InstrumentedDriver, close, consumer, drain, produce, stored_group,
};

/// Guarantee 3: messages delivered but not committed go to the next owner after a handover,
/// starting right after the committed offset.
pub(crate) async fn g3_uncommitted_messages_are_redelivered_after_handover(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 5).await;
    let mut first = consumer(&driver, "s", "g").build().await.expect("first");
    let mut second = consumer(&driver, "s", "g").build().await.expect("second");
    assert_eq!(drain(&mut first).await.len(), 5);
    first.commit(3).await.expect("commit");
    first.shutdown().await.expect("shutdown");

    assert_eq!(second.wait(BOUND).await.expect("wait"), Wake::Activated);
    let offsets: Vec<u64> = drain(&mut second)
        .await
        .iter()
        .map(|m| m.offset())
        .collect();
    assert_eq!(offsets, vec![4, 5]);
}

/// Guarantee 3 (and 10 on durable stores): a consumer that crashed is replaced by a new one
/// that resumes right after the committed offset, after reopening the store when it can be.
pub(crate) async fn g3_restarted_consumer_resumes_after_committed_offset(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 10).await;
    let mut crashed = consumer(&driver, "s", "g").build().await.expect("consumer");
    assert_eq!(drain(&mut crashed).await.len(), 10);
    crashed.commit(4).await.expect("commit");
    drop(crashed);

    let driver = if factory.durable() {
        close(driver).await;
        factory.open().await
    } else {
        driver
    };
    let mut restarted = consumer(&driver, "s", "g").build().await.expect("restart");
    // The crashed owner never handed over: the group is taken over once messages stay pending.
    assert_eq!(restarted.wait(BOUND).await.expect("wait"), Wake::Activated);
    let offsets: Vec<u64> = drain(&mut restarted)
        .await
        .iter()
        .map(|m| m.offset())
        .collect();
    assert_eq!(offsets, (5..=10).collect::<Vec<_>>());
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 4);
}

/// Guarantee 7: the committed offset never moves backwards; re-committing is harmless.
pub(crate) async fn g7_commits_are_monotonic(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 5).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    drain(&mut c).await;
    c.commit(5).await.expect("commit 5");
    c.commit(3).await.expect("commit below is a no-op");
    c.commit(5).await.expect("commit again is a no-op");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 5);
    assert_eq!(c.committed(), Some(5));
}

/// Guarantee 7: committing an offset that was not delivered is an error and stores nothing.
pub(crate) async fn g7_commit_beyond_delivered_is_rejected(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 5).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    c.next().await.expect("next").expect("message 1");
    c.next().await.expect("next").expect("message 2");
    let result = c.commit(3).await;
    assert!(
        matches!(
            result,
            Err(Error::CommitBeyondDelivered {
                offset: 3,
                delivered: 2
            })
        ),
        "{result:?}"
    );
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 0);
    c.commit(2).await.expect("commit delivered");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 2);
}

/// Guarantee 7 and 4: a standby cannot commit.
pub(crate) async fn g7_commit_while_standby_is_rejected(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 2).await;
    let _active = consumer(&driver, "s", "g").build().await.expect("active");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    assert!(!standby.is_active());
    assert!(standby.next().await.expect("next").is_none());
    let result = standby.commit(1).await;
    assert!(matches!(result, Err(Error::Standby { .. })), "{result:?}");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 0);
}

/// Guarantee 9: the consumer reads in batches of its batch size, never the whole stream.
pub(crate) async fn g9_reads_are_batched(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let producer = crate::Producer::new(driver.clone());
    for chunk in 0..20 {
        let batch = (0..100).map(|i| crate::NewMessage::new("long", format!("{chunk}-{i}")));
        producer.send_batch(batch).await.expect("send");
    }
    let counting = InstrumentedDriver::new(driver.clone());
    let counted: std::sync::Arc<dyn crate::Driver> = counting.clone();
    let mut c = consumer(&counted, "long", "g")
        .batch_size(64)
        .build()
        .await
        .expect("consumer");
    let mut count = 0u64;
    while let Some(message) = c.next().await.expect("next") {
        count += 1;
        assert_eq!(message.offset(), count);
        if count.is_multiple_of(500) {
            c.commit(count).await.expect("commit");
        }
    }
    assert_eq!(count, 2_000);
    assert!(
        counting.largest_read() <= 64,
        "largest read: {}",
        counting.largest_read()
    );
    assert!(
        counting.reads() >= 2_000 / 64,
        "reads: {}",
        counting.reads()
    );
}

/// Guarantee 9, read-ahead: while the application handles a full batch, the next one is
/// already being read, and draining a stream costs one read per batch, not per message.
pub(crate) async fn g9_next_batch_is_read_while_the_current_one_is_handled(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "ahead", "m", 30).await;
    let counting = InstrumentedDriver::new(driver.clone());
    let counted: std::sync::Arc<dyn crate::Driver> = counting.clone();
    let mut c = consumer(&counted, "ahead", "g")
        .batch_size(10)
        .build()
        .await
        .expect("consumer");
    let first = c.next().await.expect("next").expect("a message");
    assert_eq!(first.offset(), 1);
    // No further call to `next`: the second batch is read in the background.
    crate::conformance::eventually("the read-ahead of the second batch", BOUND, || {
        counting.stream_reads() >= 2
    })
    .await;
    let mut offsets = vec![first.offset()];
    offsets.extend(drain(&mut c).await.iter().map(|m| m.offset()));
    assert_eq!(offsets, (1..=30).collect::<Vec<_>>());
    // Three full batches, and one read that found the head.
    assert!(
        counting.stream_reads() <= 4,
        "reads: {}",
        counting.stream_reads()
    );
    c.commit(30).await.expect("commit");
    produce(&driver, "ahead", "late", 1).await;
    assert_eq!(c.wait(BOUND).await.expect("wait"), Wake::Messages);
    assert_eq!(c.next().await.expect("next").map(|m| m.offset()), Some(31));
}

/// Guarantee 7 with background commits: checked at once, written in order, and stored by the
/// time `shutdown` returns.
pub(crate) async fn g7_background_commits_are_checked_at_once_and_stored(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 10).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    for _ in 0..5 {
        c.next().await.expect("next").expect("message");
    }
    let beyond = c.commit_in_background(6).await;
    assert!(
        matches!(
            beyond,
            Err(Error::CommitBeyondDelivered {
                offset: 6,
                delivered: 5
            })
        ),
        "{beyond:?}"
    );
    c.commit_in_background(5)
        .await
        .expect("first background commit");
    assert_eq!(drain(&mut c).await.len(), 5);
    c.commit_in_background(10)
        .await
        .expect("second background commit");
    crate::conformance::eventually_async("the background commit to be stored", BOUND, async || {
        stored_group(&driver, "s", "g").await.committed == 10
    })
    .await;
    // Monotonic, as with `commit`.
    c.commit_in_background(3).await.expect("an older offset");
    c.shutdown().await.expect("shutdown");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 10);
    let mut next = consumer(&driver, "s", "g")
        .build()
        .await
        .expect("next owner");
    assert!(
        next.next().await.expect("next").is_none(),
        "nothing is redelivered"
    );
}

/// Two groups on one stream each see every message and commit independently.
pub(crate) async fn groups_progress_independently(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 6).await;
    let mut billing = consumer(&driver, "s", "billing")
        .build()
        .await
        .expect("billing");
    let mut audit = consumer(&driver, "s", "audit")
        .build()
        .await
        .expect("audit");
    assert!(billing.is_active() && audit.is_active());
    assert_eq!(drain(&mut billing).await.len(), 6);
    billing.commit(6).await.expect("commit");
    let first_two: Vec<u64> = [audit.next().await, audit.next().await]
        .into_iter()
        .map(|m| m.expect("next").expect("message").offset())
        .collect();
    assert_eq!(first_two, vec![1, 2]);
    audit.commit(2).await.expect("commit");
    assert_eq!(stored_group(&driver, "s", "billing").await.committed, 6);
    assert_eq!(stored_group(&driver, "s", "audit").await.committed, 2);
}

/// A new group can start at the head of the stream instead of its beginning; an existing
/// group ignores the setting and resumes after its committed offset.
pub(crate) async fn new_group_can_start_at_latest(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "old", 3).await;
    let mut latest = consumer(&driver, "s", "new")
        .start_from(StartFrom::Latest)
        .build()
        .await
        .expect("consumer");
    assert!(latest.next().await.expect("next").is_none());
    produce(&driver, "s", "new", 1).await;
    let message = latest.next().await.expect("next").expect("new message");
    assert_eq!(message.offset(), 4);
    latest.commit(4).await.expect("commit");
    latest.shutdown().await.expect("shutdown");

    let mut earliest_again = consumer(&driver, "s", "new")
        .start_from(StartFrom::Earliest)
        .build()
        .await
        .expect("rejoin");
    assert!(earliest_again.is_active());
    assert!(earliest_again.next().await.expect("next").is_none());
}

/// The `Stream` view yields messages in order, waits at the head, and commits in between.
pub(crate) async fn stream_view_delivers_in_order_and_commits(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 3).await;
    let mut messages = consumer(&driver, "s", "g")
        .batch_size(2)
        .build()
        .await
        .expect("consumer")
        .into_stream();
    let producer_driver = driver.clone();
    let late = tokio::spawn(async move { produce(&producer_driver, "s", "late", 3).await });
    for expected in 1..=6u64 {
        let message = tokio::time::timeout(BOUND, messages.next())
            .await
            .expect("a message in time")
            .expect("stream does not end")
            .expect("no error");
        assert_eq!(message.offset(), expected);
        messages.commit(expected).await.expect("commit");
    }
    late.await.expect("producer");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 6);

    // A commit while the stream is parked at the head interrupts the wait and loses nothing.
    let pending = tokio::time::timeout(Duration::from_millis(50), messages.next()).await;
    assert!(pending.is_err(), "no seventh message yet");
    messages.commit(6).await.expect("commit while parked");
    produce(&driver, "s", "seventh", 1).await;
    let seventh = tokio::time::timeout(BOUND, messages.next())
        .await
        .expect("in time");
    assert_eq!(seventh.expect("item").expect("ok").offset(), 7);
    messages.shutdown().await.expect("shutdown");
}

/// Guarantee 10: every acknowledged message is there after the store is closed and opened
/// again, and offsets continue where they stopped.
pub(crate) async fn g10_acknowledged_messages_survive_a_restart(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let offsets = produce(&driver, "durable", "m", 50).await;
    assert_eq!(offsets.last(), Some(&50));
    close(driver).await;

    let driver = factory.open().await;
    let stored = driver.read("durable", 0, 100).await.expect("read");
    assert_eq!(stored.len(), 50);
    for (i, message) in stored.iter().enumerate() {
        assert_eq!(message.body_str(), Some(format!("m{i}").as_str()));
    }
    assert_eq!(produce(&driver, "durable", "n", 1).await, vec![51]);
}
