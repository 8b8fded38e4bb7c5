//! virtio-tee: descriptor chains → `chain::parse` → the shared-memory
//! table (register, unregister, memory references resolved, read and
//! written in place) → the response written back, the way the device's
//! worker will serve its queue.
//!
//! The guest posts well-formed requests (structured, optionally with a byte
//! flipped, as well-linked chains with the request split over one or two
//! descriptors and a response buffer of any size), interleaved with raw
//! batches of chains over memory filled with those requests and raw bytes,
//! so that registrations and memory references reach the table. Nothing
//! may panic, hang or touch memory outside the guest's, and:
//! * a response never exceeds the chain's device-writable bytes;
//! * every registered frame is aligned, in guest RAM and off the queue;
//! * a resolved memory reference covers exactly its size, inside guest
//!   memory, within its region's frames;
//! * the table never holds more than `max_shm_regions` regions.

#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use devices::virtio::tee::chain::{self, Segment};
use devices::virtio::tee::protocol::{
    Direction, Invoke, MemRef, OpResponse, OpenSession, Param, Request, Response, ShmRegistration,
    Status, Uuid, Value, NUM_PARAMS,
};
use devices::virtio::tee::shm::{self, queue_ranges, GuestRange, ShmTable};
use devices::virtio::tee::{Limits, FRAME_SIZE, QUEUE_SIZE};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmstack_fuzz::{
    guest_memory, write_data, write_indirect, Batch, Desc, FuzzQueue, GuestMemoryMmap, RingSetup,
    DATA_BASE, F_WRITE, HIGH_SIZE, HIGH_START, MEM_SIZE,
};

