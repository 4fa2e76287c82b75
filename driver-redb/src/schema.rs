//! The tables of a flowstream redb file and its format version.
//!
//! Format 4 gives each stream's messages a table of their own, keyed by offset alone
//! ([`LogName`]). Format 3 kept every stream's messages in one table keyed by `(stream id,
//! offset)`: a file holding many messages made every append descend, and copy on write, a
//! tree that held every other stream too, and its keys were twice as long. A file of format 2
//! or 3 is moved to format 4 when it opens ([`migrate`]); the stored values are the same in
//! every format since 2. A file of any other format is refused with
//! [`StorageErrorKind::Incompatible`] before any of its tables is opened or changed.

use flowstream_core::driver::{DriverError, StorageErrorKind};
use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::errors::storage;

/// The layout this version reads and writes.
pub(crate) const FORMAT: u64 = 4;
/// The formats this one moves to its own when it opens them.
const MIGRATED: [u64; 2] = [2, 3];

/// `setting -> value`: [`FORMAT_KEY`], [`NEXT_STREAM_ID_KEY`] and, while a file is being moved
/// to this format, [`MIGRATING_KEY`].
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("flowstream");
const FORMAT_KEY: &str = "format";
const NEXT_STREAM_ID_KEY: &str = "next stream id";
/// Present while messages of an earlier format remain in [`OLD_MESSAGES`].
const MIGRATING_KEY: &str = "migrating";

/// `stream name -> (stream id, head offset)`.
pub(crate) const STREAMS: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("streams");
/// `key -> (revision, JSON text)`.
pub(crate) const RECORDS: TableDefinition<'_, &str, (u64, &str)> = TableDefinition::new("records");
/// Formats 2 and 3: `(stream id, offset) -> encoded message`, every stream in one table.
const OLD_MESSAGES: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("messages");

/// The names of flowstream's tables begin with this, besides [`META`], [`STREAMS`] and
/// [`RECORDS`].
pub(crate) const LOG_PREFIX: &str = "flowstream/log/";

/// The name of the table holding the messages of stream `id`: `offset -> encoded message`
/// (see the `codec` module).
pub(crate) struct LogName(String);

impl LogName {
    pub(crate) fn of(id: u64) -> Self {
        LogName(format!("{LOG_PREFIX}{id}"))
    }

    pub(crate) fn table(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.0)
    }
}

/// How much of an earlier format one migration transaction moves at most: this many
/// messages, and this many bytes of them (but always one message), so that moving a large
/// file never holds it all in one transaction.
const MIGRATION_CHUNK: Chunk = Chunk {
    messages: 50_000,
    bytes: 64 << 20,
};

/// The bounds of one migration transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

/// Creates the tables of a new file, or checks that an existing one has this format, moving
/// one of an earlier format to it. `location` names the file in errors.
pub(crate) fn prepare(db: &Database, location: &str) -> Result<(), DriverError> {
    prepare_with(db, location, MIGRATION_CHUNK, usize::MAX)
}

/// [`prepare`], moving an earlier format's messages in at most `steps` transactions of at
/// most `chunk` (tests stop a move part way with it).
pub(crate) fn prepare_with(
    db: &Database,
    location: &str,
    chunk: Chunk,
    steps: usize,
) -> Result<(), DriverError> {
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
            txn.open_table(RECORDS).map_err(storage)?;
            txn.commit().map_err(storage)
        }
        Some(FORMAT) => {
            let migrating = txn
                .open_table(META)
                .map_err(storage)?
                .get(MIGRATING_KEY)
                .map_err(storage)?
                .is_some();
            drop(txn);
            if migrating {
                migrate(db, chunk, steps)?;
            }
            Ok(())
        }
        Some(earlier) if MIGRATED.contains(&earlier) => {
            // The new number first, in a transaction of its own: from here on, a version that
            // knows only the earlier format refuses the file instead of reading the part of
            // it that has not moved yet as the whole.
            {
                let mut meta = txn.open_table(META).map_err(storage)?;
                meta.insert(FORMAT_KEY, FORMAT).map_err(storage)?;
                meta.insert(MIGRATING_KEY, earlier).map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            tracing::info!(path = %location, from = earlier, to = FORMAT, "moving a redb file to this version's format");
            migrate(db, chunk, steps)
        }
        Some(older) if older < FORMAT => Err(DriverError::storage(
            StorageErrorKind::Incompatible,
            format!(
                "{location} is a flowstream file of format {older}, written by an earlier \
                 version; this version reads formats {} to {FORMAT} only. Read its streams \
                 with the version that wrote it, or start a new file",
                MIGRATED[0]
            ),
        )),
        Some(newer) => Err(DriverError::storage(
            StorageErrorKind::Incompatible,
            format!(
                "{location} is a flowstream file of format {newer}, written by a newer \
                 version; this version reads formats {} to {FORMAT} only",
                MIGRATED[0]
            ),
        )),
    }
}

