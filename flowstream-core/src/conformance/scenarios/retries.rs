//! Retries and dead letters: a nacked message comes back after its delay, before anything
//! after it in its partition; `max_deliveries` moves it to the dead-letter stream together
//! with the commit past it; a dead letter on demand does the same; a new owner continues the
//! count; a fenced consumer copies and commits nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::leadership::{Zombie, zombie};
use crate::conformance::{
    BOUND, DriverFactory, InstrumentedDriver, consumer, produce, stored_group,
};
use crate::{
    Admin, Consumer, Driver, Error, Message, Nacked, NewMessage, Producer, RetryBackoff, Wake,
    dead_letter_headers as h, dead_letter_stream,
};

fn fixed(delay: Duration) -> RetryBackoff {
    RetryBackoff::fixed(delay).without_jitter()
}

pub(super) async fn next(consumer: &mut Consumer) -> Message {
    consumer.next().await.expect("next").expect("a message")
}

/// Waits (bounded) for the next message, through `wait`.
pub(super) async fn next_after_wait(consumer: &mut Consumer) -> Message {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(message) = consumer.next().await.expect("next") {
            return message;
        }
        assert!(Instant::now() < deadline, "no message within {BOUND:?}");
        consumer.wait(BOUND).await.expect("wait");
    }
}

/// A fresh store whose stream `p` has two partitions and holds `sends` (body, partition).
async fn two_partitions(
    factory: &dyn DriverFactory,
    sends: impl IntoIterator<Item = (String, u32)>,
) -> Arc<dyn Driver> {
    let driver = factory.open().await;
    Admin::new(driver.clone())
        .create_stream("p", 2)
        .await
        .expect("create");
    let producer = Producer::new(driver.clone());
    for (body, partition) in sends {
        producer
            .send(NewMessage::new("p", body).to_partition(partition))
            .await
            .expect("send");
    }
    driver
}

/// The only member of group `g` on `p`, admitted at once, retrying after `delay`.
async fn member_of_p(driver: &Arc<dyn Driver>, delay: Duration) -> Consumer {
    consumer(driver, "p", "g")
        .retry_backoff(fixed(delay))
        .join_delay(Duration::ZERO)
        .build()
        .await
        .expect("member")
}

pub(super) fn body(message: &Message) -> &str {
    message.body_str().expect("utf-8 body")
}

/// A nacked message is delivered again once its delay is over, as delivery 2, and nothing
/// after it is delivered before it; the nack commits what came before it.
pub(crate) async fn a_nacked_message_comes_back_after_its_delay_before_later_ones(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 4).await;
    let delay = Duration::from_millis(300);
    let mut c = consumer(&driver, "s", "g")
        .retry_backoff(fixed(delay))
        .build()
        .await
        .expect("build");
    let first = next(&mut c).await;
    assert_eq!((body(&first), first.attempt()), ("m0", 1));
    let second = next(&mut c).await;
    let third = next(&mut c).await;
    assert_eq!(body(&third), "m2", "read ahead of the failure");
    let nacked_at = Instant::now();
    let nacked = c.nack(&second, "boom").await.expect("nack");
    assert_eq!(
        nacked,
        Nacked::Retry {
            after: delay,
            attempt: 2
        }
    );
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 1);
    assert!(
        c.next().await.expect("next").is_none(),
        "nothing is delivered while the nacked message waits"
    );
    assert_eq!(c.wait(BOUND).await.expect("wait"), Wake::Messages);
    assert!(nacked_at.elapsed() >= delay, "woken before the delay");
    let again = next(&mut c).await;
    assert_eq!(
        (body(&again), again.offset(), again.attempt()),
        ("m1", 2, 2)
    );
    let after = next(&mut c).await;
    assert_eq!((body(&after), after.attempt()), ("m2", 1));
    c.commit(&after).await.expect("commit");
    let last = next(&mut c).await;
    assert_eq!((body(&last), last.attempt()), ("m3", 1));

    // A message the group has committed cannot be nacked any more.
    let late = c.nack(&again, "too late").await;
    assert!(
        matches!(
            late,
            Err(Error::AlreadyCommitted {
                offset: 2,
                committed: 3
            })
        ),
        "{late:?}"
    );
    c.shutdown().await.expect("shutdown");
}

