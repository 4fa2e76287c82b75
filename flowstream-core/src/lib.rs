//! Kafka-like streams on the database you already run.
//!
//! Producers append messages to named streams; consumer groups read them at least once, with
//! one active consumer per group and hot standbys that take over when it dies. No broker, no
//! consensus protocol: the group protocol is a compare-and-swap on one record per group.
//!
//! This crate is the engine. Storage comes from a [`Driver`]: `flowstream-redb` (an embedded
//! file) or `flowstream-postgres`. Applications use what the crate root exports; people who
//! put flowstream on another store implement [`driver::Driver`] and run the conformance suite
//! (feature `conformance`) against it.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flowstream_core::{Consumer, Driver, NewMessage, Producer, Wake};
//!
//! # async fn demo(driver: Arc<dyn Driver>) -> Result<(), flowstream_core::Error> {
//! let producer = Producer::new(driver.clone());
//! producer.send(NewMessage::new("orders", "order 1")).await?;
//!
//! let mut consumer = Consumer::builder(driver, "orders", "billing").build().await?;
//! while let Some(msg) = consumer.next().await? {
//!     println!("{} {:?}", msg.offset(), msg.body_str());
//!     consumer.commit(msg.offset()).await?;
//! }
//! assert_eq!(consumer.wait(Duration::from_millis(10)).await?, Wake::TimedOut);
//! consumer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! 1. One `send` is all-or-nothing; its messages to one stream (one partition of a
//!    [partitioned](Admin::create_stream) stream) get consecutive offsets.
//! 2. Offsets are dense and visibility-ordered: no reader skips a message that commits later.
//! 3. At least once: every stored message reaches every group until it commits past it (or
//!    [dead-letters](Consumer::dead_letter) it, in one transaction with the copy); delivery
//!    resumes right after the group's committed offset. Trimming is the exception: messages
//!    deleted by [`Driver::trim`] before a group read them are skipped. A
//!    [nack](Consumer::nack) keeps order: nothing after the message in its partition is
//!    delivered before it is again (unless the group
//!    [parks its retries](ConsumerBuilder::park_retries): then the message is committed past
//!    in one transaction with its copy in a retry stream, which the group reads too).
//! 4. One active consumer per group (per partition of a partitioned stream, whose group
//!    spreads the partitions over its members); standbys take over on graceful shutdown at
//!    once, and after `takeover_after` of pending messages with no sign of life from the owner.
//! 5. The active consumer heartbeats only while messages are pending; idle groups write nothing.
//! 6. Commits are compare-and-swap on the group's revision: a consumer that lost the group is
//!    [fenced](Error::Fenced), and a lost reply never demotes a healthy one.
//! 7. Commits are monotonic; committing past what was delivered is an error.
//! 8. [`Consumer::wait`] is woken by the driver's notifications, not by polling; a driver may
//!    add a slow safety-net wake-up (PostgreSQL's `fallback_poll`, every 30 s by default:
//!    two point reads per idle consumer per period, four for one blocked in `wait`).
//! 9. Consumers read in batches, at most one batch ahead: memory does not grow with the stream.
//! 10. `send` returns once the messages are durable. Concurrent sends through one [`Producer`]
//!     share storage transactions (group commit), each keeping its own offsets and result.
//!
//! The protocol is described in the project's `docs/PROTOCOL.md`.

mod admin;
#[cfg(feature = "conformance")]
pub mod conformance;
mod consumer;
pub mod driver;
mod error;
mod message;
pub mod metrics;
mod names;
mod partition;
mod producer;
mod replay;
mod seek;

pub use admin::{
    Admin, Deleted, GroupInfo, GroupPartition, PartitionInfo, Retention, RetentionTask, StreamInfo,
};
/// The shared, cheaply cloned byte buffer [`Message::body_bytes`] hands out (the `bytes` crate's).
pub use bytes::Bytes;
pub use consumer::{
    Consumer, ConsumerBuilder, ConsumerStream, DEFAULT_BATCH_SIZE, DEFAULT_HEARTBEAT_EVERY,
    DEFAULT_JOIN_DELAY, DEFAULT_TAKEOVER_AFTER, GroupState, MAX_BATCH_SIZE, MAX_RETRY_DELAY,
    MAX_TAKEOVER_AFTER, Nacked, Position, RetryBackoff, StartFrom, TxCommit, Wake,
    dead_letter_headers,
};
pub use driver::{Driver, StorageErrorKind};
pub use error::{Error, NameKind};
pub use message::{CONTENT_TYPE, Headers, JSON_CONTENT_TYPE, Message, NewMessage};
pub use names::{
    MAX_DERIVED_NAME_LEN, MAX_NAME_LEN, MAX_PARTITIONS, PARK_DELAYS, dead_letter_stream,
    retry_stream,
};
pub use partition::partition_for_key;
pub use producer::{DEFAULT_MAX_BODY_SIZE, PreparedSend, Producer};
