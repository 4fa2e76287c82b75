//! Embedded storage for flowstream: streams and consumer groups in one [redb] file.
//!
//! For a single process that wants a durable event log without a server: every append is a
//! durable redb commit, notifications are in-process, and every transaction runs on a blocking
//! thread, never on the async executor.
//!
//! ```
//! use std::sync::Arc;
//! use flowstream_core::{Consumer, Driver, NewMessage, Producer};
//! use flowstream_redb::RedbDriver;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flowstream_core::Error> {
//! # let dir = tempfile::tempdir().map_err(|e| flowstream_core::driver::DriverError::failed(e.to_string()))?;
//! # let path = dir.path().join("streams.redb");
//! let driver: Arc<dyn Driver> = Arc::new(RedbDriver::open(&path).await?);
//! Producer::new(driver.clone()).send(NewMessage::new("orders", "order 1")).await?;
//!
//! let mut consumer = Consumer::builder(driver, "orders", "billing").build().await?;
//! let msg = consumer.next().await?.expect("one message");
//! assert_eq!(msg.body_str(), Some("order 1"));
//! consumer.commit(msg.offset()).await?;
//! consumer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! What it refuses: a header name or value containing a NUL character, as every flowstream
//! driver does (PostgreSQL cannot store one), so that a stream's messages can move between
//! drivers. Bodies hold any bytes.
//!
//! Offsets: each stream's head lives in its own row of the `heads` table and is advanced in the
//! appending write transaction. redb runs one write transaction at a time, so offsets are
//! assigned in commit order and readers (who see committed snapshots) never see a gap.
//!
//! [redb]: https://docs.rs/redb

mod codec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use flowstream_core::Error;
use flowstream_core::driver::{
    ChangeHub, Driver, DriverError, Expected, Message, NewMessage, Record, Revision,
    StorageErrorKind, Topic, check_stream_name,
};
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

/// `(stream, offset) -> encoded message` (see the `codec` module).
const MESSAGES: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("messages");
/// `stream -> head offset`.
const HEADS: TableDefinition<'_, &str, u64> = TableDefinition::new("heads");
/// `key -> (revision, JSON text)`.
const RECORDS: TableDefinition<'_, &str, (u64, &str)> = TableDefinition::new("records");

/// The page cache [`RedbDriver::open`] gives redb: 16 MiB (redb's own default is 1 GiB, which
/// a long-running process reading a long stream would fill).
pub const DEFAULT_CACHE_SIZE: usize = 16 * 1024 * 1024;

/// A [`Driver`] on a redb database: a file, or memory for tests and throwaway use.
///
/// One process at a time may open a file; a second gets an [`Error::Storage`] of kind
/// [`StorageErrorKind::Locked`].
#[derive(Clone)]
pub struct RedbDriver {
    db: Arc<Database>,
    hub: ChangeHub,
    location: Arc<str>,
}

