//! [`Error`], what the public API returns. Drivers return
//! [`DriverError`](crate::driver::DriverError), which reaches users inside
//! [`Error::Storage`].

use std::fmt::{self, Display};

use crate::driver::{DriverError, StorageErrorKind};

/// Which kind of name failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameKind {
    /// A stream name.
    Stream,
    /// A consumer-group name.
    Group,
    /// A member id of a group over partitions.
    Member,
}

impl Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Stream => "stream",
            NameKind::Group => "group",
            NameKind::Member => "member id",
        })
    }
}

/// Everything the flowstream API can fail with.
///
/// Branch on the variant; the messages are for people. Storage failures carry their source and
/// say whether retrying can help ([`Error::is_retryable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stream or group name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid {kind} name {name}: {reason}")]
    InvalidName {
        /// Stream or group.
        kind: NameKind,
        /// The offending name, escaped and shortened for display.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `send_batch` was given no messages.
    #[error("empty batch: a send needs at least one message")]
    EmptyBatch,

    /// A message body (with its key) is over the producer's size limit.
    #[error(
        "message body for stream {stream:?} is {size} bytes, over the limit of {limit} bytes \
         (raise it with Producer::with_max_body_size or split the message)"
    )]
    BodyTooLarge {
        /// The target stream.
        stream: String,
        /// Size of the body in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// A header name is empty, or a header name or value contains a NUL character.
    #[error("invalid header {name}: {reason}")]
    InvalidHeader {
        /// The header name, escaped and shortened for display.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A consumer setting is out of range (for example `heartbeat_every >= takeover_after`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// `commit` was called on a consumer that has never been active in its current claim.
    #[error(
        "consumer is standby in group {group:?}: only the active consumer commits \
         (call next() and commit what it returned)"
    )]
    Standby {
        /// The group.
        group: String,
    },

    /// Another consumer took the group over since this one received the messages it is
    /// committing. Nothing was committed; the new owner will deliver those messages again.
    /// The consumer is now standby.
    #[error(
        "consumer was fenced in group {group:?}: another consumer took over after generation \
         {generation}; the commit was rejected and the messages will be redelivered to the new owner"
    )]
    Fenced {
        /// The group.
        group: String,
        /// The generation this consumer held when it received the messages.
        generation: u64,
    },

    /// A commit named an offset this consumer has not delivered yet.
    #[error("cannot commit offset {offset}: only offsets up to {delivered} have been delivered")]
    CommitBeyondDelivered {
        /// The offset asked for.
        offset: u64,
        /// The highest offset `next()` has returned in the current claim.
        delivered: u64,
    },

    /// A message was nacked or dead-lettered after the group had committed past it: it was
    /// handled already, and cannot be retried or dead-lettered any more.
    #[error(
        "offset {offset} was committed already (the group's committed offset is {committed}): \
         it cannot be nacked or dead-lettered"
    )]
    AlreadyCommitted {
        /// The offset asked for.
        offset: u64,
        /// The group's committed offset (of the message's partition).
        committed: u64,
    },

    /// A message was handed back (nacked, dead-lettered) to a consumer of another stream than
    /// the one it came from.
    #[error("the message is from stream {message_stream:?}, and this consumer reads {stream:?}")]
    WrongStream {
        /// The consumer's stream.
        stream: String,
        /// The message's stream.
        message_stream: String,
    },

    /// A message was handed to a consumer that did not deliver it (a consumer of another
    /// group, or another consumer of the same group) to be committed inside a transaction,
    /// which is fenced by the claim that delivered it.
    #[error("the message was delivered by another consumer than {consumer:?} (group {group:?})")]
    NotDeliveredHere {
        /// This consumer's id.
        consumer: String,
        /// This consumer's group.
        group: String,
    },

    /// A nack asked for a delay longer than
    /// [`MAX_RETRY_DELAY`](crate::MAX_RETRY_DELAY). Nothing was written.
    #[error("a nack delay of {delay:?} is over the limit of {max:?}")]
    DelayTooLong {
        /// The delay asked for.
        delay: std::time::Duration,
        /// The limit.
        max: std::time::Duration,
    },

    /// A message was sent to a partition its stream does not have. Nothing of the send was
    /// stored.
    #[error(
        "stream {stream:?} has {partitions} partition(s), numbered from 0: there is no \
         partition {partition}"
    )]
    NoSuchPartition {
        /// The stream.
        stream: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the stream has (1 for an unpartitioned stream).
        partitions: u32,
    },

    /// A commit on a partitioned stream named no partition (commit the message, or a
    /// [`Position`](crate::Position) with its partition).
    #[error(
        "stream {stream:?} is partitioned: say which partition to commit (commit the message \
         itself, or Position::new(partition, offset))"
    )]
    PartitionRequired {
        /// The stream.
        stream: String,
    },

    /// A stream could not be created as asked because it exists already: with another
    /// partition count, or unpartitioned with messages in it. A stream's partition count is
    /// fixed when it is created (a new count would move keys to other partitions).
    #[error(
        "stream {stream:?} exists already with {partitions} partition(s); a stream's \
         partition count is fixed when it is created"
    )]
    StreamExists {
        /// The stream.
        stream: String,
        /// How many partitions it has (1 for an unpartitioned stream).
        partitions: u32,
    },

    /// A reset named an offset past the head of a partition (by more than one: the head + 1
    /// is the next message appended). Nothing was written.
    #[error(
        "offset {offset} is past the head of stream {stream:?} (partition {partition}), which \
         is {head}: reset to at most {}",
        head.saturating_add(1)
    )]
    OffsetOutOfRange {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The partition's head.
        head: u64,
    },

    /// Messages after the group's position were trimmed before it read them, and the
    /// consumer was built with [`fail_if_trimmed`](crate::ConsumerBuilder::fail_if_trimmed).
    /// Nothing past the gap is delivered until the group is moved
    /// ([`Admin::reset_group`](crate::Admin::reset_group)).
    #[error(
        "messages after offset {position} of stream {stream:?} (partition {partition}) were \
         trimmed before this group read them; {}; reset the group to go on",
        match resumes_at {
            Some(first) => format!("the first one still stored is {first}"),
            None => "none is left up to the head".to_owned(),
        }
    )]
    Trimmed {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The consumer's position: the last offset it read.
        position: u64,
        /// The first offset still stored after it, if any.
        resumes_at: Option<u64>,
    },

    /// The stream does not exist: no message was ever appended to it (or all were deleted
    /// with it), and it was not created partitioned.
    #[error("stream {stream:?} does not exist")]
    NoSuchStream {
        /// The stream.
        stream: String,
    },

    /// The group was deleted while this consumer ran: its stream was deleted
    /// ([`Admin::delete_stream`](crate::Admin::delete_stream)). Nothing more is delivered or
    /// committed; to read a stream created again under the name, build a new consumer (it
    /// joins a new group, which starts where [`StartFrom`](crate::StartFrom) says).
    #[error(
        "group {group:?} of stream {stream:?} was deleted while this consumer ran; build a new \
         consumer to read the stream again"
    )]
    GroupDeleted {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },

    /// A value could not be written as JSON ([`NewMessage::json`](crate::NewMessage::json)).
    /// Nothing was sent.
    #[error("cannot encode a message for stream {stream} as JSON")]
    Encode {
        /// The target stream, escaped and shortened for display.
        stream: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },

    /// A message's body is not valid JSON for the type asked for
    /// ([`Message::json`](crate::Message::json)).
    #[error(
        "message {offset} of stream {stream:?} (partition {partition}{}) is not valid JSON \
         for the type asked for",
        content_type.as_deref().map(|t| format!(", content-type {t:?}")).unwrap_or_default()
    )]
    Decode {
        /// The stream.
        stream: String,
        /// Its partition (0 on an unpartitioned stream).
        partition: u32,
        /// Its offset.
        offset: u64,
        /// Its `content-type` header, if it has one.
        content_type: Option<String>,
        /// What serde_json said (line, column, what was expected).
        #[source]
        source: serde_json::Error,
    },

    /// The call needs a tokio runtime and was made outside one.
    #[error(
        "flowstream needs a tokio runtime: call it from async code running on one \
         (#[tokio::main], or Runtime::block_on)"
    )]
    NoRuntime,

    /// The storage refused a message it cannot store faithfully (each driver says what it
    /// cannot store). Nothing of the call was stored.
    #[error("the storage refused the input, nothing was stored: {reason}")]
    Refused {
        /// The driver's explanation.
        reason: String,
    },

    /// The storage failed: could not connect, is locked by another process, is damaged, or
    /// failed a call. [`Error::storage_kind`] tells which; the message is the driver's.
    #[error(transparent)]
    Storage(DriverError),
}

