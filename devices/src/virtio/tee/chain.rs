//! Parsing one descriptor chain of the request queue into a typed request.
//!
//! [`parse`] is a pure function of guest memory, the chain's descriptors and
//! the device's [`Limits`]: it reads the request from guest memory, never
//! writes, does no I/O and allocates at most [`Limits::max_request_len`]
//! bytes, so a fuzz target can drive it directly.
//!
//! No framing is assumed: the device-readable bytes of the chain, in order,
//! are the request; the device-writable bytes are the response buffer.
//!
//! Outcomes:
//! * `Err(ChainError)`: there is no response buffer the device can write a
//!   response header into; the device returns the chain with used length 0;
//! * `Ok(ParsedChain { request: Err(Rejection), .. })`: the device answers
//!   with the rejection's status (header only);
//! * `Ok(ParsedChain { request: Ok(Request), .. })`: a request to carry out.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::decode::{check_registration, decode_body};
use super::protocol::{
    Rejection, Request, RequestHeader, RequestType, REQ_HEADER_SIZE, RESP_HEADER_SIZE,
    SHM_REGISTER_BODY_SIZE,
};
use super::Limits;
use crate::virtio::chain::{last_descriptor, IncompleteChain};
use crate::virtio::GuestMemoryMmap;

/// A contiguous guest buffer.
pub use crate::virtio::chain::Segment;

/// A chain without a usable response buffer: returned with used length 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No descriptors, or the walk did not reach the chain's end.
    #[error(transparent)]
    Incomplete(#[from] IncompleteChain),
    /// Fewer device-writable bytes than the response header.
    #[error("response buffer of {0} bytes is shorter than the {RESP_HEADER_SIZE}-byte header")]
    ResponseTooShort(u64),
    /// A device-writable buffer that is not entirely inside guest memory.
    #[error("response buffer {addr:#x}+{len} is outside guest memory")]
    ResponseOutsideMemory {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
}

/// The device-writable part of a chain, checked to lie in guest memory and
/// to hold at least a response header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseBuffer {
    segments: Vec<Segment>,
    len: u64,
}

impl ResponseBuffer {
    /// Bytes the buffer holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the buffer holds nothing (never true for a parsed chain).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `bytes` (cut at the buffer's end) from the buffer's start;
    /// returns the number of bytes written, the used length.
    pub fn write(
        &self,
        mem: &GuestMemoryMmap,
        bytes: &[u8],
    ) -> Result<u32, vm_memory::GuestMemoryError> {
        let mut done = 0usize;
        for seg in &self.segments {
            if done == bytes.len() {
                break;
            }
            let n = (seg.len as usize).min(bytes.len() - done);
            mem.write_slice(&bytes[done..done + n], seg.addr)?;
            done += n;
        }
        // At most the response size (a few hundred bytes).
        Ok(u32::try_from(done).unwrap_or(u32::MAX))
    }
}

/// A chain with a usable response buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedChain {
    /// The request's `request_id` (0 if the header could not be read).
    pub request_id: u64,
    /// Where the response goes.
    pub response: ResponseBuffer,
    /// The request, or why it is refused.
    pub request: Result<Request, Rejection>,
}

/// Parses the descriptors of one chain (as the chain walker yielded them).
pub fn parse(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    limits: &Limits,
) -> Result<ParsedChain, ChainError> {
    last_descriptor(descs)?;
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let mut out_of_order = false;
    for d in descs {
        if d.len() == 0 {
            continue;
        }
        let seg = Segment {
            addr: d.addr(),
            len: d.len(),
        };
        if d.is_write_only() {
            writable.push(seg);
        } else {
            out_of_order |= !writable.is_empty();
            readable.push(seg);
        }
    }
    if let Some(seg) = writable
        .iter()
        .find(|s| !mem.check_range(s.addr, s.len as usize))
    {
        return Err(ChainError::ResponseOutsideMemory {
            addr: seg.addr.0,
            len: seg.len,
        });
    }
    let response_len = total_len(&writable);
    if response_len < RESP_HEADER_SIZE as u64 {
        return Err(ChainError::ResponseTooShort(response_len));
    }
    let (request_id, request) = request(mem, &readable, out_of_order, response_len, limits);
    Ok(ParsedChain {
        request_id,
        response: ResponseBuffer {
            segments: writable,
            len: response_len,
        },
        request,
    })
}

