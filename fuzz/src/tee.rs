//! What the virtio-tee targets share: structured guest requests (written
//! into guest memory and posted as chains, or left for raw batches to
//! find), and a TEE service for the worker.
//!
//! The service answers at once (the echo TA's rules of `docs/trusty.md`:
//! outputs copy the nearest input before them, `SHORT_BUFFER` when the room
//! is too small; func 1 waits until cancelled) and checks what the device
//! sends it:
//! * an invoke, cancel or close names a session the service opened and has
//!   not closed, and no invoke runs on a session being closed;
//! * a memory reference carries at most `max_memref_size` bytes (or room).

use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use arbitrary::Arbitrary;
use devices::virtio::tee::protocol::{
    Direction, Invoke, MemRef, OpenSession, Param, Request, ShmRegistration, Uuid, Value,
    NUM_PARAMS,
};
use devices::virtio::tee::{
    HostOp, HostParam, HostParamOut, HostReply, Limits, TeeBackend, FRAME_SIZE,
};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::{Batch, FuzzQueue, GuestMemoryMmap, DATA_BASE, F_WRITE, HIGH_START, MEM_SIZE};

/// A frame address for a registration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Frame {
    /// The n-th frame of the data area (mostly valid).
    Data(u8),
    /// Inside the queue rings.
    Ring(u16),
    /// The last frame of the first region, or one past it (the hole).
    End(bool),
    /// A frame of the second region.
    High(u8),
    /// Anything.
    Raw(u64),
}

impl Frame {
    fn addr(self) -> u64 {
        match self {
            Frame::Data(n) => DATA_BASE + FRAME_SIZE * u64::from(n % 0xd0),
            Frame::Ring(n) => FRAME_SIZE * u64::from(n % 4),
            Frame::End(past) => MEM_SIZE - FRAME_SIZE + if past { FRAME_SIZE } else { 0 },
            Frame::High(n) => HIGH_START + FRAME_SIZE * u64::from(n % 16),
            Frame::Raw(a) => a,
        }
    }
}

/// A parameter; memory references name a region registered earlier.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FuzzParam {
    None,
    Value(u8, u64, u64, u64),
    /// Bytes `[offset, offset + size % 8193)` of a registered region.
    MemRef {
        dir: u8,
        region: u8,
        offset: u8,
        size: u16,
    },
    RawMemRef(u8, u64, u64, u64),
}

pub fn direction(d: u8) -> Direction {
    match d % 3 {
        0 => Direction::Input,
        1 => Direction::Output,
        _ => Direction::InOut,
    }
}

/// A request to write into guest memory (sessions are taken modulo 9, the
/// first ids a service hands out; cancels name request ids modulo 64).
#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzRequest {
    Open {
        uuid: [u8; 16],
        login: u32,
        params: [FuzzParam; NUM_PARAMS],
    },
    Close(u32),
    Invoke {
        session: u32,
        func: u32,
        params: [FuzzParam; NUM_PARAMS],
    },
    Cancel(u64),
    Register {
        /// Offset of byte 0 in the first frame (mod 4096).
        offset: u16,
        /// Bytes left unused in the last frame (so the size is consistent
        /// with the frames).
        shrink: u16,
        frames: Vec<Frame>,
        /// Overrides the size (an inconsistent one).
        size: Option<u64>,
        /// Overrides `num_frames` (a lying count).
        count: Option<u32>,
    },
    Unregister(u8),
    Raw(Vec<u8>),
}

/// A request written at `DATA_BASE + at`, optionally with one byte changed.
#[derive(Arbitrary, Debug, Clone)]
pub struct Placed {
    /// Offset from `DATA_BASE`.
    pub at: u16,
    /// The request's `request_id`.
    pub request_id: u64,
    /// The request.
    pub request: FuzzRequest,
    /// A byte to flip: `(offset, xor)`.
    pub flip: Option<(u16, u8)>,
}

/// One step of guest activity.
#[derive(Arbitrary, Debug, Clone)]
pub enum Step {
    /// Writes the request and posts it as one chain: its bytes readable in
    /// two descriptors split at `split` (one if `split` is past the end),
    /// then a device-writable response buffer of `resp` bytes.
    Post {
        request: Placed,
        split: u16,
        resp: u16,
    },
    /// Writes the request only (for raw batches to find).
    Place(Placed),
    /// Raw guest activity on the queue.
    Batch(Batch),
}

/// Where posted requests' responses go.
pub const RESPONSE_AT: u64 = DATA_BASE + 0x4_0000;

/// Ids the table handed out, for memory references and unregistrations.
pub fn pick(ids: &[u64], n: u8) -> u64 {
    if ids.is_empty() || n == 0xff {
        u64::from(n)
    } else {
        ids[usize::from(n) % ids.len()]
    }
}

