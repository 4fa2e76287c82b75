//! A randomized model test of the group protocol: a seeded scheduler drives consumers that
//! join, consume, commit, crash, pause (cut off from storage), lose replies and shut down,
//! against one in-memory redb store, while messages keep arriving. Every run ends with one
//! healthy consumer draining the stream, and the history checker judges the whole run.
//!
//! Each seed runs twice: on an unpartitioned stream (`model::seed_17`) and on a stream of four
//! partitions whose group spreads them over the members (`model::partitions_seed_17`), where
//! joins, crashes, shutdowns, pauses and lost replies become rebalances, evictions and fenced
//! partition claims; the checker then judges each partition as a log of its own. A failing
//! seed is replayed by running that test. `FLOWSTREAM_SOAK=1` runs many more seeds. The sequence of operations is fixed by
//! the seed; background tasks (heartbeats, takeovers) run on real time alongside.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::driver::Record;
use flowstream_core::{
    Admin, Consumer, Driver, Error, GroupState, NewMessage, Position, Producer, Wake,
    partition_for_key,
};
use flowstream_redb::RedbDriver;
use flowstream_tests::history::{Ack, Commit, Delivery, GroupWrite, History, Outcome};
use flowstream_tests::rng::Rng;
use flowstream_tests::workload::rounds;
use flowstream_tests::{BOUND, InstrumentedDriver, suite};
use libtest_mimic::Trial;
use tokio::time::Instant;

const STREAM: &str = "model";
const GROUP: &str = "g";
const TAKEOVER: Duration = Duration::from_millis(120);
const HEARTBEAT: Duration = Duration::from_millis(40);

struct Member {
    label: String,
    consumer: Consumer,
    faults: Arc<InstrumentedDriver>,
    /// Per partition, the last delivery not committed yet: offset and the claim it came under.
    uncommitted: BTreeMap<u32, (u64, u64)>,
}

struct Model {
    store: Arc<dyn Driver>,
    recording: Arc<InstrumentedDriver>,
    members: Vec<Member>,
    joined: usize,
    history: History,
    producer: Producer,
    sent: usize,
    partitions: u32,
}

/// The log of a partition of the model's stream.
fn log_of(partition: u32) -> String {
    if partition == 0 {
        STREAM.to_owned()
    } else {
        format!("{STREAM}/{partition}")
    }
}

/// The history's name for the group record of a partition: generations count per partition,
/// so each is checked as a group of its own.
fn group_of(partition: u32) -> String {
    if partition == 0 {
        GROUP.to_owned()
    } else {
        format!("{GROUP}@{partition}")
    }
}

impl Model {
    async fn new(partitions: u32) -> Model {
        let redb: Arc<dyn Driver> = Arc::new(RedbDriver::in_memory().expect("in-memory redb"));
        let recording = InstrumentedDriver::new(redb.clone());
        let store: Arc<dyn Driver> = recording.clone();
        if partitions > 1 {
            Admin::new(store.clone())
                .create_stream(STREAM, partitions)
                .await
                .expect("create the stream");
        }
        let mut history = History::default();
        for partition in 0..partitions {
            history
                .groups
                .insert(log_of(partition), vec![group_of(partition)]);
        }
        Model {
            partitions,
            producer: Producer::new(store.clone()),
            store,
            recording,
            members: Vec::new(),
            joined: 0,
            history,
            sent: 0,
        }
    }

    async fn join(&mut self) {
        let faults = InstrumentedDriver::new(self.store.clone());
        let driver: Arc<dyn Driver> = faults.clone();
        let built = Consumer::builder(driver, STREAM, GROUP)
            .takeover_after(TAKEOVER)
            .heartbeat_every(HEARTBEAT)
            .batch_size(4)
            .build()
            .await;
        let consumer = built.expect("joining an in-memory store");
        self.joined += 1;
        self.members.push(Member {
            label: format!("c{}", self.joined),
            consumer,
            faults,
            uncommitted: BTreeMap::new(),
        });
    }

