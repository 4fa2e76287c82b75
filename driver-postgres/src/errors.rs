//! How sqlx errors become driver errors: what a retry can fix is `Unavailable`.

use flowstream_core::DriverError;

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

pub(crate) fn driver_error(error: sqlx::Error) -> DriverError {
    let retryable = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| retryable_sqlstate(&code)),
        _ => false,
    };
    if retryable {
        DriverError::unavailable(error)
    } else {
        DriverError::failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_losses_are_retryable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(driver_error(io).is_retryable());
        assert!(driver_error(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!driver_error(sqlx::Error::RowNotFound).is_retryable());
        assert!(retryable_sqlstate("08006") && retryable_sqlstate("57P01"));
        assert!(!retryable_sqlstate("23505"));
    }
}
