//! Leadership: one active consumer, takeover, heartbeat and fencing (guarantees 4, 5, 6).

use std::sync::Arc;
use std::time::Duration;

use crate::{Consumer, Driver, Error, Message, Wake};
use tokio::time::Instant;

use crate::conformance::{
    BOUND, DriverFactory, InstrumentedDriver, TAKEOVER, consumer, drain, eventually,
    eventually_async, produce, stored_group,
};

/// Long enough to show that a takeover does *not* happen: three takeover periods.
const OBSERVE: Duration = Duration::from_millis(3 * 300);

/// Guarantee 4: of several consumers in a group exactly one is active and receives.
pub(crate) async fn g4_only_one_consumer_in_a_group_receives(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 20).await;
    let mut consumers = Vec::new();
    for _ in 0..3 {
        consumers.push(consumer(&driver, "s", "g").build().await.expect("consumer"));
    }
    let active: Vec<bool> = consumers.iter().map(|c| c.is_active()).collect();
    assert_eq!(
        active,
        vec![true, false, false],
        "the first to join owns the group"
    );

    let mut received = Vec::new();
    for c in consumers.iter_mut() {
        received.push(drain(c).await.len());
    }
    assert_eq!(received, vec![20, 0, 0]);
    assert_eq!(
        stored_group(&driver, "s", "g").await.owner,
        consumers[0].id()
    );
}

/// Guarantee 4: a graceful shutdown hands the group to a standby at once (here
/// `takeover_after` is a minute, so only the handover can explain the switch).
pub(crate) async fn g4_shutdown_hands_over_to_a_standby_at_once(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 3).await;
    let slow = |d: &Arc<dyn Driver>| {
        consumer(d, "s", "g")
            .takeover_after(Duration::from_secs(60))
            .heartbeat_every(Duration::from_secs(28))
    };
    let mut first = slow(&driver).build().await.expect("first");
    let mut second = slow(&driver).build().await.expect("second");
    assert!(first.next().await.expect("next").is_some());
    first.shutdown().await.expect("shutdown");

    assert_eq!(second.wait(BOUND).await.expect("wait"), Wake::Activated);
    assert!(second.is_active());
    let offsets: Vec<u64> = drain(&mut second)
        .await
        .iter()
        .map(|m| m.offset())
        .collect();
    assert_eq!(
        offsets,
        vec![1, 2, 3],
        "nothing was committed, so everything is redelivered"
    );
    let stored = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (stored.owner.as_str(), stored.generation, stored.active),
        (second.id(), 2, true)
    );
}

/// Guarantee 4: a standby takes over a silent owner once messages have been pending for
/// `takeover_after`, and not before.
pub(crate) async fn g4_standby_takes_over_when_messages_stay_pending(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let dead = consumer(&driver, "s", "g").build().await.expect("owner");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    drop(dead);
    let produced_at = Instant::now();
    produce(&driver, "s", "m", 2).await;

    assert_eq!(standby.wait(BOUND).await.expect("wait"), Wake::Activated);
    let waited = produced_at.elapsed();
    assert!(
        waited >= TAKEOVER,
        "took over after {waited:?}, before takeover_after"
    );
    assert_eq!(drain(&mut standby).await.len(), 2);
    assert_eq!(stored_group(&driver, "s", "g").await.generation, 2);
}

/// Guarantee 4: with nothing pending there is no takeover, whether the owner is alive or dead.
pub(crate) async fn g4_idle_group_is_never_taken_over(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 2).await;
    let mut owner = consumer(&driver, "s", "g").build().await.expect("owner");
    drain(&mut owner).await;
    owner.commit(2).await.expect("commit");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");

    assert_eq!(standby.wait(OBSERVE).await.expect("wait"), Wake::TimedOut);
    drop(owner);
    assert_eq!(standby.wait(OBSERVE).await.expect("wait"), Wake::TimedOut);
    assert!(!standby.is_active());
    assert_eq!(stored_group(&driver, "s", "g").await.generation, 1);
}

