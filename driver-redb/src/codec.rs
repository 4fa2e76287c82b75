//! The byte layout of a stored message (the value of a stream's table).
//!
//! ```text
//! u8   layout: 1 with headers, 2 with headers and a key, 3 bare (neither)
//! u64  produced-at, microseconds since the Unix epoch, little-endian
//! (layouts 1 and 2) u32 header count, then per header: u32 name length, name, u32 value
//!      length, value
//! (layout 2 only) u32 key length, key
//! ...  body (the rest)
//! ```
//! A layout byte leads so the layout can evolve without a migration of old rows: values
//! written in layout 1 or 2 by earlier versions read as they always did. A message with
//! neither headers nor a key, the common case, is stored bare: nine bytes before its body.

#[cfg(test)]
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(test)]
use flowstream_core::driver::Message;
use flowstream_core::driver::{DriverError, Headers, ReadBuffer, StorageErrorKind};

const LAYOUT_HEADERS: u8 = 1;
const LAYOUT_KEYED: u8 = 2;
const LAYOUT_BARE: u8 = 3;

#[cfg(test)]
pub(crate) fn encode(
    body: &[u8],
    headers: &Headers,
    key: Option<&[u8]>,
    produced_at: SystemTime,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(
        &mut out,
        body,
        headers,
        key,
        micros_since_epoch(produced_at),
    );
    out
}

/// `at` as microseconds since the Unix epoch, as stored; computed once per append.
pub(crate) fn micros_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Appends the encoded message to `out` (reused across a batch to spare an allocation per
/// message); `produced_micros` from [`micros_since_epoch`].
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    body: &[u8],
    headers: &Headers,
    key: Option<&[u8]>,
    produced_micros: u64,
) {
    if key.is_none() && headers.is_empty() {
        out.reserve(1 + 8 + body.len());
        out.push(LAYOUT_BARE);
        out.extend_from_slice(&produced_micros.to_le_bytes());
        out.extend_from_slice(body);
        return;
    }
    let header_bytes: usize = headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let key_bytes = key.map_or(0, |key| 4 + key.len());
    out.reserve(1 + 8 + 4 + header_bytes + key_bytes + body.len());
    out.push(if key.is_some() {
        LAYOUT_KEYED
    } else {
        LAYOUT_HEADERS
    });
    out.extend_from_slice(&produced_micros.to_le_bytes());
    out.extend_from_slice(&len_u32(headers.len()).to_le_bytes());
    for (name, value) in headers {
        for part in [name, value] {
            out.extend_from_slice(&len_u32(part.len()).to_le_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    if let Some(key) = key {
        out.extend_from_slice(&len_u32(key.len()).to_le_bytes());
        out.extend_from_slice(key);
    }
    out.extend_from_slice(body);
}

/// Lengths are bounded by the producer's body limit and redb's 3 GiB value limit, far below
/// `u32::MAX`; saturate rather than wrap if that ever changes.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Decodes the stored value of the message at `offset` into `read`.
pub(crate) fn decode_into(
    read: &mut ReadBuffer,
    stream: &str,
    offset: u64,
    bytes: &[u8],
) -> Result<(), DriverError> {
    let corrupt = |what: &str| {
        DriverError::storage(
            StorageErrorKind::Corrupt,
            format!("stored message {stream}/{offset} is damaged: {what}"),
        )
    };
    let mut reader = Reader { bytes };
    let layout = match reader.take(1).ok_or_else(|| corrupt("empty"))? {
        [layout @ (LAYOUT_HEADERS | LAYOUT_KEYED | LAYOUT_BARE)] => *layout,
        _ => return Err(corrupt("unknown layout")),
    };
    let micros = u64::from_le_bytes(reader.array().ok_or_else(|| corrupt("truncated time"))?);
    let produced_at = UNIX_EPOCH + Duration::from_micros(micros);
    if layout == LAYOUT_BARE {
        read.push(offset, reader.bytes, Headers::new(), None, produced_at);
        return Ok(());
    }
    let keyed = layout == LAYOUT_KEYED;
    let count = u32::from_le_bytes(reader.array().ok_or_else(|| corrupt("truncated headers"))?);
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = reader.string().ok_or_else(|| corrupt("bad header name"))?;
        let value = reader.string().ok_or_else(|| corrupt("bad header value"))?;
        headers.insert(name, value);
    }
    let key = if keyed {
        Some(reader.bytes().ok_or_else(|| corrupt("bad key"))?.to_vec())
    } else {
        None
    };
    read.push(offset, reader.bytes, headers, key, produced_at);
    Ok(())
}

/// Decodes one stored message (a read of one).
#[cfg(test)]
pub(crate) fn decode(stream: &Arc<str>, offset: u64, bytes: &[u8]) -> Result<Message, DriverError> {
    let mut read = ReadBuffer::new(Arc::clone(stream), 1);
    decode_into(&mut read, stream, offset, bytes)?;
    Ok(read.finish().remove(0))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A `u32` length and that many bytes.
    fn bytes(&mut self) -> Option<&[u8]> {
        let len = u32::from_le_bytes(self.array()?);
        self.take(usize::try_from(len).ok()?)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut headers = Headers::new();
        headers.insert("k".into(), "v".into());
        headers.insert("empty".into(), String::new());
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        for (key, headers) in [None, Some(&b""[..]), Some(&b"customer-42"[..])]
            .into_iter()
            .flat_map(|key| [(key, Headers::new()), (key, headers.clone())])
        {
            let bytes = encode(b"hello", &headers, key, at);
            let msg = decode(&"s".into(), 3, &bytes).expect("decodes");
            assert_eq!(msg.body(), b"hello");
            assert_eq!(msg.headers(), &headers);
            assert_eq!(msg.key(), key);
            assert_eq!(msg.produced_at(), at);
            assert_eq!(msg.offset(), 3);
        }
    }

    /// Values written by earlier versions, which never wrote the bare layout, still read.
    #[test]
    fn a_message_with_headers_and_no_key_keeps_the_first_layout() {
        let mut headers = Headers::new();
        headers.insert("k".into(), "v".into());
        let bytes = encode(b"x", &headers, None, UNIX_EPOCH);
        assert_eq!(bytes[0], LAYOUT_HEADERS);
        assert_eq!(bytes.len(), 1 + 8 + 4 + (4 + 1 + 4 + 1) + 1);
        let earlier = [&[LAYOUT_HEADERS][..], &[0; 8], &[0; 4], b"body"].concat();
        let msg = decode(&"s".into(), 1, &earlier).expect("decodes");
        assert_eq!(msg.body(), b"body");
        assert!(msg.headers().is_empty());
    }

    #[test]
    fn a_message_with_neither_headers_nor_key_is_stored_bare() {
        let bytes = encode(b"x", &Headers::new(), None, UNIX_EPOCH);
        assert_eq!(bytes[0], LAYOUT_BARE);
        assert_eq!(bytes.len(), 1 + 8 + 1);
        let msg = decode(&"s".into(), 1, &bytes).expect("decodes");
        assert_eq!(msg.body(), b"x");
        assert_eq!(msg.key(), None);
    }

    #[test]
    fn truncated_values_are_errors_not_panics() {
        let mut headers = Headers::new();
        headers.insert("name".into(), "value".into());
        let bytes = encode(b"", &headers, Some(b"key"), SystemTime::now());
        for cut in 0..bytes.len() {
            assert!(
                decode(&"s".into(), 1, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
