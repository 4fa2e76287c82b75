//! [`Admin`]: creating and describing streams, beside [`Producer`](crate::Producer) and
//! [`Consumer`](crate::Consumer).

use std::sync::Arc;

use crate::driver::{Driver, DriverError, Expected};
use crate::error::{Error, NameKind};
use crate::names::{MAX_PARTITIONS, validate_name, validate_stream_to_read};
use crate::partition::{StoredStream, load_partitions, stream_key};

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
}