pub fn params(ps: &[FuzzParam; NUM_PARAMS], ids: &[u64]) -> [Param; NUM_PARAMS] {
    ps.map(|p| match p {
        FuzzParam::None => Param::None,
        FuzzParam::Value(d, a, b, c) => Param::Value(direction(d), Value { a, b, c }),
        FuzzParam::MemRef {
            dir,
            region,
            offset,
            size,
        } => Param::MemRef(
            direction(dir),
            MemRef {
                shm_id: pick(ids, region),
                offset: u64::from(offset),
                size: u64::from(size % 8193),
            },
        ),
        FuzzParam::RawMemRef(d, shm_id, offset, size) => Param::MemRef(
            direction(d),
            MemRef {
                shm_id,
                offset,
                size,
            },
        ),
    })
}

/// Writes `p` into guest memory; returns its address and length.
pub fn place(mem: &GuestMemoryMmap, p: &Placed, ids: &[u64]) -> (u64, u32) {
    let mut raw = encode(p, ids);
    if let Some((at, b)) = p.flip {
        if let Some(x) = raw.get_mut(usize::from(at)) {
            *x ^= b;
        }
    }
    let at = DATA_BASE + u64::from(p.at);
    let n = raw.len().min((MEM_SIZE - at) as usize);
    let _ = mem.write_slice(&raw[..n], GuestAddress(at));
    (at, n as u32)
}

pub fn encode(p: &Placed, ids: &[u64]) -> Vec<u8> {
    let req = match &p.request {
        FuzzRequest::Open {
            uuid,
            login,
            params: ps,
        } => Request::OpenSession(OpenSession {
            uuid: Uuid(*uuid),
            client_uuid: Uuid::default(),
            login: *login % 8,
            params: params(ps, ids),
        }),
        FuzzRequest::Close(s) => Request::CloseSession { session: *s % 9 },
        FuzzRequest::Invoke {
            session,
            func,
            params: ps,
        } => Request::Invoke(Invoke {
            session: *session % 9,
            func: *func,
            params: params(ps, ids),
        }),
        // The ids of requests in flight are small in practice.
        FuzzRequest::Cancel(id) => Request::Cancel {
            request_id: *id % 64,
        },
        FuzzRequest::Register {
            offset,
            shrink,
            frames,
            size,
            count,
        } => {
            let frames: Vec<u64> = frames.iter().take(600).map(|f| f.addr()).collect();
            let offset = u64::from(*offset) % FRAME_SIZE;
            let room = (frames.len() as u64 * FRAME_SIZE).saturating_sub(offset);
            let fitting = room - u64::from(*shrink) % room.clamp(1, FRAME_SIZE);
            let mut raw = Request::ShmRegister(ShmRegistration {
                size: size.unwrap_or(fitting.max(1)),
                offset: offset as u32,
                frames,
            })
            .encode(p.request_id);
            if let Some(c) = count {
                raw[28..32].copy_from_slice(&c.to_le_bytes());
            }
            return raw;
        }
        FuzzRequest::Unregister(n) => Request::ShmUnregister {
            shm_id: pick(ids, *n),
        },
        FuzzRequest::Raw(bytes) => return bytes.clone(),
    };
    req.encode(p.request_id)
}

/// Applies `step`: writes its request (encoded with the region ids `ids`)
/// and posts it on `fq`, or applies a raw batch.
pub fn apply_step(fq: &mut FuzzQueue, mem: &GuestMemoryMmap, step: &Step, ids: &[u64]) {
    match step {
        Step::Post {
            request,
            split,
            resp,
        } => {
            let (at, len) = place(mem, request, ids);
            let split = u32::from(*split);
            let mut bufs = vec![(at, len.min(split), 0)];
            if split < len {
                bufs.push((at + u64::from(split), len - split, 0));
            }
            bufs.push((RESPONSE_AT, u32::from(*resp), F_WRITE));
            fq.add_chain(mem, &bufs);
        }
        Step::Place(p) => {
            place(mem, p, ids);
        }
        Step::Batch(batch) => fq.apply(mem, batch),
    }
}

/// The fuzz targets' TEE service.
pub struct FuzzTeeService {
    event: EventFd,
    max_memref: usize,
    replies: VecDeque<HostReply>,
    sessions: HashSet<u32>,
    next_session: u32,
    waiting: Vec<(u64, u32, u32)>,
    /// Fail `send` once this many operations went through (a service that
    /// dies mid-run).
    fail_after: Option<usize>,
    sent: usize,
}

impl FuzzTeeService {
    /// A service for a device with `limits`; it breaks after `fail_after`
    /// operations if given.
    pub fn new(limits: &Limits, fail_after: Option<usize>) -> Self {
        Self {
            event: crate::eventfd(),
            max_memref: limits.max_memref_size as usize,
            replies: VecDeque::new(),
            sessions: HashSet::new(),
            next_session: 0,
            waiting: Vec::new(),
            fail_after,
            sent: 0,
        }
    }

