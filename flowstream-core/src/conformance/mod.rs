//! The conformance suite: every guarantee of flowstream, written once against the public API
//! and `Arc<dyn Driver>`, for any driver to run from its own tests. Enabled by the
//! `conformance` feature.
//!
//! A driver crate implements [`DriverFactory`] (how to get a fresh driver on a fresh store)
//! and runs the [`scenarios`] against it. A driver is done when every scenario passes; the
//! project's own drivers, redb and PostgreSQL, run through exactly this entry point.
//!
//! ```no_run
//! use std::sync::Arc;
//! use flowstream_core::Driver;
//! use flowstream_core::conformance::{self, DriverFactory};
//!
//! /// A fresh store per scenario; `open` may be called again to simulate a restart. (Here a
//! /// store made elsewhere, handed over whole.)
//! struct Fresh(Arc<dyn Driver>);
//!
//! #[async_trait::async_trait]
//! impl DriverFactory for Fresh {
//!     async fn open(&self) -> Arc<dyn Driver> {
//!         self.0.clone() // a durable driver opens its store anew here
//!     }
//!     fn durable(&self) -> bool {
//!         false // true when what one `open` stored, the next one sees
//!     }
//! }
//!
//! // In the driver's tests, under #[tokio::test(flavor = "multi_thread")]:
//! async fn conformance(make_store: fn() -> Arc<dyn Driver>) {
//!     conformance::run_all(|| Fresh(make_store())).await;
//! }
//! ```
//!
//! [`run_all`] runs the scenarios one after the other and panics at the first failure. To
//! see each scenario as a test of its own, turn [`scenarios`] into tests with a custom test
//! harness (the project's own test crate does so with `libtest-mimic`), calling
//! [`Scenario::run`] with a fresh factory each.
//!
//! Timing: the consumers here use a `takeover_after` of [`TAKEOVER`] and a `heartbeat_every`
//! of [`HEARTBEAT`]. Scenarios wait on conditions with generous bounds ([`BOUND`]); the only
//! fixed waits are observation windows that show something does *not* happen.

// A test suite reports a violation by panicking, with a message saying what broke; and its
// scenarios run on the calling test's own runtime (`block_on`), so their futures need not be
// `Send`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::future_not_send
)]

mod instrumented;
mod scenarios;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Consumer, ConsumerBuilder, Driver, GroupState, Message, NewMessage, Producer};
pub use instrumented::InstrumentedDriver;

/// How the suite gets drivers: a fresh store for each scenario, opened as often as the
/// scenario asks.
#[async_trait]
pub trait DriverFactory: Send + Sync {
    /// A driver instance on this factory's store. Called again to simulate a restart, so a
    /// durable store must be opened anew (a new connection pool, the file reopened).
    ///
    /// # Cancel safety
    ///
    /// The suite never drops this future before it completes.
    async fn open(&self) -> Arc<dyn Driver>;

    /// Whether a driver from a later [`open`](DriverFactory::open) sees what earlier
    /// instances stored (a file or a server), rather than only what the same instance holds.
    /// Scenarios about durability across restarts run only when it does.
    fn durable(&self) -> bool;

    /// Removes what the scenario stored (drops its database schema, say). Runs after a
    /// scenario that passed.
    ///
    /// # Cancel safety
    ///
    /// The suite never drops this future before it completes.
    async fn cleanup(&self) {}
}

type Run = for<'a> fn(&'a dyn DriverFactory) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One conformance scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    name: &'static str,
    durable_only: bool,
    run: Run,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .field("durable_only", &self.durable_only)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Its name, which says what it checks: `g4_…` checks guarantee 4 of the crate docs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether it needs a [durable](DriverFactory::durable) store.
    pub fn durable_only(&self) -> bool {
        self.durable_only
    }

    /// Runs the scenario against `factory`'s store, then [`cleanup`](DriverFactory::cleanup).
    /// Panics on a violation. Needs a multi-threaded tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the scenario half way; what it stored is not cleaned up.
    pub async fn run(&self, factory: &dyn DriverFactory) {
        (self.run)(factory).await;
        factory.cleanup().await;
    }
}