/// Moves the messages of an earlier format to their streams' tables, `chunk` per transaction.
///
/// Each transaction inserts a run of messages into the new tables and removes the same run
/// from the old one, so a message is in exactly one place whenever a transaction commits; a
/// crash between two leaves a file that the next open goes on moving (the format number is
/// already this one, so no earlier version reads it meanwhile). The stored values are copied
/// as they are: every layout they may have is one this version decodes.
fn migrate(db: &Database, chunk: Chunk, steps: usize) -> Result<(), DriverError> {
    for _ in 0..steps {
        if migrate_step(db, chunk)? {
            break;
        }
    }
    Ok(())
}

/// One transaction of [`migrate`]; true once nothing is left to move.
fn migrate_step(db: &Database, chunk: Chunk) -> Result<bool, DriverError> {
    let txn = db.begin_write().map_err(storage)?;
    let done = {
        let mut old = txn.open_table(OLD_MESSAGES).map_err(storage)?;
        let mut run: Vec<((u64, u64), Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        for entry in old.iter().map_err(storage)? {
            if !run.is_empty() && (run.len() >= chunk.messages || bytes >= chunk.bytes) {
                break;
            }
            let (key, value) = entry.map_err(storage)?;
            bytes += value.value().len();
            run.push((key.value(), value.value().to_vec()));
        }
        if let (Some(&(first, _)), Some(&(last, _))) = (run.first(), run.last()) {
            let mut current: Option<(u64, redb::Table<'_, u64, &[u8]>)> = None;
            for ((id, offset), value) in &run {
                if current.as_ref().map(|(open, _)| open) != Some(id) {
                    // redb opens a table once at a time: the previous stream's closes first.
                    drop(current.take());
                    let table = txn.open_table(LogName::of(*id).table()).map_err(storage)?;
                    current = Some((*id, table));
                }
                if let Some((_, table)) = &mut current {
                    table.insert(*offset, value.as_slice()).map_err(storage)?;
                }
            }
            drop(current);
            // The run is a prefix of the old table in key order: this removes it and nothing
            // else.
            old.retain_in(first..=last, |_, _| false).map_err(storage)?;
            false
        } else {
            true
        }
    };
    if done {
        txn.delete_table(OLD_MESSAGES).map_err(storage)?;
        txn.open_table(META)
            .map_err(storage)?
            .remove(MIGRATING_KEY)
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)?;
    Ok(done)
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

    const FIRST_MESSAGES: TableDefinition<'_, (&str, u64), &[u8]> =
        TableDefinition::new("messages");
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
            txn.open_table(FIRST_MESSAGES)
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
        let kept = txn.open_table(FIRST_MESSAGES).expect("messages");
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

    /// Writes a file of `format` (2 or 3, which differ only in that 3 may hold keyed
    /// messages) as those versions did: `orders` with three messages (one with headers, one
    /// keyed), `empty` whose only message was trimmed, `audit` with two messages; returns what
    /// each stream must read.
    fn write_earlier_format(path: &std::path::Path, format: u64) -> Vec<(&'static str, Vec<u64>)> {
        let db = Database::create(path).expect("create");
        let txn = db.begin_write().expect("write");
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert(FORMAT_KEY, format).expect("format");
        meta.insert(NEXT_STREAM_ID_KEY, 4).expect("next id");
        drop(meta);
        let mut streams = txn.open_table(STREAMS).expect("streams");
        streams.insert("orders", (1, 3)).expect("stream");
        streams.insert("empty", (2, 1)).expect("stream");
        streams.insert("audit", (3, 2)).expect("stream");
        drop(streams);
        let mut headers = flowstream_core::driver::Headers::new();
        headers.insert("trace".into(), "t-1".into());
        let mut old = txn.open_table(OLD_MESSAGES).expect("messages");
        for (id, offset, key) in [
            (1, 1, None),
            (1, 2, Some(&b"k"[..])),
            (1, 3, None),
            (3, 1, None),
            (3, 2, None),
        ] {
            let key = if format == 3 { key } else { None };
            let body = format!("{id}/{offset}");
            let stored = crate::codec::encode(body.as_bytes(), &headers, key, UNIX_EPOCH);
            old.insert((id, offset), stored.as_slice())
                .expect("message");
        }
        drop(old);
        txn.open_table(RECORDS).expect("records");
        txn.commit().expect("commit");
        vec![
            ("orders", vec![1, 2, 3]),
            ("empty", vec![]),
            ("audit", vec![1, 2]),
        ]
    }

    async fn assert_moved(driver: &RedbDriver, expected: &[(&str, Vec<u64>)]) {
        use flowstream_core::Driver;
        let ids = [("orders", 1), ("empty", 2), ("audit", 3)];
        for (stream, offsets) in expected {
            let read = driver.read(stream, 0, 10).await.expect("reads");
            let id = ids.iter().find(|(name, _)| name == stream).expect("id").1;
            let bodies: Vec<String> = read
                .iter()
                .map(|m| m.body_str().expect("text").to_owned())
                .collect();
            let wanted: Vec<String> = offsets.iter().map(|o| format!("{id}/{o}")).collect();
            assert_eq!(bodies, wanted, "{stream}");
            assert!(
                read.iter()
                    .all(|m| m.headers().get("trace").map(String::as_str) == Some("t-1"))
            );
        }
        let txn = driver.db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        assert_eq!(
            meta.get(FORMAT_KEY).expect("get").map(|v| v.value()),
            Some(FORMAT)
        );
        assert!(
            meta.get(MIGRATING_KEY).expect("get").is_none(),
            "the move is finished"
        );
        drop(meta);
        assert!(
            txn.open_table(OLD_MESSAGES).is_err(),
            "the old table is gone"
        );
        drop(txn);
        // Appends go on from each stream's head, in its own table.
        let next = driver
            .append(vec![
                flowstream_core::NewMessage::new("orders", "4"),
                flowstream_core::NewMessage::new("empty", "2"),
            ])
            .await
            .expect("appends");
        assert_eq!(next, [4, 2]);
    }

    #[tokio::test]
    async fn files_of_formats_2_and_3_are_moved_to_format_4_and_keep_their_messages() {
        for format in MIGRATED {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("earlier.redb");
            let expected = write_earlier_format(&path, format);
            let driver = RedbDriver::open(&path).await.expect("opens");
            assert_moved(&driver, &expected).await;
            if format == 3 {
                let read = flowstream_core::Driver::read(&driver, "orders", 1, 1)
                    .await
                    .expect("reads");
                assert_eq!(read[0].key(), Some(&b"k"[..]), "the key was kept");
            }
        }
    }

    /// Runs `steps` transactions of the move of the earlier-format file at `path`, as an open
    /// cut short would; returns its format number, its migration marker and how many messages
    /// are left in the old table.
    fn move_part(path: &std::path::Path, chunk: Chunk, steps: usize) -> (u64, Option<u64>, u64) {
        let db = Database::create(path).expect("open");
        prepare_with(&db, "part.redb", chunk, steps).expect("part of the move");
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        let format = meta.get(FORMAT_KEY).expect("get").map(|v| v.value());
        let marker = meta.get(MIGRATING_KEY).expect("get").map(|v| v.value());
        let old = txn.open_table(OLD_MESSAGES).expect("old");
        let left = redb::ReadableTableMetadata::len(&old).expect("len");
        (format.expect("a format"), marker, left)
    }

    /// A move stopped between two of its transactions (a crash) is finished by the next open;
    /// meanwhile the file says format 4, so that a version reading only format 3 refuses it
    /// rather than reading the part not yet moved as the whole.
    #[tokio::test]
    async fn an_interrupted_move_is_finished_by_the_next_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("interrupted.redb");
        let expected = write_earlier_format(&path, 3);
        let two = Chunk {
            messages: 2,
            bytes: usize::MAX,
        };
        let (format, marker, left) = move_part(&path, two, 1);
        assert_eq!(
            format, FORMAT,
            "format 4 while part is still in the old table"
        );
        assert_eq!(marker, Some(3));
        assert_eq!(left, 3, "two of five moved");
        let driver = RedbDriver::open(&path).await.expect("opens");
        assert_moved(&driver, &expected).await;
    }

    /// A step moves at most its bytes' worth, and always at least one message, however large.
    #[tokio::test]
    async fn a_step_of_the_move_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bytes.redb");
        let expected = write_earlier_format(&path, 2);
        let one_byte = Chunk {
            messages: usize::MAX,
            bytes: 1,
        };
        let (_, _, left) = move_part(&path, one_byte, 2);
        assert_eq!(left, 3, "one message per step");
        let driver = RedbDriver::open(&path).await.expect("opens");
        assert_moved(&driver, &expected).await;
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
