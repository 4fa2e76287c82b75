//! Guarantees 1 and 10 on redb under crashes: a writer process is killed with SIGKILL at
//! random points, again and again; after each reopen every acknowledged message is there and
//! no batch is visible in part.
//!
//! Random but reproducible: the seed is printed, and `FLOWSTREAM_FAULT_SEED` replays it.
//! `FLOWSTREAM_SOAK=1` runs many more rounds.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowstream_redb::RedbDriver;
use flowstream_tests::rng::Rng;
use flowstream_tests::workload::{read_stream, rounds};

/// A batch as the writer acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acked {
    first: u64,
    size: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_loses_no_acknowledged_batch_and_shows_no_partial_one() {
    let seed = std::env::var("FLOWSTREAM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs().rotate_left(32) ^ u64::from(d.subsec_nanos()))
                .unwrap_or(1)
        })
        .max(1);
    eprintln!("FLOWSTREAM_FAULT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.redb");
    let mut acked: BTreeMap<u64, Acked> = BTreeMap::new();
    let mut next_batch = 0;

    for round in 0..rounds(12, 200) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redb-writer"))
            .args([path.display().to_string(), next_batch.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the writer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // Let it get going, then kill it at a random moment while it appends.
        let first_line = lines
            .next()
            .expect("the writer acknowledges")
            .expect("a line");
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap it");
        for line in std::iter::once(first_line).chain(lines.map_while(Result::ok)) {
            let words: Vec<&str> = line.split(' ').collect();
            let ["acked", batch, first, size] = words.as_slice() else {
                panic!("unexpected writer output: {line}");
            };
            acked.insert(
                batch.parse().expect("batch"),
                Acked {
                    first: first.parse().expect("offset"),
                    size: size.parse().expect("size"),
                },
            );
        }

        let driver = RedbDriver::open(&path)
            .await
            .expect("reopen after the crash");
        let stored = read_stream(&driver, "log").await;
        let mut batches: BTreeMap<u64, Vec<(u64, u64, u64)>> = BTreeMap::new();
        for (index, (offset, body)) in stored.iter().enumerate() {
            assert_eq!(
                *offset,
                index as u64 + 1,
                "round {round}: offsets are dense"
            );
            let (batch, rest) = body
                .strip_prefix('b')
                .and_then(|b| b.split_once('.'))
                .expect("body b{batch}.{i}/{k}");
            let (i, k) = rest.split_once('/').expect("i/k");
            batches
                .entry(batch.parse().expect("batch"))
                .or_default()
                .push((*offset, i.parse().expect("i"), k.parse().expect("k")));
        }
        for (batch, messages) in &batches {
            let size = messages[0].2;
            let indexes: Vec<u64> = messages.iter().map(|m| m.1).collect();
            assert_eq!(
                indexes,
                (0..size).collect::<Vec<_>>(),
                "round {round}: batch {batch} is whole"
            );
            let offsets: Vec<u64> = messages.iter().map(|m| m.0).collect();
            assert!(
                offsets.windows(2).all(|w| w[1] == w[0] + 1),
                "batch {batch} is contiguous"
            );
        }
        for (batch, ack) in &acked {
            let found = batches.get(batch).map(|m| (m[0].0, m.len() as u64));
            assert_eq!(
                found,
                Some((ack.first, ack.size)),
                "round {round}: acknowledged batch {batch}"
            );
        }
        next_batch = batches.keys().next_back().map_or(0, |b| b + 1);
        drop(driver);
    }
    assert!(
        acked.len() >= 12,
        "the writer made progress: {} batches",
        acked.len()
    );
}