    fn reply(&mut self, id: u64, ret: u32, session: u32, params: [HostParamOut; NUM_PARAMS]) {
        self.replies.push_back(HostReply {
            id,
            ret,
            ret_origin: 4,
            session,
            params,
        });
        let _ = self.event.write(1);
    }

    fn check_params(&self, params: &[HostParam; NUM_PARAMS]) {
        for p in params {
            let n = match p {
                HostParam::MemRefIn(b) | HostParam::MemRefInOut(b) => b.len(),
                HostParam::MemRefOut { capacity } => *capacity as usize,
                _ => 0,
            };
            assert!(n <= self.max_memref, "memory reference of {n} bytes");
        }
    }
}

fn echo(params: &[HostParam; NUM_PARAMS]) -> (u32, [HostParamOut; NUM_PARAMS]) {
    let mut out: [HostParamOut; NUM_PARAMS] = Default::default();
    let mut value: Option<Value> = None;
    let mut bytes: Option<&[u8]> = None;
    let mut ret = 0;
    for (p, o) in params.iter().zip(out.iter_mut()) {
        *o = match p {
            HostParam::None => HostParamOut::None,
            HostParam::Value(Direction::Input, v) => {
                value = Some(*v);
                HostParamOut::None
            }
            HostParam::Value(Direction::InOut, v) => HostParamOut::Value(*v),
            HostParam::Value(Direction::Output, _) => match value {
                Some(v) => HostParamOut::Value(v),
                None => return (0xFFFF_0006, Default::default()),
            },
            HostParam::MemRefIn(b) => {
                bytes = Some(b);
                HostParamOut::None
            }
            HostParam::MemRefInOut(b) => HostParamOut::MemRef {
                size: b.len() as u32,
                bytes: b.clone(),
            },
            HostParam::MemRefOut { capacity } => match bytes {
                Some(b) if b.len() > *capacity as usize => {
                    ret = 0xFFFF_0010;
                    HostParamOut::MemRef {
                        size: b.len() as u32,
                        bytes: Vec::new(),
                    }
                }
                Some(b) => HostParamOut::MemRef {
                    size: b.len() as u32,
                    bytes: b.to_vec(),
                },
                None => return (0xFFFF_0006, Default::default()),
            },
        };
    }
    (ret, out)
}

impl AsRawFd for FuzzTeeService {
    fn as_raw_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}

impl TeeBackend for FuzzTeeService {
    fn restart(&mut self) -> io::Result<()> {
        self.sessions.clear();
        self.waiting.clear();
        self.replies.clear();
        Ok(())
    }

    fn send(&mut self, id: u64, op: HostOp) -> io::Result<()> {
        if self.fail_after.is_some_and(|n| self.sent >= n) {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        self.sent += 1;
        match op {
            HostOp::OpenSession { uuid, params, .. } => {
                self.check_params(&params);
                // Every other UUID has no TA.
                if uuid.0[0] & 1 == 0 {
                    self.next_session += 1;
                    self.sessions.insert(self.next_session);
                    self.reply(id, 0, self.next_session, Default::default());
                } else {
                    self.reply(id, 0xFFFF_0008, 0, Default::default());
                }
            }
            HostOp::Invoke {
                session,
                func,
                cancel_id,
                params,
            } => {
                assert!(
                    self.sessions.contains(&session),
                    "invoke on session {session}"
                );
                self.check_params(&params);
                if func == 1 {
                    self.waiting.push((id, session, cancel_id));
                } else {
                    let (ret, out) = echo(&params);
                    self.reply(id, ret, 0, out);
                }
            }
            HostOp::Cancel { session, cancel_id } => {
                assert!(
                    self.sessions.contains(&session),
                    "cancel on session {session}"
                );
                self.reply(id, 0, 0, Default::default());
                let mut i = 0;
                while i < self.waiting.len() {
                    let (wid, s, c) = self.waiting[i];
                    if s == session && c == cancel_id {
                        self.waiting.swap_remove(i);
                        self.reply(wid, 0xFFFF_0002, 0, Default::default());
                    } else {
                        i += 1;
                    }
                }
            }
            HostOp::CloseSession { session } => {
                assert!(self.sessions.remove(&session), "close of session {session}");
                assert!(
                    self.waiting.iter().all(|&(_, s, _)| s != session),
                    "close of session {session} while an invoke runs"
                );
                self.reply(id, 0, 0, Default::default());
            }
        }
        Ok(())
    }

    fn replies(&mut self, out: &mut Vec<HostReply>) -> io::Result<()> {
        let _ = self.event.read();
        out.extend(self.replies.drain(..));
        Ok(())
    }
}
