//! Decoding the device-readable bytes of a request: the body of each
//! request type, its parameters, and the checks on a registration's fixed
//! part that come before any frame is read.

use super::protocol::{
    param_type, Direction, Invoke, MemRef, OpenSession, Param, Rejection, Request, RequestHeader,
    RequestType, ShmRegistration, Uuid, Value, NUM_PARAMS, PARAM_SIZE, REQ_HEADER_SIZE,
    SHM_REGISTER_BODY_SIZE,
};
use super::{Limits, FRAME_SIZE};

impl RequestHeader {
    /// Decodes the first [`REQ_HEADER_SIZE`] bytes of `raw`.
    pub fn decode(raw: &[u8; REQ_HEADER_SIZE]) -> Self {
        let mut r = Reader::new(raw);
        Self {
            type_code: r.u32(),
            flags: r.u32(),
            request_id: r.u64(),
        }
    }
}

impl Param {
    /// Decodes parameter `index` of a request.
    pub(super) fn decode(raw: &[u8], index: usize, limits: &Limits) -> Result<Self, Rejection> {
        let mut r = Reader::new(raw);
        let ty = r.u32();
        if r.u32() != 0 {
            return Err(Rejection::Reserved("param.reserved"));
        }
        let (x, y, z) = (r.u64(), r.u64(), r.u64());
        let dir = match ty {
            param_type::NONE => return Ok(Param::None),
            param_type::VALUE_INPUT | param_type::MEMREF_INPUT => Direction::Input,
            param_type::VALUE_OUTPUT | param_type::MEMREF_OUTPUT => Direction::Output,
            param_type::VALUE_INOUT | param_type::MEMREF_INOUT => Direction::InOut,
            other => return Err(Rejection::ParamType { index, ty: other }),
        };
        if ty < param_type::MEMREF_INPUT {
            return Ok(Param::Value(dir, Value { a: x, b: y, c: z }));
        }
        if z > u64::from(limits.max_memref_size) {
            return Err(Rejection::MemRefTooLarge { index, size: z });
        }
        Ok(Param::MemRef(
            dir,
            MemRef {
                shm_id: x,
                offset: y,
                size: z,
            },
        ))
    }
}

/// Whether `login` is a `TEE_IOCTL_LOGIN_*` method.
pub fn is_valid_login(login: u32) -> bool {
    matches!(login, 0 | 1 | 2 | 4 | 5 | 6 | 0x8000_0000..=0xBFFF_FFFF)
}

/// The number of frames a region of `size` bytes at first-frame `offset`
/// spans.
pub fn frames_needed(offset: u32, size: u64) -> u64 {
    // size <= u64::MAX and offset < 2^32: the sum cannot overflow once
    // split as below.
    let total = u128::from(offset) + u128::from(size);
    u64::try_from(total.div_ceil(u128::from(FRAME_SIZE))).unwrap_or(u64::MAX)
}

/// Decodes the body (everything after the header) of a request of type
/// `ty`; `body.len()` must already be the exact length the type requires
/// (see [`super::chain`]).
pub fn decode_body(ty: RequestType, body: &[u8], limits: &Limits) -> Result<Request, Rejection> {
    let mut r = Reader::new(body);
    match ty {
        RequestType::OpenSession => {
            let uuid = Uuid(r.array());
            let client_uuid = Uuid(r.array());
            let login = r.u32();
            if r.u32() != 0 {
                return Err(Rejection::Reserved("open_session.reserved"));
            }
            if !is_valid_login(login) {
                return Err(Rejection::Login(login));
            }
            let params = decode_params(r.rest(), limits)?;
            Ok(Request::OpenSession(OpenSession {
                uuid,
                client_uuid,
                login,
                params,
            }))
        }
        RequestType::Invoke => {
            let session = r.u32();
            let func = r.u32();
            let params = decode_params(r.rest(), limits)?;
            Ok(Request::Invoke(Invoke {
                session,
                func,
                params,
            }))
        }
        RequestType::CloseSession => {
            let session = r.u32();
            if r.u32() != 0 {
                return Err(Rejection::Reserved("close_session.reserved"));
            }
            Ok(Request::CloseSession { session })
        }
        RequestType::Cancel => Ok(Request::Cancel {
            request_id: r.u64(),
        }),
        RequestType::ShmUnregister => Ok(Request::ShmUnregister { shm_id: r.u64() }),
        RequestType::ShmRegister => {
            let (size, offset, num_frames) = (r.u64(), r.u32(), r.u32());
            check_registration(size, offset, num_frames, limits)?;
            // The chain parser checked the length against a first read of
            // `num_frames`; a guest that changed it since gets a refusal.
            let expected = SHM_REGISTER_BODY_SIZE as u64 + 8 * u64::from(num_frames);
            if body.len() as u64 != expected {
                return Err(Rejection::Length {
                    ty,
                    expected: REQ_HEADER_SIZE as u64 + expected,
                    got: REQ_HEADER_SIZE as u64 + body.len() as u64,
                });
            }
            let frames: Vec<u64> = (0..num_frames).map(|_| r.u64()).collect();
            Ok(Request::ShmRegister(ShmRegistration {
                size,
                offset,
                frames,
            }))
        }
    }
}

/// Checks the fixed part of a registration: `num_frames` against the limit
/// (before anything reads the frames), `offset`, `size`, and that the
/// frame count is exactly what `offset + size` span.
pub fn check_registration(
    size: u64,
    offset: u32,
    num_frames: u32,
    limits: &Limits,
) -> Result<(), Rejection> {
    if num_frames > limits.max_shm_frames {
        return Err(Rejection::TooManyFrames(num_frames));
    }
    if size == 0 {
        return Err(Rejection::EmptyRegion);
    }
    if u64::from(offset) >= FRAME_SIZE {
        return Err(Rejection::FrameOffset(offset));
    }
    let needed = frames_needed(offset, size);
    if needed != u64::from(num_frames) {
        return Err(Rejection::FrameCount {
            size,
            offset,
            needed,
            got: num_frames,
        });
    }
    Ok(())
}

