//! Looking inside a store: its streams with their extent, and a stream's groups with their
//! lag ([`Admin::streams`](super::Admin::streams), [`Admin::groups`](super::Admin::groups)).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::consumer::{StoredGroup, StoredRoster, decode_group, roster_key};
use crate::driver::{Driver, DriverError};
use crate::error::Error;
use crate::names::{log_name, split_log_name};
use crate::partition::{StoredStream, load_partitions};

/// A stream as [`Admin::streams`](super::Admin::streams) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// Each partition (one for an unpartitioned stream), by number.
    pub partitions: Vec<PartitionInfo>,
}

impl StreamInfo {
    /// Messages still stored, over every partition.
    pub fn messages(&self) -> u64 {
        self.partitions.iter().map(|p| p.messages).sum()
    }

    /// When its last message was produced (the latest over its partitions), if it has one.
    pub fn last_produced(&self) -> Option<SystemTime> {
        self.partitions.iter().filter_map(|p| p.last_produced).max()
    }
}

/// One partition of a stream (the whole stream, if unpartitioned).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionInfo {
    /// Its number (0 for an unpartitioned stream).
    pub partition: u32,
    /// The offset of its last message ever appended: 0 if none was.
    pub head: u64,
    /// The first offset still stored, `None` when nothing is (never appended to, or trimmed
    /// to the head).
    pub first: Option<u64>,
    /// How many messages are still stored (offsets are dense and trims take the oldest, so
    /// `head - first + 1`).
    pub messages: u64,
    /// When its last message was produced, if it is still stored.
    pub last_produced: Option<SystemTime>,
}

/// A consumer group as [`Admin::groups`](super::Admin::groups) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Its state in each partition it has claimed, by number (one entry for an
    /// unpartitioned stream). A partition the group has never claimed is not listed: it
    /// starts where the consumers' [`StartFrom`](crate::StartFrom) says.
    pub partitions: Vec<GroupPartition>,
    /// For a group over partitions, its members (the ids its roster lists, admitted ones
    /// first, then those waiting to be); empty otherwise.
    pub members: Vec<String>,
}

impl GroupInfo {
    /// Messages appended after the group's committed offsets, over every partition.
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// A group's state in one partition (the whole stream, if unpartitioned).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupPartition {
    /// The partition (0 for an unpartitioned stream).
    pub partition: u32,
    /// The committed offset: the group has processed everything up to it.
    pub committed: u64,
    /// The partition's head when this was read.
    pub head: u64,
    /// `head - committed`: messages appended after the committed offset (as Kafka counts
    /// lag; messages trimmed before the group read them still count until it moves past).
    pub lag: u64,
    /// The consumer that owns it ([`Consumer::id`](crate::Consumer::id)); empty after a
    /// reset of a partition nobody had claimed.
    pub owner: String,
    /// Whether the owner holds it (false once it shut down, until another takes over).
    pub active: bool,
    /// Grows at every change of owner, and at every reset.
    pub generation: u64,
    /// When the group record was last written (a commit, a heartbeat, a takeover, a reset),
    /// on the writer's clock. `None` for records written before this was kept.
    pub last_write: Option<SystemTime>,
}

/// Every stream of the store: each log that exists, and each partitioned stream created
/// before any message reached it.
pub(super) async fn streams(driver: &dyn Driver) -> Result<Vec<StreamInfo>, Error> {
    let mut streams: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    for (log, head) in driver.logs().await? {
        let (stream, partition) = split_log_name(&log);
        streams
            .entry(stream.to_owned())
            .or_default()
            .insert(partition, head);
    }
    for (key, record) in driver.records(crate::partition::STREAM_KEY_PREFIX).await? {
        let stream = &key[crate::partition::STREAM_KEY_PREFIX.len()..];
        let Ok(stored) = serde_json::from_value::<StoredStream>(record.value) else {
            continue;
        };
        let partitions = streams.entry(stream.to_owned()).or_default();
        for partition in 0..stored.partitions {
            partitions.entry(partition).or_insert(0);
        }
    }
    let mut out = Vec::with_capacity(streams.len());
    for (name, heads) in streams {
        let mut partitions = Vec::with_capacity(heads.len());
        for (partition, head) in heads {
            partitions
                .push(partition_info(driver, &log_name(&name, partition), partition, head).await?);
        }
        out.push(StreamInfo { name, partitions });
    }
    Ok(out)
}

