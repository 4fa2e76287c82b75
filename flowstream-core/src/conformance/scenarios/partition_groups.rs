//! Groups over partitions: the roster spreads a stream's partitions over the members, one
//! owner per partition, balanced and sticky; graceful leaves hand over at once, dead members'
//! partitions move after `takeover_after` of pending messages, a restart under the same
//! member id changes nothing for the others, and commits are fenced per partition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::conformance::{BOUND, DriverFactory, TAKEOVER, consumer, eventually};
use crate::{Admin, Consumer, Driver, Error, Message, NewMessage, Position, Producer};

const PARTITIONS: u32 = 8;

async fn partitioned(factory: &dyn DriverFactory, stream: &str) -> Arc<dyn Driver> {
    let driver = factory.open().await;
    Admin::new(driver.clone())
        .create_stream(stream, PARTITIONS)
        .await
        .expect("create");
    driver
}

/// Whether the members' assignments are disjoint, cover every partition, and are balanced.
fn settled(members: &[&Consumer]) -> bool {
    let mut owned = BTreeSet::new();
    let mut sizes = Vec::new();
    for member in members {
        let mine = member.assignment();
        sizes.push(mine.len());
        for partition in mine {
            if !owned.insert(partition) {
                return false;
            }
        }
    }
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    owned.len() == PARTITIONS as usize && max.zip(min).is_some_and(|(a, b)| a - b <= 1)
}

/// Lets each member hand over what the roster took from it (as an application's loop would,
/// by asking for messages) until the group has settled.
async fn settle(members: &mut [&mut Consumer]) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        for member in members.iter_mut() {
            assert!(
                member.next().await.expect("next").is_none(),
                "no messages yet"
            );
        }
        let views: Vec<&Consumer> = members.iter().map(|m| &**m).collect();
        if settled(&views) {
            return;
        }
        let shown: Vec<Vec<u32>> = views.iter().map(|m| m.assignment()).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "group did not settle within {BOUND:?}: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drains every member until `count` messages were received in all; returns them by member.
