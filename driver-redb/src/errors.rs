//! redb's errors as flowstream's [`DriverError`] kinds.

use flowstream_core::Error;
use flowstream_core::driver::{DriverError, StorageErrorKind};
use redb::DatabaseError;

pub(crate) fn open_error(location: &str, error: DatabaseError) -> Error {
    let (kind, message) = match &error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => (
            StorageErrorKind::Locked,
            format!(
                "{location} is open in another process: a redb file has one process at a \
                 time; close the other one or use another path"
            ),
        ),
        DatabaseError::Storage(redb::StorageError::Corrupted(_)) => {
            (StorageErrorKind::Corrupt, format!("{location} is damaged"))
        }
        // redb reports a file that is not a redb database (bad magic number) this way.
        DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            (
                StorageErrorKind::Corrupt,
                format!("{location} is not a redb file"),
            )
        }
        DatabaseError::UpgradeRequired(_) => (
            StorageErrorKind::Incompatible,
            format!("{location} was written by another redb file format"),
        ),
        _ => (StorageErrorKind::Failed, format!("opening {location}")),
    };
    Error::Storage(DriverError::storage(kind, message).caused_by(error))
}

pub(crate) fn storage(error: impl Into<redb::Error>) -> DriverError {
    let error: redb::Error = error.into();
    let kind = match &error {
        redb::Error::Corrupted(_) => StorageErrorKind::Corrupt,
        _ => StorageErrorKind::Failed,
    };
    DriverError::storage(kind, "redb").caused_by(error)
}
