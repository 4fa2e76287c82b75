//! Moving a group's committed offset, while its consumers run
//! ([`Admin::reset_group`](super::Admin::reset_group)).
//!
//! A reset writes the partition's group record by compare-and-swap, as a takeover does: the
//! generation grows by one, the committed offset becomes the new position, and what the
//! record kept about a nacked, probed or suspect message goes (it was about the old place).
//! The owner and its `active` flag stay. So the active consumer sees its own id in a new
//! generation, which is how it learns of a new claim: it drops what it had read ahead and
//! delivers from right after the new committed offset. Its commits of messages delivered
//! before the reset carry the old generation and fail with [`Error::Fenced`]: none of them
//! can move the group off the position the reset set. A record nobody has claimed yet is
//! created unowned and inactive at the new position; the first consumer to claim it starts
//! there.

use std::time::{Duration, SystemTime};

use crate::StartFrom;
use crate::consumer::{StoredGroup, decode_group, group_key};
use crate::driver::{Driver, DriverError, Expected};
use crate::error::Error;
use crate::names::log_name;
use crate::seek::committed_for;

/// Compare-and-swap attempts before a reset gives up with a retryable error (consumers
/// commit and heartbeat in between).
const MAX_ATTEMPTS: usize = 20;

/// How far ahead of this machine's clock a reset (or a start) to a time may ask for: more is
/// a mistake (a unit error, a wrong year), not clock skew.
pub(crate) const MAX_TIME_AHEAD: Duration = Duration::from_secs(3600);

/// Refuses what no reset or start can mean: a time far in the future.
pub(crate) fn check_place(to: StartFrom) -> Result<(), Error> {
    if let StartFrom::Time(time) = to
        && time > SystemTime::now() + MAX_TIME_AHEAD
    {
        return Err(Error::InvalidConfig(format!(
            "{time:?} is more than {MAX_TIME_AHEAD:?} ahead of this machine's clock: no \
             message can have been produced then"
        )));
    }
    Ok(())
}

/// [`Error::OffsetOutOfRange`] for an offset past the head of `partition` + 1.
pub(super) async fn check_offset(
    driver: &dyn Driver,
    stream: &str,
    partition: u32,
    to: StartFrom,
) -> Result<(), Error> {
    if let StartFrom::Offset(offset) = to {
        let head = driver.head(&log_name(stream, partition)).await?;
        if offset > head.saturating_add(1) {
            return Err(Error::OffsetOutOfRange {
                stream: stream.to_owned(),
                partition,
                offset,
                head,
            });
        }
    }
    Ok(())
}

/// Moves `group` in `partition` of `stream` to `to` (checked by the caller, see
/// [`check_offset`]); returns the new committed offset.
pub(super) async fn reset_partition(
    driver: &dyn Driver,
    stream: &str,
    group: &str,
    partition: u32,
    to: StartFrom,
) -> Result<u64, Error> {
    let log = log_name(stream, partition);
    let committed = committed_for(driver, &log, to.place()).await?;
    let key = group_key(&log, group);
    let mut seen = false;
    for _ in 0..MAX_ATTEMPTS {
        let (next, expected) = match driver.get_record(&key).await? {
            Some(record) => {
                seen = true;
                let revision = record.revision;
                let (current, _) = decode_group(&key, record)?;
                (moved(&current, committed), Expected::Revision(revision))
            }
            // Gone since the first read: its stream was deleted. Creating the record now would
            // leave a group at an old stream's position for a new stream under the name.
            None if seen => {
                return Err(Error::GroupDeleted {
                    stream: stream.to_owned(),
                    group: group.to_owned(),
                });
            }
            None => (unclaimed(committed), Expected::Absent),
        };
        let value = serde_json::to_value(&next)
            .map_err(|e| DriverError::failed("encoding the group record").caused_by(e))?;
        match driver.put_record(&key, value, expected, true).await {
            Ok(_) => {
                tracing::info!(
                    stream,
                    group,
                    partition,
                    committed,
                    generation = next.generation,
                    "group reset"
                );
                return Ok(committed);
            }
            // A commit or heartbeat came first: read again and move that.
            Err(DriverError::Conflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(Error::Storage(DriverError::unavailable(format!(
        "resetting group {group:?} of {log:?}: the record kept changing ({MAX_ATTEMPTS} \
         attempts); try again"
    ))))
}

/// The record after a reset of `current` to `committed`: same owner, next generation.
fn moved(current: &StoredGroup, committed: u64) -> StoredGroup {
    at(
        current.owner.clone(),
        current.generation + 1,
        current.active,
        committed,
    )
}

/// The record of a partition nobody has claimed, reset to `committed`.
fn unclaimed(committed: u64) -> StoredGroup {
    at(String::new(), 0, false, committed)
}

/// A record at `committed` with nothing pending (no nack, probe or suspect).
fn at(owner: String, generation: u64, active: bool, committed: u64) -> StoredGroup {
    StoredGroup {
        owner,
        generation,
        active,
        committed,
        retry: None,
        probe_through: None,
        probe: None,
        suspect: None,
        written_micros: Some(now_micros()),
    }
}

fn now_micros() -> u64 {
    crate::consumer::micros_since_epoch(SystemTime::now())
}
