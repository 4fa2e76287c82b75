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
//! Offsets: each stream's id and head live in its row of the `streams` table, and the head is
//! advanced in the appending write transaction. redb runs one write transaction at a time, so
//! offsets are assigned in commit order and readers (who see committed snapshots) never see a
//! gap.
//!
//! The file carries a format version. Each stream's messages have a table of their own, keyed
//! by offset (format 4); a file of format 2 or 3 is moved to format 4 when it opens, and a file
//! of any other format is refused with [`StorageErrorKind::Incompatible`] and left as it was.
//! Its other tables are the application's own: the driver opens only its own.
//! [`RedbDriver::builder`] sets the page cache and [`RecordDurability`].
//!
//! [redb]: https://docs.rs/redb

mod app_tx;
mod codec;
mod durability;
mod errors;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flowstream_core::Error;
use flowstream_core::driver::{
    Applied, Batch, ChangeHub, Driver, DriverError, Expected, Message, NewMessage, ReadBuffer,
    Record, Revision, StorageErrorKind, Topic, check_stream_name,
};
use redb::{Database, ReadableDatabase, ReadableTable};

pub use crate::app_tx::AppTx;
use crate::durability::Deferred;
use crate::errors::{open_error, storage};
use crate::schema::{LogName, RECORDS, STREAMS};
/// The redb this driver is built with, so an application names its tables with the same
/// version's types ([`RedbDriver::write`]).
pub use redb;

/// The page cache [`RedbDriver::open`] gives redb: 16 MiB (redb's own default is 1 GiB, which
/// a long-running process reading a long stream would fill).
pub const DEFAULT_CACHE_SIZE: usize = 16 * 1024 * 1024;

/// When a group record write (an offset commit, a takeover, a heartbeat, a handover) is made
/// durable. Appends are durable when they return whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordDurability {
    /// Durable when the call returns, as appends are: one `fdatasync` per record write. The
    /// default.
    Immediate,
    /// Committed at once (every reader in this process sees it) and made durable by the next
    /// append, by [`RedbDriver::sync`], by the driver closing, or at the latest `within` after
    /// the write (unless the disk fails meanwhile).
    ///
    /// What a crash (the process killed, the machine lost) can cost in between: group records
    /// go back to their last durable state. A committed offset moves back, never forward, so
    /// the messages after it are delivered again (guarantee 3, at-least-once, holds); no
    /// acknowledged message is lost, since every append is durable and redb makes each durable
    /// commit carry every commit before it. Ownership records move back too, harmlessly: every
    /// consumer of the file died with the process.
    Deferred {
        /// The longest a record write stays volatile while the process lives.
        within: Duration,
    },
}

/// Settings for opening a [`RedbDriver`]: [`RedbDriver::builder`].
#[derive(Debug, Clone)]
pub struct RedbBuilder {
    path: PathBuf,
    cache_size: usize,
    records: RecordDurability,
}

impl RedbBuilder {
    /// redb's page cache, [`DEFAULT_CACHE_SIZE`] unless set. The cache is most of the driver's
    /// memory: pages read or written stay in it up to this size. A larger cache helps
    /// consumers that lag far behind the head; consumers near the head read pages that were
    /// just written either way.
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// When group record writes become durable; [`RecordDurability::Immediate`] unless set.
    /// [`RecordDurability::Deferred`] spares consumers an `fdatasync` per commit, at the price
    /// its documentation gives.
    pub fn record_durability(mut self, durability: RecordDurability) -> Self {
        self.records = durability;
        self
    }

    /// Opens (or creates) the file.
    ///
    /// Errors: [`Error::Storage`] of kind [`StorageErrorKind::Locked`] when another process
    /// has the file open; of kind [`StorageErrorKind::Corrupt`] when it is not a readable redb
    /// file; of kind [`StorageErrorKind::Incompatible`] when it holds flowstream data in a
    /// format this version neither reads nor moves (the file is left as it was);
    /// [`Error::InvalidConfig`] for a zero `Deferred::within`. A file of format 2 or 3, written
    /// by earlier versions, is moved to this version's format 4 before this returns (every
    /// message kept, in steps that a crash does not undo), after which those versions refuse it.
    ///
    /// # Cancel safety
    ///
    /// The file is opened on a blocking thread, which finishes even if this future is
    /// dropped; the database it opened is then closed again, and the file can be reopened.
    pub async fn open(self) -> Result<RedbDriver, Error> {
        let deferred = Deferred::from_setting(self.records)?;
        let path = self.path;
        let bytes = self.cache_size;
        let location: Arc<str> = path.display().to_string().into();
        let shown = Arc::clone(&location);
        let db = tokio::task::spawn_blocking(move || {
            let db = Database::builder()
                .set_cache_size(bytes)
                .create(&path)
                .map_err(|e| open_error(&shown, e))?;
            schema::prepare(&db, &shown)?;
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
        Ok(RedbDriver::from_database(db, location, deferred))
    }
}

/// A [`Driver`] on a redb database: a file, or memory for tests and throwaway use.
///
/// One process at a time may open a file; a second gets an [`Error::Storage`] of kind
/// [`StorageErrorKind::Locked`].
#[derive(Clone)]
pub struct RedbDriver {
    db: Arc<Database>,
    hub: ChangeHub,
    location: Arc<str>,
    deferred: Option<Deferred>,
}

impl std::fmt::Debug for RedbDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbDriver")
            .field("location", &self.location)
            .field("deferred_records", &self.deferred.is_some())
            .finish_non_exhaustive()
    }
}