/// The nack that reaches `max_deliveries` moves the message to the group's dead-letter stream
/// and commits past it in one step, with where it came from and why in its headers; the group
/// goes on with the next message. The dead-letter stream is an ordinary stream to consume,
/// and no producer can write to it.
pub(crate) async fn max_deliveries_moves_a_message_to_the_dead_letters_with_its_commit(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    let producer = Producer::new(driver.clone());
    producer
        .send(NewMessage::new("s", "fine"))
        .await
        .expect("send");
    producer
        .send(
            NewMessage::new("s", "poison")
                .with_key("k1")
                .with_header("trace", "t-1"),
        )
        .await
        .expect("send");
    producer
        .send(NewMessage::new("s", "after"))
        .await
        .expect("send");
    let mut c = consumer(&driver, "s", "g")
        .retry_backoff(fixed(Duration::from_millis(20)))
        .max_deliveries(3)
        .build()
        .await
        .expect("build");
    let fine = next(&mut c).await;
    c.commit(&fine).await.expect("commit");
    let mut attempts = Vec::new();
    let outcome = loop {
        let poison = next_after_wait(&mut c).await;
        assert_eq!(body(&poison), "poison");
        attempts.push(poison.attempt());
        match c.nack(&poison, "cannot parse\0 it").await.expect("nack") {
            Nacked::Retry { .. } => continue,
            done => break done,
        }
    };
    assert_eq!(outcome, Nacked::DeadLettered);
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 2);
    let after = next(&mut c).await;
    assert_eq!((body(&after), after.attempt()), ("after", 1));

    let dlq = dead_letter_stream("s", "g");
    let copies = driver.read(&dlq, 0, 10).await.expect("read dead letters");
    assert_eq!(copies.len(), 1, "dead-lettered once");
    let copy = &copies[0];
    assert_eq!(
        (copy.body(), copy.key()),
        (&b"poison"[..], Some(&b"k1"[..]))
    );
    let header = |name: &str| copy.headers().get(name).map(String::as_str);
    assert_eq!(header("trace"), Some("t-1"));
    assert_eq!(header(h::STREAM), Some("s"));
    assert_eq!(header(h::PARTITION), Some("0"));
    assert_eq!(header(h::OFFSET), Some("2"));
    assert_eq!(header(h::GROUP), Some("g"));
    assert_eq!(header(h::ATTEMPTS), Some("3"));
    assert_eq!(header(h::ERROR), Some("cannot parse\u{fffd} it"));
    assert!(header(h::DEAD_LETTERED_AT_MS).is_some_and(|t| t.parse::<u64>().is_ok()));
    assert!(header(h::PRODUCED_AT_MS).is_some_and(|t| t.parse::<u64>().is_ok()));

    let mut reader = consumer(&driver, &dlq, "inspect")
        .build()
        .await
        .expect("dlq group");
    let read = next(&mut reader).await;
    assert_eq!(read.body(), b"poison");
    reader
        .commit(&read)
        .await
        .expect("commit on the dead-letter stream");
    let refused = producer.send(NewMessage::new(dlq.as_str(), "forged")).await;
    assert!(
        matches!(refused, Err(Error::InvalidName { .. })),
        "{refused:?}"
    );
    reader.shutdown().await.expect("shutdown");
    c.shutdown().await.expect("shutdown");
}

