//! Kafka's key hash: 32-bit MurmurHash2 with the Java client's seed, so that a key lands on
//! the partition a Kafka producer (Java client, default partitioner) would choose.

const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

/// MurmurHash2 of `data` as Kafka's `Utils.murmur2` computes it (the Java `int`, as `u32`).
pub(crate) fn murmur2(data: &[u8]) -> u32 {
    // Java takes the length as an `int`; a key is far below 4 GiB (a message body is
    // limited to a few MiB), so nothing is cut off.
    #[expect(clippy::cast_possible_truncation, reason = "keys are far below 4 GiB")]
    let mut h = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::murmur2;

    /// The values the Java client's own unit test checks (`UtilsTest.testMurmur2`).
    #[test]
    fn matches_the_kafka_java_client() {
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (&[12, 42, 56, 24, 109, 111], 274_204_207),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, java) in cases {
            assert_eq!(
                murmur2(key) as i32,
                java,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
}