impl std::fmt::Debug for RedbDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbDriver")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl RedbDriver {
    /// Opens (or creates) the database file at `path`. Every append and commit is durable once
    /// it returns.
    ///
    /// Errors: [`Error::Storage`] of kind [`StorageErrorKind::Locked`] when another process
    /// has the file open, of kind [`StorageErrorKind::Corrupt`] when it is not a readable redb
    /// file.
    ///
    /// Uses redb's page cache of [`DEFAULT_CACHE_SIZE`]; [`RedbDriver::open_with_cache`] sets
    /// another size.
    ///
    /// # Cancel safety
    ///
    /// The file is opened on a blocking thread, which finishes even if this future is
    /// dropped; the database it opened is then closed again, and the file can be reopened.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with_cache(path, DEFAULT_CACHE_SIZE).await
    }

    /// Like [`open`](RedbDriver::open), with a page cache of `bytes`. The cache is most of
    /// the driver's memory: pages read or written stay in it up to this size. A larger cache
    /// helps consumers that lag far behind the head; consumers near the head read pages that
    /// were just written either way.
    ///
    /// # Cancel safety
    ///
    /// As [`open`](RedbDriver::open).
    pub async fn open_with_cache(path: impl AsRef<Path>, bytes: usize) -> Result<Self, Error> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let location: Arc<str> = path.display().to_string().into();
        let shown = Arc::clone(&location);
        let db = tokio::task::spawn_blocking(move || {
            let db = Database::builder()
                .set_cache_size(bytes)
                .create(&path)
                .map_err(|e| open_error(&shown, e))?;
            create_tables(&db)?;
            Ok::<_, Error>(db)
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                // redb checks what it reads with assertions: a panic while opening means the
                // file holds something redb never wrote.
                Error::Storage(DriverError::storage(
                    StorageErrorKind::Corrupt,
                    format!("{location} is not a readable redb file (redb failed an internal check while opening it)"),
                ))
            } else {
                Error::Storage(DriverError::failed(format!("opening {location}: {e}")))
            }
        })??;
        tracing::debug!(path = %location, "opened redb store");
        Ok(Self::from_database(db, location))
    }

    /// A fresh database in memory: nothing survives the driver.
    pub fn in_memory() -> Result<Self, Error> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| open_error("in-memory database", e))?;
        create_tables(&db)?;
        Ok(Self::from_database(db, "in-memory database".into()))
    }

    fn from_database(db: Database, location: Arc<str>) -> Self {
        RedbDriver {
            db: Arc::new(db),
            hub: ChangeHub::new(),
            location,
        }
    }

    /// Runs `work` on a blocking thread: redb is synchronous and may wait on disk.
    async fn blocking<T, F>(&self, work: F) -> Result<T, DriverError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, DriverError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| DriverError::failed(format!("a redb task failed: {e}")))?
    }
}

fn open_error(location: &str, error: DatabaseError) -> Error {
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
            StorageErrorKind::Corrupt,
            format!("{location} was written by another redb file format"),
        ),
        _ => (StorageErrorKind::Failed, format!("opening {location}")),
    };
    Error::Storage(DriverError::storage(kind, message).caused_by(error))
}

fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(MESSAGES).map_err(storage)?;
    txn.open_table(HEADS).map_err(storage)?;
    txn.open_table(RECORDS).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(())
}

fn storage(error: impl Into<redb::Error>) -> DriverError {
    let error: redb::Error = error.into();
    let kind = match &error {
        redb::Error::Corrupted(_) => StorageErrorKind::Corrupt,
        _ => StorageErrorKind::Failed,
    };
    DriverError::storage(kind, "redb").caused_by(error)
}