/// Guarantee 4: an owner that died while its group was idle is replaced once messages
/// arrive and stay pending (the standby's timer is armed by the new messages).
pub(crate) async fn g4_owner_that_died_while_idle_is_replaced_once_messages_wait(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    let owner = consumer(&driver, "s", "g").build().await.expect("owner");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    drop(owner);
    // Idle for longer than takeover_after: the standby's view of the group goes stale.
    assert_eq!(standby.wait(OBSERVE).await.expect("wait"), Wake::TimedOut);

    let produced_at = Instant::now();
    produce(&driver, "s", "m", 1).await;
    assert_eq!(standby.wait(BOUND).await.expect("wait"), Wake::Activated);
    assert!(
        produced_at.elapsed() >= TAKEOVER,
        "only after takeover_after of pending messages"
    );
    assert_eq!(drain(&mut standby).await.len(), 1);
}

/// Guarantee 4: the first message after a quiet period longer than `takeover_after` does not
/// hand a live owner's group to a standby.
pub(crate) async fn g4_first_message_after_a_quiet_period_does_not_cause_takeover(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    let mut owner = consumer(&driver, "s", "g").build().await.expect("owner");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    let owner_id = owner.id().to_owned();
    let worker = tokio::spawn(async move {
        // A live owner: processes whatever arrives, taking half of takeover_after over each
        // message, so the new message stays pending while the standby looks at the group.
        loop {
            while let Some(message) = owner.next().await.expect("next") {
                tokio::time::sleep(TAKEOVER / 2).await;
                owner.commit(message.offset()).await.expect("commit");
            }
            owner.wait(BOUND).await.expect("wait");
        }
    });

    assert_eq!(
        standby.wait(OBSERVE).await.expect("quiet period"),
        Wake::TimedOut
    );
    produce(&driver, "s", "m", 1).await;
    eventually_async("the owner commits the message", BOUND, async || {
        stored_group(&driver, "s", "g").await.committed == 1
    })
    .await;
    assert_eq!(
        standby.wait(OBSERVE).await.expect("observe"),
        Wake::TimedOut
    );
    let stored = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (stored.owner.as_str(), stored.generation),
        (owner_id.as_str(), 1)
    );
    worker.abort();
}

/// Guarantee 4: a consumer whose start failed after its claim was stored (the reply was
/// lost) releases the group, so the next consumer takes over at once instead of waiting for
/// a ghost owner to time out.
pub(crate) async fn g4_failed_start_does_not_leave_the_group_to_a_ghost(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 1).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let flaky: Arc<dyn Driver> = faulty.clone();
    faulty.lose_next_write_reply();
    let failed = consumer(&flaky, "s", "g")
        .takeover_after(Duration::from_secs(60))
        .heartbeat_every(Duration::from_secs(28))
        .build()
        .await;
    assert!(
        failed.as_ref().is_err_and(Error::is_retryable),
        "{failed:?}"
    );
    assert!(
        !stored_group(&driver, "s", "g").await.active,
        "the ghost claim was released"
    );

    let next = consumer(&driver, "s", "g")
        .takeover_after(Duration::from_secs(60))
        .heartbeat_every(Duration::from_secs(28))
        .build()
        .await
        .expect("next consumer");
    assert!(next.is_active(), "took over at once");
}

