//! Messages: what a producer sends ([`NewMessage`]) and what a consumer receives ([`Message`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::printable;
use crate::names::split_log_name;

/// The header that says how a body is encoded (set by [`NewMessage::json`]).
pub const CONTENT_TYPE: &str = "content-type";

/// The `content-type` of JSON bodies.
pub const JSON_CONTENT_TYPE: &str = "application/json";

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

    /// A message whose body is `value` as JSON, with the header `content-type:
    /// application/json` ([`JSON_CONTENT_TYPE`]). Read it back with [`Message::json`].
    ///
    /// ```
    /// use flowstream_core::NewMessage;
    /// #[derive(serde::Serialize)]
    /// struct Order { id: u64 }
    /// let msg = NewMessage::json("orders", &Order { id: 7 })?;
    /// assert_eq!(msg.body(), br#"{"id":7}"#);
    /// assert_eq!(msg.headers()["content-type"], "application/json");
    /// # Ok::<(), flowstream_core::Error>(())
    /// ```
    ///
    /// [`Error::Encode`](crate::Error::Encode) if `value` cannot be written as JSON (a map
    /// with keys that are not strings, a `Serialize` impl that fails).
    pub fn json<T: Serialize + ?Sized>(
        stream: impl Into<String>,
        value: &T,
    ) -> Result<Self, crate::Error> {
        let stream = stream.into();
        match serde_json::to_vec(value) {
            Ok(body) => {
                Ok(NewMessage::new(stream, body).with_header(CONTENT_TYPE, JSON_CONTENT_TYPE))
            }
            Err(source) => Err(crate::Error::Encode {
                stream: printable(&stream),
                source,
            }),
        }
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
    // A slice of a buffer the driver may share between the messages of one read: one
    // allocation per read, not per message.
    body: Bytes,
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
    /// clone for all the messages of a read to share it. `body` may be a `Vec<u8>` (taken
    /// without copying) or a slice of one [`Bytes`] buffer holding every body of the read.
    pub fn new(
        log: impl Into<Arc<str>>,
        offset: u64,
        body: impl Into<Bytes>,
        headers: Headers,
        produced_at: SystemTime,
    ) -> Self {
        Message {
            log: log.into(),
            offset,
            body: body.into(),
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

    /// The body read as JSON into a `T` (sent with [`NewMessage::json`], or by anything that
    /// writes JSON bodies; the content-type header is not required).
    ///
    /// [`Error::Decode`](crate::Error::Decode), naming the stream, partition and offset, if
    /// the body is not valid JSON for `T`; the message is left as it was, to be
    /// [dead-lettered](crate::Consumer::dead_letter) or committed past.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
        serde_json::from_slice(&self.body).map_err(|source| crate::Error::Decode {
            stream: self.stream().to_owned(),
            partition: self.partition(),
            offset: self.offset,
            content_type: self.headers.get(CONTENT_TYPE).cloned(),
            source,
        })
    }

    /// The body as a [`Bytes`] handle, to keep or pass on without copying it (the buffer may
    /// hold other messages of the same read: it is freed when the last handle goes).
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone()
    }

    /// Takes the body out of the message as a `Vec<u8>`: without copying when the message
    /// owns its buffer alone (one built from a `Vec<u8>`), copied when it is a slice of a
    /// buffer shared with the other messages of its read, as the drivers' reads build them.
    /// [`body_bytes`](Self::body_bytes) never copies.
    pub fn into_body(self) -> Vec<u8> {
        self.body.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u64,
        item: String,
    }

    #[test]
    fn json_round_trips_and_says_so_in_a_header() {
        let order = Order {
            id: 7,
            item: "tea".into(),
        };
        let sent = NewMessage::json("orders", &order).expect("encodes");
        assert_eq!(sent.headers()[CONTENT_TYPE], JSON_CONTENT_TYPE);
        let (_, body, headers, _) = sent.into_parts();
        let read = Message::new("orders/3", 12, body, headers, SystemTime::now());
        assert_eq!(read.json::<Order>().expect("decodes"), order);
    }

    #[test]
    fn a_body_that_is_not_the_type_names_the_message() {
        let mut headers = Headers::new();
        headers.insert(CONTENT_TYPE.into(), "text/plain".into());
        let read = Message::new(
            "orders/3",
            12,
            b"not json".to_vec(),
            headers,
            SystemTime::now(),
        );
        let error = read.json::<Order>().expect_err("not JSON");
        match &error {
            crate::Error::Decode {
                stream,
                partition,
                offset,
                content_type,
                ..
            } => {
                assert_eq!((stream.as_str(), *partition, *offset), ("orders", 3, 12));
                assert_eq!(content_type.as_deref(), Some("text/plain"));
            }
            other => panic!("expected Decode, got {other:?}"),
        }
        let shown = error.to_string();
        assert!(
            shown.contains("message 12 of stream \"orders\" (partition 3"),
            "{shown}"
        );
        let wrong_shape = Message::new(
            "orders",
            1,
            br#"{"id":"x"}"#.to_vec(),
            Headers::new(),
            SystemTime::now(),
        );
        assert!(matches!(
            wrong_shape.json::<Order>(),
            Err(crate::Error::Decode { offset: 1, .. })
        ));
    }

    #[test]
    fn a_value_json_cannot_hold_is_refused_before_sending() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), "tuple keys are not strings");
        let error = NewMessage::json("orders", &map).expect_err("not encodable");
        assert!(matches!(error, crate::Error::Encode { .. }), "{error:?}");
    }
}
