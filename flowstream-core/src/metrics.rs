//! The metrics flowstream records, through the [`metrics`](https://docs.rs/metrics) facade:
//! the application installs the recorder (a Prometheus exporter, say); without one they cost
//! next to nothing.
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | [`RETRIES`] | counter | `stream`, `group`, `mode` (`ordered`, `parked`) | nacks that scheduled a redelivery |
//! | [`DEAD_LETTERS`] | counter | `stream`, `group`, `cause` (`max_deliveries`, `on_demand`, `crash_poison`) | messages moved to a dead-letter stream |
//!
//! `stream` is the stream the message was first produced to (not a retry stream), so a
//! group's figures add up across its retries.

/// Nacks that scheduled a redelivery (not those that dead-lettered).
pub const RETRIES: &str = "flowstream_retries_total";

/// Messages moved to a dead-letter stream; `cause="crash_poison"` counts those a consumer
/// dead-lettered without handing them out, because they crashed the consumers before it.
pub const DEAD_LETTERS: &str = "flowstream_dead_letters_total";

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
