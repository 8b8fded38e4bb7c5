//! virtio-vsock packets: the 44-byte little-endian header and the guest
//! buffers around it.
//!
//! ```text
//!  0       8       16   20   24   28   30   32   36       40       44
//!  src_cid dst_cid src  dst  len  type op   flags buf_alloc fwd_cnt
//!                  port port
//! ```
//!
//! A TX chain (guest to device) holds the header in its first readable
//! bytes and `len` payload bytes right after, possibly spread over several
//! descriptors. An RX chain (device to guest) is device-writable; the device
//! writes the header at its start and the payload after it. Payload bytes
//! never pass through a host buffer here: [`TxPacket`] and [`RxBuffer`] only
//! describe guest memory regions, and the muxer moves bytes between them and
//! the host sockets directly.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{HDR_LEN, MAX_PKT_PAYLOAD};
use crate::virtio::GuestMemoryMmap;

/// `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (`op` field).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset (refused or aborted).
    pub const RST: u16 = 3;
    /// The sender stops receiving and/or sending (`flags`).
    pub const SHUTDOWN: u16 = 4;
    /// Stream payload.
    pub const RW: u16 = 5;
    /// The sender's credit (`buf_alloc`, `fwd_cnt`) changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// The sender asks for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `SHUTDOWN` flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `SHUTDOWN` flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both shutdown flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// A decoded `struct virtio_vsock_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags (shutdown flags for `SHUTDOWN`).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wraps).
    pub fwd_cnt: u32,
}

