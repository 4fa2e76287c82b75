//! The group record: its stored shape, its key, and the typed view applications read.

use serde::{Deserialize, Serialize};

use crate::driver::{Driver, DriverError, Record, Revision};
use crate::error::{Error, NameKind};
use crate::names::{log_name, validate_name, validate_stream_to_read};

/// The revisioned record of a group as stored (JSON): who owns it and how far it has
/// committed. The engine owns this schema; drivers store it opaquely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredGroup {
    /// The consumer id of the owner.
    pub(crate) owner: String,
    /// Grows by one at every change of owner (Kafka's generation id).
    pub(crate) generation: u64,
    /// False once the owner shut down gracefully: a standby may take over at once.
    pub(crate) active: bool,
    /// The committed offset: everything up to it has been processed.
    pub(crate) committed: u64,
    /// The message after `committed` that was nacked, written only by a nack: so a new owner
    /// (this one after a takeover, or another) keeps counting its deliveries and waits out its
    /// delay. Absent from records written before retries existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retry: Option<StoredRetry>,
}

/// A nacked message waiting for its redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRetry {
    /// Its offset; relevant while it is the message after the committed offset.
    pub(crate) offset: u64,
    /// How many deliveries of it failed so far.
    pub(crate) attempts: u32,
    /// When it may be delivered again: microseconds since the Unix epoch, on the clock of the
    /// consumer that nacked it.
    pub(crate) due_micros: u64,
}

impl StoredGroup {
    /// The nacked message that is next to deliver, if any.
    pub(crate) fn pending_retry(&self) -> Option<StoredRetry> {
        self.retry
            .filter(|retry| retry.offset == self.committed.saturating_add(1))
    }
}

/// Record key of a group's state. Names cannot contain `/`, so keys cannot collide.
pub(crate) fn group_key(stream: &str, group: &str) -> String {
    format!("group/{stream}/{group}")
}

pub(crate) fn decode(key: &str, record: Record) -> Result<(StoredGroup, Revision), Error> {
    let state = serde_json::from_value(record.value).map_err(|e| {
        DriverError::failed(format!("group record {key:?} is not a valid group state")).caused_by(e)
    })?;
    Ok((state, record.revision))
}

/// A consumer group's state as stored: who owns it, in which generation, and how far it has
/// committed. Read it with [`GroupState::load`], to show a group's progress or to check what
/// a test did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupState {
    /// The id of the consumer that owns the group ([`Consumer::id`](crate::Consumer::id)).
    pub owner: String,
    /// Grows by one at every change of owner (Kafka's generation id).
    pub generation: u64,
    /// Whether the owner holds the group; `false` after it shut down gracefully, until a
    /// standby takes over.
    pub active: bool,
    /// The committed offset: the group has processed every message up to it.
    pub committed: u64,
    /// The record's revision: it grows with every write (commit, heartbeat, takeover).
    pub revision: u64,
}

impl GroupState {
    /// Reads the state of `group` on `stream`; `None` if no consumer ever joined it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn load(
        driver: &dyn Driver,
        stream: &str,
        group: &str,
    ) -> Result<Option<GroupState>, Error> {
        validate_stream_to_read(stream)?;
        validate_name(NameKind::Group, group)?;
        let key = group_key(stream, group);
        let Some(record) = driver.get_record(&key).await? else {
            return Ok(None);
        };
        Self::from_record(&key, record).map(Some)
    }

    /// Reads the state of `group` in `partition` of a partitioned `stream` (each partition
    /// has its own: owner, generation, committed offset); partition 0 is the same record as
    /// [`load`](GroupState::load). `None` if no member ever claimed that partition.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn load_partition(
        driver: &dyn Driver,
        stream: &str,
        group: &str,
        partition: u32,
    ) -> Result<Option<GroupState>, Error> {
        validate_stream_to_read(stream)?;
        validate_name(NameKind::Group, group)?;
        let key = group_key(&log_name(stream, partition), group);
        let Some(record) = driver.get_record(&key).await? else {
            return Ok(None);
        };
        Self::from_record(&key, record).map(Some)
    }

    /// Decodes a group record read through a [`Driver`] (by a tool or a test that watches
    /// record writes); an error if `record` is not a group's state.
    pub fn from_record(key: &str, record: Record) -> Result<GroupState, Error> {
        let (stored, revision) = decode(key, record)?;
        Ok(GroupState {
            owner: stored.owner,
            generation: stored.generation,
            active: stored.active,
            committed: stored.committed,
            revision: revision.0,
        })
    }
}
