//! The MCU link's messages (generated from `proto/mcu.proto`) and their
//! framing: each message is preceded by its length as a base-128 varint
//! (protobuf's length-delimited form), at most [`MAX_FRAME`] bytes.
//!
//! [`FrameDecoder`] is fed raw bytes and yields whole frames. A frame that
//! does not parse as the expected message is an error for that frame only
//! (the stream stays in step); a bad length prefix loses the framing, so the
//! connection has to be reset.

#![allow(missing_docs)]

// cargo: build.rs generates `OUT_DIR/proto/mod.rs` (`pub mod mcu;`).
#[cfg(not(soong))]
include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
// Soong (`Android.bp`, `cfgs: ["soong"]`): the `rust_protobuf` crate
// `mcu_proto` generated from the same file.
#[cfg(soong)]
pub use mcu_proto::mcu;

use protobuf::Message;

/// The largest message either side accepts.
pub const MAX_FRAME: usize = 4096;

/// Why a byte stream cannot be framed any more.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is longer than 5 bytes or does not end.
    BadLength,
    /// The announced length exceeds [`MAX_FRAME`].
    TooLong(u64),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadLength => f.write_str("malformed length prefix"),
            FrameError::TooLong(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME}"),
        }
    }
}

/// Splits a byte stream into length-delimited frames.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut len: u64 = 0;
        let mut prefix = 0;
        loop {
            let Some(&b) = self.buf.get(prefix) else {
                return Ok(None);
            };
            if prefix == 5 {
                return Err(FrameError::BadLength);
            }
            len |= u64::from(b & 0x7f) << (7 * prefix);
            prefix += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if len > MAX_FRAME as u64 {
            return Err(FrameError::TooLong(len));
        }
        let end = prefix + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let frame = self.buf[prefix..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(frame))
    }
}

/// A message with its length prefix, ready to write.
pub fn encode<M: Message>(m: &M) -> Vec<u8> {
    // Serializing our own in-memory message only fails on a missing
    // required field, which proto3 does not have.
    m.write_length_delimited_to_bytes().unwrap_or_default()
}

/// Decodes one frame's payload.
pub fn decode<M: Message>(frame: &[u8]) -> Result<M, protobuf::Error> {
    M::parse_from_bytes(frame)
}

#[cfg(test)]
mod tests {
    use super::mcu::*;
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut m = McuToSoc::new();
        m.set_ignition(Ignition {
            on: true,
            ..Default::default()
        });
        let mut w = McuToSoc::new();
        w.set_wake(WakeRequest {
            reason: WakeReason::SYSTEM_REMOTE_ACCESS.into(),
            ..Default::default()
        });
        let mut bytes = encode(&m);
        bytes.extend(encode(&w));
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(decode::<McuToSoc>(&f).unwrap());
            }
        }
        assert_eq!(got, vec![m, w]);
    }

    #[test]
    fn bad_lengths_and_payloads() {
        let mut d = FrameDecoder::default();
        d.push(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(d.next_frame(), Err(FrameError::BadLength));
        let mut d = FrameDecoder::default();
        d.push(&[0x81, 0x40]); // 8193
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(8193)));
        // A frame whose payload is not a message: an error for that frame
        // only, the next one decodes.
        let mut d = FrameDecoder::default();
        d.push(&[3, 0x0a, 0xff, 0xff]);
        let mut ok = McuToSoc::new();
        ok.set_vehicle_in_use(VehicleInUse {
            in_use: true,
            ..Default::default()
        });
        d.push(&encode(&ok));
        let bad = d.next_frame().unwrap().unwrap();
        assert!(decode::<McuToSoc>(&bad).is_err());
        let good = d.next_frame().unwrap().unwrap();
        assert_eq!(decode::<McuToSoc>(&good).unwrap(), ok);
        assert_eq!(d.next_frame(), Ok(None));
    }
}