/// A frame address for a registration.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Frame {
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
enum FuzzParam {
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

fn direction(d: u8) -> Direction {
    match d % 3 {
        0 => Direction::Input,
        1 => Direction::Output,
        _ => Direction::InOut,
    }
}

/// A request to write into guest memory.
#[derive(Arbitrary, Debug, Clone)]
enum FuzzRequest {
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
struct Placed {
    at: u16,
    request_id: u64,
    request: FuzzRequest,
    flip: Option<(u16, u8)>,
}

/// One step of guest activity.
#[derive(Arbitrary, Debug, Clone)]
enum Step {
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

#[derive(Arbitrary, Debug)]
struct Input {
    ring: RingSetup,
    /// Small limits reach the bounds quickly.
    small_limits: bool,
    data: Vec<u8>,
    indirect: Vec<Desc>,
    steps: Vec<Step>,
}

/// Where posted requests' responses go.
const RESPONSE_AT: u64 = DATA_BASE + 0x4_0000;

/// Ids the table handed out, for memory references and unregistrations.
fn pick(ids: &[u64], n: u8) -> u64 {
    if ids.is_empty() || n == 0xff {
        u64::from(n)
    } else {
        ids[usize::from(n) % ids.len()]
    }
}

fn params(ps: &[FuzzParam; NUM_PARAMS], ids: &[u64]) -> [Param; NUM_PARAMS] {
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
fn place(mem: &GuestMemoryMmap, p: &Placed, ids: &[u64]) -> (u64, u32) {
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

fn encode(p: &Placed, ids: &[u64]) -> Vec<u8> {
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
        FuzzRequest::Close(s) => Request::CloseSession { session: *s },
        FuzzRequest::Invoke {
            session,
            func,
            params: ps,
        } => Request::Invoke(Invoke {
            session: *session,
            func: *func,
            params: params(ps, ids),
        }),
        FuzzRequest::Cancel(id) => Request::Cancel { request_id: *id },
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

fn in_guest_ram(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    mem.check_range(GuestAddress(addr), len as usize)
}

/// The device's side: serves one parsed chain, returns the used length.
fn serve(
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
    limits: &Limits,
    table: &mut ShmTable,
    queue: &[GuestRange; 3],
    frames_of: &mut HashMap<u64, Vec<u64>>,
) -> u32 {
    let Ok(parsed) = chain::parse(mem, descs, limits) else {
        return 0;
    };
    let response = match parsed.request {
        Err(e) => Response::Status(e.status()),
        Ok(Request::ShmRegister(reg)) => {
            let frames = reg.frames.clone();
            match table.register(mem, reg, queue) {
                Ok(shm_id) => {
                    for &f in &frames {
                        assert_eq!(f % FRAME_SIZE, 0, "misaligned frame {f:#x} registered");
                        assert!(in_guest_ram(mem, f, FRAME_SIZE), "frame {f:#x} outside RAM");
                        assert!(
                            !queue.iter().any(|r| r.overlaps(f, FRAME_SIZE)),
                            "frame {f:#x} overlaps the queue"
                        );
                    }
                    frames_of.insert(shm_id, frames);
                    Response::Registered { shm_id }
                }
                Err(e) => Response::Status(e.status()),
            }
        }
        Ok(Request::ShmUnregister { shm_id }) => match table.unregister(shm_id) {
            Ok(()) => {
                frames_of.remove(&shm_id);
                Response::Status(Status::Ok)
            }
            Err(e) => Response::Status(e.status()),
        },
        Ok(Request::OpenSession(OpenSession { params, .. }))
        | Ok(Request::Invoke(Invoke { params, .. })) => match table.resolve_params(&params) {
            Ok(resolved) => {
                let mut buf = Vec::new();
                for (p, segs) in params.iter().zip(&resolved) {
                    let (Param::MemRef(dir, m), Some(segs)) = (p, segs) else {
                        continue;
                    };
                    check_segments(mem, m, segs, &frames_of[&m.shm_id]);
                    if dir.is_input() {
                        shm::read_segments(mem, segs, &mut buf).expect("checked segments read");
                        assert_eq!(buf.len() as u64, m.size);
                    }
                    if dir.is_output() {
                        let out = vec![0xa5u8; m.size as usize];
                        let n =
                            shm::write_segments(mem, segs, &out).expect("checked segments write");
                        assert_eq!(n as u64, m.size);
                    }
                }
                Response::Op(OpResponse {
                    ret: 0,
                    ret_origin: 4,
                    session: 1,
                    params,
                })
            }
            Err(e) => Response::Status(e.status()),
        },
        Ok(Request::CloseSession { .. }) | Ok(Request::Cancel { .. }) => {
            Response::Status(Status::Ok)
        }
    };
    let bytes = response.encode(parsed.request_id);
    let used = parsed
        .response
        .write(mem, &bytes)
        .expect("checked response buffer");
    assert!(u64::from(used) <= parsed.response.len());
    used
}

/// A resolved memory reference covers exactly its bytes, in RAM, inside
/// the frames its region registered.
fn check_segments(mem: &GuestMemoryMmap, m: &MemRef, segs: &[Segment], frames: &[u64]) {
    let total: u64 = segs.iter().map(|s| u64::from(s.len)).sum();
    assert_eq!(total, m.size);
    for s in segs {
        assert!(in_guest_ram(mem, s.addr.0, u64::from(s.len)));
        let (start, end) = (s.addr.0, s.addr.0 + u64::from(s.len));
        let mut a = start;
        while a < end {
            let frame = a & !(FRAME_SIZE - 1);
            assert!(
                frames.contains(&frame),
                "segment byte {a:#x} in an unregistered frame"
            );
            a = frame + FRAME_SIZE;
        }
    }
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    write_data(&mem, &input.data);
    let limits = if input.small_limits {
        Limits {
            max_sessions: 2,
            max_shm_regions: 3,
            max_shm_frames: 4,
            max_memref_size: 6000,
        }
    } else {
        Limits::DEFAULT
    };
    let mut table = ShmTable::new(&limits);
    let mut frames_of = HashMap::new();
    write_indirect(&mem, &input.indirect);
    let (mut fq, mut queue) = FuzzQueue::new(&mem, 0, QUEUE_SIZE, &input.ring);
    let ranges = queue_ranges(&queue);
    assert!(HIGH_SIZE >= 16 * FRAME_SIZE);
    let mut descs = Vec::new();
    for step in input.steps.iter().take(24) {
        // Requests are encoded with the ids the table has handed out.
        let ids: Vec<u64> = frames_of.keys().copied().collect();
        match step {
            Step::Post {
                request,
                split,
                resp,
            } => {
                let (at, len) = place(&mem, request, &ids);
                let split = u32::from(*split);
                let mut bufs = vec![(at, len.min(split), 0)];
                if split < len {
                    bufs.push((at + u64::from(split), len - split, 0));
                }
                bufs.push((RESPONSE_AT, u32::from(*resp), F_WRITE));
                fq.add_chain(&mem, &bufs);
            }
            Step::Place(p) => {
                place(&mem, p, &ids);
            }
            Step::Batch(batch) => fq.apply(&mem, batch),
        }
        while let Some(chain) = queue.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            descs.clear();
            descs.extend(chain);
            let used = serve(&mem, &descs, &limits, &mut table, &ranges, &mut frames_of);
            let _ = queue.add_used(&mem, head, used);
        }
        assert!(table.len() <= limits.max_shm_regions as usize);
    }
});