/// A dead letter either happens with its commit or not at all: cut off from storage, nothing
/// is copied nor committed; applied with its reply lost, calling again copies nothing more.
pub(crate) async fn a_dead_letter_is_copied_with_its_commit_or_not_at_all(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 2).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let through: Arc<dyn Driver> = faulty.clone();
    let mut c = consumer(&through, "s", "g").build().await.expect("build");
    let first = next(&mut c).await;
    let dlq = dead_letter_stream("s", "g");

    faulty.set_partitioned(true);
    let cut = c.dead_letter(&first, "bad schema").await;
    faulty.set_partitioned(false);
    assert!(cut.as_ref().is_err_and(Error::is_retryable), "{cut:?}");
    assert_eq!(driver.head(&dlq).await.expect("head"), 0);
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 0);

    faulty.lose_next_write_reply();
    let lost = c.dead_letter(&first, "bad schema").await;
    assert!(lost.as_ref().is_err_and(Error::is_retryable), "{lost:?}");
    assert_eq!(driver.head(&dlq).await.expect("head"), 1, "applied");
    // As documented: `Ok` (the write found its commit done), or `AlreadyCommitted` if the
    // consumer learnt of that commit first (a heartbeat re-read the group record meanwhile).
    let again = c.dead_letter(&first, "bad schema").await;
    assert!(
        matches!(
            again,
            Ok(())
                | Err(Error::AlreadyCommitted {
                    offset: 1,
                    committed: 1
                })
        ),
        "calling again after a lost reply: {again:?}"
    );
    assert_eq!(driver.head(&dlq).await.expect("head"), 1, "copied once");
    let group = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (group.committed, group.generation),
        (1, 1),
        "still the owner"
    );
    let copy = &driver.read(&dlq, 0, 1).await.expect("read")[0];
    assert_eq!(
        copy.headers().get(h::ATTEMPTS).map(String::as_str),
        Some("1")
    );
    let second = next(&mut c).await;
    assert_eq!(body(&second), "m1");
    c.shutdown().await.expect("shutdown");
}

/// A consumer that lost its group cannot nack nor dead-letter: nothing is copied, nothing
/// committed, and the new owner receives the message.
pub(crate) async fn a_fenced_consumer_cannot_nack_or_dead_letter(factory: &dyn DriverFactory) {
    let Zombie {
        driver,
        mut zombie,
        mut standby,
        delivered,
    } = zombie(factory).await;
    let dead = zombie.dead_letter(&delivered, "late").await;
    assert!(matches!(dead, Err(Error::Fenced { .. })), "{dead:?}");
    let nack = zombie.nack(&delivered, "late").await;
    assert!(
        matches!(nack, Err(Error::Fenced { .. } | Error::Standby { .. })),
        "{nack:?}"
    );
    assert_eq!(
        driver
            .head(&dead_letter_stream("s", "g"))
            .await
            .expect("head"),
        0
    );
    let redelivered = next(&mut standby).await;
    assert_eq!(
        (redelivered.offset(), redelivered.attempt()),
        (delivered.offset(), 1)
    );
}

/// A consumer that takes the group over after a nack continues its count and what is left of
/// its delay: the message is not delivered before it, and says it is delivery 2.
pub(crate) async fn a_new_owner_continues_a_nacked_messages_count_and_delay(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 2).await;
    let delay = Duration::from_millis(400);
    let mut first = consumer(&driver, "s", "g").build().await.expect("first");
    let mut second = consumer(&driver, "s", "g").build().await.expect("second");
    let failed = next(&mut first).await;
    let nacked_at = Instant::now();
    first
        .nack_after(&failed, delay, "boom")
        .await
        .expect("nack");
    first.shutdown().await.expect("shutdown");
    assert_eq!(second.wait(BOUND).await.expect("wait"), Wake::Activated);
    if nacked_at.elapsed() < delay {
        assert!(
            second.next().await.expect("next").is_none(),
            "delivered before its delay"
        );
    }
    let again = next_after_wait(&mut second).await;
    assert!(nacked_at.elapsed() >= delay, "delivered before its delay");
    assert_eq!((again.offset(), again.attempt()), (1, 2));
    second.shutdown().await.expect("shutdown");
}