fn le_u64(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn le_u32(b: &[u8; HDR_LEN], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u16(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    /// Decodes the wire format.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        Self {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            type_: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    /// Encodes the wire format.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// A reply to `self` with source and destination swapped and no
    /// payload or credit (used for `RST` to unknown connections).
    pub fn reply(&self, op: u16) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }
}

/// Why a descriptor chain was not a usable packet buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A TX descriptor the device may only write (wrong direction).
    #[error("TX descriptor is device-writable")]
    WriteOnlyTx,
    /// An RX descriptor the device may only read (wrong direction).
    #[error("RX descriptor is read-only")]
    ReadOnlyRx,
    /// A descriptor outside guest memory.
    #[error("descriptor {addr:#x}+{len} is outside guest memory")]
    OutOfRange {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// Fewer than 44 bytes for the header.
    #[error("chain of {0} bytes has no room for the 44-byte header")]
    TooShort(usize),
    /// The header's `len` exceeds the payload the chain carries.
    #[error("header len {len} exceeds the {avail} payload bytes in the chain")]
    LenBeyondChain {
        /// Header `len`.
        len: u32,
        /// Payload bytes present.
        avail: usize,
    },
    /// The header's `len` exceeds the 64 KiB packet limit.
    #[error("header len {0} exceeds the 64 KiB packet limit")]
    Oversize(u32),
}

/// A region of guest memory.
pub type Region = (GuestAddress, usize);

/// Collects `(addr, len)` of every descriptor of a chain, checking direction
/// and bounds.
fn regions<I>(mem: &GuestMemoryMmap, descs: I, writable: bool) -> Result<Vec<Region>, PacketError>
where
    I: IntoIterator<Item = virtio_queue::desc::split::Descriptor>,
{
    let mut out = Vec::new();
    for d in descs {
        if d.is_write_only() != writable {
            return Err(if writable {
                PacketError::ReadOnlyRx
            } else {
                PacketError::WriteOnlyTx
            });
        }
        let len = d.len() as usize;
        if len == 0 {
            continue;
        }
        if !mem.check_range(d.addr(), len) {
            return Err(PacketError::OutOfRange {
                addr: d.addr().0,
                len: d.len(),
            });
        }
        out.push((d.addr(), len));
    }
    Ok(out)
}

/// Splits `regions` at byte offset `at`: the regions before, and after.
fn split_at(regions: &[Region], mut at: usize) -> (Vec<Region>, Vec<Region>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    for &(addr, len) in regions {
        if at == 0 {
            tail.push((addr, len));
        } else if len <= at {
            head.push((addr, len));
            at -= len;
        } else {
            head.push((addr, at));
            tail.push((GuestAddress(addr.0 + at as u64), len - at));
            at = 0;
        }
    }
    (head, tail)
}

/// Truncates `regions` to `len` bytes in total.
fn truncate(regions: Vec<Region>, mut len: usize) -> Vec<Region> {
    let mut out = Vec::new();
    for (addr, l) in regions {
        if len == 0 {
            break;
        }
        let take = l.min(len);
        out.push((addr, take));
        len -= take;
    }
    out
}

fn total(regions: &[Region]) -> usize {
    regions.iter().map(|r| r.1).sum()
}

/// A packet the guest sent: its header, and where its payload lies in guest
/// memory (exactly `hdr.len` bytes, or none for non-`RW` ops).
#[derive(Debug)]
pub struct TxPacket {
    /// The header.
    pub hdr: Header,
    /// Payload regions in guest memory.
    pub payload: Vec<Region>,
}

impl TxPacket {
    /// Parses a TX descriptor chain. Errors before the header was read give
    /// no header; a header whose length is invalid is returned with the
    /// error so that the connection it names can be reset.
    pub fn parse<I>(mem: &GuestMemoryMmap, descs: I) -> Result<Self, (Option<Header>, PacketError)>
    where
        I: IntoIterator<Item = virtio_queue::desc::split::Descriptor>,
    {
        let regions = regions(mem, descs, false).map_err(|e| (None, e))?;
        let avail = total(&regions);
        if avail < HDR_LEN {
            return Err((None, PacketError::TooShort(avail)));
        }
        let (head, tail) = split_at(&regions, HDR_LEN);
        let mut raw = [0u8; HDR_LEN];
        let mut at = 0;
        for (addr, len) in head {
            mem.read_slice(&mut raw[at..at + len], addr).map_err(|_| {
                (
                    None,
                    PacketError::OutOfRange {
                        addr: addr.0,
                        len: len as u32,
                    },
                )
            })?;
            at += len;
        }
        let hdr = Header::from_bytes(&raw);
        if hdr.op != op::RW {
            return Ok(Self {
                hdr,
                payload: Vec::new(),
            });
        }
        if hdr.len as usize > MAX_PKT_PAYLOAD {
            return Err((Some(hdr), PacketError::Oversize(hdr.len)));
        }
        let payload_avail = avail - HDR_LEN;
        if hdr.len as usize > payload_avail {
            return Err((
                Some(hdr),
                PacketError::LenBeyondChain {
                    len: hdr.len,
                    avail: payload_avail,
                },
            ));
        }
        Ok(Self {
            hdr,
            payload: truncate(tail, hdr.len as usize),
        })
    }
}

/// A guest receive buffer: device-writable regions, the header first.
#[derive(Debug)]
pub struct RxBuffer {
    header: Vec<Region>,
    /// Where payload may go, in order.
    pub payload: Vec<Region>,
}

impl RxBuffer {
    /// Checks an RX descriptor chain.
    pub fn parse<I>(mem: &GuestMemoryMmap, descs: I) -> Result<Self, PacketError>
    where
        I: IntoIterator<Item = virtio_queue::desc::split::Descriptor>,
    {
        let regions = regions(mem, descs, true)?;
        let avail = total(&regions);
        if avail < HDR_LEN {
            return Err(PacketError::TooShort(avail));
        }
        let (header, payload) = split_at(&regions, HDR_LEN);
        Ok(Self { header, payload })
    }

    /// Payload bytes this buffer can take.
    pub fn capacity(&self) -> usize {
        total(&self.payload)
    }

    /// Writes `hdr` into the buffer's first 44 bytes.
    pub fn write_header(&self, mem: &GuestMemoryMmap, hdr: &Header) -> Result<(), PacketError> {
        let raw = hdr.to_bytes();
        let mut at = 0;
        for &(addr, len) in &self.header {
            mem.write_slice(&raw[at..at + len], addr)
                .map_err(|_| PacketError::OutOfRange {
                    addr: addr.0,
                    len: len as u32,
                })?;
            at += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::guest_memory;
    use virtio_queue::desc::split::Descriptor;

    const WRITE: u16 = 2;

    fn sample() -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 5000,
            len: 10,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 77,
        }
    }

    #[test]
    fn header_round_trips_in_little_endian() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[30..32], &op::RW.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
        let r = h.reply(op::RST);
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (2, 3, 5000, 1234)
        );
        assert_eq!((r.op, r.len), (op::RST, 0));
    }

    #[test]
    fn tx_packet_header_and_payload_may_span_descriptors() {
        let mem = guest_memory();
        let h = sample();
        let raw = h.to_bytes();
        // Header split 20 + 24 bytes, then 4 bytes of payload in the second
        // descriptor's tail and 6 in a third one.
        mem.write_slice(&raw[..20], GuestAddress(0x1000)).unwrap();
        mem.write_slice(&raw[20..], GuestAddress(0x2000)).unwrap();
        let descs = vec![
            Descriptor::new(0x1000, 20, 0, 0),
            Descriptor::new(0x2000, 28, 0, 0),
            Descriptor::new(0x3000, 100, 0, 0),
        ];
        let p = TxPacket::parse(&mem, descs).unwrap();
        assert_eq!(p.hdr, h);
        assert_eq!(
            p.payload,
            vec![(GuestAddress(0x2000 + 24), 4), (GuestAddress(0x3000), 6)]
        );
    }

    #[test]
    fn tx_packet_errors() {
        let mem = guest_memory();
        let mut h = sample();
        mem.write_slice(&h.to_bytes(), GuestAddress(0x1000))
            .unwrap();
        // Too short for a header.
        let e = TxPacket::parse(&mem, vec![Descriptor::new(0x1000, 43, 0, 0)]).unwrap_err();
        assert_eq!(e, (None, PacketError::TooShort(43)));
        // Device-writable.
        let e = TxPacket::parse(&mem, vec![Descriptor::new(0x1000, 64, WRITE, 0)]).unwrap_err();
        assert_eq!(e.1, PacketError::WriteOnlyTx);
        // Outside memory.
        let e = TxPacket::parse(&mem, vec![Descriptor::new(1 << 40, 64, 0, 0)]).unwrap_err();
        assert!(matches!(e.1, PacketError::OutOfRange { .. }));
        // len beyond the chain: header comes back for the RST.
        let e = TxPacket::parse(&mem, vec![Descriptor::new(0x1000, 50, 0, 0)]).unwrap_err();
        assert_eq!(
            e,
            (Some(h), PacketError::LenBeyondChain { len: 10, avail: 6 })
        );
        // Oversize.
        h.len = 64 * 1024 + 1;
        mem.write_slice(&h.to_bytes(), GuestAddress(0x1000))
            .unwrap();
        let e = TxPacket::parse(&mem, vec![Descriptor::new(0x1000, 1 << 20, 0, 0)]).unwrap_err();
        assert_eq!(e.1, PacketError::Oversize(64 * 1024 + 1));
        // Non-RW ops ignore len.
        h.op = op::REQUEST;
        mem.write_slice(&h.to_bytes(), GuestAddress(0x1000))
            .unwrap();
        let p = TxPacket::parse(&mem, vec![Descriptor::new(0x1000, 44, 0, 0)]).unwrap();
        assert!(p.payload.is_empty());
    }

    #[test]
    fn rx_buffer_checks_direction_and_size() {
        let mem = guest_memory();
        let e = RxBuffer::parse(&mem, vec![Descriptor::new(0x1000, 4096, 0, 0)]).unwrap_err();
        assert_eq!(e, PacketError::ReadOnlyRx);
        let e = RxBuffer::parse(&mem, vec![Descriptor::new(0x1000, 40, WRITE, 0)]).unwrap_err();
        assert_eq!(e, PacketError::TooShort(40));
        let b = RxBuffer::parse(
            &mem,
            vec![
                Descriptor::new(0x1000, 30, WRITE, 0),
                Descriptor::new(0x2000, 100, WRITE, 0),
            ],
        )
        .unwrap();
        assert_eq!(b.capacity(), 86);
        assert_eq!(b.payload, vec![(GuestAddress(0x2000 + 14), 86)]);
        let h = sample();
        b.write_header(&mem, &h).unwrap();
        let mut raw = [0u8; HDR_LEN];
        mem.read_slice(&mut raw[..30], GuestAddress(0x1000))
            .unwrap();
        mem.read_slice(&mut raw[30..], GuestAddress(0x2000))
            .unwrap();
        assert_eq!(Header::from_bytes(&raw), h);
    }
}
