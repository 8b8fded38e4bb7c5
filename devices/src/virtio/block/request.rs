//! Parsing a descriptor chain into a typed block request.
//!
//! [`parse`] is a pure function of guest memory, the chain's descriptors and
//! the disk's capacity: it reads the request header (and the range list of
//! discard/write-zeroes requests) from guest memory, never writes, and does
//! no I/O, so a fuzz target can drive it directly.
//!
//! The layout is not assumed (virtio 1.x devices must not rely on framing):
//! the device-readable bytes of the chain, in order, are the 16-byte header
//! followed by the write payload; the device-writable bytes are the read
//! payload followed by the status byte, which is the last byte of the last
//! descriptor. Each descriptor is checked against guest memory once, here.
//!
//! Outcomes:
//! * `Err(ChainError)`: there is no usable status byte; the device returns
//!   the chain with used length 0;
//! * `Ok(Request { op: Err(Rejection), .. })`: the device writes
//!   `VIRTIO_BLK_S_IOERR` (invalid request) or `VIRTIO_BLK_S_UNSUPP`
//!   (unknown type or flags) into the status byte;
//! * `Ok(Request { op: Ok(Operation), .. })`: a request to execute.
//!
//! Past 800 lines only with its unit tests (the parser itself is ~460).

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{
    MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, SECTOR_SHIFT, SECTOR_SIZE, SEG_MAX, SIZE_MAX,
};
use crate::virtio::chain::{last_descriptor, pieces, IncompleteChain};
use crate::virtio::GuestMemoryMmap;

/// Size of the request header (`struct virtio_blk_outhdr`).
pub const HEADER_SIZE: usize = 16;
/// Size of one discard/write-zeroes range
/// (`struct virtio_blk_discard_write_zeroes`).
pub const RANGE_SIZE: usize = 16;

/// A contiguous guest buffer; a parsed request's are checked to lie inside
/// guest memory and are never empty.
pub use crate::virtio::chain::Segment;

/// One range of a discard or write-zeroes request, checked against the
/// capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorRange {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub sectors: u32,
    /// Write zeroes only: the device may deallocate the range.
    pub unmap: bool,
}

/// A valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `VIRTIO_BLK_T_IN`: fill the device-writable `data` from `sector` on.
    Read {
        /// First sector.
        sector: u64,
        /// Guest buffers to fill, in order (a multiple of 512 bytes in all).
        data: Vec<Segment>,
    },
    /// `VIRTIO_BLK_T_OUT`: store the device-readable `data` at `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// Guest buffers to store, in order (a multiple of 512 bytes in all).
        data: Vec<Segment>,
    },
    /// `VIRTIO_BLK_T_FLUSH`: make every acknowledged write durable.
    Flush,
    /// `VIRTIO_BLK_T_GET_ID`: write the disk's serial into `data`.
    GetId {
        /// Device-writable buffers (the driver gives 20 bytes).
        data: Vec<Segment>,
    },
    /// `VIRTIO_BLK_T_DISCARD`: the guest no longer needs these sectors.
    Discard(Vec<SectorRange>),
    /// `VIRTIO_BLK_T_WRITE_ZEROES`: these sectors must read back as zeroes.
    WriteZeroes(Vec<SectorRange>),
}

impl Operation {
    /// Whether the operation would change the disk's contents.
    pub fn modifies_disk(&self) -> bool {
        matches!(
            self,
            Operation::Write { .. } | Operation::Discard(_) | Operation::WriteZeroes(_)
        )
    }
}

/// Why a request with a valid status byte is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A request type this device does not implement (`VIRTIO_BLK_S_UNSUPP`).
    #[error("unsupported request type {0}")]
    UnsupportedType(u32),
    /// Unknown or forbidden flags in a discard/write-zeroes range
    /// (`VIRTIO_BLK_S_UNSUPP`, as the spec requires).
    #[error("unsupported flags {0:#x} in a discard/write-zeroes range")]
    UnsupportedFlags(u32),
    /// A malformed request (`VIRTIO_BLK_S_IOERR`).
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
}