/// The request in `readable`, with its id (0 if there is no header).
fn request(
    mem: &GuestMemoryMmap,
    readable: &[Segment],
    out_of_order: bool,
    response_len: u64,
    limits: &Limits,
) -> (u64, Result<Request, Rejection>) {
    if let Some(seg) = readable
        .iter()
        .find(|s| !mem.check_range(s.addr, s.len as usize))
    {
        let e = Rejection::OutsideMemory {
            addr: seg.addr.0,
            len: seg.len,
        };
        return (0, Err(e));
    }
    let total = total_len(readable);
    let mut raw = [0u8; REQ_HEADER_SIZE];
    if total < REQ_HEADER_SIZE as u64 || read_at(mem, readable, 0, &mut raw).is_err() {
        return (0, Err(Rejection::ShortHeader(total)));
    }
    let header = RequestHeader::decode(&raw);
    let id = header.request_id;
    (
        id,
        checked_request(
            mem,
            readable,
            header,
            out_of_order,
            total,
            response_len,
            limits,
        ),
    )
}

fn checked_request(
    mem: &GuestMemoryMmap,
    readable: &[Segment],
    header: RequestHeader,
    out_of_order: bool,
    total: u64,
    response_len: u64,
    limits: &Limits,
) -> Result<Request, Rejection> {
    if out_of_order {
        return Err(Rejection::ReadableAfterWritable);
    }
    let ty =
        RequestType::from_code(header.type_code).ok_or(Rejection::UnknownType(header.type_code))?;
    if header.flags != 0 {
        return Err(Rejection::Flags(header.flags));
    }
    let needed = ty.response_size() as u64;
    if response_len < needed {
        return Err(Rejection::ResponseTooSmall {
            ty,
            expected: needed,
            got: response_len,
        });
    }
    let fixed = (REQ_HEADER_SIZE + ty.body_size()) as u64;
    let expected = if ty == RequestType::ShmRegister && total >= fixed {
        // Check the frame count before reading (or allocating for) the
        // frames.
        let mut body = [0u8; SHM_REGISTER_BODY_SIZE];
        read_at(mem, readable, REQ_HEADER_SIZE as u64, &mut body)
            .map_err(|_| length(ty, fixed, total))?;
        let [s @ .., o0, o1, o2, o3, n0, n1, n2, n3] = body;
        let size = u64::from_le_bytes(s);
        let offset = u32::from_le_bytes([o0, o1, o2, o3]);
        let num_frames = u32::from_le_bytes([n0, n1, n2, n3]);
        check_registration(size, offset, num_frames, limits)?;
        fixed + 8 * u64::from(num_frames)
    } else {
        fixed
    };
    if total != expected {
        return Err(length(ty, expected, total));
    }
    // expected <= limits.max_request_len(): a few KiB.
    let mut body = vec![0u8; (expected - REQ_HEADER_SIZE as u64) as usize];
    read_at(mem, readable, REQ_HEADER_SIZE as u64, &mut body)
        .map_err(|_| length(ty, expected, total))?;
    decode_body(ty, &body, limits)
}

fn length(ty: RequestType, expected: u64, got: u64) -> Rejection {
    Rejection::Length { ty, expected, got }
}

