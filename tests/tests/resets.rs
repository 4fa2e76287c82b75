//! A reset racing an active consumer, judged by the history checker: while a producer sends
//! and the group's consumer delivers and commits, another task resets the group back four
//! times, then forward twice (skipping 50 messages each time, while the consumer holds what it
//! read ahead). Every acknowledged message must still reach the group unless a forward reset
//! skipped it, each claim (the reset's new generation included) must start right after where
//! it resumed, no commit of a generation before a reset may be accepted after it, and only the
//! resets may move the committed offset back. On redb (in memory) and PostgreSQL.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used, clippy::panic)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::driver::Record;
use flowstream_core::{
    Admin, Consumer, Driver, Error, GroupState, NewMessage, Producer, StartFrom,
};
use flowstream_redb::RedbDriver;
use flowstream_tests::history::{Ack, Commit, Delivery, GroupWrite, History, Outcome};
use flowstream_tests::postgres::{DATABASE, builder, drop_schema, unique_schema};
use flowstream_tests::{BOUND, InstrumentedDriver, suite};
use tokio::time::Instant;

const STREAM: &str = "resets";
const GROUP: &str = "g";
const TOTAL: usize = 1_000;
/// Resets back, each when the group has committed past another 150.
const BACK: usize = 4;
/// Resets forward, when the group has committed past these.
const FORWARD: [u64; 2] = [680, 800];
/// How far a forward reset moves past the committed offset it read.
const SKIP: u64 = 50;

