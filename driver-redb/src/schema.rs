//! The tables of a flowstream redb file and its format version.
//!
//! Format 2 keys messages by a per-stream integer id rather than by the stream's name: shorter
//! keys, cheaper comparisons, fewer bytes per commit. Format 3 adds messages with a key (a
//! second layout of the stored value, see the `codec` module); a format 2 file is a valid
//! format 3 file, so opening one only raises its number, after which versions that know
//! format 2 only refuse it rather than misread a keyed message as damaged. A file of any other
//! format is refused with [`StorageErrorKind::Incompatible`] before any of its tables is
//! opened or changed.

use flowstream_core::driver::{DriverError, StorageErrorKind};
use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::errors::storage;

/// The layout this version reads and writes.
pub(crate) const FORMAT: u64 = 3;
/// The format this one extends without changing what was stored.
const UPGRADABLE: u64 = 2;

/// `setting -> value`: [`FORMAT_KEY`] and [`NEXT_STREAM_ID_KEY`].
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("flowstream");
const FORMAT_KEY: &str = "format";
const NEXT_STREAM_ID_KEY: &str = "next stream id";

/// `stream name -> (stream id, head offset)`.
pub(crate) const STREAMS: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("streams");
/// `(stream id, offset) -> encoded message` (see the `codec` module).
pub(crate) const MESSAGES: TableDefinition<'_, (u64, u64), &[u8]> =
    TableDefinition::new("messages");
/// `key -> (revision, JSON text)`.
pub(crate) const RECORDS: TableDefinition<'_, &str, (u64, &str)> = TableDefinition::new("records");

/// Creates the tables of a new file, or checks that an existing one has this format. `location`
/// names the file in errors.
pub(crate) fn prepare(db: &Database, location: &str) -> Result<(), DriverError> {
    let txn = db.begin_write().map_err(storage)?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(storage)?
        .map(|table| table.name().to_owned())
        .collect();
    let found = if tables.iter().any(|name| name == META.name()) {
        txn.open_table(META)
            .map_err(storage)?
            .get(FORMAT_KEY)
            .map_err(storage)?
            .map(|v| v.value())
    } else if tables.iter().any(|name| name == "heads") {
        // The first layout had no version; its `heads` table tells it apart.
        Some(1)
    } else {
        // A new file, or one holding only the application's own tables.
        None
    };
    // Nothing is committed on the refusing paths: dropping the transaction aborts it.
    match found {
        None => {
            txn.open_table(META)
                .map_err(storage)?
                .insert(FORMAT_KEY, FORMAT)
                .map_err(storage)?;
            txn.open_table(STREAMS).map_err(storage)?;
            txn.open_table(MESSAGES).map_err(storage)?;
            txn.open_table(RECORDS).map_err(storage)?;
            txn.commit().map_err(storage)
        }
        Some(FORMAT) => Ok(()),
        Some(UPGRADABLE) => {
            txn.open_table(META)
                .map_err(storage)?
                .insert(FORMAT_KEY, FORMAT)
                .map_err(storage)?;
            txn.commit().map_err(storage)
        }
        Some(older) if older < FORMAT => Err(DriverError::storage(
            StorageErrorKind::Incompatible,
            format!(
                "{location} is a flowstream file of format {older}, written by an earlier \
                 version; this version reads format {FORMAT} only. Read its streams with the \
                 version that wrote it, or start a new file"
            ),
        )),
        Some(newer) => Err(DriverError::storage(
            StorageErrorKind::Incompatible,
            format!(
                "{location} is a flowstream file of format {newer}, written by a newer \
                 version; this version reads format {FORMAT} only"
            ),
        )),
    }
}

/// A new stream's id, taken from the file's counter in `txn`.
pub(crate) fn next_stream_id(txn: &WriteTransaction) -> Result<u64, DriverError> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    let id = meta
        .get(NEXT_STREAM_ID_KEY)
        .map_err(storage)?
        .map_or(1, |v| v.value());
    meta.insert(NEXT_STREAM_ID_KEY, id + 1).map_err(storage)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use redb::ReadableDatabase;

    use super::*;
    use crate::RedbDriver;

    const OLD_MESSAGES: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("messages");
    const OLD_HEADS: TableDefinition<'_, &str, u64> = TableDefinition::new("heads");

    fn kind(result: Result<RedbDriver, flowstream_core::Error>) -> (StorageErrorKind, String) {
        match result {
            Err(error) => (
                error.storage_kind().expect("a storage error"),
                error.to_string(),
            ),
            Ok(driver) => panic!("opened: {driver:?}"),
        }
    }

    #[tokio::test]
    async fn a_file_of_the_first_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            txn.open_table(OLD_MESSAGES)
                .expect("messages")
                .insert(("orders", 1), b"x".as_slice())
                .expect("insert");
            txn.open_table(OLD_HEADS)
                .expect("heads")
                .insert("orders", 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let (kind, shown) = kind(RedbDriver::open(&path).await);
        assert_eq!(kind, StorageErrorKind::Incompatible);
        assert!(
            shown.contains("format 1") && shown.contains("old.redb"),
            "{shown}"
        );

        let db = Database::create(&path).expect("reopen with redb");
        let txn = db.begin_read().expect("read");
        let kept = txn.open_table(OLD_MESSAGES).expect("messages");
        assert_eq!(
            kept.get(("orders", 1))
                .expect("get")
                .map(|v| v.value().to_vec()),
            Some(b"x".to_vec())
        );
        assert!(txn.open_table(META).is_err(), "nothing was added");
    }

    #[tokio::test]
    async fn a_file_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            txn.open_table(META)
                .expect("meta")
                .insert(FORMAT_KEY, FORMAT + 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let (kind, shown) = kind(RedbDriver::open(&path).await);
        assert_eq!(kind, StorageErrorKind::Incompatible);
        assert!(shown.contains("newer"), "{shown}");
    }

    #[tokio::test]
    async fn a_file_of_format_2_is_raised_to_format_3_and_keeps_its_messages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("two.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(FORMAT_KEY, UPGRADABLE).expect("format");
            meta.insert(NEXT_STREAM_ID_KEY, 2).expect("next id");
            drop(meta);
            txn.open_table(STREAMS)
                .expect("streams")
                .insert("orders", (1, 1))
                .expect("stream");
            let stored = crate::codec::encode(b"kept", &Default::default(), None, UNIX_EPOCH);
            txn.open_table(MESSAGES)
                .expect("messages")
                .insert((1, 1), stored.as_slice())
                .expect("message");
            txn.open_table(RECORDS).expect("records");
            txn.commit().expect("commit");
        }
        let driver = RedbDriver::open(&path).await.expect("opens");
        let read = flowstream_core::Driver::read(&driver, "orders", 0, 10)
            .await
            .expect("reads");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].body(), b"kept");
        let txn = driver.db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        assert_eq!(
            meta.get(FORMAT_KEY).expect("get").map(|v| v.value()),
            Some(FORMAT)
        );
    }

    /// An application's redb file gains flowstream's tables next to its own.
    #[tokio::test]
    async fn a_file_with_only_the_applications_tables_is_shared() {
        const MINE: TableDefinition<'_, u64, u64> = TableDefinition::new("app");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            txn.open_table(MINE)
                .expect("app")
                .insert(1, 2)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let driver = RedbDriver::open(&path).await.expect("opens");
        drop(driver);
        let driver = RedbDriver::open(&path).await.expect("reopens");
        let txn = driver.db.begin_read().expect("read");
        let mine = txn.open_table(MINE).expect("app");
        assert_eq!(mine.get(1).expect("get").map(|v| v.value()), Some(2));
    }
}