/// One stream, if it exists (has a log, or was created partitioned).
pub(super) async fn stream(driver: &dyn Driver, name: &str) -> Result<Option<StreamInfo>, Error> {
    let count = load_partitions(driver, name).await?;
    let mut partitions = Vec::with_capacity(count as usize);
    let mut exists = count > 1;
    for partition in 0..count {
        let log = log_name(name, partition);
        let head = driver.head(&log).await?;
        exists |= head > 0;
        partitions.push(partition_info(driver, &log, partition, head).await?);
    }
    Ok(exists.then(|| StreamInfo {
        name: name.to_owned(),
        partitions,
    }))
}

async fn partition_info(
    driver: &dyn Driver,
    log: &str,
    partition: u32,
    head: u64,
) -> Result<PartitionInfo, DriverError> {
    let first = driver.read(log, 0, 1).await?.first().map(|m| m.offset());
    let last_produced = match first {
        Some(_) => driver
            .read(log, head.saturating_sub(1), 1)
            .await?
            .first()
            .map(|m| m.produced_at()),
        None => None,
    };
    Ok(PartitionInfo {
        partition,
        head,
        first,
        messages: first.map_or(0, |first| head.saturating_sub(first) + 1),
        last_produced,
    })
}

/// The groups of `stream`, by name.
pub(super) async fn groups(driver: &dyn Driver, stream: &str) -> Result<Vec<GroupInfo>, Error> {
    let prefix = format!("group/{stream}/");
    let mut groups: BTreeMap<String, Vec<GroupPartition>> = BTreeMap::new();
    let mut heads: BTreeMap<u32, u64> = BTreeMap::new();
    for (key, record) in driver.records(&prefix).await? {
        // `group/{stream}/{group}`, or `group/{stream}/{partition}/{group}`.
        let rest = &key[prefix.len()..];
        let (partition, group) = match rest.split_once('/') {
            Some((partition, group)) => match partition.parse::<u32>() {
                Ok(partition) => (partition, group),
                Err(_) => continue,
            },
            None => (0, rest),
        };
        let (state, _) = decode_group(&key, record)?;
        let head = match heads.get(&partition) {
            Some(&head) => head,
            None => {
                let head = driver.head(&log_name(stream, partition)).await?;
                heads.insert(partition, head);
                head
            }
        };
        let described = group_partition(partition, &state, head);
        crate::metrics::lag(stream, group, partition, described.lag);
        groups.entry(group.to_owned()).or_default().push(described);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (name, mut partitions) in groups {
        partitions.sort_by_key(|p| p.partition);
        let members = match driver.get_record(&roster_key(stream, &name)).await? {
            Some(record) => match serde_json::from_value::<StoredRoster>(record.value) {
                Ok(roster) => roster
                    .members
                    .into_keys()
                    .chain(roster.joining.into_keys())
                    .collect(),
                Err(_) => Vec::new(),
            },
            None => Vec::new(),
        };
        out.push(GroupInfo {
            name,
            partitions,
            members,
        });
    }
    Ok(out)
}

fn group_partition(partition: u32, state: &StoredGroup, head: u64) -> GroupPartition {
    GroupPartition {
        partition,
        committed: state.committed,
        head,
        lag: head.saturating_sub(state.committed),
        owner: state.owner.clone(),
        active: state.active,
        generation: state.generation,
        last_write: state
            .written_micros
            .map(|micros| UNIX_EPOCH + Duration::from_micros(micros)),
    }
}