macro_rules! scenario {
    ($name:ident) => {
        Scenario {
            name: stringify!($name),
            durable_only: false,
            run: |factory| Box::pin(scenarios::$name(factory)),
        }
    };
    ($name:ident, durable) => {
        Scenario {
            name: stringify!($name),
            durable_only: true,
            run: |factory| Box::pin(scenarios::$name(factory)),
        }
    };
}

/// Every scenario of the conformance suite.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!(g1_send_assigns_consecutive_offsets_in_call_order),
        scenario!(g1_batch_to_several_streams_is_all_or_nothing),
        scenario!(g1_concurrent_sends_through_one_producer_keep_their_own_offsets),
        scenario!(g2_concurrent_producers_leave_no_gaps),
        scenario!(g3_uncommitted_messages_are_redelivered_after_handover),
        scenario!(g3_restarted_consumer_resumes_after_committed_offset),
        scenario!(g4_only_one_consumer_in_a_group_receives),
        scenario!(g4_shutdown_hands_over_to_a_standby_at_once),
        scenario!(g4_dropped_shutdown_still_hands_over),
        scenario!(g4_standby_takes_over_when_messages_stay_pending),
        scenario!(g4_idle_group_is_never_taken_over),
        scenario!(g4_owner_that_died_while_idle_is_replaced_once_messages_wait),
        scenario!(g4_first_message_after_a_quiet_period_does_not_cause_takeover),
        scenario!(g4_failed_start_does_not_leave_the_group_to_a_ghost),
        scenario!(g4_abandoned_start_does_not_leave_the_group_to_a_ghost),
        scenario!(g4_generation_grows_with_every_change_of_owner),
        scenario!(g5_heartbeat_keeps_a_slow_consumer_active),
        scenario!(g5_idle_group_writes_nothing),
        scenario!(g6_zombie_commit_is_fenced),
        scenario!(g6_zombie_background_commit_is_fenced),
        scenario!(g6_lost_commit_reply_does_not_demote),
        scenario!(g6_conflict_returns_the_current_record),
        scenario!(g7_commits_are_monotonic),
        scenario!(g7_commit_beyond_delivered_is_rejected),
        scenario!(g7_commit_while_standby_is_rejected),
        scenario!(g7_background_commits_are_checked_at_once_and_stored),
        scenario!(g8_wait_wakes_promptly_on_append),
        scenario!(g8_wait_returns_at_its_timeout),
        scenario!(g8_recv_waits_for_the_next_message),
        scenario!(g8_a_wake_all_costs_an_idle_consumer_one_look),
        scenario!(g8_thousand_idle_consumers_make_no_storage_reads),
        scenario!(g9_reads_are_batched),
        scenario!(g9_next_batch_is_read_while_the_current_one_is_handled),
        scenario!(g10_acknowledged_messages_survive_a_restart, durable),
        scenario!(groups_progress_independently),
        scenario!(new_group_can_start_at_latest),
        scenario!(stream_view_delivers_in_order_and_commits),
        scenario!(trim_removes_messages_up_to_an_offset),
        scenario!(wait_skips_messages_trimmed_before_delivery),
        scenario!(wait_never_skips_a_message_appended_while_it_looks),
        scenario!(invalid_input_is_rejected_and_stores_nothing),
        scenario!(portable_messages_are_stored_faithfully),
        scenario!(messages_no_store_can_hold_are_refused_and_store_nothing),
        scenario!(bad_stream_names_are_refused_by_direct_driver_calls),
        scenario!(keys_are_stored_faithfully),
        scenario!(keyed_messages_go_to_their_keys_partition),
        scenario!(unkeyed_messages_spread_and_named_partitions_win),
        scenario!(a_send_to_several_partitions_is_all_or_nothing),
        scenario!(partition_counts_are_checked_and_fixed),
        scenario!(partitions_spread_over_members_balanced_and_sticky),
        scenario!(a_leaving_member_hands_over_at_once),
        scenario!(a_dead_members_partitions_move_only_once_messages_wait),
        scenario!(a_restart_with_the_same_member_id_moves_nothing_and_fences_the_old),
        scenario!(commits_on_partitions_name_the_partition),
        scenario!(a_waiting_member_is_woken_by_appends_to_its_partitions),
        scenario!(members_joining_together_cause_one_rebalance),
        scenario!(a_batch_applies_appends_and_records_together),
        scenario!(a_failed_batch_stores_nothing),
        scenario!(a_nacked_message_comes_back_after_its_delay_before_later_ones),
        scenario!(max_deliveries_moves_a_message_to_the_dead_letters_with_its_commit),
        scenario!(a_dead_letter_is_copied_with_its_commit_or_not_at_all),
        scenario!(a_fenced_consumer_cannot_nack_or_dead_letter),
        scenario!(a_new_owner_continues_a_nacked_messages_count_and_delay),
        scenario!(a_nack_holds_back_only_its_partition),
        scenario!(a_nacked_partition_resumes_after_its_delay_without_an_append),
        scenario!(nacks_that_cannot_be_honoured_are_refused_and_change_nothing),
        scenario!(a_message_that_keeps_crashing_its_consumers_is_dead_lettered),
        scenario!(dead_letters_are_replayed_to_their_partition_once),
        scenario!(a_parked_message_comes_back_after_its_delay_behind_later_ones),
        scenario!(parked_retries_count_toward_max_deliveries),
        scenario!(a_park_is_copied_with_its_commit_or_not_at_all),
        scenario!(another_member_delivers_what_a_leaver_parked),
        scenario!(logs_and_records_are_listed),
        scenario!(a_deleted_log_starts_again_at_one),
        scenario!(a_log_deleted_under_appends_stays_dense),
        scenario!(a_deleted_record_reads_absent_and_its_revisions_go_on),
        scenario!(a_new_group_starts_at_an_offset_or_a_time),
        scenario!(admin_lists_streams_and_groups_with_lag),
        scenario!(a_reset_moves_a_running_group_and_fences_what_it_delivered_before),
        scenario!(a_deleted_stream_stops_its_consumers_and_starts_again_at_one),
        scenario!(a_consumer_that_missed_a_delete_never_joins_the_new_group),
        scenario!(retention_trims_by_count_age_and_slowest_group),
        scenario!(a_trimmed_gap_is_skipped_or_reported),
    ]
}

