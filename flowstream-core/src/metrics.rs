//! The metrics flowstream records, through the [`metrics`](https://docs.rs/metrics) facade:
//! the application installs the recorder (a Prometheus exporter, say); without one they cost
//! next to nothing.
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | [`RETRIES`] | counter | `stream`, `group`, `mode` (`ordered`, `parked`) | nacks that scheduled a redelivery |
//! | [`DEAD_LETTERS`] | counter | `stream`, `group`, `cause` (`max_deliveries`, `on_demand`, `crash_poison`) | messages moved to a dead-letter stream |
//! | [`MESSAGES_PRODUCED`], [`BYTES_PRODUCED`] | counter | `stream` | messages (bodies' bytes) a `Producer` stored |
//! | [`MESSAGES_CONSUMED`], [`BYTES_CONSUMED`] | counter | `stream`, `group` | messages (bodies' bytes) a consumer handed to the application |
//! | [`APPEND_SECONDS`] | histogram | | one storage append of a producer (a group commit), in seconds |
//! | [`GROUP_COMMIT_MESSAGES`] | histogram | | messages per storage append of a producer |
//! | [`COMMIT_SECONDS`] | histogram | `stream`, `group` | one consumer commit, in seconds |
//! | [`TAKEOVERS`] | counter | `stream`, `group`, `reason` | claims of a group (a partition) from another owner |
//! | [`FENCED`] | counter | `stream`, `group` | commits, nacks and heartbeats refused because the claim had ended |
//! | [`GROUP_LAG`] | gauge | `stream`, `group`, `partition` | messages after the committed offset, set by [`Admin::groups`](crate::Admin::groups) |
//!
//! Consumers register their counters when they are built: install the recorder before.
//! The lag is what `Admin::groups` last saw: a process exporting it calls that on a period.
//!
//! `stream` is the stream the message was first produced to (not a retry stream), so a
//! group's figures add up across its retries.

/// Nacks that scheduled a redelivery (not those that dead-lettered).
pub const RETRIES: &str = "flowstream_retries_total";

/// Messages moved to a dead-letter stream; `cause="crash_poison"` counts those a consumer
/// dead-lettered without handing them out, because they crashed the consumers before it.
pub const DEAD_LETTERS: &str = "flowstream_dead_letters_total";

/// Messages stored by a `Producer`.
pub const MESSAGES_PRODUCED: &str = "flowstream_messages_produced_total";
/// Body bytes stored by a `Producer`.
pub const BYTES_PRODUCED: &str = "flowstream_bytes_produced_total";
/// Messages handed to the application by `next` (redeliveries included).
pub const MESSAGES_CONSUMED: &str = "flowstream_messages_consumed_total";
/// Body bytes handed to the application by `next`.
pub const BYTES_CONSUMED: &str = "flowstream_bytes_consumed_total";
/// Seconds one storage append of a producer took (a group commit: one or more sends).
pub const APPEND_SECONDS: &str = "flowstream_append_seconds";
/// Messages per storage append of a producer (how much group commit gathers).
pub const GROUP_COMMIT_MESSAGES: &str = "flowstream_group_commit_messages";
/// Seconds one consumer commit took.
pub const COMMIT_SECONDS: &str = "flowstream_commit_seconds";
/// Claims of a group (a partition's record) from another owner, by reason.
pub const TAKEOVERS: &str = "flowstream_takeovers_total";
/// Writes refused because this consumer's claim had ended (a zombie's commit, say).
pub const FENCED: &str = "flowstream_fenced_total";
/// A group's lag in one partition, as `Admin::groups` last saw it.
pub const GROUP_LAG: &str = "flowstream_group_lag";

/// Counts what one send stored: `runs` of (stream, messages, body bytes).
pub(crate) fn produced(runs: &[(String, u64, u64)]) {
    for (stream, messages, bytes) in runs {
        metrics::counter!(MESSAGES_PRODUCED, "stream" => stream.clone()).increment(*messages);
        metrics::counter!(BYTES_PRODUCED, "stream" => stream.clone()).increment(*bytes);
    }
}

/// One producer append: how long, how many messages.
pub(crate) fn appended(seconds: f64, messages: usize) {
    metrics::histogram!(APPEND_SECONDS).record(seconds);
    metrics::histogram!(GROUP_COMMIT_MESSAGES).record(messages as f64);
}

/// A consumer's counters, registered once.
#[derive(Debug, Clone)]
pub(crate) struct Consumed {
    messages: metrics::Counter,
    bytes: metrics::Counter,
    commit_seconds: metrics::Histogram,
}

impl Consumed {
    pub(crate) fn new(stream: &str, group: &str) -> Self {
        let labels = [("stream", stream.to_owned()), ("group", group.to_owned())];
        Consumed {
            messages: metrics::counter!(MESSAGES_CONSUMED, &labels),
            bytes: metrics::counter!(BYTES_CONSUMED, &labels),
            commit_seconds: metrics::histogram!(COMMIT_SECONDS, &labels),
        }
    }

    pub(crate) fn delivered(&self, bytes: usize) {
        self.messages.increment(1);
        self.bytes.increment(bytes as u64);
    }

    pub(crate) fn committed(&self, seconds: f64) {
        self.commit_seconds.record(seconds);
    }
}

pub(crate) fn took_over(stream: &str, group: &str, reason: &'static str) {
    metrics::counter!(
        TAKEOVERS,
        "stream" => stream.to_owned(),
        "group" => group.to_owned(),
        "reason" => reason,
    )
    .increment(1);
}

pub(crate) fn fenced(stream: &str, group: &str) {
    metrics::counter!(FENCED, "stream" => stream.to_owned(), "group" => group.to_owned())
        .increment(1);
}

pub(crate) fn lag(stream: &str, group: &str, partition: u32, lag: u64) {
    metrics::gauge!(
        GROUP_LAG,
        "stream" => stream.to_owned(),
        "group" => group.to_owned(),
        "partition" => partition.to_string(),
    )
    .set(lag as f64);
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeadLetterCause {
    /// A nack reached `max_deliveries`.
    MaxDeliveries,
    /// `Consumer::dead_letter`.
    OnDemand,
    /// It crashed `max_deliveries` consumers.
    CrashPoison,
}

impl DeadLetterCause {
    fn label(self) -> &'static str {
        match self {
            DeadLetterCause::MaxDeliveries => "max_deliveries",
            DeadLetterCause::OnDemand => "on_demand",
            DeadLetterCause::CrashPoison => "crash_poison",
        }
    }
}

pub(crate) fn dead_lettered(stream: &str, group: &str, cause: DeadLetterCause) {
    metrics::counter!(
        DEAD_LETTERS,
        "stream" => stream.to_owned(),
        "group" => group.to_owned(),
        "cause" => cause.label(),
    )
    .increment(1);
}

pub(crate) fn retried(stream: &str, group: &str, parked: bool) {
    metrics::counter!(
        RETRIES,
        "stream" => stream.to_owned(),
        "group" => group.to_owned(),
        "mode" => if parked { "parked" } else { "ordered" },
    )
    .increment(1);
}
