//! Appending messages to streams: validation here, sharing transactions in [`group_commit`].

mod group_commit;

use std::collections::BTreeSet;
use std::sync::Arc;

use group_commit::GroupCommit;
use tracing::Instrument;

use crate::driver::{Driver, DriverError};
use crate::error::{Chain, Error, NameKind, printable};
use crate::message::NewMessage;
use crate::names::validate_name;
use crate::partition::routing::Router;

/// Default limit on a message body: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;

/// Appends messages to streams. Cheap to clone; share one per driver.
///
/// Every message is validated (stream name, body size, header names) before anything is
/// stored, so a rejected call stores nothing. A message the driver cannot store (each driver
/// documents what it refuses) fails with [`Error::Refused`], also before anything is stored.
///
/// Concurrent sends through one producer (and its clones) are *group-committed*: while one
/// append is in flight, the sends that arrive queue up and go to storage together in the next
/// transaction. There is no timer, so a lone send is appended at once. Each call still gets its
/// own offsets and its own all-or-nothing result.
///
/// ```
/// # async fn demo(driver: std::sync::Arc<dyn flowstream_core::Driver>) -> Result<(), flowstream_core::Error> {
/// use flowstream_core::{NewMessage, Producer};
/// let producer = Producer::new(driver);
/// let offset = producer.send(NewMessage::new("orders", "order 1")).await?;
/// let offsets = producer
///     .send_batch([NewMessage::new("orders", "order 2"), NewMessage::new("audit", "order 2 placed")])
///     .await?;
/// assert_eq!(offsets[0], offset + 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    driver: Arc<dyn Driver>,
    max_body_size: usize,
    group_commit: Arc<GroupCommit>,
    router: Arc<Router>,
}

impl Producer {
    /// A producer with the default body limit ([`DEFAULT_MAX_BODY_SIZE`]).
    pub fn new(driver: Arc<dyn Driver>) -> Self {
        Producer {
            driver,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            group_commit: Arc::default(),
            router: Arc::default(),
        }
    }

    /// Sets the largest accepted body (with its key, if it has one), in bytes.
    pub fn with_max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Appends one message and returns its offset (in its partition, on a partitioned
    /// stream). Once this returns `Ok` the message is durable.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes does not withdraw the message: it may still be
    /// stored, as with any write whose answer never arrived. It is stored whole or not at all.
    pub async fn send(&self, message: NewMessage) -> Result<u64, Error> {
        let offsets = self.send_batch([message]).await?;
        offsets.first().copied().ok_or_else(|| {
            Error::Storage(DriverError::failed(
                "the driver returned no offset for an appended message",
            ))
        })
    }

    /// Appends messages, possibly to several streams and partitions, all or nothing. Messages
    /// to one partition get consecutive offsets in the order given; the result has one offset
    /// per message, in input order.
    ///
    /// A batch is never split, and never interleaved with another send's messages to the same
    /// partition. On a partitioned stream each message goes to the partition it names, else
    /// to its key's, else to the next in turn; the first send to a stream reads its partition
    /// count (one record read per stream for the producer's life). [`Error::NoSuchPartition`]
    /// for a partition the stream lacks; [`Error::NoRuntime`] if called outside a tokio
    /// runtime.
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Producer::send): a dropped call may still be stored, all or nothing.
    pub async fn send_batch(
        &self,
        messages: impl IntoIterator<Item = NewMessage>,
    ) -> Result<Vec<u64>, Error> {
        let mut messages: Vec<NewMessage> = messages.into_iter().collect();
        self.validate(&messages)?;
        let count = messages.len();
        // Batches usually go to one stream: skip runs of the same name before sorting.
        let mut streams: BTreeSet<&str> = BTreeSet::new();
        let mut last = None;
        for stream in messages.iter().map(NewMessage::stream) {
            if last != Some(stream) {
                streams.insert(stream);
                last = Some(stream);
            }
        }
        let span = tracing::debug_span!("flowstream.produce", count, streams = ?streams);
        // Counted by stream before routing renames partitions' messages to their logs.
        let mut runs: Vec<(String, u64, u64)> = Vec::new();
        for message in &messages {
            let bytes = message.body().len() as u64;
            match runs.last_mut() {
                Some((stream, count, size)) if stream == message.stream() => {
                    *count += 1;
                    *size += bytes;
                }
                _ => runs.push((message.stream().to_owned(), 1, bytes)),
            }
        }
        self.router
            .route(self.driver.as_ref(), &mut messages)
            .instrument(span.clone())
            .await?;
        let offsets = self
            .group_commit
            .append(&self.driver, messages)
            .instrument(span.clone())
            .await
            .inspect_err(|error| {
                tracing::warn!(parent: &span, error = %Chain(error), "produce failed");
            })?;
        crate::metrics::produced(&runs);
        tracing::debug!(parent: &span, first = offsets.first(), "produced");
        Ok(offsets)
    }

