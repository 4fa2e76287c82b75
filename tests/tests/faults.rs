//! The fault suite: real processes killed and paused, a redb writer killed mid-append, each
//! run checked by the history checker. Short in CI; `FLOWSTREAM_SOAK=1` runs many more rounds.

use std::process::ExitCode;
use std::time::Duration;

use flowstream_tests::BOUND;
use flowstream_tests::postgres::{DATABASE, drop_schema, unique_schema};
use flowstream_tests::suite;
use flowstream_tests::workload::{Workload, rounds};
use libtest_mimic::Trial;

const CONSUMER: &str = env!("CARGO_BIN_EXE_pg-consumer");
const TAKEOVER_MS: u64 = 500;

/// Consumer crashes: three consumer processes in one group under a steady produce rate;
/// round after round the active one is killed with SIGKILL and replaced by a fresh process.
/// Every acknowledged message is delivered, and the whole history checks out.
async fn consumer_crashes(schema: String) {
    let rounds = rounds(3, 25);
    let mut w = Workload::new(CONSUMER, &schema, TAKEOVER_MS, 0).await;
    let first = w.spawn();
    w.wait_until("the first process joins", BOUND, |w| {
        w.processes[first].is_active()
    })
    .await;
    w.spawn();
    w.spawn();
    let producing = w.produce(400 * (rounds + 1), Duration::from_millis(4));

    for round in 0..rounds {
        let active = w.active().await;
        w.wait_until("the active process makes progress", BOUND, |w| {
            w.processes[active].deliveries_since_active() >= 30
        })
        .await;
        w.processes[active].kill();
        eprintln!("round {round}: killed {}", w.processes[active].label);
        w.spawn();
    }
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
    // Processing takes 300 ms a message, so the freeze lands in the middle of it.
    let mut w = Workload::new(CONSUMER, &schema, TAKEOVER_MS, 300).await;
    let frozen = w.spawn();
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
            .events
            .last()
            .is_some_and(|l| l.starts_with("delivered "))
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
            .any(|l| l.starts_with("commit "))
    })
    .await;
    let after: Vec<String> = w.processes[frozen].events[before_thaw..].to_vec();
    let first_commit = after
        .iter()
        .find(|l| l.starts_with("commit "))
        .expect("a commit");
    assert!(
        first_commit.ends_with(" fenced"),
        "the zombie's commit: {first_commit}"
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

fn with_schema<F, Fut>(name: &'static str, body: F) -> Trial
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(format!("faults::{name}"), move || {
        suite::block_on(async move {
            let schema = unique_schema();
            body(schema.clone()).await;
            drop_schema(&schema).await;
        });
        Ok(())
    })
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![
        with_schema("consumer_crashes", consumer_crashes),
        with_schema("paused_consumer_is_fenced", paused_consumer_is_fenced),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    DATABASE.stop();
    conclusion.exit_code()
}
