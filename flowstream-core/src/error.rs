//! Errors: [`Error`] is what the public API returns, [`DriverError`] what a storage driver returns.

use std::error::Error as StdError;

/// A boxed error from a storage backend, kept as the `source` of our own errors.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Which kind of name failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameKind {
    /// A stream name.
    Stream,
    /// A consumer-group name.
    Group,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Stream => "stream",
            NameKind::Group => "group",
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

    /// A message body is over the producer's size limit.
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

    /// The storage (for example a redb file) is held by another process.
    #[error("{resource} is locked by another process: close the other process or use another path")]
    Locked {
        /// What is locked, e.g. a file path.
        resource: String,
    },

    /// The storage is damaged or not a flowstream store at all.
    #[error("{resource} is corrupt or not a flowstream store: {source}")]
    Corrupt {
        /// What is corrupt, e.g. a file path.
        resource: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The storage server could not be reached, or refused the connection (wrong password,
    /// missing database). The message names the server, never the password.
    #[error("could not connect to {target}: {source}")]
    Connect {
        /// What was being connected to, e.g. `PostgreSQL at db.example:5432, database app`.
        target: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The storage driver failed.
    #[error(transparent)]
    Storage(#[from] DriverError),
}

impl Error {
    /// Whether the same call may succeed if retried later (a lost connection, a timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_retryable())
    }
}

/// Errors a [`Driver`](crate::Driver) returns.
///
/// `Conflict` is expected and drives the group protocol; the others are failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A conditional record write found another revision than the one it named.
    #[error("revision conflict on record {key:?}")]
    Conflict {
        /// The record key.
        key: String,
    },

    /// Something the call needs does not exist (e.g. tables that were never created).
    #[error("not found: {0}")]
    NotFound(String),

    /// The driver refused the input (it would not be stored faithfully).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The storage is unreachable for now (connection lost, timeout). Retrying may succeed.
    /// A write that failed this way may or may not have been applied.
    #[error("storage unavailable: {source}")]
    Unavailable {
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The storage failed in a way retrying will not fix.
    #[error("storage failure: {source}")]
    Failed {
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl DriverError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DriverError::Unavailable { .. })
    }

    /// A non-retryable failure with the given source.
    pub fn failed(source: impl Into<BoxError>) -> Self {
        DriverError::Failed {
            source: source.into(),
        }
    }

    /// A retryable failure with the given source.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        DriverError::Unavailable {
            source: source.into(),
        }
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
}
