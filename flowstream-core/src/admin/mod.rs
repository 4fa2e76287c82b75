//! [`Admin`]: creating, describing, resetting, trimming and deleting streams and groups,
//! beside [`Producer`](crate::Producer) and [`Consumer`](crate::Consumer).

mod delete;
mod describe;
mod reset;
pub(crate) mod retention;

use std::sync::Arc;
use std::time::Duration;

use crate::StartFrom;
use crate::driver::{Driver, DriverError, Expected};
use crate::error::{Error, NameKind};
use crate::names::{MAX_PARTITIONS, log_name, validate_name, validate_stream_to_read};
use crate::partition::{StoredStream, load_partitions, stream_key};

pub use delete::Deleted;
pub use describe::{GroupInfo, GroupPartition, PartitionInfo, StreamInfo};
pub(crate) use reset::check_place;
pub use retention::{Retention, RetentionTask};

/// Administration of streams.
///
/// ```
/// # async fn demo(driver: std::sync::Arc<dyn flowstream_core::Driver>) -> Result<(), flowstream_core::Error> {
/// use flowstream_core::{Admin, NewMessage, Producer};
///
/// let admin = Admin::new(driver.clone());
/// admin.create_stream("payments", 8).await?;        // before the first message
/// assert_eq!(admin.partitions("payments").await?, 8);
///
/// let producer = Producer::new(driver);
/// producer
///     .send(NewMessage::new("payments", "paid 12.50").with_key("customer-42"))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    driver: Arc<dyn Driver>,
}

impl Admin {
    /// An admin handle on `driver`'s streams.
    pub fn new(driver: Arc<dyn Driver>) -> Self {
        Admin { driver }
    }

