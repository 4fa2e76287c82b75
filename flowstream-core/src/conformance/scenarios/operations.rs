//! Day-two operations: where a new group starts, what the admin API shows, resetting a
//! running group, deleting a stream, retention.

use std::time::{Duration, SystemTime};

use std::sync::Arc;

use crate::conformance::{
    BOUND, DriverFactory, InstrumentedDriver, consumer, eventually, eventually_async, produce,
    stored_group,
};
use crate::{Admin, Driver, Error, NewMessage, Producer, Retention, StartFrom, Wake};

/// The `produced_at` of every stored message of `stream`, by offset.
async fn times(driver: &std::sync::Arc<dyn crate::Driver>, stream: &str) -> Vec<(u64, SystemTime)> {
    let read = driver.read(stream, 0, 10_000).await.expect("read");
    read.iter().map(|m| (m.offset(), m.produced_at())).collect()
}

/// Waits until this machine's clock is past `time` by `gap`, so that what is produced next
/// is stamped later (the store's clock is this machine's, or one in step with it).
async fn clock_past(time: SystemTime, gap: Duration) {
    eventually("the clock moves on", BOUND, || {
        SystemTime::now() >= time + gap
    })
    .await;
}

/// A new group starts where it is told: at an offset (past the head: at the head), at the
/// first message produced at or after a time (before all: the first; after all: the head),
/// and a time far in the future is refused before anything is written.
pub(crate) async fn a_new_group_starts_at_an_offset_or_a_time(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "early", 5).await;
    let stamped = times(&driver, "s").await;
    clock_past(stamped[4].1, Duration::from_millis(20)).await;
    let between = SystemTime::now();
    clock_past(between, Duration::from_millis(20)).await;
    produce(&driver, "s", "late", 5).await;

    let first_of = async |group: &str, start: StartFrom| {
        let mut c = consumer(&driver, "s", group)
            .start_from(start)
            .build()
            .await
            .expect("consumer");
        let first = c.next().await.expect("next").map(|m| m.offset());
        c.shutdown().await.expect("shutdown");
        first
    };
    assert_eq!(first_of("at-4", StartFrom::Offset(4)).await, Some(4));
    assert_eq!(first_of("at-0", StartFrom::Offset(0)).await, Some(1));
    assert_eq!(first_of("at-time", StartFrom::Time(between)).await, Some(6));
    assert_eq!(
        first_of("at-a-stamp", StartFrom::Time(stamped[2].1)).await,
        stamped
            .iter()
            .find(|(_, t)| *t >= stamped[2].1)
            .map(|(o, _)| *o),
        "the first message stamped at or after the time"
    );
    assert_eq!(
        first_of("before-all", StartFrom::Time(SystemTime::UNIX_EPOCH)).await,
        Some(1)
    );

    let mut past_head = consumer(&driver, "s", "past-head")
        .start_from(StartFrom::Offset(100))
        .build()
        .await
        .expect("consumer");
    let mut after_all = consumer(&driver, "s", "after-all")
        .start_from(StartFrom::Time(SystemTime::now() + Duration::from_secs(60)))
        .build()
        .await
        .expect("consumer");
    assert!(past_head.next().await.expect("next").is_none());
    assert!(after_all.next().await.expect("next").is_none());
    produce(&driver, "s", "new", 1).await;
    for c in [&mut past_head, &mut after_all] {
        assert_eq!(c.wait(BOUND).await.expect("wait"), Wake::Messages);
        assert_eq!(c.next().await.expect("next").map(|m| m.offset()), Some(11));
    }

    let far = consumer(&driver, "s", "far")
        .start_from(StartFrom::Time(
            SystemTime::now() + Duration::from_secs(86_400),
        ))
        .build()
        .await;
    assert!(matches!(far, Err(Error::InvalidConfig(_))), "{far:?}");
    assert!(
        crate::GroupState::load(driver.as_ref(), "s", "far")
            .await
            .expect("load")
            .is_none(),
        "a refused start writes nothing"
    );
}