fn decode_params(raw: &[u8], limits: &Limits) -> Result<[Param; NUM_PARAMS], Rejection> {
    let mut params = [Param::None; NUM_PARAMS];
    for (i, (p, chunk)) in params
        .iter_mut()
        .zip(raw.chunks_exact(PARAM_SIZE))
        .enumerate()
    {
        *p = Param::decode(chunk, i, limits)?;
    }
    Ok(params)
}

/// Little-endian reads from a byte slice whose length the caller checked;
/// reads past the end yield zeroes (never a panic).
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(N).min(self.data.len());
        out[..end - start].copy_from_slice(&self.data[start..end]);
        self.pos = self.pos.saturating_add(N);
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::tee::protocol::Status;

    #[test]
    fn params_round_trip_and_bad_types_are_rejected() {
        let l = Limits::DEFAULT;
        let cases = [
            Param::None,
            Param::Value(
                Direction::Input,
                Value {
                    a: 1,
                    b: u64::MAX,
                    c: 3,
                },
            ),
            Param::Value(Direction::Output, Value::default()),
            Param::Value(Direction::InOut, Value { a: 7, b: 8, c: 9 }),
            Param::MemRef(
                Direction::Input,
                MemRef {
                    shm_id: 5,
                    offset: 100,
                    size: 4096,
                },
            ),
            Param::MemRef(Direction::Output, MemRef::default()),
            Param::MemRef(
                Direction::InOut,
                MemRef {
                    shm_id: u64::MAX,
                    offset: u64::MAX,
                    size: u64::from(l.max_memref_size),
                },
            ),
        ];
        for p in cases {
            assert_eq!(Param::decode(&p.encode(), 0, &l), Ok(p));
        }
        for ty in [4u32, 8, 0x100, u32::MAX] {
            let mut raw = Param::None.encode();
            raw[0..4].copy_from_slice(&ty.to_le_bytes());
            assert_eq!(
                Param::decode(&raw, 2, &l),
                Err(Rejection::ParamType { index: 2, ty })
            );
        }
        let mut raw = Param::None.encode();
        raw[4] = 1;
        assert_eq!(
            Param::decode(&raw, 0, &l),
            Err(Rejection::Reserved("param.reserved"))
        );
        let big = Param::MemRef(
            Direction::Input,
            MemRef {
                shm_id: 1,
                offset: 0,
                size: u64::from(l.max_memref_size) + 1,
            },
        );
        let err = Param::decode(&big.encode(), 3, &l).unwrap_err();
        assert_eq!(
            err,
            Rejection::MemRefTooLarge {
                index: 3,
                size: u64::from(l.max_memref_size) + 1
            }
        );
        assert_eq!(err.status(), Status::TooLarge);
    }

    #[test]
    fn registrations_are_checked_before_frames_are_read() {
        let l = Limits::DEFAULT;
        assert_eq!(check_registration(1, 0, 1, &l), Ok(()));
        assert_eq!(check_registration(4096, 0, 1, &l), Ok(()));
        assert_eq!(check_registration(4096, 1, 2, &l), Ok(()));
        assert_eq!(check_registration(1, 4095, 1, &l), Ok(()));
        assert_eq!(check_registration(2, 4095, 2, &l), Ok(()));
        let max = l.max_shm_frames;
        assert_eq!(
            check_registration(u64::from(max) * 4096, 0, max, &l),
            Ok(())
        );
        assert_eq!(
            check_registration(u64::MAX, 0, u32::MAX, &l),
            Err(Rejection::TooManyFrames(u32::MAX))
        );
        assert_eq!(
            check_registration(u64::MAX, 0, max + 1, &l)
                .unwrap_err()
                .status(),
            Status::TooLarge
        );
        assert_eq!(check_registration(0, 0, 0, &l), Err(Rejection::EmptyRegion));
        assert_eq!(
            check_registration(1, 4096, 1, &l),
            Err(Rejection::FrameOffset(4096))
        );
        assert_eq!(
            check_registration(4097, 0, 1, &l),
            Err(Rejection::FrameCount {
                size: 4097,
                offset: 0,
                needed: 2,
                got: 1
            })
        );
        assert_eq!(
            check_registration(1, 0, 2, &l),
            Err(Rejection::FrameCount {
                size: 1,
                offset: 0,
                needed: 1,
                got: 2
            }),
            "extra frames are refused too"
        );
        assert_eq!(
            check_registration(u64::MAX, 4095, 1, &l),
            Err(Rejection::FrameCount {
                size: u64::MAX,
                offset: 4095,
                needed: (1 << 52) + 1,
                got: 1
            }),
            "no overflow in offset + size"
        );
    }

    #[test]
    fn logins() {
        for ok in [0, 1, 2, 4, 5, 6, 0x8000_0000, 0xBFFF_FFFF] {
            assert!(is_valid_login(ok), "{ok:#x}");
        }
        for bad in [3, 7, 0x7FFF_FFFF, 0xC000_0000, u32::MAX] {
            assert!(!is_valid_login(bad), "{bad:#x}");
        }
    }

    #[test]
    fn reader_never_panics_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), 0x0003_0201);
        assert_eq!(r.u64(), 0);
        assert_eq!(r.rest(), &[] as &[u8]);
    }
}