/// Runs every scenario, each on a fresh factory from `make_factory`, one after the other;
/// scenarios that need durability are left out when the factory's store is not durable.
/// Panics at the first violation, naming the scenario. Needs a multi-threaded tokio runtime.
///
/// # Cancel safety
///
/// Dropping the future abandons the scenario in progress; the ones after it do not run.
pub async fn run_all<F: DriverFactory>(make_factory: impl Fn() -> F) {
    for scenario in scenarios() {
        let factory = make_factory();
        if scenario.durable_only() && !factory.durable() {
            continue;
        }
        eprintln!("conformance: {}", scenario.name());
        scenario.run(&factory).await;
    }
}

/// `takeover_after` of the consumers in these scenarios.
pub const TAKEOVER: Duration = Duration::from_millis(300);
/// `heartbeat_every` of the consumers in these scenarios.
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
///
/// # Cancel safety
///
/// Cancel-safe: it only looks.
pub async fn eventually(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    eventually_async(what, bound, async || condition()).await;
}

/// Like [`eventually`], for conditions that need to await (e.g. read storage).
///
/// # Cancel safety
///
/// As cancel-safe as `condition`.
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
///
/// # Cancel safety
///
/// A dropped call has sent a prefix of the messages (the last one perhaps).
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
///
/// # Cancel safety
///
/// Messages drained before the drop are lost to the caller (they were delivered); the rest
/// stay with the consumer.
pub async fn drain(consumer: &mut Consumer) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(message) = consumer.next().await.expect("next") {
        out.push(message);
    }
    out
}

/// A group's stored state; panics if the group does not exist.
///
/// # Cancel safety
///
/// Cancel-safe: it only reads.
pub async fn stored_group(driver: &Arc<dyn Driver>, stream: &str, group: &str) -> GroupState {
    GroupState::load(driver.as_ref(), stream, group)
        .await
        .expect("read group record")
        .unwrap_or_else(|| panic!("group {group} of {stream} does not exist"))
}

/// Drops a driver after waiting (bounded) until nothing else holds it, as a process exit
/// would: consumers' background tasks release their handle asynchronously after a drop.
///
/// # Cancel safety
///
/// Dropping the future drops the driver handle at once.
pub async fn close(driver: Arc<dyn Driver>) {
    eventually(
        "every handle on the driver is released",
        Duration::from_secs(10),
        || Arc::strong_count(&driver) == 1,
    )
    .await;
    drop(driver);
}
