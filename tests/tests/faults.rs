//! The fault suite: real processes killed and paused, a redb writer killed mid-append, each
//! run checked by the history checker. Short in CI; `FLOWSTREAM_SOAK=1` runs many more rounds.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstream_core::{
    Consumer, Driver, Error, NewMessage, Producer, StorageErrorKind, dead_letter_stream,
};
use flowstream_postgres::PgDriver;
use flowstream_tests::cluster::{self, Cluster, Stop};
use flowstream_tests::history::{Commit, Delivery, History, Outcome};
use flowstream_tests::postgres::{DATABASE, schema_trial};
use flowstream_tests::workload::{
    Event, GROUP, STREAM, Workload, install_audit, produce_acked, read_audit, read_stream, rounds,
};
use flowstream_tests::{
    BOUND, assert_causes_printed_once, error_chain, eventually, eventually_async, suite,
};
use libtest_mimic::Trial;
use sqlx::{AssertSqlSafe, Row};
use tokio::time::Instant;

const CONSUMER: &str = env!("CARGO_BIN_EXE_pg-consumer");
const TAKEOVER_MS: u64 = 500;

/// Starts three consumer processes, the first active before the others join.
async fn start_three(w: &mut Workload) {
    let first = w.spawn();
    w.wait_until("the first process joins", BOUND, |w| {
        w.processes[first].is_active()
    })
    .await;
    w.spawn();
    w.spawn();
}

/// `rounds` times: once the active process has delivered `progress` messages, SIGKILL it and
/// start a fresh one.
async fn kill_rounds(w: &mut Workload, rounds: usize, progress: usize) {
    for round in 0..rounds {
        let active = w.active().await;
        w.wait_until("the active process makes progress", BOUND, |w| {
            w.processes[active].deliveries_since_active() >= progress
        })
        .await;
        w.processes[active].kill();
        eprintln!("round {round}: killed {}", w.processes[active].label);
        w.spawn();
    }
}

/// Consumer crashes: three consumer processes in one group under a steady produce rate;
/// round after round the active one is killed with SIGKILL and replaced by a fresh process.
/// Every acknowledged message is delivered, and the whole history checks out.
async fn consumer_crashes(schema: String) {
    let rounds = rounds(3, 25);
    let mut w = Workload::new(CONSUMER, &schema, TAKEOVER_MS, 0).await;
    start_three(&mut w).await;
    let producing = w.produce(400 * (rounds + 1), Duration::from_millis(4));
    kill_rounds(&mut w, rounds, 30).await;
    producing.await.expect("producer");
    let last = w.last_ack();
    w.wait_until("every acknowledged message is delivered", BOUND * 2, |w| {
        w.delivered(last)
    })
    .await;
    let history = w.finish().await;
    history.assert_valid();
    let takeovers = history
        .writes
        .iter()
        .map(|w| w.generation)
        .max()
        .unwrap_or(0);
    assert!(
        takeovers > rounds as u64,
        "each kill led to a takeover: {takeovers} generations"
    );
}