    /// Waits until consumers in other processes have been told of every message this
    /// producer's driver has stored so far. Call it before a process that sends exits (a
    /// command-line tool, a job, a shutdown): on PostgreSQL the wake-up for an append leaves
    /// after the append commits, and a process that exits first takes it along, so consumers
    /// elsewhere would find the messages only at their next poll (`fallback_poll`, 30 s by
    /// default). On PostgreSQL it covers messages staged through the outbox too
    /// (`PgDriver::send_staged`, and `PgDriver::send_in` in transactions that committed
    /// before the call): they are appended to their streams first. The messages themselves
    /// are durable either way. Returns at once on redb.
    ///
    /// [`Error::Storage`] if the wake-ups could not be sent, or the staged messages appended,
    /// within the driver's operation timeout (the messages are still stored).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping it loses nothing stored (a relay round it ran on PostgreSQL
    /// commits whole or not at all; its wake-up may then be late).
    pub async fn flush(&self) -> Result<(), Error> {
        Ok(self.driver.flush_wakeups().await?)
    }

    /// Checks `messages` and routes each to its log (the partition of a partitioned stream) as
    /// [`send_batch`](Producer::send_batch) does, without appending them: what a driver's
    /// send inside the application's own transaction takes (`PgDriver::send_in` on
    /// PostgreSQL, `AppTx::send` on redb), so that they are appended if and only if that
    /// transaction commits.
    ///
    /// Errors are those of `send_batch` that come before storage is written.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it writes nothing (it may read a stream's partition count).
    pub async fn prepare(
        &self,
        messages: impl IntoIterator<Item = NewMessage>,
    ) -> Result<PreparedSend, Error> {
        let mut messages: Vec<NewMessage> = messages.into_iter().collect();
        self.validate(&messages)?;
        self.router
            .route(self.driver.as_ref(), &mut messages)
            .await?;
        Ok(PreparedSend { messages })
    }

    fn validate(&self, messages: &[NewMessage]) -> Result<(), Error> {
        if messages.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let mut checked = None;
        for message in messages {
            // A run of messages to one stream needs its name checked once.
            if checked != Some(message.stream()) {
                validate_name(NameKind::Stream, message.stream())?;
                checked = Some(message.stream());
            }
            // The key counts toward the limit, as in Kafka's `message.max.bytes`.
            let size = message.body().len() + message.key().map_or(0, <[u8]>::len);
            if size > self.max_body_size {
                return Err(Error::BodyTooLarge {
                    stream: message.stream().to_owned(),
                    size,
                    limit: self.max_body_size,
                });
            }
            // What characters a store can hold is the driver's to say (it refuses the rest);
            // a header without a name is meaningless on any store.
            if message.headers().contains_key("") {
                return Err(Error::InvalidHeader {
                    name: printable(""),
                    reason: "header names must not be empty",
                });
            }
        }
        Ok(())
    }
}

/// Messages checked and routed by [`Producer::prepare`], for a driver to store inside the
/// application's own transaction. Each message names the log it goes to (a stream, or a
/// partition's log).
#[derive(Debug, Clone)]
#[must_use = "hand it to a driver's transactional send"]
pub struct PreparedSend {
    messages: Vec<NewMessage>,
}

impl PreparedSend {
    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether it holds none (never, when made by [`Producer::prepare`]).
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The routed messages, for a driver to store (see [`Driver::append`] on log names).
    pub fn into_messages(self) -> Vec<NewMessage> {
        self.messages
    }
}