/// Refuses what no flowstream driver stores: stream names the engine would not accept
/// (callers may append through the driver directly), and NUL characters in headers (which
/// PostgreSQL cannot store), so that what one driver accepts, every driver accepts.
fn refuse_unportable(messages: &[NewMessage]) -> Result<(), DriverError> {
    for message in messages {
        check_stream_name(message.stream())?;
        for (name, value) in message.headers() {
            if name.contains('\0') || value.contains('\0') {
                return Err(DriverError::InvalidInput(format!(
                    "header {:?} of a message to {}: flowstream refuses NUL characters in \
                     header names and values on every store, so that streams stay portable",
                    name.escape_debug().to_string(),
                    message.stream()
                )));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Driver for RedbDriver {
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
        // Notified from the blocking task right after the commit, so that a caller who stops
        // waiting (a cancelled send) cannot leave an append without its notification.
        refuse_unportable(&messages)?;
        let hub = self.hub.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let mut offsets = Vec::with_capacity(messages.len());
            let mut heads_now: HashMap<String, u64> = HashMap::new();
            {
                let mut heads = txn.open_table(HEADS).map_err(storage)?;
                let mut table = txn.open_table(MESSAGES).map_err(storage)?;
                let produced_at = SystemTime::now();
                // One buffer for every encoded value of the batch.
                let mut value = Vec::new();
                for message in messages {
                    let (stream, body, headers) = message.into_parts();
                    let head = match heads_now.get_mut(&stream) {
                        Some(head) => head,
                        None => {
                            let stored = heads
                                .get(stream.as_str())
                                .map_err(storage)?
                                .map(|h| h.value())
                                .unwrap_or(0);
                            heads_now.entry(stream.clone()).or_insert(stored)
                        }
                    };
                    *head = head.checked_add(1).ok_or_else(|| {
                        DriverError::InvalidInput(format!("stream {stream} is full"))
                    })?;
                    value.clear();
                    codec::encode_into(&mut value, &body, &headers, produced_at);
                    table
                        .insert((stream.as_str(), *head), value.as_slice())
                        .map_err(storage)?;
                    offsets.push(*head);
                }
                for (stream, head) in &heads_now {
                    heads.insert(stream.as_str(), *head).map_err(storage)?;
                }
            }
            txn.commit().map_err(storage)?;
            for stream in heads_now.into_keys() {
                hub.notify(&Topic::Stream(stream));
            }
            Ok(offsets)
        })
        .await
    }

    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError> {
        check_stream_name(stream)?;
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let stream = stream.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(MESSAGES).map_err(storage)?;
            let range = table
                .range((stream.as_str(), first)..=(stream.as_str(), u64::MAX))
                .map_err(storage)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            let shared: Arc<str> = stream.as_str().into();
            for entry in range.take(limit) {
                let (key, value) = entry.map_err(storage)?;
                out.push(codec::decode(&shared, key.value().1, value.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        check_stream_name(stream)?;
        let stream = stream.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let heads = txn.open_table(HEADS).map_err(storage)?;
            Ok(heads
                .get(stream.as_str())
                .map_err(storage)?
                .map(|h| h.value())
                .unwrap_or(0))
        })
        .await
    }

    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError> {
        check_stream_name(stream)?;
        let stream = stream.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let mut removed = 0;
            {
                let mut table = txn.open_table(MESSAGES).map_err(storage)?;
                table
                    .retain_in((stream.as_str(), 1)..=(stream.as_str(), through), |_, _| {
                        removed += 1;
                        false
                    })
                    .map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
        .await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let records = txn.open_table(RECORDS).map_err(storage)?;
            let Some(entry) = records.get(key.as_str()).map_err(storage)? else {
                return Ok(None);
            };
            let (revision, json) = entry.value();
            decode_record(&key, revision, json).map(Some)
        })
        .await
    }

    async fn put_record(
        &self,
        key: &str,
        value: serde_json::Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        let key = key.to_owned();
        let json = value.to_string();
        let hub = self.hub.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let revision = {
                let mut records = txn.open_table(RECORDS).map_err(storage)?;
                let current = records.get(key.as_str()).map_err(storage)?;
                let stored = current.as_ref().map(|entry| entry.value());
                let next = match (expected, stored) {
                    (Expected::Absent, None) => 1,
                    (Expected::Revision(Revision(want)), Some((have, _))) if want == have => {
                        have + 1
                    }
                    // Lost: hand back what is there, read in this same transaction.
                    (_, stored) => {
                        let current = stored
                            .map(|(revision, json)| decode_record(&key, revision, json))
                            .transpose()?;
                        return Err(DriverError::Conflict { key, current });
                    }
                };
                drop(current);
                records
                    .insert(key.as_str(), (next, json.as_str()))
                    .map_err(storage)?;
                next
            };
            txn.commit().map_err(storage)?;
            if notify {
                hub.notify(&Topic::Record(key));
            }
            Ok(Revision(revision))
        })
        .await
    }

    fn changes(&self) -> &ChangeHub {
        &self.hub
    }
}

fn decode_record(key: &str, revision: u64, json: &str) -> Result<Record, DriverError> {
    let value = serde_json::from_str(json).map_err(|e| {
        DriverError::storage(
            StorageErrorKind::Corrupt,
            format!("record {key:?} holds invalid JSON"),
        )
        .caused_by(e)
    })?;
    Ok(Record {
        value,
        revision: Revision(revision),
    })
}