impl Error {
    /// Whether the same call may succeed if retried later (a lost connection, a timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_retryable())
    }

    /// For a storage failure, what kind it is: cannot connect, locked by another process,
    /// damaged, unavailable for now, or another failure. `None` for every other error.
    ///
    /// ```
    /// use flowstream_core::{Error, StorageErrorKind};
    /// fn advice(error: &Error) -> &'static str {
    ///     match error.storage_kind() {
    ///         Some(StorageErrorKind::Locked) => "another process has the store open",
    ///         Some(StorageErrorKind::Connect) => "check the database address and credentials",
    ///         Some(StorageErrorKind::Unavailable) => "retry later",
    ///         _ => "see the message",
    ///     }
    /// }
    /// # let _ = advice;
    /// ```
    pub fn storage_kind(&self) -> Option<StorageErrorKind> {
        match self {
            Error::Storage(e) => e.storage_kind(),
            _ => None,
        }
    }
}

impl From<DriverError> for Error {
    fn from(error: DriverError) -> Self {
        match error {
            // A refusal is about the caller's input, not a storage failure.
            DriverError::InvalidInput(reason) => Error::Refused { reason },
            other => Error::Storage(other),
        }
    }
}

/// Displays an error with its chain of causes on one line (`a: b: c`), for log lines: an
/// error's own message never repeats its cause.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Shortens and escapes user input for error messages, so a 10 KB name or control characters
/// never end up raw in a log line.
pub(crate) fn printable(input: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out: String = input
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    let total = input.chars().count();
    if total > MAX_CHARS {
        out.push_str(&format!("… ({total} chars)"));
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_shortens() {
        assert_eq!(printable("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(10_000);
        let shown = printable(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.contains("10000 chars"));
    }

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(Error::from(DriverError::unavailable("down")).is_retryable());
        assert!(!Error::from(DriverError::failed("broken")).is_retryable());
        assert!(!Error::EmptyBatch.is_retryable());
    }

    #[test]
    fn a_refusal_is_the_callers_error_and_kinds_reach_the_user() {
        let refused = Error::from(DriverError::InvalidInput("NUL in a header".into()));
        assert!(matches!(refused, Error::Refused { .. }), "{refused:?}");
        let locked = Error::from(DriverError::storage(StorageErrorKind::Locked, "file x"));
        assert_eq!(locked.storage_kind(), Some(StorageErrorKind::Locked));
        assert_eq!(Error::EmptyBatch.storage_kind(), None);
    }

    #[test]
    fn chain_prints_each_cause_once() {
        let error = Error::from(
            DriverError::unavailable("reading stream s")
                .caused_by(std::io::Error::other("connection reset")),
        );
        assert_eq!(
            Chain(&error).to_string(),
            "storage unavailable: reading stream s: connection reset"
        );
    }
}