/// The admin API lists every stream with its extent, and a stream's groups with their
/// committed offsets, lag, owner and last write.
pub(crate) async fn admin_lists_streams_and_groups_with_lag(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    assert!(admin.streams().await.expect("streams").is_empty());
    admin.create_stream("parts", 3).await.expect("create");
    let producer = Producer::new(driver.clone());
    for partition in [0, 0, 2] {
        producer
            .send(NewMessage::new("parts", "p").to_partition(partition))
            .await
            .expect("send");
    }
    produce(&driver, "plain", "m", 5).await;
    driver.trim("plain", 2).await.expect("trim");

    let streams = admin.streams().await.expect("streams");
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["parts", "plain"]);
    let heads: Vec<(u32, u64, Option<u64>, u64)> = streams[0]
        .partitions
        .iter()
        .map(|p| (p.partition, p.head, p.first, p.messages))
        .collect();
    assert_eq!(
        heads,
        [(0, 2, Some(1), 2), (1, 0, None, 0), (2, 1, Some(1), 1)]
    );
    assert_eq!(streams[0].messages(), 3);
    let plain = &streams[1].partitions[0];
    assert_eq!((plain.head, plain.first, plain.messages), (5, Some(3), 3));
    let last = driver.read("plain", 4, 1).await.expect("read")[0].produced_at();
    assert_eq!(plain.last_produced, Some(last));
    assert_eq!(
        admin.stream("plain").await.expect("stream").as_ref(),
        Some(&streams[1])
    );
    assert_eq!(admin.stream("nothing").await.expect("stream"), None);

    let before = SystemTime::now();
    let mut reader = consumer(&driver, "plain", "billing")
        .build()
        .await
        .expect("consumer");
    let first = reader.next().await.expect("next").expect("message");
    assert_eq!(
        first.offset(),
        3,
        "a trimmed-away start resumes at the earliest stored"
    );
    reader.commit(&first).await.expect("commit");
    let groups = admin.groups("plain").await.expect("groups");
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert_eq!((group.name.as_str(), group.lag()), ("billing", 2));
    let part = &group.partitions[0];
    assert_eq!((part.partition, part.committed, part.head), (0, 3, 5));
    assert_eq!((part.owner.as_str(), part.active), (reader.id(), true));
    assert_eq!(Some(part.generation), reader.generation());
    assert!(
        part.last_write
            .is_some_and(|t| t + Duration::from_secs(1) >= before),
        "{:?} is the commit's time",
        part.last_write
    );
    assert!(group.members.is_empty());

    let mut member = consumer(&driver, "parts", "workers")
        .member_id("w1")
        .build()
        .await
        .expect("member");
    eventually("the member is active in every partition", BOUND, || {
        (0..3).all(|p| member.generation_in(p).is_some())
    })
    .await;
    while let Some(message) = member.next().await.expect("next") {
        if message.partition() == 0 {
            member.commit(&message).await.expect("commit");
        }
    }
    let groups = admin.groups("parts").await.expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].members, ["w1"]);
    let committed: Vec<(u32, u64, u64)> = groups[0]
        .partitions
        .iter()
        .map(|p| (p.partition, p.committed, p.lag))
        .collect();
    assert!(committed.contains(&(0, 2, 0)), "{committed:?}");
    assert!(committed.contains(&(2, 0, 1)), "{committed:?}");
    assert_eq!(groups[0].lag(), 1);
    member.shutdown().await.expect("shutdown");
    reader.shutdown().await.expect("shutdown");
}

