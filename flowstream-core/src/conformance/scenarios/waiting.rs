//! Waiting without polling (guarantee 8).

use std::sync::Arc;
use std::time::Duration;

use crate::{Driver, Wake};
use tokio::time::Instant;

use super::leadership::settle;
use crate::conformance::{BOUND, DriverFactory, InstrumentedDriver, consumer, drain, produce};

/// Guarantee 8: a consumer blocked in `wait` at the head is woken by an append, long before
/// its timeout.
pub(crate) async fn g8_wait_wakes_promptly_on_append(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let woke = c.wait(Duration::from_secs(600)).await.expect("wait");
        (woke, started.elapsed(), c)
    });
    produce(&driver, "s", "m", 1).await;
    let (woke, after, mut c) = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("woken well before the timeout")
        .expect("task");
    assert_eq!(woke, Wake::Messages);
    assert!(after < Duration::from_secs(3), "woken after {after:?}");
    assert_eq!(drain(&mut c).await.len(), 1);
}

/// A group positioned before messages that were trimmed away skips past them: `wait` does
/// not report them forever, and delivery continues with the next new message.
pub(crate) async fn wait_skips_messages_trimmed_before_delivery(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    produce(&driver, "s", "gone", 5).await;
    assert_eq!(driver.trim("s", 5).await.expect("trim"), 5);
    assert_eq!(
        c.wait(Duration::from_millis(200)).await.expect("wait"),
        Wake::TimedOut
    );
    assert!(c.next().await.expect("next").is_none());
    c.commit(5)
        .await
        .expect("the trimmed range can be committed");
    produce(&driver, "s", "new", 1).await;
    assert_eq!(c.wait(BOUND).await.expect("wait"), Wake::Messages);
    assert_eq!(c.next().await.expect("next").expect("message").offset(), 6);
}

/// Guarantee 2 inside `wait`: a message appended between the consumer's read and its look at
/// the head is delivered, not mistaken for a trimmed range and skipped.
pub(crate) async fn wait_never_skips_a_message_appended_while_it_looks(
    factory: &dyn DriverFactory,
) {
    let inner = factory.open().await;
    let racing = InstrumentedDriver::new(inner.clone());
    let driver: Arc<dyn Driver> = racing.clone();
    produce(&driver, "s", "old", 2).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    assert_eq!(drain(&mut c).await.len(), 2);
    c.commit(2).await.expect("commit");
    // The read in `wait` finds nothing new; the append lands before it asks for the head.
    racing.append_before_next_head(crate::NewMessage::new("s", "raced"));
    assert_eq!(c.wait(BOUND).await.expect("wait"), Wake::Messages);
    let message = c.next().await.expect("next").expect("the raced message");
    assert_eq!((message.offset(), message.body_str()), (3, Some("raced")));
}

/// Guarantee 8: with nothing to do, `wait` returns at its timeout.
pub(crate) async fn g8_wait_returns_at_its_timeout(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    let started = Instant::now();
    assert_eq!(
        c.wait(Duration::from_millis(200)).await.expect("wait"),
        Wake::TimedOut
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    assert_eq!(
        standby.wait(Duration::from_millis(50)).await.expect("wait"),
        Wake::TimedOut
    );
}

/// Guarantee 8: `recv` waits at the head and returns the next message once it is appended,
/// woken by the notification.
pub(crate) async fn g8_recv_waits_for_the_next_message(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 1).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    assert_eq!(c.recv().await.expect("recv").offset(), 1);
    let receiving = tokio::spawn(async move {
        let message = c.recv().await.expect("recv");
        (message, c)
    });
    produce(&driver, "s", "late", 1).await;
    let (message, _c) = tokio::time::timeout(BOUND, receiving)
        .await
        .expect("recv returned once a message was appended")
        .expect("task");
    assert_eq!((message.offset(), message.body_str()), (2, Some("late0")));
}

/// Guarantee 8: a wake-all (what a driver sends after reconnecting, and PostgreSQL's safety
/// net) costs an idle consumer's background task one look (the group record and the head),
/// not one per subscription it holds.
pub(crate) async fn g8_a_wake_all_costs_an_idle_consumer_one_look(factory: &dyn DriverFactory) {
    let inner = factory.open().await;
    let counting = InstrumentedDriver::new(inner);
    let driver: Arc<dyn Driver> = counting.clone();
    produce(&driver, "s", "m", 1).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    assert_eq!(drain(&mut c).await.len(), 1);
    c.commit(1).await.expect("commit");
    let (before, writes) = settle(&counting).await;

    driver.changes().notify_all();
    let (after, writes_after) = settle(&counting).await;
    assert_eq!(writes_after, writes, "an idle group is never written");
    assert!(after > before, "the wake-all was answered with a look");
    assert!(
        after - before <= 2,
        "one look reads the record and the head: {} reads",
        after - before
    );
}

/// Guarantee 8: a thousand consumers waiting on one driver cost no storage reads while idle,
/// and an append wakes the ones on its stream.
pub(crate) async fn g8_thousand_idle_consumers_make_no_storage_reads(factory: &dyn DriverFactory) {
    const CONSUMERS: usize = 1_000;
    let inner = factory.open().await;
    let counting = InstrumentedDriver::new(inner);
    let driver: Arc<dyn Driver> = counting.clone();

    let mut waiters = Vec::with_capacity(CONSUMERS);
    for i in 0..CONSUMERS {
        let mut c = consumer(&driver, "idle", &format!("group-{i}"))
            .build()
            .await
            .expect("consumer");
        waiters.push(tokio::spawn(async move {
            c.wait(Duration::from_secs(600)).await.expect("wait")
        }));
    }
    let (reads, writes) = settle(&counting).await;
    // Observe a window several takeover periods long: nothing may touch storage.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(counting.reads(), reads, "idle consumers read storage");
    assert_eq!(counting.writes(), writes, "idle consumers wrote storage");

    produce(&driver, "idle", "m", 1).await;
    for waiter in waiters {
        let woke = tokio::time::timeout(BOUND, waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(woke, Wake::Messages);
    }
}
