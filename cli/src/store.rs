//! Opening the store `--store` names, and turning what goes wrong into a message that says
//! what to fix, with an exit code a script can test.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::driver::DriverError;
use flowstream_core::{Driver, Error, StorageErrorKind};
use flowstream_postgres::PgDriver;
use flowstream_redb::RedbDriver;

/// Why the command failed, and the exit code that says so.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    code: u8,
}

/// Exit code: the store failed.
const STORE: u8 = 1;
/// Exit code: bad usage or input.
const INPUT: u8 = 2;
/// Exit code: something named does not exist (or stopped existing while the command ran).
const NOT_FOUND: u8 = 3;
/// Exit code: another consumer took the group over (`tail --group`).
const TAKEN_OVER: u8 = 4;

impl Failure {
    pub(crate) fn input(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: INPUT,
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: NOT_FOUND,
        }
    }

    pub(crate) fn store(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: STORE,
        }
    }

    /// The same failure, with more said after its message.
    pub(crate) fn adding(self, more: &str) -> Self {
        Failure {
            message: format!("{}; {more}", self.message),
            code: self.code,
        }
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let message = chain(&error);
        match &error {
            Error::NoSuchStream { .. } => Failure::not_found(message),
            Error::GroupDeleted { .. } => Failure::not_found(message),
            Error::Fenced { .. } => Failure {
                message: format!(
                    "{message}\n(another consumer of the group took it over: this one's \
                     commits would no longer count)"
                ),
                code: TAKEN_OVER,
            },
            Error::Storage(DriverError::NotFound(_)) => Failure::not_found(message),
            Error::Storage(_) => match error.storage_kind() {
                Some(StorageErrorKind::Locked) => Failure::store(format!(
                    "{message}\n(the file is open in a running process: stop it, or run this \
                     against a copy)"
                )),
                Some(StorageErrorKind::Connect) => Failure::store(format!(
                    "{message}\n(check the URL's host, port, user and database, and that the \
                     server is running)"
                )),
                _ => Failure::store(message),
            },
            _ => Failure::input(message),
        }
    }
}

impl From<DriverError> for Failure {
    fn from(error: DriverError) -> Self {
        Failure::from(Error::from(error))
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::store(format!("reading standard input: {error}"))
    }
}

/// An error with its causes on one line.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = next.source();
    }
    out
}

/// What the command will do to the store: writers apply PostgreSQL migrations and may create a
/// redb file; readers change nothing, and say so when there is nothing to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Opens the store: a PostgreSQL URL, or a redb file.
pub(crate) async fn open(
    store: Option<&str>,
    schema: &str,
    access: Access,
) -> Result<Arc<dyn Driver>, Failure> {
    let Some(store) = store else {
        return Err(Failure::input(
            "no store given: pass --store postgres://user@host/db or --store path/to/file.redb \
             (or set FLOWSTREAM_STORE)",
        ));
    };
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        return open_postgres(store, schema, access).await;
    }
    if store.contains("://") {
        return Err(Failure::input(format!(
            "{}: not a store flowstream knows; use a postgres:// URL or a redb file path",
            redact(store)
        )));
    }
    open_redb(Path::new(store), access).await
}

async fn open_postgres(
    url: &str,
    schema: &str,
    access: Access,
) -> Result<Arc<dyn Driver>, Failure> {
    let driver = PgDriver::builder(url)
        .schema(schema)
        .max_connections(4)
        .connect_timeout(Duration::from_secs(10))
        .application_name("flowstream-cli")
        .run_migrations(access == Access::Write)
        .connect()
        .await
        .map_err(|error| match error {
            Error::Storage(DriverError::NotFound(_)) => Failure::not_found(format!(
                "schema {schema:?} at {} holds no flowstream tables: name the right one with \
                 --schema, or produce to it first",
                redact(url)
            )),
            other => {
                let failure = Failure::from(other);
                Failure {
                    message: format!("{}: {failure}", redact(url)),
                    code: failure.code,
                }
            }
        })?;
    Ok(Arc::new(driver))
}

async fn open_redb(path: &Path, access: Access) -> Result<Arc<dyn Driver>, Failure> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Failure::input(format!(
                "{shown} is a directory: name the redb file (for example {}/streams.redb)",
                shown
            )));
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if access == Access::Read {
                return Err(Failure::not_found(format!(
                    "{shown}: no such file (a store is created by the first produce to it)"
                )));
            }
        }
        Err(error) => {
            return Err(Failure::store(format!("{shown}: {error}")));
        }
    }
    let driver = RedbDriver::open(path).await.map_err(|error| {
        let corrupt = matches!(
            error.storage_kind(),
            Some(StorageErrorKind::Corrupt | StorageErrorKind::Incompatible)
        );
        let failure = Failure::from(error);
        if corrupt {
            Failure::store(format!(
                "{shown} is not a flowstream redb file this version can read: {failure}"
            ))
        } else {
            failure
        }
    })?;
    Ok(Arc::new(driver))
}

/// A URL with its password replaced, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }
}