/// Guarantee 4 and cancel safety: a `build` dropped after its join write claimed the group
/// (its reply still on the way) does not leave the group to an owner that never started. A
/// standby takes over at once, not after `takeover_after`.
pub(crate) async fn g4_abandoned_start_does_not_leave_the_group_to_a_ghost(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 1).await;
    let slow_replies = InstrumentedDriver::new(driver.clone());
    let slow: Arc<dyn Driver> = slow_replies.clone();
    slow_replies.hold_next_write_reply(Duration::from_secs(3));
    let mut build = Box::pin(
        consumer(&slow, "s", "g")
            .takeover_after(Duration::from_secs(60))
            .heartbeat_every(Duration::from_secs(28))
            .build(),
    );
    tokio::select! {
        built = &mut build => panic!("build returned while its reply was held: {built:?}"),
        () = eventually("the join write is applied", BOUND, || {
            !slow_replies.accepted_writes().is_empty()
        }) => {}
    }
    // Abandoned with the claim stored and its reply still on the way.
    drop(build);

    let mut standby = consumer(&driver, "s", "g")
        .takeover_after(Duration::from_secs(60))
        .heartbeat_every(Duration::from_secs(28))
        .build()
        .await
        .expect("standby");
    if !standby.is_active() {
        assert_eq!(
            standby.wait(BOUND).await.expect("wait"),
            Wake::Activated,
            "the abandoned claim was released"
        );
    }
    assert_eq!(drain(&mut standby).await.len(), 1);
}

/// Guarantee 4 and cancel safety: a `shutdown` whose future is dropped at once still hands
/// the group over, so a standby takes over without waiting for `takeover_after`.
pub(crate) async fn g4_dropped_shutdown_still_hands_over(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 2).await;
    let slow = |d: &Arc<dyn Driver>| {
        consumer(d, "s", "g")
            .takeover_after(Duration::from_secs(60))
            .heartbeat_every(Duration::from_secs(28))
    };
    let first = slow(&driver).build().await.expect("first");
    let mut second = slow(&driver).build().await.expect("second");
    assert!(first.is_active());
    // Polled once, then dropped (long before a storage round trip could complete it).
    drop(tokio::time::timeout(Duration::ZERO, first.shutdown()).await);
    assert_eq!(second.wait(BOUND).await.expect("wait"), Wake::Activated);
    assert_eq!(drain(&mut second).await.len(), 2);
}

/// Guarantee 6 at the driver level: a compare-and-swap that loses returns the record as it
/// is now, so the protocol learns who won without reading it again; one that finds the
/// record gone says so.
pub(crate) async fn g6_conflict_returns_the_current_record(factory: &dyn DriverFactory) {
    use crate::driver::{DriverError, Expected};
    let driver = factory.open().await;
    let key = "conformance/cas";
    let first = driver
        .put_record(key, serde_json::json!({"v": 1}), Expected::Absent, false)
        .await
        .expect("create");
    let second = driver
        .put_record(
            key,
            serde_json::json!({"v": 2}),
            Expected::Revision(first),
            true,
        )
        .await
        .expect("update");
    assert!(second > first, "revisions grow");
    for expected in [Expected::Absent, Expected::Revision(first)] {
        match driver
            .put_record(key, serde_json::json!({"v": 3}), expected, false)
            .await
        {
            Err(DriverError::Conflict {
                key: conflicted,
                current: Some(current),
            }) => {
                assert_eq!(conflicted, key);
                assert_eq!(current.revision, second);
                assert_eq!(current.value, serde_json::json!({"v": 2}));
            }
            other => panic!("expected a conflict with the current record, got {other:?}"),
        }
    }
    let stored = driver.get_record(key).await.expect("get").expect("exists");
    assert_eq!(
        (stored.revision, stored.value),
        (second, serde_json::json!({"v": 2})),
        "a lost compare-and-swap changes nothing"
    );
    match driver
        .put_record(
            "conformance/never-created",
            serde_json::json!({}),
            Expected::Revision(first),
            false,
        )
        .await
    {
        Err(DriverError::Conflict { current: None, .. }) => {}
        other => panic!("expected a conflict on a missing record, got {other:?}"),
    }
}