/// Pauses: the active consumer is frozen (SIGSTOP) in the middle of processing, longer than
/// `takeover_after`; a standby takes over. Thawed (SIGCONT), the old consumer's commit is
/// fenced and it turns standby; nothing it commits afterwards is accepted.
async fn paused_consumer_is_fenced(schema: String) {
    // The first consumer takes 3 s over each message, so the freeze lands in the middle of
    // processing; the one taking over processes quickly.
    let mut w = Workload::new(CONSUMER, &schema, TAKEOVER_MS, 20).await;
    let frozen = w.spawn_processing(3_000);
    w.wait_until("the first process joins", BOUND, |w| {
        w.processes[frozen].is_active()
    })
    .await;
    let standby = w.spawn();
    w.wait_until("the standby joins", BOUND, |w| {
        !w.processes[standby].events.is_empty()
    })
    .await;
    let producing = w.produce(20, Duration::from_millis(20));

    w.wait_until("the first process is processing", BOUND, |w| {
        w.processes[frozen]
            .parsed()
            .last()
            .is_some_and(|e| matches!(e, Event::Delivered { .. }))
    })
    .await;
    w.processes[frozen].signal("STOP");
    w.wait_until("the standby takes over", BOUND, |w| {
        w.processes[standby].is_active()
    })
    .await;
    w.wait_until("the new owner makes progress", BOUND, |w| {
        w.processes[standby].deliveries_since_active() >= 5
    })
    .await;
    let before_thaw = w.processes[frozen].events.len();
    w.processes[frozen].signal("CONT");
    w.wait_until("the thawed process tries to commit", BOUND, |w| {
        w.processes[frozen].events[before_thaw..]
            .iter()
            .any(|l| matches!(Event::parse(l), Some(Event::Commit { .. })))
    })
    .await;
    let after: Vec<Event> = w.processes[frozen].events[before_thaw..]
        .iter()
        .filter_map(|l| Event::parse(l))
        .collect();
    let first_commit = after
        .iter()
        .find(|e| matches!(e, Event::Commit { .. }))
        .expect("a commit");
    assert!(
        matches!(
            first_commit,
            Event::Commit {
                outcome: Outcome::Fenced,
                ..
            }
        ),
        "the zombie's commit: {first_commit:?}"
    );

    producing.await.expect("producer");
    let last = w.last_ack();
    w.wait_until("every acknowledged message is delivered", BOUND * 2, |w| {
        w.delivered(last)
    })
    .await;
    let frozen_label = w.processes[frozen].label.clone();
    let history = w.finish().await;
    history.assert_valid();
    let zombie_accepted_later = history
        .commits
        .iter()
        .filter(|c| c.consumer == frozen_label && c.generation == 1)
        .skip_while(|c| c.outcome != flowstream_tests::history::Outcome::Fenced)
        .any(|c| c.outcome == flowstream_tests::history::Outcome::Accepted);
    assert!(
        !zombie_accepted_later,
        "a commit of the fenced claim was accepted"
    );
}

/// What each live process last said it owns (`owns …` lines).
fn ownership(w: &Workload) -> Vec<(usize, Vec<u32>)> {
    w.processes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.alive)
        .filter_map(|(i, p)| {
            p.parsed().rev().find_map(|e| match e {
                Event::Owns(owned) => Some((i, owned)),
                _ => None,
            })
        })
        .collect()
}

/// Whether the processes in `among` own every partition, each once.
fn owned_once_by(w: &Workload, among: &[usize]) -> bool {
    let mut seen = Vec::new();
    for (i, owned) in ownership(w) {
        if among.contains(&i) {
            seen.extend(owned);
        } else if !owned.is_empty() {
            return false;
        }
    }
    seen.sort_unstable();
    seen == (0..w.partitions).collect::<Vec<_>>()
}

/// Members of a group over 12 partitions, in three processes, under a steady keyed produce
/// rate. Rounds alternate: a member is killed with SIGKILL and a fresh process joins; or a
/// member is frozen with SIGSTOP until the others own every partition (it was evicted), then
/// thawed (its commits of what it held are fenced, and it joins again). After each round every
/// partition is owned again, once, within the bound; at the end every acknowledged message was
/// delivered and the history checks out partition by partition.
async fn partition_members_killed_and_paused(schema: String) {
    const PARTITIONS: u32 = 12;
    let rounds = rounds(4, 20);
    let mut w = Workload::partitioned(CONSUMER, &schema, TAKEOVER_MS, PARTITIONS).await;
    let mut members = vec![w.spawn(), w.spawn(), w.spawn()];
    w.wait_until("three members share the partitions", BOUND, |w| {
        owned_once_by(w, &members) && ownership(w).iter().all(|(_, o)| o.len() == 4)
    })
    .await;
    let producing = w.produce(300 * (rounds + 1), Duration::from_millis(4));
    let mut moved = Vec::new();
    for round in 0..rounds {
        let victim = members[round % members.len()];
        w.wait_until("the victim delivers", BOUND, |w| {
            w.processes[victim]
                .parsed()
                .filter(|e| matches!(e, Event::Delivered { .. }))
                .count()
                >= 10
        })
        .await;
        let started = Instant::now();
        if round % 2 == 0 {
            w.processes[victim].kill();
            members.retain(|&m| m != victim);
            w.wait_until("the survivors own every partition", BOUND, |w| {
                owned_once_by(w, &members)
            })
            .await;
            moved.push(started.elapsed());
            eprintln!(
                "round {round}: killed {}, moved in {:?}",
                w.processes[victim].label,
                started.elapsed()
            );
            members.push(w.spawn());
        } else {
            w.processes[victim].signal("STOP");
            let others: Vec<usize> = members.iter().copied().filter(|&m| m != victim).collect();
            // The frozen process's last `owns` line is stale: look at the others only.
            w.wait_until("the others own every partition", BOUND, |w| {
                let mut seen: Vec<u32> = ownership(w)
                    .into_iter()
                    .filter(|(i, _)| others.contains(i))
                    .flat_map(|(_, o)| o)
                    .collect();
                seen.sort_unstable();
                seen == (0..w.partitions).collect::<Vec<_>>()
            })
            .await;
            moved.push(started.elapsed());
            eprintln!(
                "round {round}: froze {}, moved in {:?}",
                w.processes[victim].label,
                started.elapsed()
            );
            w.processes[victim].signal("CONT");
        }
        w.wait_until("every partition is owned once again", BOUND, |w| {
            owned_once_by(w, &members)
        })
        .await;
    }
    producing.await.expect("producer");
    w.wait_until("every acknowledged message is delivered", BOUND * 2, |w| {
        w.all_acked_delivered()
    })
    .await;
    let history = w.finish().await;
    history.assert_valid();
    let fenced = history
        .commits
        .iter()
        .filter(|c| c.outcome == flowstream_tests::history::Outcome::Fenced)
        .count();
    let deliveries = history.deliveries.len();
    eprintln!(
        "{rounds} rounds: partitions moved in {moved:?}; {deliveries} deliveries of {} acknowledged messages; {fenced} fenced commits",
        history.acks.len()
    );
}

