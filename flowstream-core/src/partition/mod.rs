//! Partitioned streams: how a message finds its partition, and the record that says how many
//! partitions a stream has.
//!
//! - [`meta`]: the stream record (partition count and partitioner), fixed at creation;
//! - [`routing`]: the producer's side, which turns a message's key or partition into the log
//!   it is appended to;
//! - [`murmur2`]: the key hash, Kafka's.

mod meta;
mod murmur2;
pub(crate) mod routing;

pub(crate) use meta::{MURMUR2, STREAM_KEY_PREFIX, StoredStream, load_partitions, stream_key};

/// The partition of `key` in a stream of `partitions` partitions: Kafka's default for keyed
/// records (`toPositive(murmur2(key)) % partitions`), so a key lands where a Kafka producer
/// using the Java client's default partitioner would put it. Stable across versions and
/// processes: the same key always goes to the same partition of a stream.
///
/// ```
/// use flowstream_core::partition_for_key;
/// assert_eq!(partition_for_key(b"customer-42", 8), partition_for_key(b"customer-42", 8));
/// assert!(partition_for_key(b"anything", 3) < 3);
/// assert_eq!(partition_for_key(b"anything", 1), 0);
/// ```
///
/// A `partitions` of 0 is treated as 1.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2::murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::partition_for_key;

    /// Where Kafka's Java producer puts these keys in a topic of 12 partitions (from the
    /// hash values of its own test, `toPositive(h) % 12`).
    #[test]
    fn keys_land_where_kafka_puts_them() {
        assert_eq!(partition_for_key(b"21", 12), 1_173_551_340 % 12);
        assert_eq!(partition_for_key(b"foobar", 12), 1_357_151_166 % 12);
        assert_eq!(partition_for_key(b"abc", 12), 479_470_107 % 12);
    }
}
