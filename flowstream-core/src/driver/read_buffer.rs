//! Building the messages of one read with their bodies in one buffer.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::message::{Headers, Message};

/// The messages of one read, their bodies copied into one buffer that the messages share
/// (each holds a slice of it): one allocation per read instead of one per message.
///
/// A driver pushes each message as it decodes it from storage, with its body borrowed from
/// the storage's own buffer, then calls [`finish`](Self::finish). A message kept after its
/// read keeps the whole buffer alive, so a consumer holding one message of a large read holds
/// the read's bodies; [`Message::into_body`] copies the body out when that matters.
///
/// ```
/// # use std::time::SystemTime;
/// # use flowstream_core::driver::{Headers, ReadBuffer};
/// let mut read = ReadBuffer::new("orders".into(), 2);
/// read.push(1, b"first", Headers::new(), None, SystemTime::now());
/// read.push(2, b"second", Headers::new(), Some(b"k".to_vec()), SystemTime::now());
/// let messages = read.finish();
/// assert_eq!(messages[1].body(), b"second");
/// assert_eq!(messages[1].key(), Some(&b"k"[..]));
/// ```
#[derive(Debug)]
pub struct ReadBuffer {
    log: Arc<str>,
    expected: usize,
    bodies: Vec<u8>,
    pending: Vec<Pending>,
}

/// A message pushed but not yet built: its body is a range of [`ReadBuffer::bodies`].
#[derive(Debug)]
struct Pending {
    offset: u64,
    body: Range<usize>,
    headers: Headers,
    key: Option<Vec<u8>>,
    produced_at: SystemTime,
}

/// The most a read reserves for its bodies before it has seen them all (it grows past it if
/// it must).
const MAX_RESERVE: usize = 16 << 20;

/// The most messages a read reserves room for up front.
const MAX_EXPECTED: usize = 4096;

impl ReadBuffer {
    /// A read of `log` (as for [`Message::new`]) expected to return about `expected`
    /// messages: a hint that sizes the buffers, not a limit.
    pub fn new(log: Arc<str>, expected: usize) -> Self {
        let expected = expected.min(MAX_EXPECTED);
        ReadBuffer {
            log,
            expected,
            bodies: Vec::new(),
            pending: Vec::with_capacity(expected),
        }
    }

    /// Adds the message at `offset`, copying `body` into the shared buffer.
    pub fn push(
        &mut self,
        offset: u64,
        body: &[u8],
        headers: Headers,
        key: Option<Vec<u8>>,
        produced_at: SystemTime,
    ) {
        if self.bodies.capacity() == 0 {
            // The bodies of one stream tend to be alike: size the buffer on the first one
            // rather than grow it by doubling, which copies what it holds each time.
            let guess = body.len().saturating_mul(self.expected.max(1));
            self.bodies.reserve(guess.min(MAX_RESERVE));
        }
        let start = self.bodies.len();
        self.bodies.extend_from_slice(body);
        self.pending.push(Pending {
            offset,
            body: start..self.bodies.len(),
            headers,
            key,
            produced_at,
        });
    }

    /// The messages pushed, in the order pushed.
    pub fn finish(self) -> Vec<Message> {
        let bodies = Bytes::from(self.bodies);
        let log = self.log;
        self.pending
            .into_iter()
            .map(|m| {
                Message::new(
                    Arc::clone(&log),
                    m.offset,
                    bodies.slice(m.body),
                    m.headers,
                    m.produced_at,
                )
                .with_key(m.key)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer is sized on the first body: later bodies larger or smaller than it, empty
    /// ones included, each come back whole and in order.
    #[test]
    fn each_body_comes_back_whole() {
        let bodies: Vec<Vec<u8>> = vec![
            b"ab".to_vec(),
            Vec::new(),
            vec![7; 5000],
            b"z".to_vec(),
            vec![1; 300],
        ];
        let mut read = ReadBuffer::new("s".into(), 2);
        for (offset, body) in (10..).zip(&bodies) {
            let key = (offset % 2 == 0).then(|| b"k".to_vec());
            read.push(offset, body, Headers::new(), key, SystemTime::UNIX_EPOCH);
        }
        let messages = read.finish();
        assert_eq!(messages.len(), bodies.len());
        for ((offset, message), body) in (10..).zip(&messages).zip(&bodies) {
            assert_eq!((message.offset(), message.body()), (offset, &body[..]));
            assert_eq!(message.key(), (offset % 2 == 0).then_some(&b"k"[..]));
        }
        let last = messages.into_iter().last().expect("five messages");
        assert_eq!(
            last.into_body(),
            vec![1; 300],
            "a shared body is copied out whole"
        );
    }
}