/// Guarantee 4: every change of owner increments the generation.
pub(crate) async fn g4_generation_grows_with_every_change_of_owner(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let mut current = consumer(&driver, "s", "g").build().await.expect("first");
    assert_eq!(stored_group(&driver, "s", "g").await.generation, 1);
    for generation in 2..=4 {
        let mut next = consumer(&driver, "s", "g").build().await.expect("next");
        current.shutdown().await.expect("shutdown");
        assert_eq!(next.wait(BOUND).await.expect("wait"), Wake::Activated);
        let stored = stored_group(&driver, "s", "g").await;
        assert_eq!(
            (stored.owner.as_str(), stored.generation),
            (next.id(), generation)
        );
        current = next;
    }
}

/// Guarantee 5: an active consumer that takes longer than `takeover_after` over a message
/// keeps the group: it heartbeats while messages are pending.
pub(crate) async fn g5_heartbeat_keeps_a_slow_consumer_active(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 1).await;
    let mut slow = consumer(&driver, "s", "g").build().await.expect("owner");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    let before = stored_group(&driver, "s", "g").await;
    let message = slow.next().await.expect("next").expect("message");

    // The work itself: four takeover periods long. The standby must not take over meanwhile.
    assert_eq!(
        standby.wait(OBSERVE + TAKEOVER).await.expect("wait"),
        Wake::TimedOut
    );
    slow.commit(message.offset())
        .await
        .expect("commit after slow processing");

    let after = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (after.owner.as_str(), after.generation, after.committed),
        (slow.id(), 1, 1)
    );
    assert!(
        after.revision >= before.revision + 3,
        "heartbeats were written: {before:?} -> {after:?}"
    );
    assert!(slow.is_active() && !standby.is_active());
}

/// Guarantee 5: an idle group, active owner and standby alike, writes nothing (and reads
/// nothing) however long it stays idle.
pub(crate) async fn g5_idle_group_writes_nothing(factory: &dyn DriverFactory) {
    let inner = factory.open().await;
    produce(&inner, "s", "m", 1).await;
    let counting = InstrumentedDriver::new(inner.clone());
    let driver: Arc<dyn Driver> = counting.clone();
    let mut owner = consumer(&driver, "s", "g").build().await.expect("owner");
    owner.next().await.expect("next").expect("message");
    owner.commit(1).await.expect("commit");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    // Let the commit's effects settle: both background tasks have nothing left to do.
    let (reads, writes) = settle(&counting).await;

    assert_eq!(standby.wait(OBSERVE).await.expect("wait"), Wake::TimedOut);
    assert_eq!(counting.writes(), writes, "an idle group is never written");
    assert_eq!(counting.reads(), reads, "nor read");
    assert!(owner.is_active());
}

/// Waits (bounded) until the call counters of `counting` stay still for longer than
/// `takeover_after` (so no deadline a consumer had armed is still to come); returns them.
pub(crate) async fn settle(counting: &InstrumentedDriver) -> (u64, u64) {
    let deadline = Instant::now() + BOUND;
    let mut last = (counting.reads(), counting.writes());
    loop {
        tokio::time::sleep(TAKEOVER + Duration::from_millis(100)).await;
        let now = (counting.reads(), counting.writes());
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "storage calls never settled: {now:?}"
        );
        last = now;
    }
}

/// Guarantee 6: a consumer cut off from storage loses the group to a standby; once back, its
/// commit is fenced, the committed offset is unchanged, and it is standby.
pub(crate) async fn g6_zombie_commit_is_fenced(factory: &dyn DriverFactory) {
    let Zombie {
        driver,
        mut zombie,
        mut standby,
        delivered,
    } = zombie(factory).await;

    let result = zombie.commit(delivered.offset()).await;
    assert!(
        matches!(result, Err(Error::Fenced { generation: 1, .. })),
        "{result:?}"
    );
    assert!(!zombie.is_active());
    assert!(
        zombie.next().await.expect("next").is_none(),
        "a standby receives nothing"
    );
    let again = zombie.commit(delivered.offset()).await;
    assert!(matches!(again, Err(Error::Fenced { .. })), "{again:?}");
    let stored = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (stored.owner.as_str(), stored.generation, stored.committed),
        (standby.id(), 2, 0)
    );

    let redelivered = standby.next().await.expect("next").expect("message");
    assert_eq!(redelivered.offset(), delivered.offset());
}

