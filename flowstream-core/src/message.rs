//! Messages: what a producer sends ([`NewMessage`]) and what a consumer receives ([`Message`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::names::split_log_name;

/// Message headers: string keys to string values, kept in key order.
pub type Headers = BTreeMap<String, String>;

/// A message to append to a stream.
///
/// ```
/// use flowstream_core::NewMessage;
/// let msg = NewMessage::new("orders", r#"{"id": 7}"#)
///     .with_header("content-type", "application/json")
///     .with_key("customer-42");
/// assert_eq!(msg.stream(), "orders");
/// assert_eq!(msg.key(), Some(&b"customer-42"[..]));
/// ```
///
/// On a partitioned stream the key chooses the partition (see
/// [`partition_for_key`](crate::partition_for_key)); [`to_partition`](NewMessage::to_partition)
/// names one instead, and a message with neither goes to the stream's partitions in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    stream: String,
    body: Vec<u8>,
    headers: Headers,
    key: Option<Vec<u8>>,
    partition: Option<u32>,
}

impl NewMessage {
    /// A message for `stream` with the given body and no headers.
    pub fn new(stream: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        NewMessage {
            stream: stream.into(),
            body: body.into(),
            headers: Headers::new(),
            key: None,
            partition: None,
        }
    }

    /// Sets the message's key: stored with it, and on a partitioned stream the choice of its
    /// partition (messages with the same key go to the same partition, in send order).
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends the message to this partition of a partitioned stream, whatever its key. A
    /// partition the stream does not have is an error when the message is sent.
    pub fn to_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The key, if one was set.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The partition asked for with [`to_partition`](NewMessage::to_partition), if any.
    pub fn partition(&self) -> Option<u32> {
        self.partition
    }

    /// Points the message at the log it is routed to (the producer does this once it knows
    /// the stream's partitions).
    pub(crate) fn route_to(&mut self, log: String) {
        self.stream = log;
    }

    /// Adds (or replaces) a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The target stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Splits the message into what a driver stores: the log it goes to (once the engine
    /// has routed it; see [`driver`](crate::driver) on log names), body, headers and key.
    pub fn into_parts(self) -> (String, Vec<u8>, Headers, Option<Vec<u8>>) {
        (self.stream, self.body, self.headers, self.key)
    }
}

/// A stored message, as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    // The log's name, shared by every message of a read: one allocation per batch, not per
    // message. `stream()` and `partition()` split it.
    log: Arc<str>,
    offset: u64,
    body: Vec<u8>,
    headers: Headers,
    key: Option<Vec<u8>>,
    produced_at: SystemTime,
    attempt: u32,
    /// The consumer that delivered it and the generation of the claim it was delivered under
    /// (`None`: not delivered by a consumer), so that a commit inside a transaction is fenced
    /// by that claim, not by a later one, nor by another consumer's.
    delivered_in: Option<(Arc<str>, u64)>,
}

impl Message {
    /// Builds a message read from storage (used by drivers), with no key. `log` is the name
    /// the driver read (a stream's name, or a partition's log name); pass one `Arc<str>`
    /// clone for all the messages of a read to share it.
    pub fn new(
        log: impl Into<Arc<str>>,
        offset: u64,
        body: Vec<u8>,
        headers: Headers,
        produced_at: SystemTime,
    ) -> Self {
        Message {
            log: log.into(),
            offset,
            body,
            headers,
            key: None,
            produced_at,
            attempt: 1,
            delivered_in: None,
        }
    }

    /// Sets the key a driver read back with the message.
    pub fn with_key(mut self, key: Option<Vec<u8>>) -> Self {
        self.key = key;
        self
    }

    /// The stream it belongs to.
    pub fn stream(&self) -> &str {
        split_log_name(&self.log).0
    }

    /// The log it was read from (the stream's name, or a partition's log name).
    pub(crate) fn log(&self) -> &str {
        &self.log
    }

    /// The partition it belongs to: 0 on an unpartitioned stream.
    pub fn partition(&self) -> u32 {
        split_log_name(&self.log).1
    }

    /// Its position in its partition (in the stream, for an unpartitioned one): 1 for the
    /// first message, then 2, 3, … without gaps.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The key it was sent with, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text, if it is valid UTF-8.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// When the storage committed it (the storage's clock).
    pub fn produced_at(&self) -> SystemTime {
        self.produced_at
    }

    /// Which delivery of this message to its group this is: 1 the first time, then one more
    /// after each [`nack`](crate::Consumer::nack) of it, or, with `max_deliveries` set, after
    /// each crash of a consumer that was handling it (see
    /// [`ConsumerBuilder::max_deliveries`](crate::ConsumerBuilder::max_deliveries)). Other
    /// redeliveries after a takeover are not counted. A message read straight from a driver
    /// says 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
    }

    pub(crate) fn delivered_in(&self) -> Option<(&str, u64)> {
        self.delivered_in
            .as_ref()
            .map(|(consumer, generation)| (&**consumer, *generation))
    }

    pub(crate) fn set_delivered_in(&mut self, delivered: Option<(Arc<str>, u64)>) {
        self.delivered_in = delivered;
    }

    /// Takes the body out of the message without copying it.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}