impl RedbDriver {
    /// Opens (or creates) the database file at `path` with the default settings: every append
    /// and commit is durable once it returns, and redb's page cache is [`DEFAULT_CACHE_SIZE`].
    /// [`RedbDriver::builder`] sets the others.
    ///
    /// Errors and cancel safety: as [`RedbBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path).open().await
    }

    /// Like [`open`](RedbDriver::open), with a page cache of `bytes` (see
    /// [`RedbBuilder::cache_size`]).
    ///
    /// # Cancel safety
    ///
    /// As [`open`](RedbDriver::open).
    pub async fn open_with_cache(path: impl AsRef<Path>, bytes: usize) -> Result<Self, Error> {
        Self::builder(path).cache_size(bytes).open().await
    }

    /// Settings for opening the file at `path`, for what [`open`](RedbDriver::open) does not
    /// set.
    pub fn builder(path: impl AsRef<Path>) -> RedbBuilder {
        RedbBuilder {
            path: path.as_ref().to_path_buf(),
            cache_size: DEFAULT_CACHE_SIZE,
            records: RecordDurability::Immediate,
        }
    }

    /// A fresh database in memory: nothing survives the driver.
    pub fn in_memory() -> Result<Self, Error> {
        let location = "in-memory database";
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| open_error(location, e))?;
        schema::prepare(&db, location)?;
        Ok(Self::from_database(db, location.into(), None))
    }

    fn from_database(db: Database, location: Arc<str>, deferred: Option<Deferred>) -> Self {
        RedbDriver {
            db: Arc::new(db),
            hub: ChangeHub::new(),
            location,
            deferred,
        }
    }

    /// Makes every write committed so far durable. Only needed with
    /// [`RecordDurability::Deferred`], before a point where losing the last commits would be
    /// costly (say, after a consumer's shutdown when the process may be killed next); with the
    /// default every write is durable already and this costs one `fdatasync`.
    ///
    /// # Cancel safety
    ///
    /// The sync runs on a blocking thread and finishes even if this future is dropped.
    pub async fn sync(&self) -> Result<(), Error> {
        self.blocking(durability::sync)
            .await
            .map_err(Error::Storage)
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

/// Refuses what no flowstream driver stores: stream names the engine would not accept
/// (callers may append through the driver directly), and NUL characters in headers (which
/// PostgreSQL cannot store), so that what one driver accepts, every driver accepts.
fn refuse_unportable(messages: &[NewMessage]) -> Result<(), DriverError> {
    let mut checked = None;
    for message in messages {
        if checked != Some(message.stream()) {
            check_stream_name(message.stream())?;
            checked = Some(message.stream());
        }
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

/// A stream's id and head in a read transaction; `None` for a stream never appended to.
fn stream_in(txn: &redb::ReadTransaction, stream: &str) -> Result<Option<(u64, u64)>, DriverError> {
    let streams = txn.open_table(STREAMS).map_err(storage)?;
    Ok(streams.get(stream).map_err(storage)?.map(|v| v.value()))
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
            let (offsets, touched) = append_in(&txn, messages)?;
            txn.commit().map_err(storage)?;
            for stream in touched {
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
        let stream: Arc<str> = stream.into();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let Some((id, head)) = stream_in(&txn, &stream)? else {
                return Ok(Vec::new());
            };
            if first > head {
                return Ok(Vec::new());
            }
            let log = LogName::of(id);
            let table = match txn.open_table(log.table()) {
                Ok(table) => table,
                // Only a file moved from an earlier format has streams without a table: those
                // whose messages were all trimmed before the move.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(error) => return Err(storage(error)),
            };
            let range = table.range(first..=head).map_err(storage)?;
            let wanted = usize::try_from(head - first + 1).unwrap_or(usize::MAX);
            let mut read = ReadBuffer::new(Arc::clone(&stream), limit.min(wanted));
            for entry in range.take(limit) {
                let (key, value) = entry.map_err(storage)?;
                codec::decode_into(&mut read, &stream, key.value(), value.value())?;
            }
            Ok(read.finish())
        })
        .await
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        check_stream_name(stream)?;
        let stream = stream.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            Ok(stream_in(&txn, &stream)?.map_or(0, |(_, head)| head))
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
                let streams = txn.open_table(STREAMS).map_err(storage)?;
                let Some((id, _)) = streams
                    .get(stream.as_str())
                    .map_err(storage)?
                    .map(|v| v.value())
                else {
                    return Ok(0);
                };
                let log = LogName::of(id);
                let mut table = txn.open_table(log.table()).map_err(storage)?;
                table
                    .retain_in(1..=through, |_, _| {
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
            live_record(&key, revision, json)
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
        let deferred = self
            .deferred
            .as_ref()
            .map(|d| d.for_this_write(&self.db))
            .transpose()?;
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(storage)?;
            if deferred.is_some() {
                txn.set_durability(redb::Durability::None)
                    .map_err(|e| DriverError::failed(format!("redb: {e}")))?;
            }
            let revision = put_record_in(&txn, &key, &json, expected)?;
            txn.commit().map_err(storage)?;
            if let Some(deferred) = deferred {
                deferred.committed();
            }
            if notify {
                hub.notify(&Topic::Record(key));
            }
            Ok(Revision(revision))
        })
        .await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, DriverError> {
        batch.check()?;
        refuse_unportable(&batch.messages)?;
        let records: Vec<(String, String, Expected, bool)> = batch
            .records
            .into_iter()
            .map(|r| (r.key, r.value.to_string(), r.expected, r.notify))
            .collect();
        let messages = batch.messages;
        let hub = self.hub.clone();
        // Always a durable commit: a batch may hold appends, which are never deferred, and
        // the record writes in it are what makes those appends safe to act on.
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let mut revisions = Vec::with_capacity(records.len());
            for (key, json, expected, _) in &records {
                // A failed precondition returns before the commit: dropping the transaction
                // aborts it, and nothing of the batch is stored.
                revisions.push(Revision(put_record_in(&txn, key, json, *expected)?));
            }
            let (offsets, touched) = append_in(&txn, messages)?;
            txn.commit().map_err(storage)?;
            for stream in touched {
                hub.notify(&Topic::Stream(stream));
            }
            for (key, _, _, notify) in records {
                if notify {
                    hub.notify(&Topic::Record(key));
                }
            }
            Ok(Applied { offsets, revisions })
        })
        .await
    }

    async fn delete_log(&self, log: &str) -> Result<bool, DriverError> {
        check_stream_name(log)?;
        let log = log.to_owned();
        let hub = self.hub.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let existed = {
                let mut streams = txn.open_table(STREAMS).map_err(storage)?;
                let removed = streams.remove(log.as_str()).map_err(storage)?;
                match removed.map(|v| v.value()) {
                    Some((id, _)) => {
                        txn.delete_table(LogName::of(id).table()).map_err(storage)?;
                        true
                    }
                    None => false,
                }
            };
            txn.commit().map_err(storage)?;
            // A new log under the name gets a new id: nothing of the old one can show through.
            hub.notify(&Topic::Stream(log));
            Ok(existed)
        })
        .await
    }

    async fn logs(&self) -> Result<Vec<(String, u64)>, DriverError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let streams = txn.open_table(STREAMS).map_err(storage)?;
            let mut logs = Vec::new();
            for entry in streams.iter().map_err(storage)? {
                let (name, value) = entry.map_err(storage)?;
                logs.push((name.value().to_owned(), value.value().1));
            }
            Ok(logs)
        })
        .await
    }

    async fn delete_record(
        &self,
        key: &str,
        expected: Revision,
        notify: bool,
    ) -> Result<(), DriverError> {
        let key = key.to_owned();
        let hub = self.hub.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut records = txn.open_table(RECORDS).map_err(storage)?;
                let stored = records
                    .get(key.as_str())
                    .map_err(storage)?
                    .map(|entry| (entry.value().0, entry.value().1 == TOMBSTONE));
                match stored {
                    Some((revision, false)) if revision == expected.0 => {
                        records
                            .insert(key.as_str(), (revision + 1, TOMBSTONE))
                            .map_err(storage)?;
                    }
                    _ => {
                        let current = match records.get(key.as_str()).map_err(storage)? {
                            Some(entry) => {
                                let (revision, json) = entry.value();
                                live_record(&key, revision, json)?
                            }
                            None => None,
                        };
                        return Err(DriverError::Conflict { key, current });
                    }
                }
            }
            txn.commit().map_err(storage)?;
            if notify {
                hub.notify(&Topic::Record(key));
            }
            Ok(())
        })
        .await
    }

    async fn records(&self, prefix: &str) -> Result<Vec<(String, Record)>, DriverError> {
        let prefix = prefix.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let records = txn.open_table(RECORDS).map_err(storage)?;
            let mut found = Vec::new();
            for entry in records.range(prefix.as_str()..).map_err(storage)? {
                let (key, value) = entry.map_err(storage)?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                let (revision, json) = value.value();
                if let Some(record) = live_record(key, revision, json)? {
                    found.push((key.to_owned(), record));
                }
            }
            Ok(found)
        })
        .await
    }

    fn changes(&self) -> &ChangeHub {
        &self.hub
    }
}