async fn receive_all(members: &mut [&mut Consumer], count: usize) -> Vec<Vec<Message>> {
    let mut received: Vec<Vec<Message>> = members.iter().map(|_| Vec::new()).collect();
    let deadline = tokio::time::Instant::now() + BOUND;
    while received.iter().map(Vec::len).sum::<usize>() < count {
        for (i, member) in members.iter_mut().enumerate() {
            while let Some(message) = member.next().await.expect("next") {
                member.commit(&message).await.expect("commit");
                received[i].push(message);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of {count}",
            received.iter().map(Vec::len).sum::<usize>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    received
}

async fn produce_keyed(driver: &Arc<dyn Driver>, stream: &str, count: usize) {
    let producer = Producer::new(driver.clone());
    let messages: Vec<NewMessage> = (0..count)
        .map(|i| NewMessage::new(stream, format!("m{i}")).with_key(format!("k{i}")))
        .collect();
    producer.send_batch(messages).await.expect("send");
}

/// One, two, then three members of a group over 8 partitions: after each join the partitions
/// are owned once each, balanced; a join moves only what it must; every message is received
/// once, by the owner of its partition, in partition order.
pub(crate) async fn partitions_spread_over_members_balanced_and_sticky(
    factory: &dyn DriverFactory,
) {
    let driver = partitioned(factory, "spread").await;
    let mut a = consumer(&driver, "spread", "g").build().await.expect("a");
    assert_eq!(
        a.assignment(),
        (0..PARTITIONS).collect::<Vec<_>>(),
        "alone, a owns all"
    );
    let mut b = consumer(&driver, "spread", "g").build().await.expect("b");
    settle(&mut [&mut a, &mut b]).await;
    let a_with_two = a.assignment();
    let mut c = consumer(&driver, "spread", "g").build().await.expect("c");
    settle(&mut [&mut a, &mut b, &mut c]).await;
    assert!(
        a.assignment().iter().all(|p| a_with_two.contains(p)),
        "sticky: a only lost partitions ({a_with_two:?} -> {:?})",
        a.assignment()
    );

    produce_keyed(&driver, "spread", 240).await;
    let received = receive_all(&mut [&mut a, &mut b, &mut c], 240).await;
    let members = [&a, &b, &c];
    let mut bodies = BTreeSet::new();
    for (member, messages) in members.iter().zip(&received) {
        let owned = member.assignment();
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for message in messages {
            assert!(
                owned.contains(&message.partition()),
                "{message:?} to a non-owner"
            );
            let previous = last.insert(message.partition(), message.offset());
            assert_eq!(
                message.offset(),
                previous.unwrap_or(0) + 1,
                "partition {} in order, without gaps",
                message.partition()
            );
            assert!(
                bodies.insert(message.body().to_vec()),
                "{message:?} received twice"
            );
        }
    }
    assert_eq!(bodies.len(), 240);
    for member in [a, b, c] {
        member.shutdown().await.expect("shutdown");
    }
}

/// A member that shuts down hands its partitions to the others at once (long before
/// `takeover_after`, here a minute), and the others keep what they had.
pub(crate) async fn a_leaving_member_hands_over_at_once(factory: &dyn DriverFactory) {
    let driver = partitioned(factory, "leave").await;
    let slow = |d: &Arc<dyn Driver>| {
        Consumer::builder(d.clone(), "leave", "g")
            .takeover_after(Duration::from_secs(60))
            .heartbeat_every(Duration::from_secs(20))
    };
    let mut a = slow(&driver).build().await.expect("a");
    let mut b = slow(&driver).build().await.expect("b");
    settle(&mut [&mut a, &mut b]).await;
    let b_had = b.assignment();
    a.shutdown().await.expect("shutdown");
    eventually("b owns every partition", BOUND, || {
        b.assignment().len() == PARTITIONS as usize
    })
    .await;
    assert!(b_had.iter().all(|p| b.assignment().contains(p)));
    produce_keyed(&driver, "leave", 16).await;
    let received = receive_all(&mut [&mut b], 16).await;
    assert_eq!(received[0].len(), 16);
}

/// A member that dies (dropped, no shutdown) while idle keeps its partitions while nothing is
/// pending (an idle group changes nothing), and loses them `takeover_after` after messages
/// arrive for them; the survivor then receives everything.
pub(crate) async fn a_dead_members_partitions_move_only_once_messages_wait(
    factory: &dyn DriverFactory,
) {
    let driver = partitioned(factory, "dead").await;
    let mut a = consumer(&driver, "dead", "g").build().await.expect("a");
    let mut b = consumer(&driver, "dead", "g").build().await.expect("b");
    settle(&mut [&mut a, &mut b]).await;
    let b_had = b.assignment();
    drop(a);
    // Observation window: several times `takeover_after` with nothing pending.
    tokio::time::sleep(TAKEOVER * 3).await;
    assert_eq!(b.assignment(), b_had, "an idle dead member is not evicted");

    produce_keyed(&driver, "dead", 64).await;
    let received = receive_all(&mut [&mut b], 64).await;
    assert_eq!(received[0].len(), 64);
    assert_eq!(b.assignment().len(), PARTITIONS as usize);
}

/// A member restarting under the same member id (static membership) takes its partitions back
/// at once, and the other members' partitions do not move, whether the old instance is still
/// running (it is fenced: its commit of a message it received is refused, and the message is
/// delivered again) or shut down gracefully.
pub(crate) async fn a_restart_with_the_same_member_id_moves_nothing_and_fences_the_old(
    factory: &dyn DriverFactory,
) {
    let driver = partitioned(factory, "static").await;
    let named = |id: &str| consumer(&driver, "static", "g").member_id(id);
    let mut a = named("a").build().await.expect("a");
    let mut b = named("b").build().await.expect("b");
    settle(&mut [&mut a, &mut b]).await;
    let (a_had, b_had) = (a.assignment(), b.assignment());
    let partition = a_had[0];
    Producer::new(driver.clone())
        .send(NewMessage::new("static", "x").to_partition(partition))
        .await
        .expect("send");
    let delivered = loop {
        if let Some(message) = a.next().await.expect("next") {
            break message;
        }
        a.wait(BOUND).await.expect("wait");
    };

    let mut restarted = named("a").build().await.expect("restart");
    eventually("the restarted member owns a's partitions", BOUND, || {
        restarted.assignment() == a_had
    })
    .await;
    assert_eq!(b.assignment(), b_had, "b's partitions did not move");
    let fenced = a.commit(&delivered).await;
    assert!(matches!(fenced, Err(Error::Fenced { .. })), "{fenced:?}");
    let again = loop {
        if let Some(message) = restarted.next().await.expect("next") {
            break message;
        }
        restarted.wait(BOUND).await.expect("wait");
    };
    assert_eq!((again.partition(), again.offset()), (partition, 1));
    restarted.commit(&again).await.expect("commit");
    assert_eq!(restarted.committed_in(partition), Some(1));

    // A graceful restart under the same id moves nothing either: the member keeps its place.
    restarted.shutdown().await.expect("shutdown");
    assert!(b.next().await.expect("next").is_none());
    let back = named("a").build().await.expect("back");
    eventually("the member owns its partitions again", BOUND, || {
        back.assignment() == a_had
    })
    .await;
    assert_eq!(b.assignment(), b_had, "b's partitions did not move");
}

/// Commits on a partitioned stream name their partition: a bare offset is
/// `PartitionRequired`, a partition the stream lacks `NoSuchPartition`; both change nothing.
pub(crate) async fn commits_on_partitions_name_the_partition(factory: &dyn DriverFactory) {
    let driver = partitioned(factory, "named").await;
    let mut a = consumer(&driver, "named", "g").build().await.expect("a");
    let bare = a.commit(1).await;
    assert!(
        matches!(bare, Err(Error::PartitionRequired { .. })),
        "{bare:?}"
    );
    let beyond = a.commit(Position::new(PARTITIONS, 1)).await;
    assert!(
        matches!(
            beyond,
            Err(Error::NoSuchPartition {
                partitions: PARTITIONS,
                ..
            })
        ),
        "{beyond:?}"
    );
    let undelivered = a.commit(Position::new(3, 1)).await;
    assert!(
        matches!(undelivered, Err(Error::CommitBeyondDelivered { .. })),
        "{undelivered:?}"
    );
    let bad_id = consumer(&driver, "named", "g")
        .member_id("no spaces")
        .build()
        .await;
    assert!(
        matches!(
            bad_id,
            Err(Error::InvalidName {
                kind: crate::NameKind::Member,
                ..
            })
        ),
        "{bad_id:?}"
    );
    // A group whose roster was formed over another partition count (as after the stream was
    // deleted and created again with another count) is refused, naming both counts.
    let mut roster = driver
        .get_record("roster/named/g")
        .await
        .expect("read")
        .expect("the roster exists");
    let revision = roster.revision;
    roster.value["assignment"] = serde_json::json!(["x", "x", "x"]);
    driver
        .put_record(
            "roster/named/g",
            roster.value,
            crate::driver::Expected::Revision(revision),
            false,
        )
        .await
        .expect("write");
    let contradicting = consumer(&driver, "named", "g").build().await;
    assert!(
        matches!(&contradicting, Err(Error::InvalidConfig(why)) if why.contains("3 partitions") && why.contains("has 8")),
        "{contradicting:?}"
    );
    let static_on_plain = consumer(&driver, "plain", "g").member_id("a").build().await;
    assert!(
        matches!(static_on_plain, Err(Error::InvalidConfig(_))),
        "{static_on_plain:?}"
    );
}

/// A member blocked in `wait` is woken by an append to a partition it owns (through the
/// driver's notifications, not a timeout), and `recv` returns the message.
pub(crate) async fn a_waiting_member_is_woken_by_appends_to_its_partitions(
    factory: &dyn DriverFactory,
) {
    let driver = partitioned(factory, "woken").await;
    let mut a = consumer(&driver, "woken", "g").build().await.expect("a");
    assert!(a.next().await.expect("next").is_none());
    let producer = Producer::new(driver.clone());
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        producer
            .send(NewMessage::new("woken", "x").to_partition(5))
            .await
            .expect("send")
    });
    let started = tokio::time::Instant::now();
    let woke = a.wait(BOUND).await.expect("wait");
    assert_eq!(woke, crate::Wake::Messages);
    assert!(
        started.elapsed() < BOUND / 2,
        "woken by the append, not the timeout"
    );
    let message = a.recv().await.expect("recv");
    assert_eq!((message.partition(), message.offset()), (5, 1));
    assert_eq!(sender.await.expect("sender"), 1);
    for i in 0..PARTITIONS {
        Producer::new(driver.clone())
            .send(NewMessage::new("woken", format!("{i}")).to_partition(i))
            .await
            .expect("send");
    }
    let mut seen = BTreeSet::new();
    while seen.len() < PARTITIONS as usize {
        let message = tokio::time::timeout(BOUND, a.recv())
            .await
            .expect("within the bound")
            .expect("recv");
        a.commit(&message).await.expect("commit");
        if message.body() != b"x" {
            seen.insert(message.partition());
        }
    }
}

/// Joins are debounced: three members starting together join a running group in one
/// reassignment (the roster's assignment changes once), not one each; the group's first member
/// owns every partition at once, without waiting for `join_delay`.
pub(crate) async fn members_joining_together_cause_one_rebalance(factory: &dyn DriverFactory) {
    let store = partitioned(factory, "debounce").await;
    let recording = crate::conformance::InstrumentedDriver::new(store);
    let driver: Arc<dyn Driver> = recording.clone();
    let member = || {
        consumer(&driver, "debounce", "g")
            .join_delay(Duration::from_secs(2))
            .build()
    };
    let mut a = member().await.expect("a");
    assert_eq!(
        a.assignment().len(),
        PARTITIONS as usize,
        "the first member waits for nobody"
    );
    let (b, c, d) = tokio::join!(member(), member(), member());
    let (mut b, mut c, mut d) = (b.expect("b"), c.expect("c"), d.expect("d"));
    settle(&mut [&mut a, &mut b, &mut c, &mut d]).await;
    let mut assignments: Vec<serde_json::Value> = recording
        .accepted_writes()
        .into_iter()
        .filter(|(key, _, _)| key == "roster/debounce/g")
        .map(|(_, _, value)| value["assignment"].clone())
        .collect();
    assignments.dedup();
    assert_eq!(
        assignments.len(),
        2,
        "one assignment for the first member, one for the three that joined: {assignments:?}"
    );
}
