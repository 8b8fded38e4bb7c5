//! Code shared by the guest test programs (`trusty-test`, `tee-test`,
//! `vsock-test`, `vhal-test`, and `vhal-binder-test` of the android crate):
//! deterministic data and a stream checksum, Trusty TA messages built from
//! AOSP's formats, the flows the nested tests run over any transport,
//! round-trip timing, raw vsock sockets and the VHAL stand-in's script.
//!
//! The messages are written here from the public formats, not taken from
//! the `trusty` crate, so the nested tests check the service against an
//! independent client.

pub mod rtt;
pub mod ta;
pub mod vhal;
pub mod vsock;

/// Deterministic data: xorshift64* words.
pub struct Gen(u64);

impl Gen {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for w in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            w.copy_from_slice(&v[..w.len()]);
        }
    }
}

/// Order-sensitive 64-bit checksum over 8-byte words, independent of how
/// the stream was chunked.
#[derive(Clone)]
pub struct Sum {
    h: u64,
    carry: [u8; 8],
    carried: usize,
    /// Bytes added so far.
    pub bytes: u64,
}

impl Sum {
    /// An empty checksum.
    pub fn new() -> Self {
        Sum {
            h: 0xcbf2_9ce4_8422_2325,
            carry: [0; 8],
            carried: 0,
            bytes: 0,
        }
    }

    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(23);
    }

    /// Adds `data` to the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.carried > 0 {
            let take = (8 - self.carried).min(data.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&data[..take]);
            self.carried += take;
            data = &data[take..];
            if self.carried < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.carry));
            self.carried = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    /// The checksum of everything added so far.
    pub fn finish(&self) -> u64 {
        let mut s = self.clone();
        if s.carried > 0 {
            let mut b = [0u8; 8];
            b[..s.carried].copy_from_slice(&s.carry[..s.carried]);
            s.word(u64::from_le_bytes(b));
        }
        s.h ^ s.bytes
    }
}

impl Default for Sum {
    fn default() -> Self {
        Self::new()
    }
}

/// `size` bytes of [`Gen`] data for `seed`.
pub fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; size];
    Gen::new(seed).fill(&mut out);
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
    fn checksum_is_independent_of_chunking_and_order_sensitive() {
        let mut data = vec![0u8; 100_003];
        Gen::new(5).fill(&mut data);
        let mut whole = Sum::new();
        whole.update(&data);
        let mut parts = Sum::new();
        for c in data.chunks(7) {
            parts.update(c);
        }
        assert_eq!(whole.finish(), parts.finish());
        data.swap(0, 8);
        let mut swapped = Sum::new();
        swapped.update(&data);
        assert_ne!(whole.finish(), swapped.finish());
        // Seeds give different data.
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        Gen::new(1).fill(&mut a);
        Gen::new(2).fill(&mut b);
        assert_ne!(a, b);
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
