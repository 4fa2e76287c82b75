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

/// The README's examples, compiled as doc tests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