/// Database restarts: a private cluster is restarted (fast shutdown) and killed (immediate
/// shutdown, recovery at the next start) while a producer and a consumer run. Producers
/// retry, the consumer recovers, and no acknowledged message is lost.
async fn database_restarts_lose_nothing() {
    let cluster = Cluster::start();
    let pg = PgDriver::builder(cluster.url())
        .schema("faults")
        .max_connections(6)
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect("connect to the private cluster");
    install_audit(&pg).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let acks = Arc::default();
    let restarts = rounds(2, 10);
    let producing = produce_acked(
        driver.clone(),
        250 * (restarts + 1),
        Duration::from_millis(4),
        Arc::clone(&acks),
    );

    let log: Arc<Mutex<History>> = Arc::default();
    let consumer_log = Arc::clone(&log);
    let consumer_driver = driver.clone();
    let consuming = tokio::spawn(async move {
        let mut consumer = loop {
            match Consumer::builder(consumer_driver.clone(), STREAM, GROUP)
                .build()
                .await
            {
                Ok(consumer) => break consumer,
                Err(error) => assert!(error.is_retryable(), "{error}"),
            }
        };
        loop {
            match consumer.next().await {
                Ok(Some(message)) => {
                    let generation = consumer.generation().unwrap_or(0);
                    consumer_log.lock().expect("log").deliveries.push(Delivery {
                        consumer: "c".into(),
                        group: GROUP.into(),
                        generation,
                        offset: message.offset(),
                    });
                    let outcome = match consumer.commit(message.offset()).await {
                        Ok(()) => Outcome::Accepted,
                        Err(Error::Fenced { .. }) => Outcome::Fenced,
                        Err(error) => {
                            assert!(error.is_retryable(), "{error}");
                            Outcome::Failed
                        }
                    };
                    consumer_log.lock().expect("log").commits.push(Commit {
                        consumer: "c".into(),
                        group: GROUP.into(),
                        generation,
                        offset: message.offset(),
                        outcome,
                    });
                }
                Ok(None) => {
                    let _ = consumer.wait(Duration::from_secs(1)).await;
                }
                Err(error) => {
                    assert!(error.is_retryable(), "{error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });

    let acked =
        |acks: &Arc<Mutex<Vec<flowstream_tests::history::Ack>>>| acks.lock().expect("acks").len();
    for round in 0..restarts {
        for mode in [Stop::Fast, Stop::Immediate] {
            let before = acked(&acks);
            eventually("the producer makes progress", BOUND, || {
                acked(&acks) >= before + 100
            })
            .await;
            let down = Instant::now();
            tokio::task::block_in_place(|| cluster.stop(mode));
            tokio::task::block_in_place(|| cluster.start_server());
            eprintln!(
                "round {round}: {mode:?} restart, down for {:?}",
                down.elapsed()
            );
        }
    }
    producing.await.expect("producer");
    let last = acks
        .lock()
        .expect("acks")
        .iter()
        .map(|a| a.offset)
        .max()
        .unwrap_or(0);
    eventually_delivered(&log, last).await;
    consuming.abort();

    let mut history = log.lock().expect("log").clone();
    history.groups.insert(STREAM.into(), vec![GROUP.into()]);
    history.acks = acks.lock().expect("acks").clone();
    history.writes = read_audit(&pg).await;
    history
        .stored
        .insert(STREAM.into(), read_stream(driver.as_ref(), STREAM).await);
    if history.check().is_err() {
        eprintln!("server log:\n{}", cluster.log());
    }
    history.assert_valid();
}

async fn eventually_delivered(log: &Arc<Mutex<History>>, last: u64) {
    eventually(
        "the consumer delivers the last acknowledged message",
        BOUND * 2,
        || {
            log.lock()
                .expect("log")
                .deliveries
                .iter()
                .any(|d| d.offset == last)
        },
    )
    .await;
}

/// A wrong password is a clear connect error naming server and database, never a password.
async fn wrong_password_is_a_clear_connect_error() {
    let cluster = Cluster::start();
    let result = PgDriver::builder(cluster.url_with_password("not-the-password"))
        .connect()
        .await;
    let error = match result {
        Err(error) if error.storage_kind() == Some(StorageErrorKind::Connect) => error,
        other => panic!("expected a connect error, got {other:?}"),
    };
    assert_causes_printed_once(&error);
    let shown = format!("{} / {error:?}", error_chain(&error));
    assert!(
        shown.contains("127.0.0.1") && shown.contains("database postgres"),
        "{shown}"
    );
    assert!(shown.contains("password authentication failed"), "{shown}");
    assert!(
        !shown.contains("not-the-password") && !shown.contains(cluster::PASSWORD),
        "{shown}"
    );
    PgDriver::connect(&cluster.url())
        .await
        .expect("the right password works");
}

/// Crash poison: one message aborts every consumer process that handles it; a slow message
/// takes three `takeover_after`s. Two processes run in the group, and each that dies is
/// replaced. With `max_deliveries` 3 the poison ends in the dead-letter stream (once) after at
/// most 4 deliveries (the first crash names no message: see `poison`), every other message is
/// delivered and committed, the slow one is never dead-lettered nor taken from its handler,
/// and the history checks out.
async fn crash_poison_is_dead_lettered(schema: String) {
    const MAX_DELIVERIES: usize = 3;
    const MESSAGES: usize = 80;
    let mut w = Workload::new(CONSUMER, &schema, TAKEOVER_MS, 0).await;
    w.env = vec![
        (
            "FLOWSTREAM_TEST_MAX_DELIVERIES".into(),
            MAX_DELIVERIES.to_string(),
        ),
        ("FLOWSTREAM_TEST_POISON".into(), "m40-".into()),
        ("FLOWSTREAM_TEST_SLOW".into(), "m20-".into()),
    ];
    let first = w.spawn();
    w.wait_until("the first process joins", BOUND, |w| {
        w.processes[first].is_active()
    })
    .await;
    w.spawn();
    let producing = w.produce(MESSAGES, Duration::from_millis(5));
    let deadline = Instant::now() + BOUND * 4;
    let mut crashes = 0;
    loop {
        for _ in 0..w.reap() {
            crashes += 1;
            w.spawn();
        }
        if producing.is_finished() && w.delivered(w.last_ack()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not get past the poison: {crashes} crashes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producing.await.expect("producer");
    let acks = w.acks.lock().expect("acks").clone();
    let offset_of = |prefix: &str| {
        acks.iter()
            .find(|a| a.payload.starts_with(prefix))
            .map(|a| a.offset)
            .expect("sent")
    };
    let (poison, slow) = (offset_of("m40-"), offset_of("m20-"));
    let last = w.last_ack();
    // Every message but the poison is committed by someone.
    w.wait_until("the last message is committed", BOUND, |w| {
        w.processes.iter().flat_map(|p| p.parsed()).any(|e| {
            matches!(e, Event::Commit { offset, outcome: flowstream_tests::history::Outcome::Accepted, .. } if offset == last)
        })
    })
    .await;
    let history = w.finish().await;
    history.assert_valid();
    let poison_deliveries = history
        .deliveries
        .iter()
        .filter(|d| d.offset == poison)
        .count();
    let slow_deliveries = history
        .deliveries
        .iter()
        .filter(|d| d.offset == slow)
        .count();
    eprintln!(
        "crash poison: {crashes} processes died, poison (offset {poison}) handed out \
         {poison_deliveries} times, slow message (offset {slow}) {slow_deliveries} time(s), \
         {} generations",
        history
            .writes
            .iter()
            .map(|w| w.generation)
            .max()
            .unwrap_or(0)
    );
    assert_eq!(
        history.dead_letters.get(GROUP).cloned().unwrap_or_default(),
        [poison],
        "the poison, and only it, was dead-lettered, once"
    );
    assert_eq!(
        poison_deliveries, crashes,
        "each delivery of the poison killed its process"
    );
    assert!(
        (MAX_DELIVERIES..=MAX_DELIVERIES + 1).contains(&poison_deliveries),
        "handed out {poison_deliveries} times"
    );
    assert_eq!(slow_deliveries, 1, "the slow handler kept its message");
    let copy = read_stream(
        w_driver(&schema).await.as_ref(),
        &dead_letter_stream(STREAM, GROUP),
    )
    .await;
    assert!(copy[0].1.starts_with("m40-"), "{copy:?}");
}

async fn w_driver(schema: &str) -> Arc<dyn Driver> {
    Arc::new(
        flowstream_tests::postgres::builder(schema)
            .connect()
            .await
            .expect("connect"),
    )
}

/// Exactly once with `commit_in`: consumer processes handle each message in one transaction
/// (an effect row, 5 ms of work, the commit) while the active one is killed with SIGKILL round
/// after round (landing before, inside and after those transactions), and once frozen with
/// SIGSTOP past `takeover_after` and thawed after the standby took over. The effects table
/// holds every acknowledged message exactly once, the thawed zombie's commit is not accepted,
/// and the history checks out.
async fn exactly_once_under_kills_and_pauses(schema: String) {
    let rounds = rounds(3, 25);
    let mut w = Workload::new(CONSUMER, &schema, TAKEOVER_MS, 5).await;
    let pg = flowstream_tests::postgres::builder(&schema)
        .connect()
        .await
        .expect("connect");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {schema}.effects (partition int8 NOT NULL, \"offset\" int8 NOT NULL)"
    )))
    .execute(pg.pool())
    .await
    .expect("create the effects table");
    w.env = vec![("FLOWSTREAM_TEST_EFFECTS".into(), "1".into())];
    start_three(&mut w).await;
    let producing = w.produce(150 * (rounds + 2), Duration::from_millis(4));
    kill_rounds(&mut w, rounds, 20).await;
    let frozen = w.active().await;
    w.wait_until("the active process makes progress", BOUND, |w| {
        w.processes[frozen].deliveries_since_active() >= 20
    })
    .await;
    w.processes[frozen].signal("STOP");
    w.wait_until("another process takes over", BOUND, |w| {
        w.processes
            .iter()
            .enumerate()
            .any(|(i, p)| i != frozen && p.alive && p.is_active())
    })
    .await;
    // Where the new owner resumed: the zombie may have finished transactions up to there
    // before it was frozen (and say so after the thaw), never past it.
    let resumed_after = w
        .processes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != frozen)
        .flat_map(|(_, p)| p.parsed())
        .filter_map(|e| match e {
            Event::Active { after, generation } => Some((generation, after)),
            _ => None,
        })
        .max()
        .map(|(_, after)| after)
        .expect("the new owner said where it resumed");
    let frozen_generation = w.processes[frozen]
        .parsed()
        .filter_map(|e| match e {
            Event::Active { generation, .. } => Some(generation),
            _ => None,
        })
        .max()
        .expect("the frozen process was active");
    let before_thaw = w.processes[frozen].events.len();
    w.processes[frozen].signal("CONT");
    producing.await.expect("producer");
    let last = w.last_ack();
    let driver = w.driver.clone();
    eventually_async(
        "every acknowledged message is committed",
        BOUND * 2,
        async || {
            flowstream_core::GroupState::load(driver.as_ref(), STREAM, GROUP)
                .await
                .ok()
                .flatten()
                .is_some_and(|g| g.committed >= last)
        },
    )
    .await;
    // What the zombie said after the thaw (the store's side is the history checker's: no
    // write of a superseded generation accepted).
    let late: Vec<(u64, Outcome)> = w.processes[frozen].events[before_thaw..]
        .iter()
        .filter_map(|l| match Event::parse(l) {
            Some(Event::Commit {
                generation,
                offset,
                outcome,
                ..
            }) if generation == frozen_generation && offset > resumed_after => {
                Some((offset, outcome))
            }
            _ => None,
        })
        .collect();
    assert!(
        late.iter()
            .all(|(_, outcome)| *outcome != Outcome::Accepted),
        "the zombie's transaction committed past the takeover: {late:?}"
    );
    let mut history = w.finish().await;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT partition, \"offset\" FROM {schema}.effects"
    )))
    .fetch_all(pg.pool())
    .await
    .expect("read the effects");
    let mut effects: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in rows {
        let partition: i64 = row.get("partition");
        let offset: i64 = row.get("offset");
        assert_eq!(partition, 0, "an unpartitioned stream");
        effects
            .entry(STREAM.to_owned())
            .or_default()
            .push(u64::try_from(offset).expect("offsets are positive"));
    }
    history.effects = Some(effects);
    history.assert_valid();
    let redelivered = history.deliveries.len() - history.acks.len();
    eprintln!(
        "exactly once: {rounds} kills and a pause, {} messages, {redelivered} deliveries again, \
         every effect stored once",
        history.acks.len()
    );
}

/// A flush while the server is down ends with a retryable error within its bound instead of
/// hanging, and loses nothing stored; once the server is back, the wake-ups go out and a flush
/// succeeds.
async fn a_flush_with_the_server_down_fails_and_loses_nothing() {
    let cluster = Cluster::start();
    let pg = PgDriver::builder(cluster.url())
        .schema("flush")
        .max_connections(2)
        .connect_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to the private cluster");
    let producer = Producer::new(Arc::new(pg.clone()));
    let stored = producer
        .send(NewMessage::new(STREAM, "before"))
        .await
        .expect("send");
    producer.flush().await.expect("flush with the server up");

    tokio::task::block_in_place(|| cluster.stop(Stop::Fast));
    // A failed append still hands its stream to the notifier (it may have committed before
    // the connection went): that wake-up cannot leave while the server is down.
    let lost = producer.send(NewMessage::new(STREAM, "during")).await;
    assert!(lost.as_ref().is_err_and(Error::is_retryable), "{lost:?}");
    let flushed = tokio::time::timeout(BOUND, producer.flush())
        .await
        .expect("the flush ends within its bound");
    assert!(
        flushed.as_ref().is_err_and(Error::is_retryable),
        "{flushed:?}"
    );

    tokio::task::block_in_place(|| cluster.start_server());
    eventually_async(
        "a flush succeeds once the server is back",
        BOUND,
        async || producer.flush().await.is_ok(),
    )
    .await;
    let read = pg.read(STREAM, 0, 10).await.expect("read");
    assert_eq!(
        read.first().map(|m| (m.offset(), m.body())),
        Some((stored, &b"before"[..]))
    );
}

fn plain(name: &'static str, body: fn() -> std::pin::Pin<Box<dyn Future<Output = ()>>>) -> Trial {
    Trial::test(format!("faults::{name}"), move || {
        suite::block_on(body());
        Ok(())
    })
}

fn main() -> ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    // Each fault test runs several processes on tight timings: one at a time.
    args.test_threads.get_or_insert(1);
    let trials = vec![
        schema_trial("faults", "consumer_crashes", consumer_crashes),
        schema_trial(
            "faults",
            "paused_consumer_is_fenced",
            paused_consumer_is_fenced,
        ),
        schema_trial(
            "faults",
            "partition_members_killed_and_paused",
            partition_members_killed_and_paused,
        ),
        schema_trial(
            "faults",
            "crash_poison_is_dead_lettered",
            crash_poison_is_dead_lettered,
        ),
        schema_trial(
            "faults",
            "exactly_once_under_kills_and_pauses",
            exactly_once_under_kills_and_pauses,
        ),
        plain("database_restarts_lose_nothing", || {
            Box::pin(database_restarts_lose_nothing())
        }),
        plain(
            "a_flush_with_the_server_down_fails_and_loses_nothing",
            || Box::pin(a_flush_with_the_server_down_fails_and_loses_nothing()),
        ),
        plain("wrong_password_is_a_clear_connect_error", || {
            Box::pin(wrong_password_is_a_clear_connect_error())
        }),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    DATABASE.stop();
    conclusion.exit_code()
}
