//! How sqlx errors become driver errors: what a retry can fix is `Unavailable`; the driver's
//! message says what it was doing, and the sqlx error is the cause (never repeated in the
//! message).

use std::sync::Arc;

use flowstream_core::driver::{DriverError, Source, StorageErrorKind};

/// SQLSTATEs after which the same call may succeed later: connection exceptions (class 08),
/// server shutdown or startup (57P01–57P03), serialization failure and deadlock (40001,
/// 40P01), too many connections (53300).
fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300"
        )
}

/// SQLSTATEs meaning a relation or schema is missing: the tables were never created (or were
/// dropped) under this schema.
fn missing_object_sqlstate(code: &str) -> bool {
    matches!(code, "42P01" | "3F000")
}

/// A failed storage call while `doing` something ("reading stream orders").
pub(crate) fn storage_error(doing: &str, error: sqlx::Error) -> DriverError {
    let kind = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StorageErrorKind::Unavailable,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if retryable_sqlstate(&code) => StorageErrorKind::Unavailable,
            Some(code) if missing_object_sqlstate(&code) => {
                return DriverError::NotFound(format!(
                    "{doing}: flowstream's tables are missing ({}); connect with \
                     run_migrations(true) or apply the migrations",
                    db.message()
                ));
            }
            _ => StorageErrorKind::Failed,
        },
        _ => StorageErrorKind::Failed,
    };
    DriverError::storage(kind, doing).with_cause(cause(error))
}

/// The innermost cause of a sqlx error. sqlx's own wrappers ("error returned from database:
/// …") repeat their cause in their message and return it from `source()` as well, so a chain
/// printed by an error reporter would show it twice; the innermost error shows it once.
pub(crate) fn cause(error: sqlx::Error) -> Source {
    match error {
        sqlx::Error::Database(db) => Arc::new(ServerError(db)),
        sqlx::Error::Io(io) => Arc::new(io),
        sqlx::Error::Tls(tls) | sqlx::Error::Configuration(tls) => Arc::from(tls),
        other => Arc::new(other),
    }
}

/// An error PostgreSQL reported, shown as its message and SQLSTATE. sqlx's own display adds
/// the line of the server's C source that raised it, which tells a user nothing.
#[derive(Debug)]
struct ServerError(Box<dyn sqlx::error::DatabaseError>);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())?;
        if let Some(code) = self.0.code() {
            write!(f, " (SQLSTATE {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_losses_are_retryable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(storage_error("x", io).is_retryable());
        assert!(storage_error("x", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!storage_error("x", sqlx::Error::RowNotFound).is_retryable());
        assert!(retryable_sqlstate("08006") && retryable_sqlstate("57P01"));
        assert!(!retryable_sqlstate("23505"));
    }
}
