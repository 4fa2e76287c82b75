//! Validation of stream and group names, done before anything touches storage, and the names
//! of the streams flowstream derives from them.

use std::time::Duration;

use crate::error::{Error, NameKind, printable};

/// Longest accepted stream or group name, in bytes (Kafka's topic limit).
pub const MAX_NAME_LEN: usize = 249;

/// Checks a stream or group name: 1 to [`MAX_NAME_LEN`] characters from `[A-Za-z0-9._-]`.
///
/// The character set keeps names safe as storage keys, file-system-like paths and log fields,
/// and lets drivers build composite keys with `/` without ambiguity.
pub(crate) fn validate_name(kind: NameKind, name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 249 bytes")
    } else if name.contains(DERIVED_SEPARATOR) {
        Some("'~' is reserved for the streams flowstream makes (dead letters, parked retries)")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            kind,
            name: printable(name),
            reason,
        }),
    }
}

/// Joins the parts of a stream name flowstream derives from others; outside the name
/// alphabet, so a derived name never collides with a stream an application names.
const DERIVED_SEPARATOR: char = '~';

/// The suffix of a group's dead-letter stream.
const DEAD_LETTERS: &str = "dlq";

/// The dead-letter stream of `group` on `stream`: `{stream}~{group}~dlq`. It is an ordinary,
/// unpartitioned stream (read it, consume it, trim it); only flowstream appends to it, since
/// producers refuse names with `~`, so it can never collide with an application's stream.
pub fn dead_letter_stream(stream: &str, group: &str) -> String {
    format!("{stream}{DERIVED_SEPARATOR}{group}{DERIVED_SEPARATOR}{DEAD_LETTERS}")
}

/// The delays of the retry streams of a group that parks its retries
/// ([`ConsumerBuilder::park_retries`](crate::ConsumerBuilder::park_retries)), shortest first,
/// with the suffix each stream's name ends with.
const PARK_TIERS: [(Duration, &str); 5] = [
    (Duration::from_secs(1), "retry-1s"),
    (Duration::from_secs(10), "retry-10s"),
    (Duration::from_secs(60), "retry-1m"),
    (Duration::from_secs(600), "retry-10m"),
    (Duration::from_secs(3600), "retry-1h"),
];

/// The delays a parked retry can wait, shortest first: a nack's delay is rounded up to one of
/// them (see [`ConsumerBuilder::park_retries`](crate::ConsumerBuilder::park_retries)).
pub const PARK_DELAYS: [Duration; 5] = [
    PARK_TIERS[0].0,
    PARK_TIERS[1].0,
    PARK_TIERS[2].0,
    PARK_TIERS[3].0,
    PARK_TIERS[4].0,
];

/// The retry stream in which `group` parks the messages of `stream` it retries after `delay`
/// (rounded up to one of [`PARK_DELAYS`]; longer delays take the longest):
/// `{stream}~{group}~retry-{1s,10s,1m,10m,1h}`. An ordinary, unpartitioned stream, as a
/// dead-letter stream is.
pub fn retry_stream(stream: &str, group: &str, delay: Duration) -> String {
    let suffix = PARK_TIERS[park_tier_for(delay)].1;
    format!("{stream}{DERIVED_SEPARATOR}{group}{DERIVED_SEPARATOR}{suffix}")
}

/// The index in [`PARK_DELAYS`] of the shortest delay at least `delay` (the last for longer
/// delays).
pub(crate) fn park_tier_for(delay: Duration) -> usize {
    PARK_DELAYS
        .iter()
        .position(|tier| *tier >= delay)
        .unwrap_or(PARK_DELAYS.len() - 1)
}

/// The tier of a retry stream's name (`None`: not a retry stream).
pub(crate) fn park_tier_of(log: &str) -> Option<usize> {
    let (_, suffix) = log.rsplit_once(DERIVED_SEPARATOR)?;
    PARK_TIERS.iter().position(|(_, s)| *s == suffix)
}

/// Longest name of a stream flowstream derives (a dead-letter stream of a dead-letter
/// stream…), in bytes.
pub const MAX_DERIVED_NAME_LEN: usize = 1024;

/// Checks the name of a stream to read or consume: a stream name, or a name flowstream
/// derives from one ([`dead_letter_stream`], [`retry_stream`]), itself perhaps derived (a group consuming a
/// dead-letter stream has dead letters too), up to [`MAX_DERIVED_NAME_LEN`] bytes.
pub(crate) fn validate_stream_to_read(name: &str) -> Result<(), Error> {
    if !name.contains(DERIVED_SEPARATOR) {
        return validate_name(NameKind::Stream, name);
    }
    let refuse = |reason| Error::InvalidName {
        kind: NameKind::Stream,
        name: printable(name),
        reason,
    };
    if name.len() > MAX_DERIVED_NAME_LEN {
        return Err(refuse("a dead-letter stream's name is at most 1024 bytes"));
    }
    let mut parts = name.rsplitn(3, DERIVED_SEPARATOR);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(suffix), Some(group), Some(stream))
            if suffix == DEAD_LETTERS || PARK_TIERS.iter().any(|(_, s)| *s == suffix) =>
        {
            validate_name(NameKind::Group, group)?;
            validate_stream_to_read(stream)
        }
        _ => Err(refuse(
            "'~' is reserved for the streams flowstream makes: \
             {stream}~{group}~dlq names a dead-letter stream, \
             {stream}~{group}~retry-{1s,10s,1m,10m,1h} a retry stream",
        )),
    }
}

