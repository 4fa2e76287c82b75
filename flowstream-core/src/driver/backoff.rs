//! Exponential back-off after consecutive failures, shared by the engine and the drivers.

use std::time::Duration;

/// Delays that double after each consecutive failure, from `first` up to `max`, and start
/// over after a success. A loop that retries against a broken store must not spin, and one
/// that recovers must not keep waiting long.
///
/// ```
/// use std::time::Duration;
/// use flowstream_core::driver::Backoff;
/// let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
/// assert_eq!(backoff.failed(), Duration::from_millis(20));
/// assert_eq!(backoff.failed(), Duration::from_millis(40));
/// backoff.succeeded();
/// assert_eq!(backoff.failed(), Duration::from_millis(20));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A back-off starting at `first` and never above `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// Records a failure; returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let delay = self
            .first
            .saturating_mul(1 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Records a success: the next failure waits `first` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}
