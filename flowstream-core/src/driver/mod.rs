//! For people who implement storage: the [`Driver`] trait, its errors and the notification
//! hub.
//!
//! Applications use the crate root ([`Producer`](crate::Producer),
//! [`Consumer`](crate::Consumer), [`Error`](crate::Error)) and hand it an `Arc<dyn Driver>`
//! from a driver crate; they need nothing from this module. Driver authors implement
//! [`Driver`] and check their implementation with the conformance suite (the
//! `conformance` feature of this crate, module `flowstream_core::conformance`).
//!
//! This part of the API may change faster than the crate root: a minor release may add a
//! required method to [`Driver`] (with the conformance scenarios that check it), where the
//! applications' API keeps its semver promise.

mod backoff;
mod batch;
mod error;
mod gather;
mod notify;
mod read_buffer;

use async_trait::async_trait;
use serde_json::Value;

pub use crate::message::{Headers, Message, NewMessage};
pub use backoff::Backoff;
pub use batch::{Applied, Batch, RecordWrite};
pub use error::{DriverError, Source, StorageErrorKind};
pub use gather::{GatherQueue, Gathered};
pub use notify::{ChangeHub, Subscription, Topic};
pub use read_buffer::ReadBuffer;

/// Checks a log name as the engine does before it reaches a driver: a stream name
/// (`[A-Za-z0-9._-]`, 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes), optionally followed by
/// `/` and a partition number (see [Logs and partitions](Driver#logs-and-partitions)). Drivers
/// call it in methods that applications may call directly (`append`, `read`, `head`, `trim`),
/// so that a bad name is refused the same way whichever path it takes.
pub fn check_stream_name(name: &str) -> Result<(), DriverError> {
    crate::names::validate_log_name(name)
        .map_err(|error| DriverError::InvalidInput(error.to_string()))
}

/// The version of a record. Every successful write produces a new, larger revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

/// A record and the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The stored JSON value.
    pub value: Value,
    /// Its current revision.
    pub revision: Revision,
}

/// The precondition of a record write (compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Create the record; fail with a conflict if it exists.
    Absent,
    /// Replace the record; fail with a conflict unless it is still at this revision.
    Revision(Revision),
}

