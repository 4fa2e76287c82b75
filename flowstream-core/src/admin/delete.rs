//! Deleting a stream with everything flowstream keeps about it
//! ([`Admin::delete_stream`](super::Admin::delete_stream)).
//!
//! Order matters, because a stream created again under the name starts at offset 1:
//! - the group records go first (each by compare-and-swap, notified), so a running consumer
//!   of the stream learns its group is gone and stops ([`Error::GroupDeleted`]) before
//!   anything else changes, and never meets a new stream with an old committed offset;
//! - then the rosters, replay positions and retention policy;
//! - then the logs (every partition, and the groups' retry streams), trimmed in chunks and
//!   deleted whole;
//! - then the records once more, for any a consumer starting meanwhile created;
//! - the stream record (its partition count) last, so that everything above still knows
//!   which logs are the stream's.
//!
//! A call cut short leaves a prefix of this done; calling it again finishes it. Dead-letter
//! streams are ordinary streams, kept with what they hold: delete them by name.

use crate::driver::{Driver, DriverError};
use crate::error::Error;
use crate::names::{log_name, park_tier_of};
use crate::partition::{load_partitions, stream_key};

/// Messages deleted per trim while a log is deleted: bounds each statement's locks and WAL.
pub(crate) const TRIM_CHUNK: u64 = 10_000;

/// Attempts at deleting one record that keeps changing.
const MAX_ATTEMPTS: usize = 20;

/// What a delete removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deleted {
    /// Logs deleted: the stream's partitions and its groups' retry streams.
    pub logs: u64,
    /// Messages deleted from them.
    pub messages: u64,
    /// Records deleted: group states, rosters, replay positions, the retention policy and
    /// the stream record.
    pub records: u64,
}

pub(super) async fn delete_stream(driver: &dyn Driver, stream: &str) -> Result<Deleted, Error> {
    let partitions = load_partitions(driver, stream).await?;
    let mut logs: Vec<String> = (0..partitions).map(|p| log_name(stream, p)).collect();
    // The groups' retry streams (`{stream}~{group}~retry-…`): part of their groups' state.
    logs.extend(
        driver
            .logs()
            .await?
            .into_iter()
            .map(|(log, _)| log)
            .filter(|log| is_retry_stream_of(log, stream)),
    );
    let mut deleted = Deleted::default();
    let mut exists = partitions > 1;
    for log in &logs {
        exists |= driver.head(log).await? > 0;
    }
    deleted.records += delete_records(driver, stream).await?;
    if !exists && deleted.records == 0 {
        return Err(Error::NoSuchStream {
            stream: stream.to_owned(),
        });
    }
    for log in &logs {
        let head = driver.head(log).await?;
        deleted.messages += super::retention::trim_in_chunks(driver, log, head).await?;
        if driver.delete_log(log).await? {
            deleted.logs += 1;
        }
    }
    deleted.records += delete_records(driver, stream).await?;
    deleted.records += delete_record(driver, &stream_key(stream)).await?;
    tracing::info!(
        stream,
        logs = deleted.logs,
        messages = deleted.messages,
        records = deleted.records,
        "stream deleted"
    );
    Ok(deleted)
}

/// Deletes the records of `stream`'s groups (its partitions' and its retry streams'),
/// rosters, replay positions and retention policy; returns how many.
async fn delete_records(driver: &dyn Driver, stream: &str) -> Result<u64, Error> {
    let mut count = 0;
    let retry_groups = format!("group/{stream}~");
    let prefixes = [
        format!("group/{stream}/"),
        retry_groups.clone(),
        format!("roster/{stream}/"),
        format!("replay/{stream}/"),
    ];
    for prefix in &prefixes {
        for (key, _) in driver.records(prefix).await? {
            // Only retry streams' groups under `group/{stream}~`: a dead-letter stream's own
            // groups stay with it.
            if prefix == &retry_groups {
                let log = key
                    .strip_prefix("group/")
                    .and_then(|rest| rest.split('/').next())
                    .unwrap_or_default();
                if !is_retry_stream_of(log, stream) {
                    continue;
                }
            }
            count += delete_record(driver, &key).await?;
        }
    }
    count += delete_record(driver, &crate::admin::retention::policy_key(stream)).await?;
    Ok(count)
}

/// Deletes record `key` whatever its revision; 1 if it existed, 0 if not.
async fn delete_record(driver: &dyn Driver, key: &str) -> Result<u64, Error> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(record) = driver.get_record(key).await? else {
            return Ok(0);
        };
        match driver.delete_record(key, record.revision, true).await {
            Ok(()) => return Ok(1),
            Err(DriverError::Conflict { current: None, .. }) => return Ok(0),
            Err(DriverError::Conflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(Error::Storage(DriverError::unavailable(format!(
        "deleting record {key:?}: it kept changing ({MAX_ATTEMPTS} attempts); try again"
    ))))
}

/// Whether `log` is a retry stream of one of `stream`'s own groups (`{stream}~{group}~retry-…`),
/// not one of a group reading a stream derived from it.
fn is_retry_stream_of(log: &str, stream: &str) -> bool {
    log.strip_prefix(stream)
        .and_then(|rest| rest.strip_prefix('~'))
        .is_some_and(|rest| rest.matches('~').count() == 1)
        && park_tier_of(log).is_some()
}

#[cfg(test)]
mod tests {
    use super::is_retry_stream_of;

    #[test]
    fn only_the_streams_own_groups_retry_streams_go_with_it() {
        assert!(is_retry_stream_of("orders~billing~retry-1s", "orders"));
        assert!(is_retry_stream_of("orders~billing~retry-1h", "orders"));
        assert!(!is_retry_stream_of("orders~billing~dlq", "orders"));
        assert!(!is_retry_stream_of(
            "orders~billing~dlq~ops~retry-1s",
            "orders"
        ));
        assert!(!is_retry_stream_of("orders2~billing~retry-1s", "orders"));
        assert!(!is_retry_stream_of("orders", "orders"));
    }
}