async fn reset_races_an_active_consumer(driver: Arc<dyn Driver>) {
    let recording = InstrumentedDriver::new(driver.clone());
    let store: Arc<dyn Driver> = recording.clone();
    let mut history = History::default();
    history.groups.insert(STREAM.into(), vec![GROUP.into()]);

    let producer = Producer::new(store.clone());
    let sending = tokio::spawn(async move {
        let mut acks = Vec::with_capacity(TOTAL);
        for i in 0..TOTAL {
            let payload = format!("m{i}");
            let offset = producer
                .send(NewMessage::new(STREAM, payload.clone()))
                .await
                .expect("send");
            acks.push(Ack {
                stream: STREAM.into(),
                offset,
                payload,
            });
        }
        acks
    });

    let mut consumer = Consumer::builder(store.clone(), STREAM, GROUP)
        .takeover_after(Duration::from_secs(30))
        .heartbeat_every(Duration::from_secs(10))
        .batch_size(25)
        .build()
        .await
        .expect("consumer");

    // Set while a forward reset is prepared: the consumer stops taking messages (what it has
    // read ahead stays buffered), so the stream gets ahead of it.
    let (hold, held) = tokio::sync::watch::channel(false);

    // The operator: each time the group has committed past another 150, it is set back 60;
    // then twice it is moved 50 past its committed offset.
    let admin = Admin::new(store.clone());
    let watcher = store.clone();
    let resetting = tokio::spawn(async move {
        let mut generations = Vec::new();
        let thresholds = (1..=BACK as u64).map(|round| (round * 150, false));
        for (threshold, forward) in thresholds.chain(FORWARD.map(|at| (at, true))) {
            let deadline = Instant::now() + BOUND;
            while committed(watcher.as_ref()).await < threshold {
                assert!(Instant::now() < deadline, "the group stalled");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let to = if forward {
                hold.send_replace(true);
                loop {
                    let committed = committed(watcher.as_ref()).await;
                    let head = watcher.head(STREAM).await.expect("head");
                    if head > committed + SKIP {
                        break committed + SKIP + 1;
                    }
                    assert!(Instant::now() < deadline, "the producer stalled at {head}");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            } else {
                committed(watcher.as_ref()).await - 59
            };
            let moved = admin
                .reset_group(STREAM, GROUP, StartFrom::Offset(to))
                .await
                .expect("reset");
            assert_eq!(moved, vec![to - 1]);
            let state = GroupState::load(watcher.as_ref(), STREAM, GROUP)
                .await
                .expect("load")
                .expect("the group exists");
            generations.push(state.generation);
            hold.send_replace(false);
        }
        generations
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delivered = 0u64;
    let mut fenced = 0;
    let mut held = held;
    loop {
        tokio::time::timeout(BOUND, held.wait_for(|hold| !*hold))
            .await
            .expect("the operator lets the consumer go on")
            .expect("the operator is there");
        let mut last = None;
        while let Some(message) = consumer.next().await.expect("next") {
            let generation = consumer
                .generation()
                .expect("a delivery comes from a claim");
            history.deliveries.push(Delivery {
                consumer: "c".into(),
                group: GROUP.into(),
                generation,
                offset: message.offset(),
            });
            delivered += 1;
            last = Some((message, generation));
            if delivered.is_multiple_of(10) {
                break;
            }
        }
        if let Some((message, generation)) = last {
            let offset = message.offset();
            let outcome = match consumer.commit(&message).await {
                Ok(()) => Outcome::Accepted,
                Err(Error::Fenced { .. }) => {
                    fenced += 1;
                    Outcome::Fenced
                }
                Err(other) => panic!("commit of {offset}: {other}"),
            };
            history.commits.push(Commit {
                consumer: "c".into(),
                group: GROUP.into(),
                generation,
                offset,
                outcome,
            });
            continue;
        }
        let committed = GroupState::load(store.as_ref(), STREAM, GROUP)
            .await
            .expect("load")
            .map_or(0, |s| s.committed);
        if sending.is_finished() && resetting.is_finished() && committed == TOTAL as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained: committed {committed}"
        );
        consumer
            .wait(Duration::from_millis(50))
            .await
            .expect("wait");
    }
    consumer.shutdown().await.expect("shutdown");
    history.acks = sending.await.expect("producer");
    let generations = resetting.await.expect("operator");
    assert_eq!(generations.len(), BACK + FORWARD.len());
    history
        .resets
        .insert(GROUP.into(), generations.into_iter().collect());

    let key = format!("group/{STREAM}/{GROUP}");
    for (written, revision, value) in recording.accepted_writes() {
        if written != key {
            continue;
        }
        let state =
            GroupState::from_record(&key, Record { value, revision }).expect("a group state");
        history.writes.push(GroupWrite {
            group: GROUP.into(),
            revision: state.revision,
            owner: state.owner,
            generation: state.generation,
            active: state.active,
            committed: state.committed,
        });
    }
    let stored = driver.read(STREAM, 0, 1_000_000).await.expect("read back");
    history.stored.insert(
        STREAM.into(),
        stored
            .iter()
            .map(|m| (m.offset(), m.body_str().unwrap_or_default().to_owned()))
            .collect(),
    );
    history.assert_valid();
    let reached: std::collections::BTreeSet<u64> =
        history.deliveries.iter().map(|d| d.offset).collect();
    let skipped = (1..=TOTAL as u64).filter(|o| !reached.contains(o)).count() as u64;
    eprintln!(
        "resets: {} deliveries of {TOTAL} messages, {} resets, {skipped} messages skipped, \
         {fenced} commits fenced",
        history.deliveries.len(),
        BACK + FORWARD.len()
    );
    // Between reading the committed offset and resetting, the held consumer commits at most
    // the ten it was delivering.
    let forward = FORWARD.len() as u64;
    assert!(
        ((SKIP - 10) * forward..=SKIP * forward).contains(&skipped),
        "each forward reset skips what it moved past: {skipped}"
    );
    assert!(
        history.deliveries.len() as u64 >= TOTAL as u64 - skipped + BACK as u64 * 59,
        "each reset back set the group back 59 messages, delivered again"
    );
}

/// The group's committed offset (0 before it exists).
async fn committed(driver: &dyn Driver) -> u64 {
    GroupState::load(driver, STREAM, GROUP)
        .await
        .expect("load")
        .map_or(0, |s| s.committed)
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![
        libtest_mimic::Trial::test("resets::redb::reset_races_an_active_consumer", || {
            suite::block_on(async {
                let driver: Arc<dyn Driver> =
                    Arc::new(RedbDriver::in_memory().expect("in-memory redb"));
                reset_races_an_active_consumer(driver).await;
            });
            Ok(())
        }),
        libtest_mimic::Trial::test("resets::postgres::reset_races_an_active_consumer", || {
            suite::block_on(async {
                let schema = unique_schema();
                let driver: Arc<dyn Driver> =
                    Arc::new(builder(&schema).connect().await.expect("connect"));
                reset_races_an_active_consumer(driver).await;
                drop_schema(&schema).await;
            });
            Ok(())
        }),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    DATABASE.stop();
    conclusion.exit_code()
}