fn total_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Fills `buf` from byte `start` of the concatenation of `segs`; fails if
/// the segments end first or guest memory cannot be read.
fn read_at(mem: &GuestMemoryMmap, segs: &[Segment], start: u64, buf: &mut [u8]) -> Result<(), ()> {
    let mut skip = start;
    let mut done = 0usize;
    for seg in segs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(seg.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        // skip < len <= u32::MAX.
        let avail = (len - skip) as usize;
        let n = avail.min(buf.len() - done);
        let addr = GuestAddress(seg.addr.0 + skip);
        mem.read_slice(&mut buf[done..done + n], addr)
            .map_err(|_| ())?;
        done += n;
        skip = 0;
    }
    if done == buf.len() {
        Ok(())
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::tee::protocol::{
        Direction, Invoke, MemRef, OpenSession, Param, ShmRegistration, Status, Uuid, Value,
        NUM_PARAMS,
    };
    use crate::virtio::test_utils::{
        chain, guest_memory, DATA_START, TEST_MEM_SIZE, VRING_DESC_F_WRITE,
    };

    const W: u16 = VRING_DESC_F_WRITE;
    const REQ: u64 = DATA_START;
    const RESP: u64 = DATA_START + 0x10_0000;
    const L: Limits = Limits::DEFAULT;

    fn put(mem: &GuestMemoryMmap, bytes: &[u8]) -> u32 {
        mem.write_slice(bytes, GuestAddress(REQ)).unwrap();
        bytes.len() as u32
    }

    /// Parses `bytes` at REQ with a response buffer of `resp` bytes.
    fn parse_bytes(bytes: &[u8], resp: u32) -> ParsedChain {
        let mem = guest_memory();
        let n = put(&mem, bytes);
        parse(&mem, &chain(&[(REQ, n, 0), (RESP, resp, W)]), &L).unwrap()
    }

    fn outcome(bytes: &[u8]) -> Result<Request, Rejection> {
        parse_bytes(bytes, 512).request
    }

    fn params() -> [Param; NUM_PARAMS] {
        [
            Param::Value(Direction::Input, Value { a: 1, b: 2, c: 3 }),
            Param::MemRef(
                Direction::InOut,
                MemRef {
                    shm_id: 4,
                    offset: 5,
                    size: 6,
                },
            ),
            Param::None,
            Param::Value(Direction::Output, Value::default()),
        ]
    }

    fn every_request() -> Vec<Request> {
        vec![
            Request::OpenSession(OpenSession {
                uuid: Uuid([0xb4; 16]),
                client_uuid: Uuid([7; 16]),
                login: 0,
                params: params(),
            }),
            Request::CloseSession { session: 3 },
            Request::Invoke(Invoke {
                session: 3,
                func: 0x42,
                params: params(),
            }),
            Request::Cancel { request_id: 99 },
            Request::ShmRegister(ShmRegistration {
                size: 5000,
                offset: 100,
                frames: vec![0x1000, 0x5000],
            }),
            Request::ShmUnregister { shm_id: 8 },
        ]
    }

    #[test]
    fn every_request_type_parses() {
        for r in every_request() {
            let p = parse_bytes(&r.encode(0xabcd), 512);
            assert_eq!(p.request, Ok(r.clone()));
            assert_eq!(p.request_id, 0xabcd);
            assert_eq!(p.response.len(), 512);
        }
    }

    #[test]
    fn any_layout_split_header_and_response() {
        let mem = guest_memory();
        let r = &every_request()[2];
        let n = put(&mem, &r.encode(1));
        // The request in four pieces (header split in the middle), a
        // zero-length descriptor, the response in two.
        let descs = chain(&[
            (REQ, 5, 0),
            (REQ + 5, 20, 0),
            (REQ + 25, 0, 0),
            (REQ + 25, n - 25 - 7, 0),
            (REQ + u64::from(n) - 7, 7, 0),
            (RESP, 100, W),
            (RESP + 0x1000, 60, W),
        ]);
        let p = parse(&mem, &descs, &L).unwrap();
        assert_eq!(p.request, Ok(r.clone()));
        // The response goes across both writable pieces.
        let bytes: Vec<u8> = (0..160u8).collect();
        assert_eq!(p.response.write(&mem, &bytes).unwrap(), 160);
        let mut back = vec![0u8; 60];
        mem.read_slice(&mut back, GuestAddress(RESP + 0x1000))
            .unwrap();
        assert_eq!(back, bytes[100..]);
        // Bytes beyond the buffer are cut.
        assert_eq!(p.response.write(&mem, &[0; 400]).unwrap(), 160);
    }

    #[test]
    fn chains_without_a_response_buffer_are_dropped() {
        let mem = guest_memory();
        let n = put(&mem, &every_request()[1].encode(1));
        assert_eq!(
            parse(&mem, &[], &L),
            Err(ChainError::Incomplete(IncompleteChain::Empty))
        );
        assert_eq!(
            parse(&mem, &chain(&[(REQ, n, 0), (RESP, 16, W)])[..1], &L),
            Err(ChainError::Incomplete(IncompleteChain::Truncated))
        );
        assert_eq!(
            parse(&mem, &chain(&[(REQ, n, 0)]), &L),
            Err(ChainError::ResponseTooShort(0))
        );
        assert_eq!(
            parse(
                &mem,
                &chain(&[(REQ, n, 0), (RESP, 8, W), (RESP + 8, 7, W)]),
                &L
            ),
            Err(ChainError::ResponseTooShort(15))
        );
        let end = TEST_MEM_SIZE as u64;
        for (addr, len) in [(end, 16), (end - 8, 16), (u64::MAX - 4, 16)] {
            assert_eq!(
                parse(&mem, &chain(&[(REQ, n, 0), (addr, len, W)]), &L),
                Err(ChainError::ResponseOutsideMemory { addr, len })
            );
        }
        // One good writable piece does not save a bad one.
        assert_eq!(
            parse(&mem, &chain(&[(REQ, n, 0), (RESP, 64, W), (end, 1, W)]), &L),
            Err(ChainError::ResponseOutsideMemory { addr: end, len: 1 })
        );
    }

    #[test]
    fn short_or_misplaced_requests_are_invalid() {
        let mem = guest_memory();
        let n = put(&mem, &every_request()[1].encode(5));
        let p = |descs: &[(u64, u32, u16)]| parse(&mem, &chain(descs), &L).unwrap();
        let r = p(&[(RESP, 16, W)]);
        assert_eq!(r.request, Err(Rejection::ShortHeader(0)));
        assert_eq!(r.request_id, 0);
        assert_eq!(
            p(&[(REQ, 15, 0), (RESP, 16, W)]).request,
            Err(Rejection::ShortHeader(15))
        );
        let end = TEST_MEM_SIZE as u64;
        assert_eq!(
            p(&[(end - 4, 24, 0), (RESP, 16, W)]).request,
            Err(Rejection::OutsideMemory {
                addr: end - 4,
                len: 24
            })
        );
        assert_eq!(
            p(&[(u64::MAX - 8, 24, 0), (RESP, 16, W)]).request,
            Err(Rejection::OutsideMemory {
                addr: u64::MAX - 8,
                len: 24
            }),
            "address overflow"
        );
        let r = p(&[(REQ, 8, 0), (RESP, 16, W), (REQ + 8, n - 8, 0)]);
        assert_eq!(r.request, Err(Rejection::ReadableAfterWritable));
        assert_eq!(r.request_id, 5, "the header was readable");
        assert_eq!(r.request.unwrap_err().status(), Status::Invalid);
        assert_eq!(Rejection::ShortHeader(0).status(), Status::Invalid);
    }

    #[test]
    fn unknown_types_flags_and_small_responses() {
        for ty in [0u32, 7, 0x100, u32::MAX] {
            let mut raw = every_request()[1].encode(1);
            raw[0..4].copy_from_slice(&ty.to_le_bytes());
            let e = outcome(&raw).unwrap_err();
            assert_eq!(e, Rejection::UnknownType(ty));
            assert_eq!(e.status(), Status::Unsupported);
        }
        let mut raw = every_request()[1].encode(1);
        raw[4] = 0x80;
        assert_eq!(outcome(&raw), Err(Rejection::Flags(0x80)));
        for r in every_request() {
            let ty = r.request_type();
            let need = ty.response_size() as u32;
            if need > 16 {
                let p = parse_bytes(&r.encode(1), need - 1);
                assert_eq!(
                    p.request,
                    Err(Rejection::ResponseTooSmall {
                        ty,
                        expected: u64::from(need),
                        got: u64::from(need - 1)
                    })
                );
            }
            assert!(parse_bytes(&r.encode(1), need).request.is_ok());
        }
    }

    #[test]
    fn truncated_and_overlong_requests_are_invalid() {
        for r in every_request() {
            let ty = r.request_type();
            let raw = r.encode(1);
            let len = raw.len() as u64;
            for cut in [1usize, 7, raw.len() - 16] {
                let got = len - cut as u64;
                let e = outcome(&raw[..raw.len() - cut]).unwrap_err();
                if ty == RequestType::ShmRegister && got >= 32 {
                    // The fixed part survived: num_frames no longer
                    // matches the length.
                    assert_eq!(
                        e,
                        Rejection::Length {
                            ty,
                            expected: len,
                            got
                        }
                    );
                } else {
                    assert_eq!(
                        e,
                        Rejection::Length {
                            ty,
                            expected: ty.body_size() as u64 + 16,
                            got
                        }
                    );
                }
                assert_eq!(e.status(), Status::Invalid);
            }
            let mut long = raw.clone();
            long.extend_from_slice(&[0; 8]);
            assert_eq!(
                outcome(&long),
                Err(Rejection::Length {
                    ty,
                    expected: len,
                    got: len + 8
                })
            );
        }
    }

    fn register_raw(size: u64, offset: u32, num_frames: u32, frames: &[u64]) -> Vec<u8> {
        let mut raw = Request::ShmRegister(ShmRegistration {
            size,
            offset,
            frames: frames.to_vec(),
        })
        .encode(1);
        raw[28..32].copy_from_slice(&num_frames.to_le_bytes());
        raw
    }

    #[test]
    fn huge_frame_counts_are_refused_before_reading() {
        // A claim of 4 billion frames in a 32-byte request.
        let e = outcome(&register_raw(1 << 40, 0, u32::MAX, &[])).unwrap_err();
        assert_eq!(e, Rejection::TooManyFrames(u32::MAX));
        assert_eq!(e.status(), Status::TooLarge);
        let max = L.max_shm_frames;
        let e = outcome(&register_raw(u64::from(max + 1) * 4096, 0, max + 1, &[])).unwrap_err();
        assert_eq!(e, Rejection::TooManyFrames(max + 1));
        // The largest registration parses.
        let frames: Vec<u64> = (0..u64::from(max)).map(|i| i * 4096).collect();
        let raw = register_raw(u64::from(max) * 4096, 0, max, &frames);
        assert_eq!(raw.len() as u64, L.max_request_len());
        assert!(
            matches!(outcome(&raw), Ok(Request::ShmRegister(r)) if r.frames.len() == max as usize)
        );
        // A count that disagrees with the frames that follow.
        assert_eq!(
            outcome(&register_raw(4096, 0, 1, &[0x1000, 0x2000])),
            Err(Rejection::Length {
                ty: RequestType::ShmRegister,
                expected: 40,
                got: 48
            })
        );
        // A count that disagrees with offset + size.
        assert!(matches!(
            outcome(&register_raw(8192, 0, 1, &[0x1000])),
            Err(Rejection::FrameCount {
                needed: 2,
                got: 1,
                ..
            })
        ));
        assert_eq!(
            outcome(&register_raw(0, 0, 0, &[])),
            Err(Rejection::EmptyRegion)
        );
        assert_eq!(
            outcome(&register_raw(10, 5000, 1, &[0])),
            Err(Rejection::FrameOffset(5000))
        );
    }

    #[test]
    fn body_fields_are_checked() {
        // OPEN_SESSION: reserved, login, parameter types and sizes.
        let open = every_request()[0].encode(1);
        let mut raw = open.clone();
        raw[16 + 36] = 1;
        assert_eq!(
            outcome(&raw),
            Err(Rejection::Reserved("open_session.reserved"))
        );
        let mut raw = open.clone();
        raw[16 + 32..16 + 36].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(outcome(&raw), Err(Rejection::Login(3)));
        let mut raw = open.clone();
        raw[16 + 40 + 64..16 + 40 + 68].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(outcome(&raw), Err(Rejection::ParamType { index: 2, ty: 4 }));
        // INVOKE: a memory reference over max_memref_size.
        let mut raw = every_request()[2].encode(1);
        let size_at = 16 + 8 + 32 + 24;
        raw[size_at..size_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = outcome(&raw).unwrap_err();
        assert_eq!(
            e,
            Rejection::MemRefTooLarge {
                index: 1,
                size: u64::MAX
            }
        );
        assert_eq!(e.status(), Status::TooLarge);
        // CLOSE_SESSION: reserved.
        let mut raw = every_request()[1].encode(1);
        raw[20] = 1;
        assert_eq!(
            outcome(&raw),
            Err(Rejection::Reserved("close_session.reserved"))
        );
    }

    #[test]
    fn read_at_spans_segments_and_fails_past_the_end() {
        let mem = guest_memory();
        mem.write_slice(&[1, 2, 3, 4, 5, 6], GuestAddress(REQ))
            .unwrap();
        let segs = [
            Segment {
                addr: GuestAddress(REQ),
                len: 2,
            },
            Segment {
                addr: GuestAddress(REQ + 2),
                len: 4,
            },
        ];
        let mut buf = [0u8; 3];
        read_at(&mem, &segs, 1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3, 4]);
        assert!(read_at(&mem, &segs, 4, &mut buf).is_err());
        assert!(read_at(&mem, &segs, u64::MAX, &mut buf).is_err());
    }
}