/// On a partitioned stream a nack holds back its own partition only: the member goes on
/// delivering the others meanwhile.
pub(crate) async fn a_nack_holds_back_only_its_partition(factory: &dyn DriverFactory) {
    let sends = (0..3).flat_map(|i| (0..2).map(move |p| (format!("p{p}-{i}"), p)));
    let driver = two_partitions(factory, sends).await;
    let delay = Duration::from_secs(1);
    let mut member = member_of_p(&driver, delay).await;
    let mut failed = None;
    let mut delivered = Vec::new();
    while failed.is_none() {
        let message = next_after_wait(&mut member).await;
        if message.partition() == 0 {
            let nacked_at = Instant::now();
            member.nack(&message, "boom").await.expect("nack");
            failed = Some((message, nacked_at));
        } else {
            delivered.push(body(&message).to_owned());
        }
    }
    let (failed, nacked_at) = failed.expect("nacked");
    // Partition 1 keeps flowing while partition 0 waits for its nacked message, which then
    // comes back first, before the rest of its partition.
    let mut resumed = Vec::new();
    while delivered.len() < 3 || resumed.len() < 3 {
        let message = next_after_wait(&mut member).await;
        if message.partition() == 1 {
            assert!(
                resumed.is_empty(),
                "partition 1 waited for partition 0's retry"
            );
            delivered.push(body(&message).to_owned());
            continue;
        }
        assert!(nacked_at.elapsed() >= delay, "partition 0 resumed early");
        resumed.push((
            body(&message).to_owned(),
            message.offset(),
            message.attempt(),
        ));
    }
    assert_eq!(delivered, ["p1-0", "p1-1", "p1-2"]);
    assert_eq!(resumed[0], (body(&failed).to_owned(), failed.offset(), 2));
    let bodies: Vec<&str> = resumed.iter().map(|(b, _, _)| b.as_str()).collect();
    assert_eq!(bodies, ["p0-0", "p0-1", "p0-2"]);
    member.shutdown().await.expect("shutdown");
}

/// Nacks and dead letters the consumer cannot honour are refused with typed errors and write
/// nothing: a zero `max_deliveries`, a delay over the limit, a message not delivered yet, one
/// from another stream, one already committed, a call while standby. A reason of any size is
/// kept, cut to 4 KiB.
pub(crate) async fn nacks_that_cannot_be_honoured_are_refused_and_change_nothing(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 3).await;
    produce(&driver, "other", "o", 1).await;
    let zero = consumer(&driver, "s", "g").max_deliveries(0).build().await;
    assert!(matches!(zero, Err(Error::InvalidConfig(_))), "{zero:?}");
    let mut c = consumer(&driver, "s", "g").build().await.expect("build");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    let first = next(&mut c).await;
    let before = stored_group(&driver, "s", "g").await;

    let too_long = c
        .nack_after(&first, crate::MAX_RETRY_DELAY + Duration::from_secs(1), "x")
        .await;
    assert!(
        matches!(too_long, Err(Error::DelayTooLong { .. })),
        "{too_long:?}"
    );
    let unread = driver.read("s", 1, 1).await.expect("read").remove(0);
    let ahead = c.nack(&unread, "x").await;
    assert!(
        matches!(
            ahead,
            Err(Error::CommitBeyondDelivered {
                offset: 2,
                delivered: 1
            })
        ),
        "{ahead:?}"
    );
    let foreign = driver.read("other", 0, 1).await.expect("read").remove(0);
    let wrong = c.dead_letter(&foreign, "x").await;
    assert!(matches!(wrong, Err(Error::WrongStream { .. })), "{wrong:?}");
    let idle = standby.nack(&first, "x").await;
    assert!(matches!(idle, Err(Error::Standby { .. })), "{idle:?}");
    // The owner's heartbeats may have written meanwhile (a message is pending): what a nack
    // or a dead letter would change is the owner, the claim and the committed offset.
    let after = stored_group(&driver, "s", "g").await;
    assert_eq!(
        (
            &after.owner,
            after.generation,
            after.active,
            after.committed
        ),
        (
            &before.owner,
            before.generation,
            before.active,
            before.committed
        ),
        "nothing written"
    );
    assert_eq!(
        driver
            .head(&dead_letter_stream("s", "g"))
            .await
            .expect("head"),
        0
    );

    c.commit(&first).await.expect("commit");
    let late = c.dead_letter(&first, "x").await;
    assert!(
        matches!(
            late,
            Err(Error::AlreadyCommitted {
                offset: 1,
                committed: 1
            })
        ),
        "{late:?}"
    );
    let second = next(&mut c).await;
    c.dead_letter(&second, "é".repeat(1 << 20))
        .await
        .expect("a long reason is cut, not refused");
    let copy = driver
        .read(&dead_letter_stream("s", "g"), 0, 1)
        .await
        .expect("read")
        .remove(0);
    let error = copy.headers().get(h::ERROR).expect("error header");
    assert!(
        error.len() <= 4096 && error.starts_with("éé"),
        "{}",
        error.len()
    );
    let third = next(&mut c).await;
    assert_eq!(body(&third), "m2");
    standby.shutdown().await.expect("shutdown");
    c.shutdown().await.expect("shutdown");
}