    async fn produce(&mut self, count: usize) {
        let batch: Vec<(String, NewMessage)> = (0..count)
            .map(|_| {
                self.sent += 1;
                let payload = format!("m{}", self.sent);
                let message = NewMessage::new(STREAM, payload.clone()).with_key(payload.clone());
                (payload, message)
            })
            .collect();
        let payloads: Vec<String> = batch.iter().map(|(p, _)| p.clone()).collect();
        let offsets = self
            .producer
            .send_batch(batch.into_iter().map(|(_, m)| m))
            .await
            .expect("send");
        for (offset, payload) in offsets.into_iter().zip(payloads) {
            let partition = partition_for_key(payload.as_bytes(), self.partitions);
            self.history.acks.push(Ack {
                stream: log_of(partition),
                offset,
                payload,
            });
        }
    }

    /// Up to `count` deliveries, each committed when `commit` says so.
    async fn consume(&mut self, index: usize, count: usize, commit: bool) {
        for _ in 0..count {
            let member = &mut self.members[index];
            let message = match member.consumer.next().await {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(error) => {
                    assert!(error.is_retryable(), "{error}");
                    return;
                }
            };
            let partition = message.partition();
            let generation = member.consumer.generation_in(partition).unwrap_or(0);
            self.history.deliveries.push(Delivery {
                consumer: format!("{}@{partition}", member.label),
                group: group_of(partition),
                generation,
                offset: message.offset(),
            });
            member
                .uncommitted
                .insert(partition, (message.offset(), generation));
            if commit {
                let pending = self.members[index].uncommitted.remove(&partition);
                if let Some((offset, generation)) = pending {
                    self.commit_one(index, partition, offset, generation).await;
                }
            }
        }
    }

    /// Commits the member's last delivery of each partition, however long ago it was (a
    /// zombie's commit, if it lost the partition in between).
    async fn commit_last(&mut self, index: usize) {
        let pending = std::mem::take(&mut self.members[index].uncommitted);
        for (partition, (offset, generation)) in pending {
            self.commit_one(index, partition, offset, generation).await;
        }
    }

    async fn commit_one(&mut self, index: usize, partition: u32, offset: u64, generation: u64) {
        let member = &mut self.members[index];
        if member.consumer.generation_in(partition) != Some(generation) {
            // The consumer has since started another claim: that delivery is not its to commit.
            return;
        }
        let position = if self.partitions > 1 {
            Position::new(partition, offset)
        } else {
            Position::from(offset)
        };
        let outcome = match member.consumer.commit(position).await {
            Ok(()) => Outcome::Accepted,
            Err(Error::Fenced { .. }) => Outcome::Fenced,
            Err(error) => {
                assert!(error.is_retryable(), "{error}");
                // Try again later, as an application retrying a failed commit would.
                member
                    .uncommitted
                    .entry(partition)
                    .or_insert((offset, generation));
                Outcome::Failed
            }
        };
        self.history.commits.push(Commit {
            consumer: format!("{}@{partition}", member.label),
            group: group_of(partition),
            generation,
            offset,
            outcome,
        });
    }

