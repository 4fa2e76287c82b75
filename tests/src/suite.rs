//! The list of conformance scenarios, and how a test binary turns it into tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use libtest_mimic::Trial;

use crate::{Backend, scenarios};

type Run = for<'a> fn(&'a dyn Backend) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One conformance scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Its name, which says which guarantee it checks.
    pub name: &'static str,
    /// Whether it needs a store that survives a restart.
    pub durable_only: bool,
    run: Run,
}

macro_rules! scenario {
    ($name:ident) => {
        Scenario {
            name: stringify!($name),
            durable_only: false,
            run: |backend| Box::pin(scenarios::$name(backend)),
        }
    };
    ($name:ident, durable) => {
        Scenario {
            name: stringify!($name),
            durable_only: true,
            run: |backend| Box::pin(scenarios::$name(backend)),
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
        scenario!(g4_standby_takes_over_when_messages_stay_pending),
        scenario!(g4_idle_group_is_never_taken_over),
        scenario!(g4_owner_that_died_while_idle_is_replaced_once_messages_wait),
        scenario!(g4_first_message_after_a_quiet_period_does_not_cause_takeover),
        scenario!(g4_failed_start_does_not_leave_the_group_to_a_ghost),
        scenario!(g4_generation_grows_with_every_change_of_owner),
        scenario!(g5_heartbeat_keeps_a_slow_consumer_active),
        scenario!(g5_idle_group_writes_nothing),
        scenario!(g6_zombie_commit_is_fenced),
        scenario!(g6_zombie_background_commit_is_fenced),
        scenario!(g6_lost_commit_reply_does_not_demote),
        scenario!(g7_commits_are_monotonic),
        scenario!(g7_commit_beyond_delivered_is_rejected),
        scenario!(g7_commit_while_standby_is_rejected),
        scenario!(g7_background_commits_are_checked_at_once_and_stored),
        scenario!(g8_wait_wakes_promptly_on_append),
        scenario!(g8_wait_returns_at_its_timeout),
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
    ]
}

/// A fresh multi-threaded runtime for one test, as `#[tokio::test]` would make.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs one async test body on its own runtime.
pub fn block_on<F: Future<Output = ()>>(body: F) {
    runtime().block_on(body);
}

/// One test per scenario, named `{prefix}::conformance::{scenario}`, each on a fresh backend from
/// `make_backend`. Scenarios that need durability are left out for backends without it.
pub fn trials<B, F>(prefix: &str, make_backend: F) -> Vec<Trial>
where
    B: Backend,
    F: Fn() -> B + Send + Sync + 'static,
{
    let durable = make_backend().durable();
    let make_backend = Arc::new(make_backend);
    scenarios()
        .into_iter()
        .filter(|scenario| durable || !scenario.durable_only)
        .map(|scenario| {
            let make_backend = Arc::clone(&make_backend);
            Trial::test(
                format!("{prefix}::conformance::{}", scenario.name),
                move || {
                    block_on(async {
                        let backend = make_backend();
                        (scenario.run)(&backend).await;
                        backend.cleanup().await;
                    });
                    Ok(())
                },
            )
        })
        .collect()
}