/// A consumer that has been delivered a message and then lost its group to `standby` while
/// cut off from storage, without having noticed.
pub(crate) struct Zombie {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) zombie: Consumer,
    pub(crate) standby: Consumer,
    pub(crate) delivered: Message,
}

pub(crate) async fn zombie(factory: &dyn DriverFactory) -> Zombie {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 3).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let zombie_driver: Arc<dyn Driver> = faulty.clone();
    let mut zombie = consumer(&zombie_driver, "s", "g")
        .build()
        .await
        .expect("zombie");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    let delivered = zombie.next().await.expect("next").expect("message");

    faulty.set_partitioned(true);
    assert_eq!(standby.wait(BOUND).await.expect("wait"), Wake::Activated);
    faulty.set_partitioned(false);
    Zombie {
        driver,
        zombie,
        standby,
        delivered,
    }
}

/// Guarantee 6 with a background commit: a zombie's background commit is fenced, stores
/// nothing, and the next call reports it.
pub(crate) async fn g6_zombie_background_commit_is_fenced(factory: &dyn DriverFactory) {
    let Zombie {
        driver,
        mut zombie,
        standby,
        delivered,
    } = zombie(factory).await;

    // Either the zombie already knows (refused at once) or its write finds out; both end in
    // `Fenced`, reported no later than the next call.
    let started = zombie.commit_in_background(delivered.offset()).await;
    let result = match started {
        Ok(()) => zombie.commit(delivered.offset()).await,
        Err(error) => Err(error),
    };
    assert!(
        matches!(result, Err(Error::Fenced { generation: 1, .. })),
        "{result:?}"
    );
    assert!(!zombie.is_active());
    let stored = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (stored.owner.as_str(), stored.generation, stored.committed),
        (standby.id(), 2, 0)
    );
}

/// Guarantee 6: a commit that was applied but whose reply was lost does not demote the
/// consumer: the retry finds its own write, adopts it and succeeds.
pub(crate) async fn g6_lost_commit_reply_does_not_demote(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 3).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let flaky: Arc<dyn Driver> = faulty.clone();
    // Slow timings: no heartbeat may take the injected fault meant for the commit.
    let mut c = consumer(&flaky, "s", "g")
        .takeover_after(Duration::from_secs(60))
        .heartbeat_every(Duration::from_secs(28))
        .build()
        .await
        .expect("consumer");
    let _standby = consumer(&driver, "s", "g")
        .takeover_after(Duration::from_secs(60))
        .heartbeat_every(Duration::from_secs(28))
        .build()
        .await
        .expect("standby");
    assert_eq!(drain(&mut c).await.len(), 3);

    faulty.lose_next_write_reply();
    let lost = c.commit(2).await;
    assert!(lost.as_ref().is_err_and(Error::is_retryable), "{lost:?}");
    assert_eq!(
        stored_group(&driver, "s", "g").await.committed,
        2,
        "the write was applied"
    );
    assert!(c.is_active());

    c.commit(3).await.expect("commit after a lost reply");
    assert!(c.is_active());
    let stored = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (stored.owner.as_str(), stored.generation, stored.committed),
        (c.id(), 1, 3)
    );

    // The same holds when the lost reply belongs to a retry of the very same commit.
    produce(&driver, "s", "n", 1).await;
    c.next().await.expect("next").expect("message 4");
    faulty.lose_next_write_reply();
    assert!(c.commit(4).await.is_err());
    c.commit(4).await.expect("retrying the same commit");
    assert!(c.is_active());
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 4);
}
