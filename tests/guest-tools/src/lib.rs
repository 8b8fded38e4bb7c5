//! Code shared by the guest test programs (`trusty-test`, `tee-test`,
//! `vsock-test`): Trusty TA messages built from AOSP's formats, the flows
//! the nested tests run over any transport, and round-trip timing.
//!
//! The messages are written here from the public formats, not taken from
//! the `trusty` crate, so the nested tests check the service against an
//! independent client.

pub mod rtt;
pub mod ta;

/// `size` bytes of reproducible data for `seed` (xorshift64*).
pub fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = vec![0u8; size];
    for w in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        w.copy_from_slice(&v[..w.len()]);
    }
    out
}

/// FNV-1a 64 of `data`, as 16 hex digits: what the tools print to show
/// that two programs (or two VMs) saw the same bytes.
pub fn fnv64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of the hex string `s` (an even number of hex digits).
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return Err(format!("not hex: {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("not hex: {s:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_repeat_and_differ_by_seed() {
        assert_eq!(pattern(100, 1), pattern(100, 1));
        assert_ne!(pattern(100, 1), pattern(100, 2));
        assert_eq!(pattern(13, 3).len(), 13);
        assert_eq!(&pattern(100, 1)[..13], &pattern(13, 1)[..]);
    }

    #[test]
    fn fnv_and_hex() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv64(b""), "cbf29ce484222325");
        assert_eq!(fnv64(b"a"), "af63dc4c8601ec8c");
        assert_eq!(hex(&[0, 0xab]), "00ab");
        assert_eq!(unhex("00ab").unwrap(), vec![0, 0xab]);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