/// Storage for flowstream: implement this to put streams on another database.
///
/// Used as `Arc<dyn Driver>`; the engine ([`Producer`](crate::Producer),
/// [`Consumer`](crate::Consumer)) is written against this trait only and knows nothing of SQL or
/// files. A driver, in turn, knows nothing of consumer groups: it stores logs and records.
///
/// # Contract
///
/// Every implementation must guarantee the following; the conformance suite (feature
/// `conformance`, module `flowstream_core::conformance`) checks them.
///
/// # Logs and partitions
///
/// A driver stores *logs*, and knows nothing of partitions: the engine maps each partition of
/// a stream to a log of its own. Partition 0 is the log named after the stream (so an
/// unpartitioned stream is one log, as it always was); partition `p ≥ 1` is the log
/// `stream/p`. The methods below say "stream" for a log; every name they receive passes
/// [`check_stream_name`]. A stream's partition count is a record the engine owns.
///
/// **Logs**
/// - [`append`](Driver::append) is atomic: all messages of the call are stored, or none is,
///   whatever the number of logs they go to.
///   Messages to one stream get consecutive offsets in call order, starting at 1 for a new
///   stream; the returned offsets are in the order of the input. It returns only once the
///   messages are durable (as durable as the storage promises: a committed transaction).
/// - Offsets are dense and *visibility-ordered*: once a reader can see offset `n`, it can see
///   every offset below `n` of that stream (no reader may skip a message that commits later).
/// - [`read`](Driver::read) returns messages with offsets greater than `after`, ascending,
///   at most `limit` of them, and never blocks waiting for new ones.
/// - [`head`](Driver::head) returns the highest offset of a stream, 0 when it has none.
/// - [`trim`](Driver::trim) deletes messages up to and including an offset; offsets are never
///   reused and the head does not move.
/// - [`delete_log`](Driver::delete_log) deletes a log whole, head included: the next append to
///   the name starts again at offset 1. It is atomic with respect to appends: an append
///   either committed before it (and is deleted with the log) or starts the new log.
/// - [`logs`](Driver::logs) lists every log that exists (appended to and not deleted), with
///   its head, whether or not messages are left in it.
///
/// **Records** (small JSON values the engine owns, such as a group's state)
/// - [`put_record`](Driver::put_record) is a compare-and-swap on the revision: it succeeds only
///   when [`Expected`] holds, and then returns a revision greater than any the record had;
///   otherwise it returns [`DriverError::Conflict`] with the record as it is now (a value no
///   older than the write that made the precondition fail) and changes nothing.
/// - [`get_record`](Driver::get_record) returns the latest committed value and its revision.
/// - [`delete_record`](Driver::delete_record) is a compare-and-swap too. A deleted record reads
///   as absent (`get_record` returns `None`, [`Expected::Absent`] may create it again), but
///   its revisions go on: a record created again under the key gets a revision greater than
///   any it had before the delete, so a writer still holding an old revision always
///   conflicts.
/// - [`records`](Driver::records) lists the records whose keys start with a prefix, in key
///   order (by bytes), deleted ones left out.
///
/// **Batches**
/// - [`apply`](Driver::apply) stores a [`Batch`] of appends and record writes in one
///   transaction: every message is appended and every record written, or nothing is. Each
///   part follows the rules above (offsets, revisions, refusals); a record whose precondition
///   fails makes the whole batch fail with [`DriverError::Conflict`] for that record, and
///   nothing of the batch is stored. Notifications are sent as for the parts alone, after the
///   commit.
///
/// **Notifications**
/// - After an append commits, the driver calls [`ChangeHub::notify`] on [`Topic::Stream`] for
///   each stream it touched; after a record write with `notify = true` commits, on
///   [`Topic::Record`]. It may notify
///   more often than asked (spurious wake-ups are allowed), never less, except that
///   notifications may be lost when the storage connection drops, in which case the driver must
///   call [`ChangeHub::notify_all`] once it is connected again.
/// - One hub per driver instance serves every consumer of that instance.
///
/// **Messages**
/// - A message the driver cannot store faithfully (a header it cannot represent, say) is
///   refused with [`DriverError::InvalidInput`] before anything of the call is stored. The
///   conformance suite fixes which messages every driver accepts and which it refuses, so that
///   a stream can move between drivers.
/// - What was stored (body, headers, key) reads back byte for byte, the key as `None` when the
///   message had none; a stored value the driver cannot decode is a
///   [`StorageErrorKind::Corrupt`] error, never silently altered.
///
/// **Errors and safety**
/// - Storage failures are [`DriverError::Storage`] with a [`StorageErrorKind`]:
///   `Unavailable` when retrying may help (a write may or may not have been applied),
///   `Connect`, `Locked`, `Corrupt`, `Incompatible` or `Failed` otherwise. Never a panic.
/// - Blocking work (file I/O of an embedded store) runs off the async executor.
/// - The engine validates names before they reach the driver (`[A-Za-z0-9._-]`, at most 249
///   bytes) and builds record keys from them; `read`, `head` and `trim` are also called by
///   applications directly, so drivers check the stream name there with
///   [`check_stream_name`].
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// Appends messages, possibly to several streams, atomically. Returns one offset per
    /// message, in input order.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future must leave the append either wholly stored or not stored at all
    /// (the caller cannot know which, as with a lost reply), and a stored append must still be
    /// notified.
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError>;

    /// Reads up to `limit` messages of `stream` with offsets greater than `after`, ascending.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel-safe: a read changes nothing.
    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError>;

    /// The highest offset of `stream`, 0 if it has never had a message.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel-safe: it changes nothing.
    async fn head(&self, stream: &str) -> Result<u64, DriverError>;

    /// Deletes the messages of `stream` with offsets up to and including `through`. Returns
    /// how many were deleted.
    ///
    /// # Cancel safety
    ///
    /// A dropped trim may have deleted all of the range, part of it from the oldest message
    /// on, or nothing; calling it again finishes the job.
    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError>;

    /// Deletes `log` whole: its messages and its head, so that the next append to the name
    /// gets offset 1. Returns whether it existed. Waiters on the log are notified.
    ///
    /// Deleting a long log this way is one large delete; callers that care trim it in
    /// chunks first (see [`trim`](Driver::trim)).
    ///
    /// # Cancel safety
    ///
    /// A dropped call deleted the log or did not, never half of its head and messages.
    async fn delete_log(&self, log: &str) -> Result<bool, DriverError>;

    /// Every log that exists, with its head, in name order (by bytes).
    ///
    /// # Cancel safety
    ///
    /// Must be cancel-safe: it changes nothing.
    async fn logs(&self) -> Result<Vec<(String, u64)>, DriverError>;

    /// Reads a record.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel-safe: it changes nothing.
    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError>;

    /// Writes a record if `expected` holds (compare-and-swap); returns the new revision.
    /// With `notify`, subscribers of the record's topic are woken after the commit.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future must leave the write applied or not, never half done (the group
    /// protocol treats it as a lost reply: a later conflict shows which).
    async fn put_record(
        &self,
        key: &str,
        value: Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError>;

    /// Deletes a record if it is still at `expected` (compare-and-swap), else
    /// [`DriverError::Conflict`] with the record as it is now. With `notify`, subscribers of
    /// the record's topic are woken after the commit. See the contract above for what a
    /// deleted record's revisions do.
    ///
    /// # Cancel safety
    ///
    /// As [`put_record`](Driver::put_record): applied or not, never half done.
    async fn delete_record(
        &self,
        key: &str,
        expected: Revision,
        notify: bool,
    ) -> Result<(), DriverError>;

    /// Every record whose key starts with `prefix`, with its key, in key order (by bytes).
    ///
    /// # Cancel safety
    ///
    /// Must be cancel-safe: it changes nothing.
    async fn records(&self, prefix: &str) -> Result<Vec<(String, Record)>, DriverError>;

    /// Applies a [`Batch`] atomically: all of its appends and record writes, or none. Returns
    /// the offsets of its messages and the new revisions of its records, in input order. A
    /// failed precondition is a [`DriverError::Conflict`] naming the record, with nothing
    /// stored; a batch writing one record twice is [`DriverError::InvalidInput`]
    /// ([`Batch::check`]).
    ///
    /// # Cancel safety
    ///
    /// As [`append`](Driver::append): dropping the future leaves the batch wholly applied or
    /// not at all, and an applied batch is still notified.
    async fn apply(&self, batch: Batch) -> Result<Applied, DriverError>;

    /// The hub this driver notifies of changes.
    fn changes(&self) -> &ChangeHub;

    /// Waits until the wake-ups of every append and batch that has returned have left this
    /// process, for drivers that send them to other processes after the write (PostgreSQL
    /// sends a `NOTIFY` once an append has committed). Without it a process that exits right
    /// after writing may take its last wake-ups with it, and consumers elsewhere find those
    /// messages only at their next poll. Writes the driver finishes in the background (an
    /// outbox's relay) are finished first when they were committed before the call. A driver
    /// whose wake-ups never leave the process, or go out inside the write, has nothing to wait
    /// for: the default returns at once. Wrappers around another driver must forward it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping it loses nothing stored. A background write it was finishing
    /// (a relay round) commits whole or not at all; its wake-up may then be late.
    async fn flush_wakeups(&self) -> Result<(), DriverError> {
        Ok(())
    }
}