/// Appends `messages` in `txn`; returns their offsets and the streams touched.
///
/// Each stream's messages go to its own table, which redb lets a transaction hold open once at
/// a time: a batch for several streams is taken stream by stream (in input order within each),
/// so every table is opened once however the streams interleave.
fn append_in(
    txn: &redb::WriteTransaction,
    messages: Vec<NewMessage>,
) -> Result<(Vec<u64>, Vec<String>), DriverError> {
    let mut offsets = vec![0; messages.len()];
    let mut order: Vec<usize> = (0..messages.len()).collect();
    if messages.windows(2).any(|w| w[0].stream() != w[1].stream()) {
        // Stable: a stream's messages keep their order, and so their offsets.
        order.sort_by(|&a, &b| messages[a].stream().cmp(messages[b].stream()));
    }
    let runs: Vec<&[usize]> = order
        .chunk_by(|&a, &b| messages[a].stream() == messages[b].stream())
        .collect();
    let mut streams = txn.open_table(STREAMS).map_err(storage)?;
    // Every stream's room is checked before anything is written, so that a refused batch
    // leaves nothing behind in a transaction the application may still commit (`AppTx`).
    let mut heads = Vec::with_capacity(runs.len());
    for run in &runs {
        let stream = messages[run[0]].stream();
        let stored = streams.get(stream).map_err(storage)?.map(|v| v.value());
        let head = stored.map_or(0, |(_, head)| head);
        let count = u64::try_from(run.len()).unwrap_or(u64::MAX);
        if head.checked_add(count).is_none() {
            return Err(DriverError::InvalidInput(format!(
                "stream {stream} is full"
            )));
        }
        heads.push(stored);
    }
    let mut touched = Vec::with_capacity(runs.len());
    let produced_micros = codec::micros_since_epoch(SystemTime::now());
    // One buffer for every encoded value of the batch.
    let mut value = Vec::new();
    for (run, stored) in runs.into_iter().zip(heads) {
        let stream = messages[run[0]].stream();
        let (id, mut head) = match stored {
            Some(entry) => entry,
            None => (schema::next_stream_id(txn)?, 0),
        };
        let log = LogName::of(id);
        let mut table = txn.open_table(log.table()).map_err(storage)?;
        for &index in run {
            let message = &messages[index];
            // Checked above: no overflow.
            head += 1;
            value.clear();
            codec::encode_into(
                &mut value,
                message.body(),
                message.headers(),
                message.key(),
                produced_micros,
            );
            table.insert(head, value.as_slice()).map_err(storage)?;
            offsets[index] = head;
        }
        streams.insert(stream, (id, head)).map_err(storage)?;
        touched.push(stream.to_owned());
    }
    Ok((offsets, touched))
}

