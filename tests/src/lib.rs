//! The project's own test harness: the conformance suite (`flowstream_core::conformance`)
//! turned into one test per scenario for each of our drivers, the PostgreSQL a test run uses,
//! the fault and race tests, and the history checker that judges them.
//!
//! The test binaries use their own `main` (libtest-mimic), so that a resource such as a
//! PostgreSQL container or cluster lives exactly as long as the test run.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

pub mod cluster;
pub mod history;
pub mod pgbouncer;
pub mod postgres;
pub mod rng;
pub mod suite;
pub mod workload;

pub use flowstream_core::conformance::{
    BOUND, DriverFactory, HEARTBEAT, InstrumentedDriver, TAKEOVER, close, consumer, drain,
    eventually, eventually_async, produce, stored_group,
};

/// An error and its causes on one line (`a: b: c`), as error reporters print them.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        shown.push_str(": ");
        shown.push_str(&next.to_string());
        cause = next.source();
    }
    shown
}

/// Asserts that no error in the chain repeats its cause in its own message (error reporters
/// print the whole chain, so a repeated cause would show twice).
pub fn assert_causes_printed_once(error: &(dyn std::error::Error + 'static)) {
    let mut current = error;
    while let Some(cause) = current.source() {
        let (shown, cause_shown) = (current.to_string(), cause.to_string());
        assert!(
            !shown.contains(&cause_shown),
            "{shown:?} repeats its cause {cause_shown:?} (chain: {})",
            error_chain(error)
        );
        current = cause;
    }
}

/// The next message, which must be buffered or readable at once.
///
/// # Cancel safety
///
/// As [`flowstream_core::Consumer::next`].
pub async fn next_message(consumer: &mut flowstream_core::Consumer) -> flowstream_core::Message {
    consumer.next().await.expect("next").expect("a message")
}

/// The next message, waiting for it (bounded by [`BOUND`]) through `wait`.
///
/// # Cancel safety
///
/// Cancel-safe, as `next` and `wait` are.
pub async fn next_after_wait(consumer: &mut flowstream_core::Consumer) -> flowstream_core::Message {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(message) = consumer.next().await.expect("next") {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message within {BOUND:?}"
        );
        consumer.wait(BOUND).await.expect("wait");
    }
}

/// Waits (bounded by [`BOUND`]) until `consumer` is active: it took the group over.
///
/// # Cancel safety
///
/// Cancel-safe: it only waits.
pub async fn until_active(consumer: &mut flowstream_core::Consumer) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !consumer.is_active() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not active within {BOUND:?}"
        );
        consumer.wait(BOUND).await.expect("wait");
    }
}

/// A consumer taken over while it handles a message: on a fresh stream `s` holding one
/// message, a consumer of group `g` (through an instrumented driver) delivers it, is cut off
/// from storage (so it cannot heartbeat), and a second consumer takes the group over. Returns
/// the instrumented driver (to reconnect the first), the first consumer, the new owner and
/// the message the first delivered.
///
/// # Cancel safety
///
/// Dropping the future drops the consumers it built, like a crash.
pub async fn taken_over_while_handling(
    driver: &std::sync::Arc<dyn flowstream_core::Driver>,
) -> (
    std::sync::Arc<InstrumentedDriver>,
    flowstream_core::Consumer,
    flowstream_core::Consumer,
    flowstream_core::Message,
) {
    produce(driver, "s", "m", 1).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let through: std::sync::Arc<dyn flowstream_core::Driver> = faulty.clone();
    let mut first = consumer(&through, "s", "g").build().await.expect("first");
    let mut second = consumer(driver, "s", "g").build().await.expect("second");
    let delivered = next_message(&mut first).await;
    // Cut off, the first cannot heartbeat: the second takes over once the message has waited
    // `takeover_after`.
    faulty.set_partitioned(true);
    until_active(&mut second).await;
    (faulty, first, second, delivered)
}

/// The README's examples, compiled as doc tests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
