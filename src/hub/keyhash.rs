//! The one hash that decides where a key's messages go: which stream of a backend group
//! gets a socket's events, which Redis stream partition holds a user's events.
//!
//! Its definition is fixed and written down, because instances of different versions must
//! agree on it during a rolling upgrade: if two instances put one user's events into two
//! partitions, a backend would see them out of order. (`std`'s `DefaultHasher` promises no
//! stable algorithm across Rust releases, so it cannot be used here.)
//!
//! Definition: 64-bit FNV-1a over the key's UTF-8 bytes. Start with the offset basis
//! 0xcbf29ce484222325; for each byte, XOR it into the hash, then multiply by the FNV prime
//! 0x100000001b3 modulo 2^64. A partition or member index is `hash % count`.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `key` (see the module doc).
pub fn key_hash(key: &str) -> u64 {
    key.bytes().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published FNV-1a test vectors, plus one of the bridge's own keys with its partition
    /// among the default 8: if this test has to change, so does every deployed cluster's
    /// partitioning.
    #[test]
    fn matches_the_fixed_definition() {
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(key_hash("alice") % 8, key_hash("alice") & 7);
        assert_eq!(key_hash("alice"), 0x508b_2abb_65a0_3907);
    }
}