/// Crash poison: consumers that stop without releasing the group while handling one message
/// (dropped here, as a crash drops them) make it a suspect; once `max_deliveries` such crashes
/// name it, the next owner dead-letters it without handing it out, and goes on. A slow handler
/// (it heartbeats) and a graceful shutdown in the middle of a message count nothing.
pub(crate) async fn a_message_that_keeps_crashing_its_consumers_is_dead_lettered(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 3).await;
    let build = || consumer(&driver, "s", "g").max_deliveries(2).build();
    let mut first = build().await.expect("first");
    // The standby judges the slow handler by its own `takeover_after`: five of the suite's, so
    // that only heartbeats stalled for that long (not a loaded machine's hiccup) lose the
    // group, while heartbeats that stopped altogether still would, within the window below.
    let patient = crate::conformance::TAKEOVER * 5;
    let mut standby = consumer(&driver, "s", "g")
        .max_deliveries(2)
        .takeover_after(patient)
        .build()
        .await
        .expect("standby");

    // A slow handler keeps the group: its heartbeats show it alive.
    let slow = next(&mut first).await;
    // It works until its consumer has heartbeated for twice the standby's takeover_after.
    let before = stored_group(&driver, "s", "g").await.revision;
    let beats =
        u64::try_from((patient * 2).as_millis() / crate::conformance::HEARTBEAT.as_millis())
            .expect("a few heartbeats");
    crate::conformance::eventually_async(
        "the slow handler's consumer heartbeats",
        BOUND,
        async || stored_group(&driver, "s", "g").await.revision >= before + beats,
    )
    .await;
    assert!(!standby.is_active(), "a slow handler lost its group");
    assert_eq!(stored_group(&driver, "s", "g").await.generation, 1);
    first.commit(&slow).await.expect("the slow handler commits");

    // A graceful shutdown in the middle of a message is not a crash.
    let poison = next(&mut first).await;
    assert_eq!(body(&poison), "m1");
    first.shutdown().await.expect("shutdown");
    assert_eq!(standby.wait(BOUND).await.expect("wait"), Wake::Activated);
    let mut deliveries = vec![next(&mut standby).await.attempt()];
    let mut crashed = standby;
    let outcome = loop {
        // Crash while handling it: dropped without a shutdown.
        let mut successor = build().await.expect("successor");
        drop(crashed);
        assert_eq!(successor.wait(BOUND).await.expect("wait"), Wake::Activated);
        let message = next_after_wait(&mut successor).await;
        if message.offset() != poison.offset() {
            break (successor, message);
        }
        deliveries.push(message.attempt());
        assert!(deliveries.len() <= 3, "never dead-lettered: {deliveries:?}");
        crashed = successor;
    };
    let (mut survivor, after) = outcome;
    assert_eq!(body(&after), "m2");
    assert_eq!(
        deliveries,
        [1, 1, 2],
        "attempts as the poison was handed out"
    );
    let copies = driver
        .read(&dead_letter_stream("s", "g"), 0, 10)
        .await
        .expect("read dead letters");
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].body(), b"m1");
    let header = |name: &str| copies[0].headers().get(name).cloned();
    assert_eq!(header(h::ATTEMPTS).as_deref(), Some("2"));
    assert!(header(h::ERROR).is_some_and(|e| e.contains("crash")));
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 2);
    survivor.commit(&after).await.expect("commit");
    survivor.shutdown().await.expect("shutdown");
}

