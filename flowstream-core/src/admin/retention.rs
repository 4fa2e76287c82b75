//! Retention: a per-stream policy kept in the store, applied by [`Admin::apply_retention`]
//! (one stream, once), [`Admin::apply_all_retention`] (every stream with a policy, once) or a
//! maintenance task ([`Admin::spawn_retention`]) that does the latter on a period.
//!
//! Applying a policy only trims: it deletes the oldest messages of each partition up to an
//! offset, in chunks of [`TRIM_CHUNK`](super::delete::TRIM_CHUNK) messages, each its own
//! storage call. A trim deletes offsets up to a bound and never anything above it, so any
//! number of processes may apply the same policy at once: they delete the same prefix, and
//! whoever comes second finds less to do.
//!
//! [`Admin::apply_retention`]: super::Admin::apply_retention
//! [`Admin::apply_all_retention`]: super::Admin::apply_all_retention
//! [`Admin::spawn_retention`]: super::Admin::spawn_retention

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::consumer::decode_group;
use crate::driver::{Driver, DriverError, Expected};
use crate::error::Error;
use crate::names::log_name;
use crate::partition::load_partitions;
use crate::seek::first_at_or_after;

use super::delete::TRIM_CHUNK;

/// What every retention record's key starts with.
const POLICY_PREFIX: &str = "retention/";

/// Record key of a stream's retention policy.
pub(crate) fn policy_key(stream: &str) -> String {
    format!("{POLICY_PREFIX}{stream}")
}

/// How long a stream keeps its messages; set with
/// [`Admin::set_retention`](super::Admin::set_retention).
///
/// Each limit applies to every partition on its own: with `max_messages(1000)`, each partition
/// keeps its last 1,000. A message goes once it breaks either limit, unless
/// [`keep_unconsumed`](Retention::keep_unconsumed) holds it back.
///
/// ```
/// use std::time::Duration;
/// use flowstream_core::Retention;
/// // Keep a week, at most a million messages per partition, and never what a group still
/// // has to read.
/// let policy = Retention::new()
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .max_messages(1_000_000)
///     .keep_unconsumed(true);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Retention {
    /// Keep at most this many messages per partition (the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
    /// Drop messages produced longer ago than this (by
    /// [`produced_at`](crate::Message::produced_at), found as [`StartFrom::Time`](crate::StartFrom::Time)
    /// finds a time).
    #[serde(
        default,
        with = "millis",
        rename = "max_age_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// Never trim past the committed offset of the slowest group of the stream (a
    /// work-queue stream): a message waits for every group, whatever the limits say. A group
    /// known on the stream (by a record of any partition, or by its members' roster) that
    /// has not claimed a partition yet holds all of that partition.
    #[serde(default)]
    pub keep_unconsumed: bool,
}

impl Retention {
    /// A policy with no limit (it trims nothing until one is set).
    pub fn new() -> Self {
        Retention::default()
    }

    /// Keeps at most `messages` messages per partition.
    pub fn max_messages(mut self, messages: u64) -> Self {
        self.max_messages = Some(messages);
        self
    }

    /// Drops messages produced more than `age` ago.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Whether to keep what a group that has claimed the partition has not committed yet.
    pub fn keep_unconsumed(mut self, keep: bool) -> Self {
        self.keep_unconsumed = keep;
        self
    }

