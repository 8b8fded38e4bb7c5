//! libtrusty over a vsock `SOCK_STREAM`: the port-name handshake and how
//! message boundaries are recovered (`docs/trusty.md`, "Message
//! boundaries").
//!
//! Stock libtrusty writes the port name, reads one status byte, then
//! writes each message with one `write`/`writev` and no length prefix. A
//! stream keeps no boundaries, so the server's rule is Trusty's own: one
//! read is one message. [`MessageFramer`] refines it with what each TA's
//! format says about a message's length ([`split`]): gatekeeper messages
//! are self-delimiting, storage and hwkey messages have fixed headers that
//! must be complete. Everything here is pure: the caller feeds each read
//! and tells when a wait for more bytes timed out.

use thiserror::Error;

use crate::ports::TaKind;
use crate::ta::{gatekeeper, hwkey, storage};

/// Largest message on the vsock path: `VIRTIO_VSOCK_MSG_SIZE_LIMIT` of
/// libtrusty (4096 minus 256 bytes reserved for the TIPC header and fds).
pub const VSOCK_MAX_MESSAGE: usize = 4096 - 256;
/// Largest message on the TEE path (Trusty's own message buffer).
pub const TEE_MAX_MESSAGE: usize = 4096;
/// Longest port name the handshake buffers before giving up.
pub const MAX_PORT_NAME: usize = 256;
/// The status byte sent once a port name names a served TA.
pub const STATUS_CONNECTED: u8 = 0;

/// Where the port-name handshake stands after the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameState {
    /// The bytes name `ta`; `rest` followed the name in the same reads
    /// (a client that did not wait for the status byte) and is the start
    /// of the first message.
    Connected {
        /// The TA named.
        ta: TaKind,
        /// Bytes after the name.
        rest: Vec<u8>,
    },
    /// A strict prefix of a served name: wait for more bytes.
    NeedMore,
    /// The bytes name `ta`, but a longer served name also starts with
    /// them: wait briefly; if nothing more comes, it is `ta`
    /// ([`PortNameReader::on_quiet`]).
    CompleteIfQuiet(TaKind),
    /// No served port has this name: close without a status byte.
    Unknown,
}

/// Accumulates the first bytes of a connection into a port name.
#[derive(Debug)]
pub struct PortNameReader {
    served: Vec<TaKind>,
    buf: Vec<u8>,
}

impl PortNameReader {
    /// A reader that accepts the port names of `served`.
    pub fn new(served: &[TaKind]) -> Self {
        PortNameReader {
            served: served.to_vec(),
            buf: Vec::new(),
        }
    }

    /// Adds the bytes of one read.
    pub fn push(&mut self, chunk: &[u8]) -> NameState {
        let room = (MAX_PORT_NAME + VSOCK_MAX_MESSAGE).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.state(false)
    }

    /// The wait after [`NameState::CompleteIfQuiet`] (or [`NameState::NeedMore`])
    /// ended without more bytes.
    pub fn on_quiet(&mut self) -> NameState {
        self.state(true)
    }

    fn state(&mut self, quiet: bool) -> NameState {
        let names: Vec<&[u8]> = self
            .served
            .iter()
            .map(|t| t.port_name().as_bytes())
            .collect();
        match classify_name(&self.buf, &names, quiet) {
            Classified::Connected(i) => {
                let ta = self.served[i];
                NameState::Connected {
                    ta,
                    rest: self.buf[ta.port_name().len()..].to_vec(),
                }
            }
            Classified::CompleteIfQuiet(i) => NameState::CompleteIfQuiet(self.served[i]),
            Classified::NeedMore => NameState::NeedMore,
            Classified::Unknown => NameState::Unknown,
        }
    }
}

/// [`NameState`] with indices into the served names.
#[derive(Debug, PartialEq, Eq)]
enum Classified {
    Connected(usize),
    CompleteIfQuiet(usize),
    NeedMore,
    Unknown,
}

/// The name rule: the longest served name the bytes start with, unless a
/// longer served name could still follow (then wait, unless `quiet`).
fn classify_name(buf: &[u8], names: &[&[u8]], quiet: bool) -> Classified {
    let extendable = names
        .iter()
        .any(|n| n.len() > buf.len() && n.starts_with(buf));
    let best = names
        .iter()
        .enumerate()
        .filter(|(_, n)| buf.starts_with(n))
        .max_by_key(|(_, n)| n.len())
        .map(|(i, _)| i);
    match (best, extendable && !quiet) {
        (Some(i), true) => Classified::CompleteIfQuiet(i),
        (Some(i), false) => Classified::Connected(i),
        (None, true) => Classified::NeedMore,
        (None, false) => Classified::Unknown,
    }
}