    async fn step(&mut self, rng: &mut Rng) {
        if self.members.is_empty() {
            return self.join().await;
        }
        let index = rng.pick(self.members.len());
        match rng.below(100) {
            0..=14 => self.join().await,
            15..=34 => self.produce(1 + rng.pick(6)).await,
            35..=59 => self.consume(index, 1 + rng.pick(5), true).await,
            60..=67 => self.consume(index, 1 + rng.pick(3), false).await,
            68..=73 => {
                // A crash: no handover.
                self.members.remove(index);
            }
            74..=78 => {
                let member = self.members.remove(index);
                let _ = member.consumer.shutdown().await;
            }
            79..=85 => {
                let member = &self.members[index];
                let cut_off = !member.faults.is_partitioned();
                member.faults.set_partitioned(cut_off);
            }
            86..=88 => self.members[index].faults.lose_next_write_reply(),
            89..=93 => self.commit_last(index).await,
            _ => {
                // Let time pass: heartbeats and takeovers happen here.
                let pause = TAKEOVER.mul_f64(2.0 * rng.below(1_000) as f64 / 1_000.0);
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Heals everyone, then lets one fresh consumer (plus whoever is still there) drain the
    /// stream and commit everything.
    async fn finish(mut self) -> History {
        for member in &self.members {
            member.faults.set_partitioned(false);
        }
        self.join().await;
        // The highest acknowledged offset of each partition.
        let mut last = vec![0u64; self.partitions as usize];
        for ack in &self.history.acks {
            let partition = (0..self.partitions)
                .find(|p| log_of(*p) == ack.stream)
                .unwrap_or(0) as usize;
            last[partition] = last[partition].max(ack.offset);
        }
        let deadline = Instant::now() + BOUND;
        loop {
            let mut drained = true;
            for partition in 0..self.partitions {
                let top = last[partition as usize];
                let committed =
                    GroupState::load_partition(self.store.as_ref(), STREAM, GROUP, partition)
                        .await
                        .ok()
                        .flatten()
                        .map_or(0, |g| g.committed);
                drained &= committed == top;
            }
            if drained {
                break;
            }
            if Instant::now() >= deadline {
                let mut states = Vec::new();
                for partition in 0..self.partitions {
                    states.push(
                        GroupState::load_partition(self.store.as_ref(), STREAM, GROUP, partition)
                            .await
                            .ok()
                            .flatten(),
                    );
                }
                let roster = self
                    .store
                    .get_record(&format!("roster/{STREAM}/{GROUP}"))
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.value);
                let members: Vec<(String, &str, Vec<u32>)> = self
                    .members
                    .iter()
                    .map(|m| (m.label.clone(), m.consumer.id(), m.consumer.assignment()))
                    .collect();
                panic!(
                    "the stream was never drained to {last:?}: partitions {states:?}, roster \
                     {roster:?}, members {members:?}"
                );
            }
            for index in 0..self.members.len() {
                // What was delivered earlier and left uncommitted is committed now, as an
                // application that commits late would.
                self.commit_last(index).await;
                self.consume(index, 64, true).await;
            }
            if let Some(member) = self.members.last_mut() {
                let _ = member
                    .consumer
                    .wait(Duration::from_millis(50))
                    .await
                    .map(|w| w == Wake::TimedOut);
            }
        }
        // Group records are `group/<log>/<group>`; the roster and the stream record are not
        // group states.
        for (key, revision, value) in self.recording.accepted_writes() {
            let Some(log) = key
                .strip_prefix("group/")
                .and_then(|k| k.strip_suffix(&format!("/{GROUP}")))
            else {
                continue;
            };
            let partition = (0..self.partitions)
                .find(|p| log_of(*p) == log)
                .expect("a group record of one of the stream's partitions");
            let written =
                GroupState::from_record(&key, Record { value, revision }).expect("a group state");
            self.history.writes.push(GroupWrite {
                group: group_of(partition),
                revision: written.revision,
                owner: written.owner,
                generation: written.generation,
                active: written.active,
                committed: written.committed,
            });
        }
        for partition in 0..self.partitions {
            let log = log_of(partition);
            let stored = self
                .store
                .read(&log, 0, 1_000_000)
                .await
                .expect("read back");
            self.history.stored.insert(
                log,
                stored
                    .iter()
                    .map(|m| (m.offset(), m.body_str().unwrap_or_default().to_owned()))
                    .collect(),
            );
        }
        self.history
    }
}

async fn run(seed: u64, partitions: u32) {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut model = Model::new(partitions).await;
    for _ in 0..100 {
        model.step(&mut rng).await;
    }
    let history = model.finish().await;
    history.assert_valid();
    let generations = history
        .writes
        .iter()
        .map(|w| w.generation)
        .max()
        .unwrap_or(0);
    let fenced = history
        .commits
        .iter()
        .filter(|c| c.outcome == Outcome::Fenced)
        .count();
    eprintln!(
        "seed {seed}, {partitions} partition(s): {} messages, {} deliveries, {} commits ({fenced} fenced), {generations} generations",
        history.acks.len(),
        history.deliveries.len(),
        history.commits.len(),
    );
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let seeds: Vec<u64> = match std::env::var("FLOWSTREAM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (1..=rounds(24, 500) as u64).collect(),
    };
    let mut trials = Vec::new();
    for seed in seeds {
        trials.push(Trial::test(format!("model::seed_{seed}"), move || {
            suite::block_on(run(seed, 1));
            Ok(())
        }));
        trials.push(Trial::test(
            format!("model::partitions_seed_{seed}"),
            move || {
                suite::block_on(run(seed, 4));
                Ok(())
            },
        ));
    }
    libtest_mimic::run(&args, trials).exit_code()
}
