//! What a [`Driver`](super::Driver) returns when a call fails.

use std::error::Error as StdError;
use std::sync::Arc;

use super::Record;

/// The cause of a [`DriverError`], shared so that the error can be cloned (group commit hands
/// one failure to every send of a shared append).
pub type Source = Arc<dyn StdError + Send + Sync + 'static>;

/// What kind of storage failure a [`DriverError::Storage`] is, for callers that branch on it.
/// The words for people are the driver's own, in the error's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The storage cannot be reached right now (connection lost, timeout). Retrying may
    /// succeed; a write that failed this way may or may not have been applied.
    Unavailable,
    /// The storage could not be connected to, or refused the connection (wrong address,
    /// password or database). Retrying the same settings will not help.
    Connect,
    /// The storage is held by another process (an embedded store opened twice).
    Locked,
    /// The storage is damaged or not a flowstream store at all.
    Corrupt,
    /// The storage was written in a layout this version of flowstream does not read (an older
    /// embedded file format, or a newer one). Nothing was changed; the message says which
    /// version wrote it and what to do.
    Incompatible,
    /// Any other failure that retrying will not fix.
    Failed,
}

impl std::fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageErrorKind::Unavailable => "storage unavailable",
            StorageErrorKind::Connect => "cannot connect",
            StorageErrorKind::Locked => "storage locked",
            StorageErrorKind::Corrupt => "storage damaged",
            StorageErrorKind::Incompatible => "storage format not supported",
            StorageErrorKind::Failed => "storage failure",
        })
    }
}

/// Errors a [`Driver`](super::Driver) returns.
///
/// `Conflict` is expected and drives the group protocol; the others are failures. Cloning is
/// cheap: the cause is shared.
///
/// The message of a [`Storage`](DriverError::Storage) error is the driver's own context
/// ("reading stream orders"); its cause, when there is one, is returned by
/// [`source`](std::error::Error::source) and not repeated in the message, so that error
/// reporters that print the chain show each part once.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A conditional record write found another revision than the one it named. Nothing was
    /// written.
    #[error("revision conflict on record {key:?}")]
    Conflict {
        /// The record key.
        key: String,
        /// The record as it is now (`None`: it does not exist), so the caller need not read
        /// it again to find out who won.
        current: Option<Record>,
    },

    /// Something the call needs does not exist (for example tables that were never created).
    #[error("not found: {0}")]
    NotFound(String),

    /// The driver refused the input because it could not store it faithfully. Nothing was
    /// stored.
    #[error("{0}")]
    InvalidInput(String),

    /// The storage failed; `kind` says how.
    #[error("{kind}: {message}")]
    Storage {
        /// What kind of failure.
        kind: StorageErrorKind,
        /// What the driver was doing, in its own words.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
}

impl DriverError {
    /// A storage failure of `kind` with the driver's message and no further cause.
    pub fn storage(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        DriverError::Storage {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A non-retryable failure ([`StorageErrorKind::Failed`]).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::storage(StorageErrorKind::Failed, message)
    }

    /// A retryable failure ([`StorageErrorKind::Unavailable`]).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::storage(StorageErrorKind::Unavailable, message)
    }

    /// Attaches the underlying error to a storage failure (other variants are returned
    /// unchanged: they carry no cause).
    #[must_use]
    pub fn caused_by(self, cause: impl StdError + Send + Sync + 'static) -> Self {
        self.with_cause(Arc::new(cause))
    }

    /// Like [`caused_by`](DriverError::caused_by), for a cause already shared (or boxed and
    /// converted with `Arc::from`).
    #[must_use]
    pub fn with_cause(mut self, cause: Source) -> Self {
        if let DriverError::Storage { source, .. } = &mut self {
            *source = Some(cause);
        }
        self
    }

    /// The kind of a storage failure; `None` for the other variants.
    pub fn storage_kind(&self) -> Option<StorageErrorKind> {
        match self {
            DriverError::Storage { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.storage_kind() == Some(StorageErrorKind::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_returned_once_not_printed_twice() {
        let cause = std::io::Error::other("connection refused");
        let error = DriverError::unavailable("reading stream s").caused_by(cause);
        let shown = error.to_string();
        assert!(!shown.contains("connection refused"), "{shown}");
        let source = StdError::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("connection refused"));
        assert!(error.clone().is_retryable());
    }
}