/// Writes record `key` in `txn` if `expected` holds; returns its new revision, or the
/// conflict with the record as it is, read in this same transaction.
fn put_record_in(
    txn: &redb::WriteTransaction,
    key: &str,
    json: &str,
    expected: Expected,
) -> Result<u64, DriverError> {
    let mut records = txn.open_table(RECORDS).map_err(storage)?;
    let current = records.get(key).map_err(storage)?;
    let stored = current.as_ref().map(|entry| entry.value());
    let next = match (expected, stored) {
        (Expected::Absent, None) => 1,
        // Created again over a tombstone: its revisions go on.
        (Expected::Absent, Some((have, TOMBSTONE))) => have + 1,
        (Expected::Revision(Revision(want)), Some((have, json)))
            if want == have && json != TOMBSTONE =>
        {
            have + 1
        }
        (_, stored) => {
            let current = match stored {
                Some((revision, json)) => live_record(key, revision, json)?,
                None => None,
            };
            return Err(DriverError::Conflict {
                key: key.to_owned(),
                current,
            });
        }
    };
    drop(current);
    records.insert(key, (next, json)).map_err(storage)?;
    Ok(next)
}

/// What a deleted record leaves in place of its JSON: its revision stays, so that a record
/// created again under the key goes on from it. No JSON text is empty.
pub(crate) const TOMBSTONE: &str = "";

/// The record stored as `(revision, json)`, `None` for a tombstone.
pub(crate) fn live_record(
    key: &str,
    revision: u64,
    json: &str,
) -> Result<Option<Record>, DriverError> {
    if json == TOMBSTONE {
        return Ok(None);
    }
    decode_record(key, revision, json).map(Some)
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