/// Replaying a group's dead letters moves them back to their stream (each to its partition),
/// once: the copies keep where they came from, the dead-letter stream is emptied, a second
/// replay moves nothing, and the group receives the copies as new messages.
pub(crate) async fn dead_letters_are_replayed_to_their_partition_once(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    admin.create_stream("p", 2).await.expect("create");
    let producer = Producer::new(driver.clone());
    for (body, partition) in [("a", 0), ("b", 1), ("c", 1)] {
        producer
            .send(
                NewMessage::new("p", body)
                    .to_partition(partition)
                    .with_key(body),
            )
            .await
            .expect("send");
    }
    let mut member = consumer(&driver, "p", "g")
        .join_delay(Duration::ZERO)
        .build()
        .await
        .expect("member");
    let mut handled = Vec::new();
    while handled.len() < 3 {
        let message = next_after_wait(&mut member).await;
        if body(&message) == "c" {
            member.commit(&message).await.expect("commit");
        } else {
            member
                .dead_letter(&message, "bad")
                .await
                .expect("dead letter");
        }
        handled.push(body(&message).to_owned());
    }
    let dlq = dead_letter_stream("p", "g");
    assert_eq!(driver.head(&dlq).await.expect("head"), 2);

    assert_eq!(
        admin.replay_dead_letters("p", "g").await.expect("replay"),
        2
    );
    assert_eq!(admin.replay_dead_letters("p", "g").await.expect("again"), 0);
    assert!(
        driver.read(&dlq, 0, 10).await.expect("read").is_empty(),
        "moved out"
    );
    let a = driver.read("p", 1, 10).await.expect("read p0");
    let b = driver.read("p/1", 2, 10).await.expect("read p1");
    assert_eq!(
        (a.len(), b.len()),
        (1, 1),
        "each back in its partition, once"
    );
    for (copy, body_, offset) in [(&a[0], "a", "1"), (&b[0], "b", "1")] {
        assert_eq!(copy.body(), body_.as_bytes());
        assert_eq!(copy.key(), Some(body_.as_bytes()));
        let header = |name: &str| copy.headers().get(name).map(String::as_str);
        assert_eq!(header(h::OFFSET), Some(offset));
        assert_eq!(header(h::ERROR), Some("bad"));
        assert!(header(h::REPLAYED_AT_MS).is_some());
    }
    let mut again = Vec::new();
    while again.len() < 2 {
        let message = next_after_wait(&mut member).await;
        assert_eq!(message.attempt(), 1);
        again.push(body(&message).to_owned());
        member.commit(&message).await.expect("commit");
    }
    again.sort();
    assert_eq!(again, ["a", "b"]);
    let bad = admin.replay_dead_letters("p", "no such~group").await;
    assert!(matches!(bad, Err(Error::InvalidName { .. })), "{bad:?}");
    member.shutdown().await.expect("shutdown");
}

/// A member that was busy when a nack's delay ended (it asked `wait` once during the delay,
/// then only `next`) still gets the nacked message back, with no append to wake it.
pub(crate) async fn a_nacked_partition_resumes_after_its_delay_without_an_append(
    factory: &dyn DriverFactory,
) {
    let sends = [0, 1, 1].map(|p| (format!("to {p}"), p));
    let driver = two_partitions(factory, sends).await;
    let delay = Duration::from_millis(300);
    let mut member = member_of_p(&driver, delay).await;
    let failed = loop {
        let message = next_after_wait(&mut member).await;
        if message.partition() == 0 {
            break message;
        }
        member.commit(&message).await.expect("commit");
    };
    let nacked_at = Instant::now();
    member.nack(&failed, "boom").await.expect("nack");
    member
        .wait(Duration::from_millis(20))
        .await
        .expect("a wait during the delay");
    while let Some(message) = member.next().await.expect("next") {
        assert_eq!(message.partition(), 1);
        member.commit(&message).await.expect("commit");
    }
    // The application is busy elsewhere when the delay ends.
    crate::conformance::eventually("the nack's delay is over", BOUND, || {
        nacked_at.elapsed() > delay
    })
    .await;
    let again = next_after_wait(&mut member).await;
    assert_eq!(
        (again.offset(), again.partition(), again.attempt()),
        (1, 0, 2)
    );
    member.shutdown().await.expect("shutdown");
}
