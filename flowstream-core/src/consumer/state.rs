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
    /// After a takeover from an owner that never released the group (it crashed, or hung):
    /// the owner probes each delivery up to this offset, the head when it took over, so that
    /// a crash inside that window names the message it was handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) probe_through: Option<u64>,
    /// The message a probing owner is handing to the application: written before it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) probe: Option<u64>,
    /// The message owners were handling when they crashed, and how many times in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) suspect: Option<Suspect>,
    /// When the record was last written (a commit, a heartbeat, a takeover, a reset):
    /// microseconds since the Unix epoch on the writer's clock. For people (the admin API
    /// shows it); the protocol never reads it.
    #[serde(default, rename = "written", skip_serializing_if = "Option::is_none")]
    pub(crate) written_micros: Option<u64>,
}

/// A message suspected of crashing the consumers that handle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Suspect {
    /// Its offset.
    pub(crate) offset: u64,
    /// Takeovers from an owner that was handling it when it stopped.
    pub(crate) crashes: u32,
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
    /// Moves the committed offset to `offset` (never back) and forgets what it passes: a
    /// nacked message, a probe, a probing window, a suspect, all handled now.
    pub(crate) fn advance_to(&mut self, offset: u64) {
        self.committed = self.committed.max(offset);
        let committed = self.committed;
        if self.retry.is_some_and(|retry| retry.offset <= committed) {
            self.retry = None;
        }
        if self.probe.is_some_and(|probe| probe <= committed) {
            self.probe = None;
        }
        if self
            .probe_through
            .is_some_and(|through| through <= committed)
        {
            self.probe_through = None;
        }
        if self
            .suspect
            .is_some_and(|suspect| suspect.offset <= committed)
        {
            self.suspect = None;
        }
    }

    /// The record a takeover writes for `owner` in the next generation. Taking over from an
    /// owner that never released the group (`active`) counts as its crash: the message it
    /// was probing is suspected once more (or first), and the new owner probes up to `head`
    /// (when known: only consumers that count crashes read it). Releases count nothing.
    pub(crate) fn taken_over_by(&self, owner: String, head: Option<u64>) -> StoredGroup {
        let mut next = StoredGroup {
            owner,
            generation: self.generation + 1,
            active: true,
            committed: self.committed,
            retry: self.retry,
            probe_through: self.probe_through,
            probe: None,
            suspect: self.suspect,
            written_micros: None,
        };
        if self.active {
            if let Some(probe) = self.probe.filter(|&p| p > self.committed) {
                let crashes = match self.suspect {
                    Some(suspect) if suspect.offset == probe => suspect.crashes.saturating_add(1),
                    _ => 1,
                };
                next.suspect = Some(Suspect {
                    offset: probe,
                    crashes,
                });
            }
            if let Some(head) = head {
                next.probe_through = Some(head.max(self.probe_through.unwrap_or(0)));
            }
        }
        next.advance_to(self.committed);
        next
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn group(active: bool, committed: u64) -> StoredGroup {
        StoredGroup {
            owner: "old".into(),
            generation: 4,
            active,
            committed,
            retry: None,
            probe_through: None,
            probe: None,
            suspect: None,
            written_micros: None,
        }
    }

    #[test]
    fn only_a_takeover_from_an_unreleased_owner_counts_a_crash() {
        let mut crashed = group(true, 10);
        crashed.probe = Some(12);
        let first = crashed.taken_over_by("new".into(), Some(40));
        assert_eq!((first.owner.as_str(), first.generation), ("new", 5));
        assert_eq!(
            first.suspect,
            Some(Suspect {
                offset: 12,
                crashes: 1
            })
        );
        assert_eq!((first.probe, first.probe_through), (None, Some(40)));

        let mut again = first.clone();
        again.probe = Some(12);
        let second = again.taken_over_by("third".into(), Some(30));
        assert_eq!(
            second.suspect,
            Some(Suspect {
                offset: 12,
                crashes: 2
            })
        );
        assert_eq!(second.probe_through, Some(40), "the window never shrinks");

        let mut elsewhere = second.clone();
        elsewhere.probe = Some(13);
        let moved = elsewhere.taken_over_by("fourth".into(), None);
        assert_eq!(
            moved.suspect,
            Some(Suspect {
                offset: 13,
                crashes: 1
            })
        );

        let mut released = second.clone();
        released.active = false;
        released.probe = Some(12);
        let clean = released.taken_over_by("polite".into(), Some(50));
        assert_eq!(clean.suspect, second.suspect, "a release counts nothing");
        assert_eq!(clean.probe_through, Some(40));

        let unprobed = group(true, 10).taken_over_by("new".into(), Some(20));
        assert_eq!((unprobed.suspect, unprobed.probe_through), (None, Some(20)));
    }

    #[test]
    fn advancing_forgets_what_it_passes() {
        let mut state = group(true, 10);
        state.retry = Some(StoredRetry {
            offset: 11,
            attempts: 1,
            due_micros: 0,
        });
        state.probe = Some(12);
        state.probe_through = Some(20);
        state.suspect = Some(Suspect {
            offset: 13,
            crashes: 1,
        });
        state.advance_to(12);
        assert_eq!(state.committed, 12);
        assert_eq!((state.retry, state.probe), (None, None));
        assert_eq!(state.probe_through, Some(20));
        assert!(state.suspect.is_some());
        state.advance_to(5);
        assert_eq!(state.committed, 12, "never back");
        state.advance_to(20);
        assert_eq!((state.probe_through, state.suspect), (None, None));
    }
}