/// A reset moves a running group: the active consumer's commits of what it delivered before
/// are fenced and change nothing, and it goes on from the new position. Bad positions are
/// refused with nothing written; a group nobody has claimed starts where it was reset to.
pub(crate) async fn a_reset_moves_a_running_group_and_fences_what_it_delivered_before(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    produce(&driver, "s", "m", 10).await;
    let mut active = consumer(&driver, "s", "g").build().await.expect("consumer");
    let mut delivered = Vec::new();
    for _ in 0..7 {
        delivered.push(active.next().await.expect("next").expect("message"));
    }
    active.commit(&delivered[4]).await.expect("commit 5");
    let generation = active.generation().expect("active");

    let revision = crate::conformance::stored_group(&driver, "s", "g")
        .await
        .revision;
    for bad in [
        admin.reset_group("s", "g", StartFrom::Offset(12)).await,
        admin
            .reset_group(
                "s",
                "g",
                StartFrom::Time(SystemTime::now() + Duration::from_secs(86_400)),
            )
            .await,
        admin
            .reset_group("s", "no spaces", StartFrom::Earliest)
            .await,
    ] {
        assert!(
            matches!(
                bad,
                Err(Error::OffsetOutOfRange {
                    offset: 12,
                    head: 10,
                    ..
                } | Error::InvalidConfig(_)
                    | Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        crate::conformance::stored_group(&driver, "s", "g")
            .await
            .revision,
        revision,
        "refused resets write nothing"
    );

    assert_eq!(
        admin
            .reset_group("s", "g", StartFrom::Offset(3))
            .await
            .expect("reset"),
        vec![2]
    );
    let stored = crate::conformance::stored_group(&driver, "s", "g").await;
    assert_eq!((stored.committed, stored.generation), (2, generation + 1));
    assert_eq!(stored.owner, active.id(), "the owner keeps the group");
    let stale = active.commit(&delivered[6]).await;
    assert!(matches!(stale, Err(Error::Fenced { .. })), "{stale:?}");
    assert_eq!(
        crate::conformance::stored_group(&driver, "s", "g")
            .await
            .committed,
        2,
        "a commit from before the reset changes nothing"
    );
    let mut again = None;
    eventually_async("the consumer goes on from the reset", BOUND, async || {
        again = active.next().await.expect("next");
        again.is_some()
    })
    .await;
    let again = again.expect("message");
    assert_eq!(
        again.offset(),
        3,
        "delivery resumes right after the new position"
    );
    let four = active.next().await.expect("next").expect("4 again");
    assert_eq!(four.offset(), 4);
    // 4 was delivered before the reset too: that delivery's commit is fenced, though the
    // consumer has delivered 4 again in its new claim.
    let old_four = active.commit(&delivered[3]).await;
    assert!(
        matches!(old_four, Err(Error::Fenced { .. })),
        "{old_four:?}"
    );
    active.commit(&again).await.expect("commit after the reset");
    assert_eq!(
        crate::conformance::stored_group(&driver, "s", "g")
            .await
            .committed,
        3
    );

    assert_eq!(
        admin
            .reset_group("s", "g", StartFrom::Latest)
            .await
            .expect("reset"),
        vec![10]
    );
    produce(&driver, "s", "after", 1).await;
    // Until it learns of the reset, the consumer may still hand out what it had read ahead
    // (4 to 10); their commits would be fenced. Then it goes on at 11.
    let mut seen = Vec::new();
    eventually_async(
        "the consumer delivers past the head it was moved to",
        BOUND,
        async || {
            if let Some(message) = active.next().await.expect("next") {
                seen.push(message.offset());
            }
            seen.last() == Some(&11)
        },
    )
    .await;
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|&o| (4..=10).contains(&o)),
        "{seen:?}"
    );

    assert_eq!(
        admin
            .reset_group("s", "fresh", StartFrom::Offset(8))
            .await
            .expect("reset an unclaimed group"),
        vec![7]
    );
    let mut fresh = consumer(&driver, "s", "fresh")
        .build()
        .await
        .expect("consumer");
    let mut first = None;
    eventually_async("the new group's consumer claims it", BOUND, async || {
        first = fresh.next().await.expect("next");
        first.is_some()
    })
    .await;
    assert_eq!(first.map(|m| m.offset()), Some(8));
    fresh.shutdown().await.expect("shutdown");
    active.shutdown().await.expect("shutdown");
}

/// Deleting a stream removes its messages, groups and policy; its running consumers stop with
/// a clear error; the name starts again at offset 1 and an old group name reads it from
/// there.
pub(crate) async fn a_deleted_stream_stops_its_consumers_and_starts_again_at_one(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    produce(&driver, "d", "old", 5).await;
    produce(&driver, "other", "o", 2).await;
    admin
        .set_retention("d", Retention::new().max_messages(100))
        .await
        .expect("policy");
    let mut running = consumer(&driver, "d", "g").build().await.expect("consumer");
    let first = running.next().await.expect("next").expect("message");
    running.commit(&first).await.expect("commit");
    let mut other = consumer(&driver, "other", "g")
        .build()
        .await
        .expect("consumer");
    assert!(other.next().await.expect("next").is_some());

    let deleted = admin.delete_stream("d").await.expect("delete");
    assert_eq!((deleted.logs, deleted.messages), (1, 5));
    assert!(
        deleted.records >= 2,
        "the group and the policy: {deleted:?}"
    );
    let mut stopped = None;
    eventually_async(
        "the running consumer learns of the delete",
        BOUND,
        async || match running.next().await {
            Err(error) => {
                stopped = Some(error);
                true
            }
            Ok(_) => false,
        },
    )
    .await;
    assert!(
        matches!(&stopped, Some(Error::GroupDeleted { stream, group }) if stream == "d" && group == "g"),
        "{stopped:?}"
    );
    assert!(matches!(
        running.wait(Duration::from_millis(10)).await,
        Err(Error::GroupDeleted { .. })
    ));
    assert!(matches!(
        running.commit(&first).await,
        Err(Error::GroupDeleted { .. })
    ));
    assert_eq!(admin.stream("d").await.expect("stream"), None);
    assert!(admin.groups("d").await.expect("groups").is_empty());
    assert_eq!(admin.retention("d").await.expect("retention"), None);
    assert_eq!(
        admin
            .stream("other")
            .await
            .expect("stream")
            .map(|s| s.messages()),
        Some(2),
        "other streams are untouched"
    );
    assert!(
        other
            .next()
            .await
            .expect("the other stream's consumer goes on")
            .is_some()
    );

    assert_eq!(produce(&driver, "d", "new", 2).await, vec![1, 2]);
    let mut reborn = consumer(&driver, "d", "g").build().await.expect("consumer");
    let message = reborn.next().await.expect("next").expect("message");
    assert_eq!((message.offset(), message.body()), (1, &b"new0"[..]));

    assert!(matches!(
        admin.delete_stream("never-was").await,
        Err(Error::NoSuchStream { .. })
    ));
    assert!(matches!(
        admin.delete_stream("bad name").await,
        Err(Error::InvalidName { .. })
    ));
    reborn.shutdown().await.expect("shutdown");
    other.shutdown().await.expect("shutdown");
}

/// A consumer cut off from storage while its stream is deleted, produced to again and its
/// group reset (which creates the record anew, unclaimed) learns on its return that the group
/// was deleted: it neither claims the new record nor commits what the old stream delivered
/// into it.
pub(crate) async fn a_consumer_that_missed_a_delete_never_joins_the_new_group(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    produce(&driver, "z", "old", 5).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let zombie_driver: Arc<dyn Driver> = faulty.clone();
    let mut zombie = consumer(&zombie_driver, "z", "g")
        .build()
        .await
        .expect("consumer");
    let mut old = None;
    for _ in 0..3 {
        old = zombie.next().await.expect("next");
    }
    let old = old.expect("three old messages");
    assert_eq!(old.offset(), 3);

    faulty.set_partitioned(true);
    admin.delete_stream("z").await.expect("delete");
    produce(&driver, "z", "new", 5).await;
    admin
        .reset_group("z", "g", StartFrom::Earliest)
        .await
        .expect("a reset creates the group, unclaimed");
    faulty.set_partitioned(false);

    let mut stopped = None;
    eventually_async(
        "the cut-off consumer learns that its group was deleted",
        BOUND,
        async || match zombie.next().await {
            Err(error) => {
                stopped = Some(error);
                true
            }
            // What it had read ahead of the old stream may still come out.
            Ok(Some(message)) => {
                assert!(
                    message.body().starts_with(b"old"),
                    "a consumer of the deleted stream was given offset {} of the new one",
                    message.offset()
                );
                false
            }
            Ok(None) => false,
        },
    )
    .await;
    assert!(
        matches!(&stopped, Some(Error::GroupDeleted { .. })),
        "{stopped:?}"
    );
    let commit = zombie.commit(&old).await;
    assert!(
        matches!(commit, Err(Error::GroupDeleted { .. })),
        "{commit:?}"
    );
    let stored = stored_group(&driver, "z", "g").await;
    assert_eq!(
        (stored.owner.as_str(), stored.active, stored.committed),
        ("", false, 0),
        "the new group is untouched"
    );
    let mut fresh = consumer(&driver, "z", "g").build().await.expect("consumer");
    let first = fresh.next().await.expect("next").expect("message");
    assert_eq!((first.offset(), first.body()), (1, &b"new0"[..]));
    fresh.shutdown().await.expect("shutdown");
    drop(zombie);
}

/// Retention keeps the newest messages by count, drops the old by age, never passes the
/// slowest group when told so, and any number of callers may apply it at once. Policies are
/// stored, read back and cleared; a maintenance task applies them on its own.
pub(crate) async fn retention_trims_by_count_age_and_slowest_group(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    for bad in [
        Retention::new().max_messages(0),
        Retention::new().max_age(Duration::ZERO),
        Retention::new().keep_unconsumed(true),
    ] {
        assert!(matches!(
            admin.set_retention("r", bad).await,
            Err(Error::InvalidConfig(_))
        ));
    }
    assert_eq!(admin.retention("r").await.expect("retention"), None);

    produce(&driver, "r", "m", 30).await;
    let policy = Retention::new().max_messages(10);
    admin.set_retention("r", policy).await.expect("set");
    assert_eq!(admin.retention("r").await.expect("get"), Some(policy));
    // Two callers at once (on PostgreSQL the project's own tests also run it from two
    // drivers, as two processes would).
    let second = Admin::new(driver.clone());
    let (a, b) = tokio::join!(admin.apply_retention("r"), second.apply_retention("r"));
    assert_eq!(
        a.expect("first") + b.expect("second"),
        20,
        "two callers at once delete the 20 oldest between them, once"
    );
    let first = driver.read("r", 0, 1).await.expect("read")[0].offset();
    assert_eq!((first, driver.head("r").await.expect("head")), (21, 30));

    let mut slow = consumer(&driver, "r", "slow")
        .build()
        .await
        .expect("consumer");
    let message = slow.next().await.expect("next").expect("message");
    assert_eq!(message.offset(), 21);
    slow.commit(&message).await.expect("commit");
    admin
        .set_retention("r", Retention::new().max_messages(2).keep_unconsumed(true))
        .await
        .expect("set");
    assert_eq!(
        admin.apply_retention("r").await.expect("apply"),
        1,
        "up to the committed 21, no further"
    );
    slow.commit(25).await.expect_err("25 was not delivered yet");
    for _ in 22..=25 {
        let message = slow.next().await.expect("next").expect("message");
        slow.commit(&message).await.expect("commit");
    }
    assert_eq!(admin.apply_retention("r").await.expect("apply"), 4);
    assert_eq!(driver.read("r", 0, 1).await.expect("read")[0].offset(), 26);
    slow.shutdown().await.expect("shutdown");

    // A group known on a partitioned stream holds back the partitions it has not claimed.
    admin.create_stream("w", 2).await.expect("create");
    let producer = Producer::new(driver.clone());
    for partition in 0..2 {
        for i in 0..5 {
            producer
                .send(NewMessage::new("w", format!("m{i}")).to_partition(partition))
                .await
                .expect("send");
        }
    }
    admin
        .reset_partition("w", "g", 0, StartFrom::Offset(4))
        .await
        .expect("the group at 3 in partition 0, nowhere in partition 1");
    admin
        .set_retention("w", Retention::new().max_messages(1).keep_unconsumed(true))
        .await
        .expect("set");
    assert_eq!(admin.apply_retention("w").await.expect("apply"), 3);
    assert_eq!(driver.read("w", 0, 1).await.expect("read")[0].offset(), 4);
    assert_eq!(
        driver.read("w/1", 0, 1).await.expect("read")[0].offset(),
        1,
        "the group may still start at partition 1's first message"
    );

    produce(&driver, "aged", "old", 3).await;
    let old = times(&driver, "aged").await;
    clock_past(old[2].1, Duration::from_secs(1)).await;
    produce(&driver, "aged", "new", 3).await;
    let age = SystemTime::now()
        .duration_since(old[2].1)
        .expect("clock")
        .saturating_sub(Duration::from_millis(500));
    admin
        .set_retention("aged", Retention::new().max_age(age))
        .await
        .expect("set");
    assert_eq!(admin.apply_retention("aged").await.expect("apply"), 3);
    assert_eq!(
        driver.read("aged", 0, 1).await.expect("read")[0].offset(),
        4
    );

    assert!(admin.clear_retention("aged").await.expect("clear"));
    assert!(!admin.clear_retention("aged").await.expect("clear again"));
    assert_eq!(admin.retention("aged").await.expect("get"), None);

    admin
        .set_retention("task", Retention::new().max_messages(3))
        .await
        .expect("set");
    let task = admin
        .spawn_retention(Duration::from_millis(20))
        .expect("task");
    produce(&driver, "task", "t", 8).await;
    eventually_async("the maintenance task trims", BOUND, async || {
        driver.read("task", 0, 1).await.expect("read")[0].offset() == 6
    })
    .await;
    task.stop();
}

/// A group whose next messages were trimmed before it read them resumes at the earliest one
/// still stored, or, with `fail_if_trimmed`, reports the gap (again and again) until it is
/// reset.
pub(crate) async fn a_trimmed_gap_is_skipped_or_reported(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    produce(&driver, "t", "m", 10).await;
    for group in ["lenient", "strict"] {
        admin
            .reset_group("t", group, StartFrom::Offset(3))
            .await
            .expect("place the group at 3");
    }
    assert_eq!(admin.trim("t", 5).await.expect("trim"), 5);

    let mut lenient = consumer(&driver, "t", "lenient")
        .build()
        .await
        .expect("consumer");
    let mut first = None;
    eventually_async("the lenient consumer claims its group", BOUND, async || {
        first = lenient.next().await.expect("next");
        first.is_some()
    })
    .await;
    assert_eq!(
        first.map(|m| m.offset()),
        Some(6),
        "resumes at the earliest still stored"
    );

    let mut strict = consumer(&driver, "t", "strict")
        .fail_if_trimmed(true)
        .build()
        .await
        .expect("consumer");
    let mut reported = None;
    eventually_async(
        "the strict consumer reports the gap",
        BOUND,
        async || match strict.next().await {
            Err(error) => {
                reported = Some(error);
                true
            }
            Ok(message) => {
                assert!(message.is_none(), "nothing past the gap: {message:?}");
                false
            }
        },
    )
    .await;
    assert!(
        matches!(
            reported,
            Some(Error::Trimmed {
                position: 2,
                resumes_at: Some(6),
                partition: 0,
                ..
            })
        ),
        "{reported:?}"
    );
    assert!(
        matches!(strict.next().await, Err(Error::Trimmed { .. })),
        "reported until the group moves"
    );
    admin
        .reset_group("t", "strict", StartFrom::Earliest)
        .await
        .expect("reset");
    let mut resumed = None;
    eventually_async(
        "the strict consumer goes on after the reset",
        BOUND,
        async || {
            resumed = strict.next().await.ok().flatten();
            resumed.is_some()
        },
    )
    .await;
    assert_eq!(resumed.map(|m| m.offset()), Some(6));

    produce(&driver, "gone", "m", 3).await;
    admin
        .reset_group("gone", "strict", StartFrom::Offset(1))
        .await
        .expect("place the group at the start");
    admin.trim("gone", 3).await.expect("trim everything");
    let mut emptied = consumer(&driver, "gone", "strict")
        .fail_if_trimmed(true)
        .build()
        .await
        .expect("consumer");
    let mut waited = None;
    eventually_async("waiting reports a gap up to the head", BOUND, async || {
        assert!(emptied.next().await.expect("next").is_none());
        match emptied.wait(Duration::from_millis(50)).await {
            Err(error) => {
                waited = Some(error);
                true
            }
            Ok(_) => false,
        }
    })
    .await;
    assert!(
        matches!(
            waited,
            Some(Error::Trimmed {
                position: 0,
                resumes_at: None,
                ..
            })
        ),
        "{waited:?}"
    );
    for c in [lenient, strict, emptied] {
        c.shutdown().await.expect("shutdown");
    }
}
