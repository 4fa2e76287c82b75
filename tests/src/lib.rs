//! The flowstream conformance suite: every guarantee of the design, written once against the
//! public API and `Arc<dyn Driver>`, run against every driver.
//!
//! A driver's test file implements [`Backend`] and expands [`conformance_tests!`] (and
//! [`durability_tests!`] for stores that survive a restart); each scenario becomes one test
//! named after the guarantee it checks (`g4_…` checks guarantee 4 of `DESIGN.md`).
//!
//! Timing: consumers here use a `takeover_after` of [`TAKEOVER`] and a `heartbeat_every` of
//! [`HEARTBEAT`]. Tests wait on conditions with generous bounds ([`BOUND`]); the only fixed
//! waits are observation windows that show something does *not* happen.

mod backend;
pub mod scenarios;
mod wrappers;

use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, ConsumerBuilder, Driver, Message, NewMessage, Producer};

pub use backend::{Backend, close};
pub use wrappers::{CountingDriver, FaultyDriver};

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

/// Expands to one `#[tokio::test]` per conformance scenario, each building its backend with
/// `$backend` (an expression evaluated inside the test).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@each $backend;
            g1_send_assigns_consecutive_offsets_in_call_order,
            g1_batch_to_several_streams_is_all_or_nothing,
            g2_concurrent_producers_leave_no_gaps,
            g3_uncommitted_messages_are_redelivered_after_handover,
            g3_restarted_consumer_resumes_after_committed_offset,
            g4_only_one_consumer_in_a_group_receives,
            g4_shutdown_hands_over_to_a_standby_at_once,
            g4_standby_takes_over_when_messages_stay_pending,
            g4_idle_group_is_never_taken_over,
            g4_owner_that_died_while_idle_is_replaced_once_messages_wait,
            g4_first_message_after_a_quiet_period_does_not_cause_takeover,
            g4_generation_grows_with_every_change_of_owner,
            g5_heartbeat_keeps_a_slow_consumer_active,
            g5_idle_group_writes_nothing,
            g6_zombie_commit_is_fenced,
            g6_lost_commit_reply_does_not_demote,
            g7_commits_are_monotonic,
            g7_commit_beyond_delivered_is_rejected,
            g7_commit_while_standby_is_rejected,
            g8_wait_wakes_promptly_on_append,
            g8_wait_returns_at_its_timeout,
            g8_thousand_idle_consumers_make_no_storage_reads,
            g9_reads_are_batched,
            groups_progress_independently,
            new_group_can_start_at_latest,
            stream_view_delivers_in_order_and_commits,
            trim_removes_messages_up_to_an_offset,
            invalid_input_is_rejected_and_stores_nothing,
        );
    };
    (@each $backend:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let backend = $backend;
                $crate::scenarios::$scenario(&backend).await;
            }
        )*
    };
}

/// Expands to the scenarios that need a store surviving a restart (guarantee 10).
#[macro_export]
macro_rules! durability_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@each $backend;
            g10_acknowledged_messages_survive_a_restart,
        );
    };
}

/// The README's examples, compiled as doc tests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
