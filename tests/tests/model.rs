//! A randomized model test of the group protocol: a seeded scheduler drives consumers that
//! join, consume, commit, crash, pause (cut off from storage), lose replies and shut down,
//! against one in-memory redb store, while messages keep arriving. Every run ends with one
//! healthy consumer draining the stream, and the history checker judges the whole run.
//!
//! Each seed is a test of its own (`model::seed_17`): a failing seed is replayed by running
//! that test. `FLOWSTREAM_SOAK=1` runs many more seeds. The sequence of operations is fixed by
//! the seed; background tasks (heartbeats, takeovers) run on real time alongside.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::driver::Record;
use flowstream_core::{Consumer, Driver, Error, GroupState, NewMessage, Producer, Wake};
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
    /// The last delivery not committed yet: offset and the claim it came under.
    uncommitted: Option<(u64, u64)>,
}

struct Model {
    store: Arc<dyn Driver>,
    recording: Arc<InstrumentedDriver>,
    members: Vec<Member>,
    joined: usize,
    history: History,
    producer: Producer,
    sent: usize,
}

impl Model {
    fn new() -> Model {
        let redb: Arc<dyn Driver> = Arc::new(RedbDriver::in_memory().expect("in-memory redb"));
        let recording = InstrumentedDriver::new(redb.clone());
        let store: Arc<dyn Driver> = recording.clone();
        let mut history = History::default();
        history.groups.insert(STREAM.into(), vec![GROUP.into()]);
        Model {
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
            uncommitted: None,
        });
    }

    async fn produce(&mut self, count: usize) {
        let batch: Vec<(String, NewMessage)> = (0..count)
            .map(|_| {
                self.sent += 1;
                let payload = format!("m{}", self.sent);
                (payload.clone(), NewMessage::new(STREAM, payload))
            })
            .collect();
        let payloads: Vec<String> = batch.iter().map(|(p, _)| p.clone()).collect();
        let offsets = self
            .producer
            .send_batch(batch.into_iter().map(|(_, m)| m))
            .await
            .expect("send");
        for (offset, payload) in offsets.into_iter().zip(payloads) {
            self.history.acks.push(Ack {
                stream: STREAM.into(),
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
            let generation = member.consumer.generation().unwrap_or(0);
            self.history.deliveries.push(Delivery {
                consumer: member.label.clone(),
                group: GROUP.into(),
                generation,
                offset: message.offset(),
            });
            member.uncommitted = Some((message.offset(), generation));
            if commit {
                self.commit_last(index).await;
            }
        }
    }

    /// Commits the member's last delivery, however long ago it was (a zombie's commit, if it
    /// lost the group in between).
    async fn commit_last(&mut self, index: usize) {
        let member = &mut self.members[index];
        let Some((offset, generation)) = member.uncommitted.take() else {
            return;
        };
        if member.consumer.generation() != Some(generation) {
            // The consumer has since started another claim: that delivery is not its to commit.
            return;
        }
        let outcome = match member.consumer.commit(offset).await {
            Ok(()) => Outcome::Accepted,
            Err(Error::Fenced { .. }) => Outcome::Fenced,
            Err(error) => {
                assert!(error.is_retryable(), "{error}");
                // Try again later, as an application retrying a failed commit would.
                member.uncommitted = Some((offset, generation));
                Outcome::Failed
            }
        };
        self.history.commits.push(Commit {
            consumer: member.label.clone(),
            group: GROUP.into(),
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
        let last = self
            .history
            .acks
            .iter()
            .map(|a| a.offset)
            .max()
            .unwrap_or(0);
        let deadline = Instant::now() + BOUND;
        loop {
            let delivered_all = self.history.deliveries.iter().any(|d| d.offset == last)
                && GroupState::load(self.store.as_ref(), STREAM, GROUP)
                    .await
                    .ok()
                    .flatten()
                    .map(|g| g.committed)
                    == Some(last);
            if delivered_all || last == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stream was never drained to {last}"
            );
            for index in 0..self.members.len() {
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
        // The model's only records are its group's state.
        for (key, revision, value) in self.recording.accepted_writes() {
            let written = GroupState::from_record(&key, Record { value, revision })
                .expect("every record the model writes is its group's state");
            self.history.writes.push(GroupWrite {
                group: GROUP.into(),
                revision: written.revision,
                owner: written.owner,
                generation: written.generation,
                active: written.active,
                committed: written.committed,
            });
        }
        let stored = self
            .store
            .read(STREAM, 0, 1_000_000)
            .await
            .expect("read back");
        self.history.stored.insert(
            STREAM.into(),
            stored
                .iter()
                .map(|m| (m.offset(), m.body_str().unwrap_or_default().to_owned()))
                .collect(),
        );
        self.history
    }
}

async fn run(seed: u64) {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut model = Model::new();
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
        "seed {seed}: {} messages, {} deliveries, {} commits ({fenced} fenced), {generations} generations",
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
    let trials = seeds
        .into_iter()
        .map(|seed| {
            Trial::test(format!("model::seed_{seed}"), move || {
                suite::block_on(run(seed));
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