    /// Creates `stream` with `partitions` partitions (1 to [`MAX_PARTITIONS`]). Do it before
    /// the stream is used: the count is fixed from then on.
    ///
    /// Idempotent: creating a stream again with the same count succeeds and changes nothing.
    /// [`Error::StreamExists`] if it exists with another count, or if it has messages already
    /// without partitions (an unpartitioned stream cannot become partitioned: its messages
    /// were not placed by key). [`Error::InvalidConfig`] for a count of 0 or over the limit.
    /// An unpartitioned stream (`partitions == 1`) needs no creation, as before: its first
    /// message creates it.
    ///
    /// # Cancel safety
    ///
    /// A dropped call has created the stream or not; calling it again settles which.
    pub async fn create_stream(&self, stream: &str, partitions: u32) -> Result<(), Error> {
        validate_name(NameKind::Stream, stream)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::InvalidConfig(format!(
                "a stream has 1 to {MAX_PARTITIONS} partitions, not {partitions}"
            )));
        }
        let existing = load_partitions(self.driver.as_ref(), stream).await?;
        if existing == partitions {
            return Ok(());
        }
        if existing != 1 || self.driver.head(stream).await? > 0 {
            return Err(Error::StreamExists {
                stream: stream.to_owned(),
                partitions: existing,
            });
        }
        let value = serde_json::to_value(StoredStream {
            partitions,
            partitioner: crate::partition::MURMUR2.to_owned(),
        })
        .map_err(|e| DriverError::failed("encoding the stream record").caused_by(e))?;
        match self
            .driver
            .put_record(&stream_key(stream), value, Expected::Absent, true)
            .await
        {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else: fine if with the same count.
            Err(DriverError::Conflict { .. }) => {
                let now = load_partitions(self.driver.as_ref(), stream).await?;
                if now == partitions {
                    Ok(())
                } else {
                    Err(Error::StreamExists {
                        stream: stream.to_owned(),
                        partitions: now,
                    })
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// How many partitions `stream` has: 1 for an unpartitioned stream, including one that
    /// does not exist yet.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn partitions(&self, stream: &str) -> Result<u32, Error> {
        validate_stream_to_read(stream)?;
        load_partitions(self.driver.as_ref(), stream).await
    }

    /// Moves the messages in `group`'s dead-letter stream back to `stream`, each to the
    /// partition it came from, in dead-letter order; returns how many it moved. The copies
    /// keep the dead letter's headers (where it came from, its offset there, why it failed)
    /// and get [`dead_letter_headers::REPLAYED_AT_MS`](crate::dead_letter_headers::REPLAYED_AT_MS).
    /// Every group of `stream` receives them as new messages, `group` included.
    ///
    /// Each chunk is appended together with a record of how far the dead letters were
    /// replayed (`replay/{stream}/{group}`), in one transaction, and then trimmed from the
    /// dead-letter stream: a dead letter is replayed once, even if the call is cut short, run
    /// again, or runs in two processes at once. [`Error::NoSuchPartition`] if the stream has
    /// fewer partitions now than when the message was dead-lettered (nothing of that chunk is
    /// moved).
    ///
    /// # Cancel safety
    ///
    /// A dropped call has moved a prefix of the dead letters; calling it again moves the rest.
    pub async fn replay_dead_letters(&self, stream: &str, group: &str) -> Result<u64, Error> {
        crate::replay::replay(self.driver.as_ref(), stream, group).await
    }

    /// Every stream in the store, by name, with each partition's extent: head, first offset
    /// still stored, message count, time of the last message. Dead-letter and retry streams
    /// are listed too (their names contain `~`).
    ///
    /// Costs one listing of the logs and of the stream records, then two single-message reads
    /// per partition.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn streams(&self) -> Result<Vec<StreamInfo>, Error> {
        describe::streams(self.driver.as_ref()).await
    }

    /// One stream, as [`streams`](Admin::streams) lists it; `None` if it does not exist (no
    /// message was ever appended to it and it was not created partitioned).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn stream(&self, stream: &str) -> Result<Option<StreamInfo>, Error> {
        validate_stream_to_read(stream)?;
        describe::stream(self.driver.as_ref(), stream).await
    }

    /// The consumer groups of `stream`, by name: in each partition they have claimed, the
    /// committed offset, the lag behind the head, the owner, whether it is active, the
    /// generation and when the record was last written; for a group over partitions, its
    /// members (as `kafka-consumer-groups --describe` shows them).
    ///
    /// ```
    /// # async fn demo(admin: flowstream_core::Admin) -> Result<(), flowstream_core::Error> {
    /// for group in admin.groups("orders").await? {
    ///     println!("{}: {} behind", group.name, group.lag());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>, Error> {
        validate_stream_to_read(stream)?;
        describe::groups(self.driver.as_ref(), stream).await
    }

    /// Moves `group`'s committed offset in every partition of `stream` to `to`, while its
    /// consumers run; returns the new committed offset of each partition, by number.
    ///
    /// The active consumer of each partition is fenced in the generation it held and goes on
    /// in the next one, from the new position: its commits of messages delivered before the
    /// reset fail with [`Error::Fenced`] and change nothing, and it delivers from the message
    /// after the new committed offset. It may move the group back (messages are delivered
    /// again) or forward (the messages passed are skipped by the group, as asked). A
    /// partition the group never claimed is set up at the position, for the first consumer
    /// to claim it.
    ///
    /// `to`: [`StartFrom::Earliest`] (before the first message still stored),
    /// [`StartFrom::Latest`] (the head), [`StartFrom::Offset`] (the next message delivered
    /// is that offset) or [`StartFrom::Time`] (the first message produced at or after it).
    /// [`Error::OffsetOutOfRange`] for an offset past the head + 1, [`Error::InvalidConfig`]
    /// for a time more than an hour ahead of this machine's clock; nothing is written then.
    ///
    /// # Cancel safety
    ///
    /// A dropped call has reset a prefix of the partitions; calling it again resets them
    /// all (once more: each reset is a new generation).
    pub async fn reset_group(
        &self,
        stream: &str,
        group: &str,
        to: StartFrom,
    ) -> Result<Vec<u64>, Error> {
        validate_name(NameKind::Group, group)?;
        validate_stream_to_read(stream)?;
        check_place(to)?;
        let partitions = load_partitions(self.driver.as_ref(), stream).await?;
        // Checked for every partition before any is written.
        for partition in 0..partitions {
            reset::check_offset(self.driver.as_ref(), stream, partition, to).await?;
        }
        let mut committed = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            committed.push(
                reset::reset_partition(self.driver.as_ref(), stream, group, partition, to).await?,
            );
        }
        Ok(committed)
    }

    /// As [`reset_group`](Admin::reset_group), for one partition of `stream` (0 for an
    /// unpartitioned stream); returns its new committed offset. [`Error::NoSuchPartition`]
    /// for a partition the stream does not have.
    ///
    /// # Cancel safety
    ///
    /// A dropped call has reset the partition or not.
    pub async fn reset_partition(
        &self,
        stream: &str,
        group: &str,
        partition: u32,
        to: StartFrom,
    ) -> Result<u64, Error> {
        validate_name(NameKind::Group, group)?;
        validate_stream_to_read(stream)?;
        check_place(to)?;
        self.check_partition(stream, partition).await?;
        reset::check_offset(self.driver.as_ref(), stream, partition, to).await?;
        reset::reset_partition(self.driver.as_ref(), stream, group, partition, to).await
    }

    /// Where `place` is in `partition` of `stream` (0 for an unpartitioned stream): the
    /// offset a reader positioned there reads next, whether or not it is stored yet (one past
    /// the head when nothing is at or after the place). The time search is the one
    /// [`StartFrom::Time`] describes (Kafka's `offsetsForTimes`). For tools that read a
    /// stream without a group, as `flowstream tail` does.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn offset_at(
        &self,
        stream: &str,
        partition: u32,
        place: StartFrom,
    ) -> Result<u64, Error> {
        validate_stream_to_read(stream)?;
        check_place(place)?;
        self.check_partition(stream, partition).await?;
        let log = log_name(stream, partition);
        let before = crate::seek::committed_for(self.driver.as_ref(), &log, place.place()).await?;
        Ok(before.saturating_add(1))
    }

    /// [`Error::NoSuchPartition`] unless `stream` has `partition`.
    async fn check_partition(&self, stream: &str, partition: u32) -> Result<(), Error> {
        let partitions = load_partitions(self.driver.as_ref(), stream).await?;
        if partition >= partitions {
            return Err(Error::NoSuchPartition {
                stream: stream.to_owned(),
                partition,
                partitions,
            });
        }
        Ok(())
    }

    /// Deletes the messages of `stream` up to and including offset `through` in each of its
    /// partitions (in chunks, so that no single storage call holds locks for long); returns
    /// how many went. Offsets are never reused: the head stays where it is. A group that had
    /// not read them skips them (guarantee 3 covers stored messages only).
    ///
    /// # Cancel safety
    ///
    /// A dropped call has trimmed a prefix; calling it again trims the rest.
    pub async fn trim(&self, stream: &str, through: u64) -> Result<u64, Error> {
        validate_stream_to_read(stream)?;
        let partitions = load_partitions(self.driver.as_ref(), stream).await?;
        let mut deleted = 0;
        for partition in 0..partitions {
            let log = log_name(stream, partition);
            deleted += retention::trim_in_chunks(self.driver.as_ref(), &log, through).await?;
        }
        Ok(deleted)
    }

    /// Deletes `stream` with its groups (their states, rosters and retry streams), its
    /// dead-letter replay positions, its retention policy and its partition count. A stream
    /// created again under the name starts at offset 1, with no group: its old groups can
    /// never meet it with their old committed offsets. Consumers still running on it stop
    /// with [`Error::GroupDeleted`]. Dead-letter streams are kept (they are ordinary streams;
    /// delete them by name).
    ///
    /// Stop the stream's producers first: a message sent while the delete runs may land in
    /// the old stream (and go with it) or start the new one. [`Error::NoSuchStream`] if there
    /// is nothing to delete.
    ///
    /// # Cancel safety
    ///
    /// A dropped call has done a prefix of the work; calling it again finishes it.
    pub async fn delete_stream(&self, stream: &str) -> Result<Deleted, Error> {
        validate_name(NameKind::Stream, stream)?;
        delete::delete_stream(self.driver.as_ref(), stream).await
    }

    /// Sets `stream`'s retention policy, kept in the store so that every process applies the
    /// same one. [`Error::InvalidConfig`] for a policy with no limit or a limit of zero.
    /// Setting it trims nothing: [`apply_retention`](Admin::apply_retention) or a
    /// [maintenance task](Admin::spawn_retention) does.
    ///
    /// ```
    /// # async fn demo(admin: flowstream_core::Admin) -> Result<(), flowstream_core::Error> {
    /// use flowstream_core::Retention;
    /// admin.set_retention("events", Retention::new().max_messages(100_000)).await?;
    /// let deleted = admin.apply_retention("events").await?;
    /// # let _ = deleted;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// A dropped call has set the policy or not.
    pub async fn set_retention(&self, stream: &str, policy: Retention) -> Result<(), Error> {
        validate_name(NameKind::Stream, stream)?;
        retention::set(self.driver.as_ref(), stream, policy).await
    }

    /// `stream`'s retention policy, if it has one.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn retention(&self, stream: &str) -> Result<Option<Retention>, Error> {
        validate_stream_to_read(stream)?;
        retention::get(self.driver.as_ref(), stream).await
    }

    /// Removes `stream`'s retention policy (it keeps everything from then on); whether it had
    /// one.
    ///
    /// # Cancel safety
    ///
    /// A dropped call has removed the policy or not.
    pub async fn clear_retention(&self, stream: &str) -> Result<bool, Error> {
        validate_stream_to_read(stream)?;
        retention::clear(self.driver.as_ref(), stream).await
    }

    /// Applies `stream`'s retention policy now, if it has one; returns how many messages it
    /// deleted. Trims in chunks; safe to run in several processes at once.
    ///
    /// # Cancel safety
    ///
    /// A dropped call has trimmed a prefix of what the policy deletes.
    pub async fn apply_retention(&self, stream: &str) -> Result<u64, Error> {
        validate_stream_to_read(stream)?;
        retention::apply(self.driver.as_ref(), stream).await
    }

    /// Applies every stream's retention policy now; returns how many messages went.
    ///
    /// # Cancel safety
    ///
    /// A dropped call has trimmed a prefix of what the policies delete.
    pub async fn apply_all_retention(&self) -> Result<u64, Error> {
        retention::apply_all(self.driver.as_ref()).await
    }

    /// Starts a task on the current tokio runtime that applies every stream's retention
    /// policy now and then every `every`, until the returned handle is dropped. Any number of
    /// processes may run one: they trim the same prefixes. Failures are logged and tried
    /// again at the next period. [`Error::NoRuntime`] outside a runtime,
    /// [`Error::InvalidConfig`] for a zero period.
    pub fn spawn_retention(&self, every: Duration) -> Result<RetentionTask, Error> {
        retention::spawn(Arc::clone(&self.driver), every)
    }
}