/// What a TA's format says about buffered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The first `n` bytes are one complete message.
    Message(usize),
    /// The bytes cannot be a whole message yet: wait for more.
    NeedMore,
    /// The format does not delimit messages: all the bytes are one.
    Whole,
}

/// What `ta`'s message format says about `buf` (the start of a message).
pub fn split(ta: TaKind, buf: &[u8]) -> Split {
    match ta {
        TaKind::Echo | TaKind::Datasink => Split::Whole,
        TaKind::Hwkey => {
            if buf.len() < hwkey::HEADER_LEN {
                Split::NeedMore
            } else {
                Split::Whole
            }
        }
        TaKind::StorageTd => storage::proto::split(buf),
        TaKind::Gatekeeper => gatekeeper::proto::split(buf),
    }
}

/// A message stream that broke the protocol.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// More bytes than a message may have, without a boundary.
    #[error("message of at least {0} bytes is over the limit")]
    TooLong(usize),
}

/// Turns the reads of one connection into messages for one TA.
#[derive(Debug)]
pub struct MessageFramer {
    ta: TaKind,
    max: usize,
    buf: Vec<u8>,
}

impl MessageFramer {
    /// A framer for `ta` with messages of at most `max` bytes.
    pub fn new(ta: TaKind, max: usize) -> Self {
        MessageFramer {
            ta,
            max,
            buf: Vec::new(),
        }
    }