impl Rejection {
    /// The status byte the device reports for this rejection.
    pub fn status(&self) -> u8 {
        match self {
            Rejection::UnsupportedType(_) | Rejection::UnsupportedFlags(_) => {
                VIRTIO_BLK_S_UNSUPP as u8
            }
            Rejection::Invalid(_) => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A malformed request; answered with `VIRTIO_BLK_S_IOERR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// A device-readable descriptor follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// A buffer does not lie entirely inside guest memory.
    #[error("buffer {addr:#x}+{len} is outside guest memory")]
    OutsideMemory {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// Fewer than 16 device-readable bytes.
    #[error("request header is {0} bytes, expected {HEADER_SIZE}")]
    ShortHeader(u64),
    /// Data buffers in the wrong direction for the request type.
    #[error("{0}")]
    WrongDirection(&'static str),
    /// Data length is not a whole number of sectors.
    #[error("data length {0} is not a multiple of {SECTOR_SIZE}")]
    Misaligned(u64),
    /// More data segments than `seg_max`.
    #[error("{0} data segments, more than seg_max {SEG_MAX}")]
    TooManySegments(usize),
    /// A data segment longer than `size_max`.
    #[error("data segment of {0} bytes, more than size_max {SIZE_MAX}")]
    SegmentTooLarge(u32),
    /// The request reaches beyond the end of the disk.
    #[error("sectors {sector}+{sectors} reach beyond the capacity of {capacity} sectors")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// A discard/write-zeroes payload that is empty or not whole ranges.
    #[error("discard/write-zeroes payload of {0} bytes is not a non-empty list of {RANGE_SIZE}-byte ranges")]
    BadRangeList(u64),
    /// More ranges than `max_discard_seg` / `max_write_zeroes_seg`.
    #[error("{0} discard/write-zeroes ranges, more than {MAX_DISCARD_SEGMENTS}")]
    TooManyRanges(u64),
    /// A range longer than `max_discard_sectors` / `max_write_zeroes_sectors`.
    #[error("discard/write-zeroes range of {0} sectors, more than {MAX_DISCARD_SECTORS}")]
    RangeTooLarge(u32),
}

/// A chain without a usable status byte: returned with used length 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No descriptors, or the walk did not reach the chain's end.
    #[error(transparent)]
    Incomplete(#[from] IncompleteChain),
    /// The last descriptor is device-readable.
    #[error("the last descriptor is not device-writable, so there is no status byte")]
    StatusNotWritable,
    /// The last descriptor is empty.
    #[error("the last descriptor is empty, so there is no status byte")]
    StatusEmpty,
    /// The status byte lies outside guest memory.
    #[error("the status byte at {0:#x} is outside guest memory")]
    StatusOutsideMemory(u64),
}

/// A parsed chain: where to report the status, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Guest address of the status byte (inside guest memory).
    pub status: GuestAddress,
    /// The request, or why it is refused.
    pub op: Result<Operation, Rejection>,
}

/// Parses the descriptors of one chain (as the chain walker yielded them)
/// for a disk of `capacity` sectors.
pub fn parse(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    capacity: u64,
) -> Result<Request, ChainError> {
    let last = last_descriptor(descs)?;
    let rest = &descs[..descs.len() - 1];
    if !last.is_write_only() {
        return Err(ChainError::StatusNotWritable);
    }
    let data_in_last = last.len().checked_sub(1).ok_or(ChainError::StatusEmpty)?;
    let status = last
        .addr()
        .0
        .checked_add(u64::from(data_in_last))
        .map(GuestAddress)
        .filter(|&a| mem.check_range(a, 1))
        .ok_or(ChainError::StatusOutsideMemory(last.addr().0))?;

    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let mut out_of_order = false;
    let last_data = (last.addr(), data_in_last, true);
    let all = rest
        .iter()
        .map(|d| (d.addr(), d.len(), d.is_write_only()))
        .chain(std::iter::once(last_data));
    for (addr, len, write) in all {
        if len == 0 {
            continue;
        }
        let seg = Segment { addr, len };
        if write {
            writable.push(seg);
        } else {
            out_of_order |= !writable.is_empty();
            readable.push(seg);
        }
    }
    let op = operation(mem, readable, writable, out_of_order, capacity);
    Ok(Request { status, op })
}

fn operation(
    mem: &GuestMemoryMmap,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
    out_of_order: bool,
    capacity: u64,
) -> Result<Operation, Rejection> {
    if out_of_order {
        return Err(InvalidRequest::ReadableAfterWritable.into());
    }
    for seg in readable.iter().chain(&writable) {
        if !mem.check_range(seg.addr, seg.len as usize) {
            return Err(InvalidRequest::OutsideMemory {
                addr: seg.addr.0,
                len: seg.len,
            }
            .into());
        }
    }
    let (header_segs, payload) = split_at(&readable, HEADER_SIZE as u64);
    let mut header = [0u8; HEADER_SIZE];
    let got = read_bytes(mem, &header_segs, &mut header)?;
    if got < HEADER_SIZE {
        return Err(InvalidRequest::ShortHeader(got as u64).into());
    }
    let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
    let kind = u32::from_le_bytes([t0, t1, t2, t3]);
    let sector = u64::from_le_bytes(s);
    let no_payload = |what| {
        if payload.is_empty() {
            Ok(())
        } else {
            Err(InvalidRequest::WrongDirection(what))
        }
    };
    let no_writable = |what| {
        if writable.is_empty() {
            Ok(())
        } else {
            Err(InvalidRequest::WrongDirection(what))
        }
    };
    match kind {
        VIRTIO_BLK_T_IN => {
            no_payload("a read carries device-readable data buffers")?;
            check_data(&writable, sector, capacity)?;
            Ok(Operation::Read {
                sector,
                data: writable,
            })
        }
        VIRTIO_BLK_T_OUT => {
            no_writable("a write carries device-writable data buffers")?;
            check_data(&payload, sector, capacity)?;
            Ok(Operation::Write {
                sector,
                data: payload,
            })
        }
        // The spec asks drivers not to attach data to a flush; if they do,
        // it is ignored.
        VIRTIO_BLK_T_FLUSH => Ok(Operation::Flush),
        VIRTIO_BLK_T_GET_ID => {
            no_payload("a get-id request carries device-readable data buffers")?;
            Ok(Operation::GetId { data: writable })
        }
        VIRTIO_BLK_T_DISCARD => {
            no_writable("a discard carries device-writable data buffers")?;
            Ok(Operation::Discard(ranges(mem, &payload, capacity, false)?))
        }
        VIRTIO_BLK_T_WRITE_ZEROES => {
            no_writable("a write-zeroes request carries device-writable data buffers")?;
            Ok(Operation::WriteZeroes(ranges(
                mem, &payload, capacity, true,
            )?))
        }
        other => Err(Rejection::UnsupportedType(other)),
    }
}

/// Splits `segs` after `n` bytes.
fn split_at(segs: &[Segment], n: u64) -> (Vec<Segment>, Vec<Segment>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut left = n;
    for seg in segs {
        let len = u64::from(seg.len);
        if left >= len {
            left -= len;
            head.push(*seg);
        } else if left > 0 {
            // left < len <= u32::MAX, so both parts fit a u32.
            let cut = left as u32;
            head.push(Segment {
                addr: seg.addr,
                len: cut,
            });
            tail.push(Segment {
                addr: GuestAddress(seg.addr.0 + u64::from(cut)),
                len: seg.len - cut,
            });
            left = 0;
        } else {
            tail.push(*seg);
        }
    }
    (head, tail)
}

/// Reads up to `buf.len()` bytes from the start of `segs`; returns how many.
fn read_bytes(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    buf: &mut [u8],
) -> Result<usize, InvalidRequest> {
    let mut done = 0;
    for (part, seg) in pieces(segs, buf.len()) {
        done = part.end;
        mem.read_slice(&mut buf[part], seg.addr)
            .map_err(|_| InvalidRequest::OutsideMemory {
                addr: seg.addr.0,
                len: seg.len,
            })?;
    }
    Ok(done)
}

fn total_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

fn check_sectors(sector: u64, sectors: u64, capacity: u64) -> Result<(), InvalidRequest> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(InvalidRequest::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

fn check_data(segs: &[Segment], sector: u64, capacity: u64) -> Result<(), InvalidRequest> {
    if segs.len() > SEG_MAX as usize {
        return Err(InvalidRequest::TooManySegments(segs.len()));
    }
    if let Some(seg) = segs.iter().find(|s| s.len > SIZE_MAX) {
        return Err(InvalidRequest::SegmentTooLarge(seg.len));
    }
    let len = total_len(segs);
    if len % SECTOR_SIZE != 0 {
        return Err(InvalidRequest::Misaligned(len));
    }
    check_sectors(sector, len >> SECTOR_SHIFT, capacity)
}

fn ranges(
    mem: &GuestMemoryMmap,
    payload: &[Segment],
    capacity: u64,
    write_zeroes: bool,
) -> Result<Vec<SectorRange>, Rejection> {
    let len = total_len(payload);
    if len == 0 || len % RANGE_SIZE as u64 != 0 {
        return Err(InvalidRequest::BadRangeList(len).into());
    }
    let count = len / RANGE_SIZE as u64;
    if count > u64::from(MAX_DISCARD_SEGMENTS) {
        return Err(InvalidRequest::TooManyRanges(count).into());
    }
    let mut out = Vec::new();
    let mut rest = payload.to_vec();
    for _ in 0..count {
        let (this, tail) = split_at(&rest, RANGE_SIZE as u64);
        rest = tail;
        let mut raw = [0u8; RANGE_SIZE];
        read_bytes(mem, &this, &mut raw)?;
        let [s @ .., n0, n1, n2, n3, f0, f1, f2, f3] = raw;
        let sector = u64::from_le_bytes(s);
        let sectors = u32::from_le_bytes([n0, n1, n2, n3]);
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        let allowed = if write_zeroes {
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        } else {
            0
        };
        if flags & !allowed != 0 {
            return Err(Rejection::UnsupportedFlags(flags));
        }
        if sectors > MAX_DISCARD_SECTORS {
            return Err(InvalidRequest::RangeTooLarge(sectors).into());
        }
        check_sectors(sector, u64::from(sectors), capacity)?;
        out.push(SectorRange {
            sector,
            sectors,
            unmap: flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{
        chain, guest_memory, DATA_START, TEST_MEM_SIZE, VRING_DESC_F_WRITE,
    };

    const W: u16 = VRING_DESC_F_WRITE;
    const HDR: u64 = DATA_START;
    const DATA: u64 = DATA_START + 0x1000;
    const STATUS: u64 = DATA_START + 0x10_0000;
    const CAP: u64 = 100;

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// Test memory with a request header (`kind`, `sector`) at [`HDR`].
    fn memory_with_header(kind: u32, sector: u64) -> GuestMemoryMmap {
        let mem = guest_memory();
        header(&mem, kind, sector);
        mem
    }

    fn op(mem: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> Result<Operation, Rejection> {
        parse(mem, &chain(descs), CAP).unwrap().op
    }

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    fn one_range(sector: u64, sectors: u32, unmap: bool) -> Vec<SectorRange> {
        vec![SectorRange {
            sector,
            sectors,
            unmap,
        }]
    }

    fn invalid(e: InvalidRequest) -> Result<Operation, Rejection> {
        Err(Rejection::Invalid(e))
    }

    #[test]
    fn read_write_flush_get_id() {
        let mem = memory_with_header(VIRTIO_BLK_T_IN, 7);
        let r = parse(
            &mem,
            &chain(&[(HDR, 16, 0), (DATA, 1024, W), (STATUS, 1, W)]),
            CAP,
        )
        .unwrap();
        assert_eq!(r.status, GuestAddress(STATUS));
        assert_eq!(
            r.op,
            Ok(Operation::Read {
                sector: 7,
                data: vec![seg(DATA, 1024)]
            })
        );
        header(&mem, VIRTIO_BLK_T_OUT, 99);
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, W)]),
            Ok(Operation::Write {
                sector: 99,
                data: vec![seg(DATA, 512)]
            })
        );
        header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (STATUS, 1, W)]),
            Ok(Operation::Flush)
        );
        header(&mem, VIRTIO_BLK_T_GET_ID, 0);
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (DATA, 20, W), (STATUS, 1, W)]),
            Ok(Operation::GetId {
                data: vec![seg(DATA, 20)]
            })
        );
    }

    #[test]
    fn any_layout_header_with_data_and_data_with_status() {
        let mem = guest_memory();
        // Header and payload in one readable descriptor.
        header(&mem, VIRTIO_BLK_T_OUT, 1);
        assert_eq!(
            op(&mem, &[(HDR, 16 + 512, 0), (STATUS, 1, W)]),
            Ok(Operation::Write {
                sector: 1,
                data: vec![seg(HDR + 16, 512)]
            })
        );
        // Read payload and status in one writable descriptor; header split
        // over two descriptors.
        header(&mem, VIRTIO_BLK_T_IN, 2);
        let r = parse(
            &mem,
            &chain(&[(HDR, 4, 0), (HDR + 4, 12, 0), (DATA, 513, W)]),
            CAP,
        )
        .unwrap();
        assert_eq!(r.status, GuestAddress(DATA + 512));
        assert_eq!(
            r.op,
            Ok(Operation::Read {
                sector: 2,
                data: vec![seg(DATA, 512)]
            })
        );
        // Zero-length descriptors are skipped.
        assert_eq!(
            op(
                &mem,
                &[(HDR, 16, 0), (DATA, 0, W), (DATA, 512, W), (STATUS, 1, W)]
            ),
            Ok(Operation::Read {
                sector: 2,
                data: vec![seg(DATA, 512)]
            })
        );
    }

    #[test]
    fn chains_without_a_status_byte_are_dropped() {
        let mem = memory_with_header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            parse(&mem, &[], CAP),
            Err(ChainError::Incomplete(IncompleteChain::Empty))
        );
        assert_eq!(
            parse(&mem, &chain(&[(HDR, 16, 0), (DATA, 512, W)])[..1], CAP),
            Err(ChainError::Incomplete(IncompleteChain::Truncated)),
            "the last descriptor the walker gave still has NEXT"
        );
        assert_eq!(
            parse(&mem, &chain(&[(HDR, 16, 0), (STATUS, 1, 0)]), CAP),
            Err(ChainError::StatusNotWritable)
        );
        assert_eq!(
            parse(&mem, &chain(&[(HDR, 16, 0), (STATUS, 0, W)]), CAP),
            Err(ChainError::StatusEmpty)
        );
        let outside = TEST_MEM_SIZE as u64;
        assert_eq!(
            parse(&mem, &chain(&[(HDR, 16, 0), (outside, 1, W)]), CAP),
            Err(ChainError::StatusOutsideMemory(outside))
        );
        assert_eq!(
            parse(&mem, &chain(&[(HDR, 16, 0), (u64::MAX, 2, W)]), CAP),
            Err(ChainError::StatusOutsideMemory(u64::MAX)),
            "address overflow"
        );
    }

    #[test]
    fn malformed_requests_get_ioerr() {
        let mem = memory_with_header(VIRTIO_BLK_T_IN, 0);
        // Short header, and no header at all.
        assert_eq!(
            op(&mem, &[(HDR, 8, 0), (STATUS, 1, W)]),
            invalid(InvalidRequest::ShortHeader(8))
        );
        assert_eq!(
            op(&mem, &[(DATA, 512, W), (STATUS, 1, W)]),
            invalid(InvalidRequest::ShortHeader(0))
        );
        // Read with device-readable data.
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, W)]),
            invalid(InvalidRequest::WrongDirection(
                "a read carries device-readable data buffers"
            ))
        );
        // Readable after writable.
        assert_eq!(
            op(
                &mem,
                &[(HDR, 16, 0), (DATA, 512, W), (DATA, 512, 0), (STATUS, 1, W)]
            ),
            invalid(InvalidRequest::ReadableAfterWritable)
        );
        // Misaligned length.
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (DATA, 500, W), (STATUS, 1, W)]),
            invalid(InvalidRequest::Misaligned(500))
        );
        // Segment beyond size_max.
        assert_eq!(
            op(
                &mem,
                &[(HDR, 16, 0), (0, SIZE_MAX + 512, W), (STATUS, 1, W)]
            ),
            invalid(InvalidRequest::SegmentTooLarge(SIZE_MAX + 512))
        );
        // Data outside guest memory, and straddling its end.
        let end = TEST_MEM_SIZE as u64;
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (end, 512, W), (STATUS, 1, W)]),
            invalid(InvalidRequest::OutsideMemory {
                addr: end,
                len: 512
            })
        );
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (end - 256, 512, W), (STATUS, 1, W)]),
            invalid(InvalidRequest::OutsideMemory {
                addr: end - 256,
                len: 512
            })
        );
        // Header outside guest memory.
        assert_eq!(
            op(&mem, &[(end, 16, 0), (STATUS, 1, W)]),
            invalid(InvalidRequest::OutsideMemory { addr: end, len: 16 })
        );
        // Write with device-writable data.
        header(&mem, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (DATA, 512, W), (STATUS, 1, W)]),
            invalid(InvalidRequest::WrongDirection(
                "a write carries device-writable data buffers"
            ))
        );
        // GET_ID with readable data.
        header(&mem, VIRTIO_BLK_T_GET_ID, 0);
        assert!(matches!(
            op(&mem, &[(HDR, 16, 0), (DATA, 20, 0), (STATUS, 1, W)]),
            Err(Rejection::Invalid(InvalidRequest::WrongDirection(_)))
        ));
    }

    #[test]
    fn sector_ranges_are_checked_against_the_capacity() {
        let mem = guest_memory();
        let read = |sector, len| {
            header(&mem, VIRTIO_BLK_T_IN, sector);
            op(&mem, &[(HDR, 16, 0), (DATA, len, W), (STATUS, 1, W)])
        };
        assert!(read(CAP - 1, 512).is_ok(), "last sector");
        assert!(read(CAP, 0).is_ok(), "empty read at the end");
        assert_eq!(
            read(CAP - 1, 1024),
            invalid(InvalidRequest::OutOfRange {
                sector: CAP - 1,
                sectors: 2,
                capacity: CAP
            })
        );
        assert_eq!(
            read(u64::MAX, 512),
            invalid(InvalidRequest::OutOfRange {
                sector: u64::MAX,
                sectors: 1,
                capacity: CAP
            }),
            "sector overflow"
        );
    }

    #[test]
    fn too_many_segments() {
        let mem = memory_with_header(VIRTIO_BLK_T_IN, 0);
        let mut descs = vec![(HDR, 16, 0)];
        descs.extend((0..=SEG_MAX as u64).map(|i| (DATA + i * 512, 512, W)));
        descs.push((STATUS, 1, W));
        assert_eq!(
            op(&mem, &descs),
            invalid(InvalidRequest::TooManySegments(SEG_MAX as usize + 1))
        );
    }

    #[test]
    fn unknown_types_are_unsupported() {
        let mem = guest_memory();
        for kind in [2, 3, 14, 0x8000_0000, u32::MAX] {
            header(&mem, kind, 0);
            let r = op(&mem, &[(HDR, 16, 0), (STATUS, 1, W)]);
            assert_eq!(r, Err(Rejection::UnsupportedType(kind)));
            assert_eq!(r.unwrap_err().status(), VIRTIO_BLK_S_UNSUPP as u8);
        }
    }

    fn range(mem: &GuestMemoryMmap, at: u64, sector: u64, sectors: u32, flags: u32) {
        let mut r = [0u8; 16];
        r[..8].copy_from_slice(&sector.to_le_bytes());
        r[8..12].copy_from_slice(&sectors.to_le_bytes());
        r[12..].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&r, GuestAddress(at)).unwrap();
    }

    #[test]
    fn discard_and_write_zeroes_ranges() {
        let mem = memory_with_header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        range(&mem, DATA, 10, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
        let descs = [(HDR, 16, 0), (DATA, 16, 0), (STATUS, 1, W)];
        assert_eq!(
            op(&mem, &descs),
            Ok(Operation::WriteZeroes(one_range(10, 8, true)))
        );
        // Discard must not carry the unmap flag; unknown flags are UNSUPP.
        header(&mem, VIRTIO_BLK_T_DISCARD, 0);
        assert_eq!(op(&mem, &descs), Err(Rejection::UnsupportedFlags(1)));
        range(&mem, DATA, 10, 8, 0);
        assert_eq!(
            op(&mem, &descs),
            Ok(Operation::Discard(one_range(10, 8, false)))
        );
        range(&mem, DATA, 10, 8, 4);
        assert_eq!(op(&mem, &descs), Err(Rejection::UnsupportedFlags(4)));
        // Out of range, too large, malformed lists.
        range(&mem, DATA, CAP - 1, 2, 0);
        assert!(matches!(
            op(&mem, &descs),
            Err(Rejection::Invalid(InvalidRequest::OutOfRange { .. }))
        ));
        range(&mem, DATA, 0, MAX_DISCARD_SECTORS + 1, 0);
        assert_eq!(
            op(&mem, &descs),
            invalid(InvalidRequest::RangeTooLarge(MAX_DISCARD_SECTORS + 1))
        );
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (DATA, 15, 0), (STATUS, 1, W)]),
            invalid(InvalidRequest::BadRangeList(15))
        );
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (STATUS, 1, W)]),
            invalid(InvalidRequest::BadRangeList(0))
        );
        assert_eq!(
            op(&mem, &[(HDR, 16, 0), (DATA, 32, 0), (STATUS, 1, W)]),
            invalid(InvalidRequest::TooManyRanges(2))
        );
        assert!(matches!(
            op(&mem, &[(HDR, 16, 0), (DATA, 16, W), (STATUS, 1, W)]),
            Err(Rejection::Invalid(InvalidRequest::WrongDirection(_)))
        ));
    }

    #[test]
    fn only_writes_modify_the_disk() {
        assert!(Operation::Write {
            sector: 0,
            data: vec![]
        }
        .modifies_disk());
        assert!(Operation::Discard(vec![]).modifies_disk());
        assert!(Operation::WriteZeroes(vec![]).modifies_disk());
        assert!(!Operation::Flush.modifies_disk());
        assert!(!Operation::GetId { data: vec![] }.modifies_disk());
        assert!(!Operation::Read {
            sector: 0,
            data: vec![]
        }
        .modifies_disk());
    }
}