/// Runs `redb-committer` in `mode` until it has committed all ten messages, kills it with
/// SIGKILL, and returns the group's committed offset and the stream as stored afterwards.
async fn committed_after_kill(mode: &str) -> (u64, Vec<(u64, String)>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("commits.redb");
    let mut child = Command::new(env!("CARGO_BIN_EXE_redb-committer"))
        .args([path.display().to_string(), mode.to_owned()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the committer");
    let lines: Vec<String> = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .take_while(|line| line != "done")
        .collect();
    child.kill().expect("SIGKILL the committer");
    child.wait().expect("reap it");
    assert!(
        lines.iter().any(|l| l == "committed 10") && lines.iter().any(|l| l == "synced 5"),
        "the committer got through: {lines:?}"
    );
    let driver = RedbDriver::open(&path)
        .await
        .expect("reopen after the crash");
    let state = flowstream_core::GroupState::load(&driver, "log", "g")
        .await
        .expect("read the group")
        .expect("the group exists");
    (state.committed, read_stream(&driver, "log").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_record_writes_survive_a_kill() {
    let (committed, stored) = committed_after_kill("immediate").await;
    assert_eq!(committed, 10);
    assert_eq!(stored.len(), 10);
}

/// Deferred record durability: a kill may move the committed offset back to what the last
/// sync made durable, never below it and never past what was committed; every appended
/// message is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_record_writes_move_back_at_most_to_the_last_sync() {
    let (committed, stored) = committed_after_kill("deferred").await;
    assert!(
        (5..=10).contains(&committed),
        "committed offset {committed}"
    );
    let expected: Vec<(u64, String)> = (1..=10).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(stored, expected);
}

/// Exactly once on redb under crashes: a process handling a stream with `RedbDriver::write`
/// (an effect and the commit in one write transaction) is killed with SIGKILL at random
/// points, again and again, and restarted on the same file; in the end every message's
/// effect is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_handler_applies_every_effect_exactly_once() {
    const MESSAGES: u64 = 300;
    const EFFECTS: flowstream_redb::redb::TableDefinition<'_, u64, u64> =
        flowstream_redb::redb::TableDefinition::new("effects");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() ^ u64::from(d.subsec_nanos()))
        .unwrap_or(1)
        .max(1);
    eprintln!("seed {seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("effects.redb");
    {
        let driver = std::sync::Arc::new(RedbDriver::open(&path).await.expect("create"));
        flowstream_core::Producer::new(driver)
            .send_batch(
                (1..=MESSAGES).map(|i| flowstream_core::NewMessage::new("in", format!("m{i}"))),
            )
            .await
            .expect("fill");
    }
    let (mut kills, mut done) = (0, false);
    while !done {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redb-effects"))
            .arg(path.display().to_string())
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the handler");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .expect("the handler says something")
            .expect("a line");
        done = first == "done";
        if !done && kills < rounds(6, 60) {
            // A random moment while it handles messages.
            std::thread::sleep(Duration::from_micros(rng.below(20_000)));
            child.kill().expect("SIGKILL the handler");
            kills += 1;
        } else {
            done = done || lines.map_while(Result::ok).any(|line| line == "done");
            child.kill().expect("stop the handler");
        }
        child.wait().expect("reap it");
    }
    let driver = RedbDriver::open(&path).await.expect("reopen");
    let applied: Vec<(u64, u64)> = driver
        .read_tables(|tx| -> Result<Vec<(u64, u64)>, flowstream_core::Error> {
            let table = tx.open_table(EFFECTS).expect("effects table");
            Ok(flowstream_redb::redb::ReadableTable::iter(&table)
                .expect("iterate")
                .map(|entry| {
                    let (offset, count) = entry.expect("entry");
                    (offset.value(), count.value())
                })
                .collect())
        })
        .await
        .expect("read effects");
    let counts: BTreeMap<u64, u64> = applied.into_iter().collect();
    let wrong: Vec<(u64, u64)> = (1..=MESSAGES)
        .map(|offset| (offset, counts.get(&offset).copied().unwrap_or(0)))
        .filter(|(_, applied)| *applied != 1)
        .collect();
    assert!(
        wrong.is_empty() && counts.len() as u64 == MESSAGES,
        "effects not applied exactly once after {kills} kills (offset, times): {wrong:?}"
    );
    eprintln!("exactly once on redb: {kills} kills, {MESSAGES} messages, every effect once");
}