/// Most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// The log that stores partition `partition` of `stream`. Partition 0 is the stream's own
/// name, so an unpartitioned stream is a stream of one partition, and a message sent to a
/// partitioned stream by a producer that has not learnt of its partitions yet still lands in
/// one of them. The other partitions are `stream/p`: `/` is outside the name alphabet, so a
/// log name never collides with a stream's.
pub(crate) fn log_name(stream: &str, partition: u32) -> String {
    if partition == 0 {
        stream.to_owned()
    } else {
        format!("{stream}/{partition}")
    }
}

/// Splits a log name into its stream and partition (the inverse of [`log_name`]).
pub(crate) fn split_log_name(log: &str) -> (&str, u32) {
    match log.rsplit_once('/') {
        Some((stream, partition)) => (stream, partition.parse().unwrap_or(0)),
        None => (log, 0),
    }
}

/// Checks a log name as drivers receive it: a valid stream name, or one followed by `/` and a
/// partition number from 1 below [`MAX_PARTITIONS`], written without leading zeros (so each
/// partition has exactly one log name).
pub(crate) fn validate_log_name(log: &str) -> Result<(), Error> {
    let Some((stream, partition)) = log.rsplit_once('/') else {
        return validate_stream_to_read(log);
    };
    validate_name(NameKind::Stream, stream)?;
    let canonical = !partition.starts_with('0') && partition.bytes().all(|b| b.is_ascii_digit());
    match partition.parse::<u32>() {
        Ok(p) if canonical && p < MAX_PARTITIONS => Ok(()),
        _ => Err(Error::InvalidName {
            kind: NameKind::Stream,
            name: printable(log),
            reason: "a partition's log name is the stream's name, '/' and a partition number \
                     from 1 to 1023",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_round_trip() {
        for (stream, partition, log) in [("orders", 0, "orders"), ("orders", 7, "orders/7")] {
            assert_eq!(log_name(stream, partition), log);
            assert_eq!(split_log_name(log), (stream, partition));
            assert!(validate_log_name(log).is_ok());
        }
        for bad in [
            "orders/0",
            "orders/01",
            "orders/1024",
            "orders/",
            "orders/x",
            "a/b/1",
            "/1",
        ] {
            assert!(validate_log_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dead_letter_streams_are_readable_and_unsendable() {
        let dlq = dead_letter_stream("orders", "billing");
        assert_eq!(dlq, "orders~billing~dlq");
        assert!(validate_stream_to_read(&dlq).is_ok());
        assert!(validate_log_name(&dlq).is_ok());
        assert!(validate_name(NameKind::Stream, &dlq).is_err());
        let longest = dead_letter_stream(&"s".repeat(MAX_NAME_LEN), &"g".repeat(MAX_NAME_LEN));
        assert!(validate_stream_to_read(&longest).is_ok());
        let nested = dead_letter_stream(&dlq, "audit");
        assert_eq!(nested, "orders~billing~dlq~audit~dlq");
        assert!(validate_log_name(&nested).is_ok());
        let mut deep = dlq.clone();
        while deep.len() <= MAX_DERIVED_NAME_LEN {
            deep = dead_letter_stream(&deep, "g");
        }
        assert!(validate_stream_to_read(&deep).is_err());
        for bad in [
            "orders~billing",
            "orders~billing~other",
            "orders~billing~dlq~dlq",
            "orders~billing~dlq~x~y",
            "~billing~dlq",
            "orders~~dlq",
            "or ders~billing~dlq",
            "orders~billing~dlq/1",
        ] {
            assert!(validate_log_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_streams_round_delays_up_to_a_tier() {
        let name = |ms| retry_stream("orders", "billing", Duration::from_millis(ms));
        assert_eq!(name(0), "orders~billing~retry-1s");
        assert_eq!(name(1_000), "orders~billing~retry-1s");
        assert_eq!(name(1_001), "orders~billing~retry-10s");
        assert_eq!(name(300_000), "orders~billing~retry-10m");
        assert_eq!(name(86_400_000), "orders~billing~retry-1h");
        for (tier, delay) in PARK_DELAYS.iter().enumerate() {
            let stream = retry_stream("orders", "billing", *delay);
            assert_eq!(park_tier_of(&stream), Some(tier));
            assert!(validate_stream_to_read(&stream).is_ok(), "{stream}");
            assert!(validate_name(NameKind::Stream, &stream).is_err());
        }
        assert_eq!(park_tier_of("orders~billing~dlq"), None);
        assert_eq!(park_tier_of("orders"), None);
        assert!(validate_stream_to_read("orders~billing~retry-2s").is_err());
    }

    #[test]
    fn accepts_usual_names() {
        for name in [
            "orders",
            "orders.v2",
            "a-b_c",
            "X",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert!(validate_name(NameKind::Stream, name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "",
            "with space",
            "slash/inside",
            "'; DROP TABLE streams; --",
            "tab\there",
            "nul\0",
            "é",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            let err = validate_name(NameKind::Group, name).expect_err("rejected");
            assert!(
                matches!(
                    err,
                    Error::InvalidName {
                        kind: NameKind::Group,
                        ..
                    }
                ),
                "{name}"
            );
        }
    }
}
