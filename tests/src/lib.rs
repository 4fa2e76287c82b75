//! The flowstream conformance suite: every guarantee of the design, written once against the
//! public API and `Arc<dyn Driver>`, run against every driver.
//!
//! A driver's test binary implements [`Backend`] and turns [`suite::trials`] into tests; each
//! scenario becomes one test named after the guarantee it checks (`g4_…` checks guarantee 4
//! of the design notes). The binaries use their own `main` (libtest-mimic), so that a resource
//! such as a PostgreSQL container lives exactly as long as the test run.
//!
//! Timing: consumers here use a `takeover_after` of [`TAKEOVER`] and a `heartbeat_every` of
//! [`HEARTBEAT`]. Tests wait on conditions with generous bounds ([`BOUND`]); the only fixed
//! waits are observation windows that show something does *not* happen.

mod backend;
pub mod cluster;
pub mod history;
pub mod postgres;
pub mod scenarios;
pub mod suite;
pub mod workload;
mod wrappers;

use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, ConsumerBuilder, Driver, Message, NewMessage, Producer};

pub use backend::{Backend, close};
pub use wrappers::{CountingDriver, FaultyDriver, InstrumentedDriver, RecordingDriver};

/// `takeover_after` of the consumers in these tests.
pub const TAKEOVER: Duration = Duration::from_millis(300);
/// `heartbeat_every` of the consumers in these tests.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Upper bound of every wait on a condition: far above what any passing run needs.
pub const BOUND: Duration = Duration::from_secs(15);

/// A consumer builder with the suite's fast timings.
pub fn consumer(driver: &Arc<dyn Driver>, stream: &str, group: &str) -> ConsumerBuilder {
    Consumer::builder(driver.clone(), stream, group)
        .takeover_after(TAKEOVER)
        .heartbeat_every(HEARTBEAT)
}

/// Waits until `condition` holds, checking every few milliseconds; panics after `bound`.
pub async fn eventually(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    eventually_async(what, bound, async || condition()).await;
}

/// Like [`eventually`], for conditions that need to await (e.g. read storage).
pub async fn eventually_async(
    what: &str,
    bound: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {bound:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `count` messages to `stream` one by one, bodies `"{prefix}{i}"`; returns offsets.
pub async fn produce(
    driver: &Arc<dyn Driver>,
    stream: &str,
    prefix: &str,
    count: usize,
) -> Vec<u64> {
    let producer = Producer::new(driver.clone());
    let mut offsets = Vec::with_capacity(count);
    for i in 0..count {
        let offset = producer
            .send(NewMessage::new(stream, format!("{prefix}{i}")))
            .await
            .expect("send");
        offsets.push(offset);
    }
    offsets
}

/// Calls `next()` until it returns `None`.
pub async fn drain(consumer: &mut Consumer) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(message) = consumer.next().await.expect("next") {
        out.push(message);
    }
    out
}

/// The group state as stored, read straight from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    /// Consumer id of the owner.
    pub owner: String,
    /// Generation.
    pub generation: u64,
    /// Whether the owner is active (false after a graceful shutdown).
    pub active: bool,
    /// Committed offset.
    pub committed: u64,
    /// Record revision.
    pub revision: u64,
}

/// Reads a group's stored state; panics if the group does not exist.
pub async fn stored_group(driver: &Arc<dyn Driver>, stream: &str, group: &str) -> StoredGroup {
    let key = flowstream_core::group_record_key(stream, group);
    let record = driver
        .get_record(&key)
        .await
        .expect("read group record")
        .unwrap_or_else(|| panic!("group {group} of {stream} does not exist"));
    let field = |name: &str| record.value.get(name).cloned().unwrap_or_default();
    StoredGroup {
        owner: field("owner").as_str().unwrap_or_default().to_owned(),
        generation: field("generation").as_u64().unwrap_or_default(),
        active: field("active").as_bool().unwrap_or_default(),
        committed: field("committed").as_u64().unwrap_or_default(),
        revision: record.revision.0,
    }
}

/// The README's examples, compiled as doc tests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
