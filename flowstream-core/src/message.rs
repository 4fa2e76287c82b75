//! Messages: what a producer sends ([`NewMessage`]) and what a consumer receives ([`Message`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Message headers: string keys to string values, kept in key order.
pub type Headers = BTreeMap<String, String>;

/// A message to append to a stream.
///
/// ```
/// use flowstream_core::NewMessage;
/// let msg = NewMessage::new("orders", r#"{"id": 7}"#).with_header("content-type", "application/json");
/// assert_eq!(msg.stream(), "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    stream: String,
    body: Vec<u8>,
    headers: Headers,
}

impl NewMessage {
    /// A message for `stream` with the given body and no headers.
    pub fn new(stream: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        NewMessage {
            stream: stream.into(),
            body: body.into(),
            headers: Headers::new(),
        }
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

    /// Splits the message into stream, body and headers (for drivers that store them).
    pub fn into_parts(self) -> (String, Vec<u8>, Headers) {
        (self.stream, self.body, self.headers)
    }
}

/// A stored message, as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    // Shared by every message of a read: one allocation per batch, not per message.
    stream: Arc<str>,
    offset: u64,
    body: Vec<u8>,
    headers: Headers,
    produced_at: SystemTime,
}

impl Message {
    /// Builds a message read from storage (used by drivers). Pass one `Arc<str>` clone for
    /// all the messages of a read to share the stream name.
    pub fn new(
        stream: impl Into<Arc<str>>,
        offset: u64,
        body: Vec<u8>,
        headers: Headers,
        produced_at: SystemTime,
    ) -> Self {
        Message {
            stream: stream.into(),
            offset,
            body,
            headers,
            produced_at,
        }
    }

    /// The stream it belongs to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Its position in the stream: 1 for the first message, then 2, 3, … without gaps.
    pub fn offset(&self) -> u64 {
        self.offset
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

    /// Takes the body out of the message without copying it.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}