    /// Adds the bytes of one read and returns the messages they complete.
    /// An error means the connection must be closed.
    pub fn push_read(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, FramingError> {
        if self.buf.len() + chunk.len() > self.max.saturating_mul(2) {
            // Not even exact framing could make messages of this: refuse
            // before buffering without bound.
            return Err(FramingError::TooLong(self.buf.len() + chunk.len()));
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while !self.buf.is_empty() {
            match split(self.ta, &self.buf) {
                Split::Message(n) if n > 0 => {
                    let n = n.min(self.buf.len());
                    if n > self.max {
                        return Err(FramingError::TooLong(n));
                    }
                    out.push(self.buf.drain(..n).collect());
                }
                Split::Message(_) | Split::Whole => {
                    if self.buf.len() > self.max {
                        return Err(FramingError::TooLong(self.buf.len()));
                    }
                    out.push(std::mem::take(&mut self.buf));
                }
                Split::NeedMore => {
                    if self.buf.len() > self.max {
                        return Err(FramingError::TooLong(self.buf.len()));
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether bytes of an incomplete message are waiting.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The wait for the rest of a message timed out: what arrived is the
    /// message (the TA answers it with its "invalid" error).
    pub fn take_partial(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.buf))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TaKind; 5] = TaKind::ALL;

    #[test]
    fn port_name_in_one_read() {
        let mut r = PortNameReader::new(&ALL);
        assert_eq!(
            r.push(b"com.android.trusty.gatekeeper"),
            NameState::Connected {
                ta: TaKind::Gatekeeper,
                rest: vec![]
            }
        );
    }

    #[test]
    fn port_name_in_pieces_and_with_a_first_message() {
        let mut r = PortNameReader::new(&ALL);
        assert_eq!(r.push(b"com.android.ipc-"), NameState::NeedMore);
        assert_eq!(r.push(b"unittest.srv.ec"), NameState::NeedMore);
        assert_eq!(
            r.push(b"hohello"),
            NameState::Connected {
                ta: TaKind::Echo,
                rest: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn unknown_and_unserved_names() {
        let mut r = PortNameReader::new(&ALL);
        assert_eq!(r.push(b"com.android.trusty.keymint"), NameState::Unknown);
        let mut r = PortNameReader::new(&[TaKind::Echo]);
        assert_eq!(r.push(b"com.android.trusty.hwkey"), NameState::Unknown);
        // A strict prefix that never completes.
        let mut r = PortNameReader::new(&ALL);
        assert_eq!(r.push(b"com.android.trusty.hw"), NameState::NeedMore);
        assert_eq!(r.on_quiet(), NameState::Unknown);
        // Long garbage is bounded.
        let mut r = PortNameReader::new(&ALL);
        assert_eq!(r.push(&[b'x'; 100_000]), NameState::Unknown);
    }

    #[test]
    fn prefix_names_wait_for_quiet() {
        // Trusty has such pairs ("...storage.client.td" and "...tdp"); only
        // td is served today, the rule keeps future ports unambiguous.
        let names: [&[u8]; 2] = [b"a.td", b"a.tdp"];
        let cases: [(&[u8], bool, Classified); 9] = [
            (b"a.t", false, Classified::NeedMore),
            (b"a.td", false, Classified::CompleteIfQuiet(0)),
            (b"a.td", true, Classified::Connected(0)),
            (b"a.tdp", false, Classified::Connected(1)),
            (b"a.tdpX", false, Classified::Connected(1)),
            (b"a.tdX", false, Classified::Connected(0)),
            (b"a.t", true, Classified::Unknown),
            (b"b", false, Classified::Unknown),
            (b"b", true, Classified::Unknown),
        ];
        for (seen, quiet, want) in cases {
            assert_eq!(
                classify_name(seen, &names, quiet),
                want,
                "{:?} (quiet: {quiet})",
                String::from_utf8_lossy(seen)
            );
        }
    }

    fn gk_enroll(desired: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_le_bytes()); // ENROLL
        m.extend_from_slice(&0u32.to_le_bytes()); // error
        m.extend_from_slice(&7u32.to_le_bytes()); // user id
        for blob in [desired, &[][..], &[][..]] {
            m.extend_from_slice(&(blob.len() as u32).to_le_bytes());
            m.extend_from_slice(blob);
        }
        m
    }

    #[test]
    fn gatekeeper_messages_are_framed_exactly() {
        let a = gk_enroll(b"1234");
        let b = gk_enroll(b"abcdefgh");
        let mut both = a.clone();
        both.extend_from_slice(&b);
        // Two messages in one read come out as two.
        let mut f = MessageFramer::new(TaKind::Gatekeeper, VSOCK_MAX_MESSAGE);
        assert_eq!(f.push_read(&both).unwrap(), vec![a.clone(), b.clone()]);
        assert!(!f.has_partial());
        // A message split over reads waits for its rest.
        let mut f = MessageFramer::new(TaKind::Gatekeeper, VSOCK_MAX_MESSAGE);
        assert!(f.push_read(&a[..10]).unwrap().is_empty());
        assert!(f.has_partial());
        assert_eq!(f.push_read(&a[10..]).unwrap(), vec![a.clone()]);
        // A truncated message is handed over when the wait times out.
        let mut f = MessageFramer::new(TaKind::Gatekeeper, VSOCK_MAX_MESSAGE);
        assert!(f.push_read(&a[..7]).unwrap().is_empty());
        assert_eq!(f.take_partial(), Some(a[..7].to_vec()));
        assert_eq!(f.take_partial(), None);
    }

    #[test]
    fn storage_waits_for_its_header_and_uses_a_set_size() {
        let mut open = Vec::new();
        open.extend_from_slice(&storage::proto::FILE_OPEN.to_le_bytes());
        open.extend_from_slice(&[0; 20]); // op_id, flags, size 0, result, reserved
        open.extend_from_slice(&1u32.to_le_bytes()); // CREATE
        open.extend_from_slice(b"name");
        let mut f = MessageFramer::new(TaKind::StorageTd, VSOCK_MAX_MESSAGE);
        assert!(f.push_read(&open[..20]).unwrap().is_empty());
        assert!(f.push_read(&open[20..26]).unwrap().is_empty());
        assert_eq!(f.push_read(&open[26..]).unwrap(), vec![open.clone()]);
        // With size set, two messages in one read split exactly.
        let mut sized = open.clone();
        sized[12..16].copy_from_slice(&(open.len() as u32).to_le_bytes());
        let mut two = sized.clone();
        two.extend_from_slice(&sized);
        let mut f = MessageFramer::new(TaKind::StorageTd, VSOCK_MAX_MESSAGE);
        assert_eq!(f.push_read(&two).unwrap(), vec![sized.clone(), sized]);
    }

    #[test]
    fn unstructured_messages_are_one_read_each_and_bounded() {
        let mut f = MessageFramer::new(TaKind::Echo, VSOCK_MAX_MESSAGE);
        assert_eq!(f.push_read(b"abc").unwrap(), vec![b"abc".to_vec()]);
        let big = vec![0u8; VSOCK_MAX_MESSAGE];
        assert_eq!(f.push_read(&big).unwrap(), vec![big.clone()]);
        assert_eq!(
            f.push_read(&[0u8; VSOCK_MAX_MESSAGE + 1]),
            Err(FramingError::TooLong(VSOCK_MAX_MESSAGE + 1))
        );
        let mut f = MessageFramer::new(TaKind::Hwkey, VSOCK_MAX_MESSAGE);
        assert!(f.push_read(&[0; 19]).unwrap().is_empty());
        assert_eq!(f.push_read(&[0; 5]).unwrap(), vec![vec![0; 24]]);
    }
}