    /// Refuses a policy that would delete every message as it arrives, or keeps nothing to
    /// tell it from none.
    fn check(&self) -> Result<(), Error> {
        if self.max_messages == Some(0) {
            return Err(Error::InvalidConfig(
                "a retention of 0 messages would delete every message as it arrives; to \
                 delete a stream, use Admin::delete_stream"
                    .to_owned(),
            ));
        }
        if self.max_age.is_some_and(|age| age.is_zero()) {
            return Err(Error::InvalidConfig(
                "a retention of 0 s would delete every message as it arrives; to delete a \
                 stream, use Admin::delete_stream"
                    .to_owned(),
            ));
        }
        if self.max_messages.is_none() && self.max_age.is_none() {
            return Err(Error::InvalidConfig(
                "a retention policy needs max_messages or max_age (to keep everything, \
                 clear the policy)"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(age) => {
                serializer.serialize_u64(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}

pub(super) async fn set(driver: &dyn Driver, stream: &str, policy: Retention) -> Result<(), Error> {
    policy.check()?;
    let key = policy_key(stream);
    let value = serde_json::to_value(policy)
        .map_err(|e| DriverError::failed("encoding a retention policy").caused_by(e))?;
    for _ in 0..MAX_ATTEMPTS {
        let expected = match driver.get_record(&key).await? {
            Some(record) => Expected::Revision(record.revision),
            None => Expected::Absent,
        };
        match driver
            .put_record(&key, value.clone(), expected, false)
            .await
        {
            Ok(_) => return Ok(()),
            Err(DriverError::Conflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(busy(&key))
}

pub(super) async fn get(driver: &dyn Driver, stream: &str) -> Result<Option<Retention>, Error> {
    let key = policy_key(stream);
    driver
        .get_record(&key)
        .await?
        .map(|record| decode(&key, record.value))
        .transpose()
}

pub(super) async fn clear(driver: &dyn Driver, stream: &str) -> Result<bool, Error> {
    let key = policy_key(stream);
    for _ in 0..MAX_ATTEMPTS {
        let Some(record) = driver.get_record(&key).await? else {
            return Ok(false);
        };
        match driver.delete_record(&key, record.revision, false).await {
            Ok(()) => return Ok(true),
            Err(DriverError::Conflict { current: None, .. }) => return Ok(false),
            Err(DriverError::Conflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(busy(&key))
}

/// Every stream that has a policy, with it.
pub(super) async fn policies(driver: &dyn Driver) -> Result<Vec<(String, Retention)>, Error> {
    driver
        .records(POLICY_PREFIX)
        .await?
        .into_iter()
        .map(|(key, record)| {
            let policy = decode(&key, record.value)?;
            Ok((key[POLICY_PREFIX.len()..].to_owned(), policy))
        })
        .collect()
}

/// Applies `stream`'s policy, if it has one; returns how many messages it deleted.
pub(super) async fn apply(driver: &dyn Driver, stream: &str) -> Result<u64, Error> {
    let Some(policy) = get(driver, stream).await? else {
        return Ok(0);
    };
    apply_policy(driver, stream, policy).await
}

pub(super) async fn apply_policy(
    driver: &dyn Driver,
    stream: &str,
    policy: Retention,
) -> Result<u64, Error> {
    let partitions = load_partitions(driver, stream).await?;
    let slowest = if policy.keep_unconsumed {
        slowest_committed(driver, stream, partitions).await?
    } else {
        Vec::new()
    };
    let now = SystemTime::now();
    let mut deleted = 0;
    for partition in 0..partitions {
        let log = log_name(stream, partition);
        let head = driver.head(&log).await?;
        let mut through = 0;
        if let Some(keep) = policy.max_messages {
            through = through.max(head.saturating_sub(keep));
        }
        if let Some(age) = policy.max_age {
            let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
            let older = match first_at_or_after(driver, &log, cutoff).await? {
                Some(first_kept) => first_kept - 1,
                None => head,
            };
            through = through.max(older);
        }
        if let Some(Some(slowest)) = slowest.get(partition as usize) {
            through = through.min(*slowest);
        }
        deleted += trim_in_chunks(driver, &log, through).await?;
    }
    if deleted > 0 {
        tracing::info!(stream, deleted, "retention applied");
    }
    Ok(deleted)
}

/// Trims `log` up to `through` in chunks, from the first message still stored; returns how
/// many messages went.
pub(super) async fn trim_in_chunks(
    driver: &dyn Driver,
    log: &str,
    through: u64,
) -> Result<u64, Error> {
    let Some(first) = driver.read(log, 0, 1).await?.first().map(|m| m.offset()) else {
        return Ok(0);
    };
    let mut deleted = 0;
    let mut done = first - 1;
    while done < through {
        done = done.saturating_add(TRIM_CHUNK).min(through);
        deleted += driver.trim(log, done).await?;
    }
    Ok(deleted)
}

/// For each partition of `stream`, the lowest committed offset of the stream's groups: `None`
/// when the stream has no group, 0 where a group has no record yet (it has not claimed the
/// partition, and may start at its first message).
async fn slowest_committed(
    driver: &dyn Driver,
    stream: &str,
    partitions: u32,
) -> Result<Vec<Option<u64>>, Error> {
    let mut groups = BTreeSet::new();
    let mut committed: BTreeMap<(u32, String), u64> = BTreeMap::new();
    let prefix = format!("group/{stream}/");
    for (key, record) in driver.records(&prefix).await? {
        // `group/{stream}/{group}` for partition 0, `group/{stream}/{p}/{group}` for the others.
        let (log, group) = match key[prefix.len()..].split_once('/') {
            Some((p, group)) => (p.parse().ok(), group),
            None => (Some(0), &key[prefix.len()..]),
        };
        let Some(partition) = log else { continue };
        let (state, _) = decode_group(&key, record)?;
        groups.insert(group.to_owned());
        committed.insert((partition, group.to_owned()), state.committed);
    }
    let rosters = format!("roster/{stream}/");
    for (key, _) in driver.records(&rosters).await? {
        groups.insert(key[rosters.len()..].to_owned());
    }
    Ok((0..partitions)
        .map(|partition| {
            groups
                .iter()
                .map(|group| {
                    committed
                        .get(&(partition, group.clone()))
                        .copied()
                        .unwrap_or(0)
                })
                .min()
        })
        .collect())
}

/// A maintenance task applying every stream's policy on a period; see
/// [`Admin::spawn_retention`](super::Admin::spawn_retention). Dropping it stops the task.
#[derive(Debug)]
pub struct RetentionTask {
    task: tokio::task::JoinHandle<()>,
}

impl RetentionTask {
    /// Stops the task (at its next await point; a trim in flight finishes or not, which is
    /// harmless: the next run trims the rest).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn spawn(driver: Arc<dyn Driver>, every: Duration) -> Result<RetentionTask, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    if every.is_zero() {
        return Err(Error::InvalidConfig(
            "the retention period must be above zero".to_owned(),
        ));
    }
    let task = runtime.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = apply_all(driver.as_ref()).await {
                tracing::warn!(
                    error = %crate::error::Chain(&error),
                    "applying retention failed; trying again at the next period"
                );
            }
        }
    });
    Ok(RetentionTask { task })
}

/// Applies every stream's policy; returns how many messages went. One stream failing does not
/// keep the others from being trimmed: its error is returned after the rest were done.
pub(super) async fn apply_all(driver: &dyn Driver) -> Result<u64, Error> {
    let mut deleted = 0;
    let mut failed = None;
    for (stream, policy) in policies(driver).await? {
        match apply_policy(driver, &stream, policy).await {
            Ok(count) => deleted += count,
            Err(error) => {
                tracing::warn!(
                    stream,
                    error = %crate::error::Chain(&error),
                    "applying retention failed"
                );
                failed.get_or_insert(error);
            }
        }
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(deleted),
    }
}

const MAX_ATTEMPTS: usize = 20;

fn busy(key: &str) -> Error {
    Error::Storage(DriverError::unavailable(format!(
        "writing record {key:?}: it kept changing ({MAX_ATTEMPTS} attempts); try again"
    )))
}

fn decode(key: &str, value: serde_json::Value) -> Result<Retention, Error> {
    serde_json::from_value(value).map_err(|e| {
        Error::Storage(
            DriverError::failed(format!("record {key:?} is not a retention policy")).caused_by(e),
        )
    })
}
