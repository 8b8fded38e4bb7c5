//! hwkey (`com.android.trusty.hwkey`): per-guest key derivation with
//! Trusty's `hwkey_msg` format (`interface/hwkey/hwkey.h`):
//! `{u32 cmd, op_id, status, arg1, arg2}` + payload.

use hkdf::Hkdf;
use sha2::Sha256;

use super::le::u32_at;
use super::Channel;
use crate::keys::Key;

/// Bytes of `struct hwkey_msg` before the payload.
pub const HEADER_LEN: usize = 20;
/// Set in a response's `cmd`.
pub const RESP_BIT: u32 = 1;
/// `HWKEY_GET_KEYSLOT`.
pub const GET_KEYSLOT: u32 = 0;
/// `HWKEY_DERIVE`.
pub const DERIVE: u32 = 2;
/// `HWKEY_KDF_VERSION_BEST`.
pub const KDF_VERSION_BEST: u32 = 0;
/// `HWKEY_KDF_VERSION_1`: the only version here.
pub const KDF_VERSION_1: u32 = 1;
/// Longest seed (= derived key).
pub const MAX_SEED: usize = 256;

/// `enum hwkey_err`.
pub mod err {
    /// All OK.
    pub const NO_ERROR: u32 = 0;
    /// Internal failure.
    pub const GENERIC: u32 = 1;
    /// An argument is not valid (unknown KDF version).
    pub const NOT_VALID: u32 = 2;
    /// A buffer of the wrong length.
    pub const BAD_LEN: u32 = 3;
    /// Unknown command.
    pub const NOT_IMPLEMENTED: u32 = 4;
    /// No such keyslot.
    pub const NOT_FOUND: u32 = 5;
}

/// The HKDF info prefix of derived keys.
const DERIVE_INFO: &[u8] = b"hwkey-derive-v1";

/// One guest's hwkey.
#[derive(Debug, Clone)]
pub struct Hwkey {
    key: Key,
}

fn response(cmd: u32, op_id: u32, status: u32, arg1: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
    for v in [cmd | RESP_BIT, op_id, status, arg1, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

impl Hwkey {
    /// hwkey for a guest whose hwkey key is `key`.
    pub fn new(key: Key) -> Self {
        Hwkey { key }
    }

    /// The key `DERIVE` returns for `seed`.
    pub fn derive(&self, seed: &[u8]) -> Vec<u8> {
        let hk = match Hkdf::<Sha256>::from_prk(&self.key.0) {
            Ok(h) => h,
            Err(_) => unreachable!("a 32-byte PRK is valid for HKDF-SHA256"),
        };
        let mut info = DERIVE_INFO.to_vec();
        info.extend_from_slice(seed);
        let mut out = vec![0u8; seed.len()];
        if hk.expand(&info, &mut out).is_err() {
            unreachable!("at most {MAX_SEED} bytes, within HKDF-SHA256's limit");
        }
        out
    }

    /// Handles one request message.
    pub fn handle(&self, msg: &[u8]) -> Vec<u8> {
        let cmd = u32_at(msg, 0).unwrap_or(0);
        let op_id = u32_at(msg, 4).unwrap_or(0);
        if msg.len() < HEADER_LEN {
            return response(cmd, op_id, err::BAD_LEN, 0, &[]);
        }
        let arg1 = u32_at(msg, 12).unwrap_or(0);
        let payload = &msg[HEADER_LEN..];
        match cmd {
            DERIVE => {
                if arg1 != KDF_VERSION_BEST && arg1 != KDF_VERSION_1 {
                    return response(cmd, op_id, err::NOT_VALID, 0, &[]);
                }
                if payload.is_empty() || payload.len() > MAX_SEED {
                    return response(cmd, op_id, err::BAD_LEN, 0, &[]);
                }
                response(
                    cmd,
                    op_id,
                    err::NO_ERROR,
                    KDF_VERSION_1,
                    &self.derive(payload),
                )
            }
            GET_KEYSLOT => {
                // No keyslot is exported to non-secure clients.
                let status = if payload.is_empty() {
                    err::BAD_LEN
                } else {
                    err::NOT_FOUND
                };
                response(cmd, op_id, status, 0, &[])
            }
            _ => response(cmd, op_id, err::NOT_IMPLEMENTED, 0, &[]),
        }
    }
}

/// hwkey as a Trusty channel.
#[derive(Debug)]
pub struct HwkeyChannel(pub Hwkey);

impl Channel for HwkeyChannel {
    fn on_message(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        vec![self.0.handle(msg)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DeviceSecret;

    fn request(cmd: u32, op_id: u32, arg1: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [cmd, op_id, 0, arg1, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(payload);
        m
    }

    fn hwkey(guest: &str) -> Hwkey {
        Hwkey::new(DeviceSecret::from_bytes([3; 32]).guest_keys(guest).hwkey)
    }

    #[test]
    fn derive_is_deterministic_per_guest() {
        let a = hwkey("a");
        let r = a.handle(&request(DERIVE, 42, KDF_VERSION_BEST, &[1; 32]));
        assert_eq!(u32_at(&r, 0), Some(DERIVE | RESP_BIT));
        assert_eq!(u32_at(&r, 4), Some(42));
        assert_eq!(u32_at(&r, 8), Some(err::NO_ERROR));
        assert_eq!(u32_at(&r, 12), Some(KDF_VERSION_1));
        assert_eq!(r.len(), HEADER_LEN + 32);
        let again = hwkey("a").handle(&request(DERIVE, 1, KDF_VERSION_1, &[1; 32]));
        assert_eq!(r[HEADER_LEN..], again[HEADER_LEN..]);
        let other_seed = a.handle(&request(DERIVE, 1, 0, &[2; 32]));
        assert_ne!(r[HEADER_LEN..], other_seed[HEADER_LEN..]);
        let other_guest = hwkey("b").handle(&request(DERIVE, 1, 0, &[1; 32]));
        assert_ne!(r[HEADER_LEN..], other_guest[HEADER_LEN..]);
        // The key has the seed's length.
        assert_eq!(
            a.handle(&request(DERIVE, 1, 0, &[1; 16])).len(),
            HEADER_LEN + 16
        );
    }

    #[test]
    fn errors_follow_hwkey_h() {
        let h = hwkey("a");
        let status = |m: &[u8]| u32_at(&h.handle(m), 8);
        assert_eq!(status(&request(DERIVE, 0, 7, &[1])), Some(err::NOT_VALID));
        assert_eq!(status(&request(DERIVE, 0, 0, &[])), Some(err::BAD_LEN));
        assert_eq!(
            status(&request(DERIVE, 0, 0, &[0; MAX_SEED + 1])),
            Some(err::BAD_LEN)
        );
        assert_eq!(
            status(&request(
                GET_KEYSLOT,
                0,
                0,
                b"com.android.trusty.storage_auth.rpmb"
            )),
            Some(err::NOT_FOUND)
        );
        assert_eq!(status(&request(8, 0, 0, &[])), Some(err::NOT_IMPLEMENTED));
        assert_eq!(status(&[2, 0, 0]), Some(err::BAD_LEN));
        assert_eq!(status(&[]), Some(err::BAD_LEN));
    }
}
