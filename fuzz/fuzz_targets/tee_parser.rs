//! virtio-tee's pure core: descriptor chains → `chain::parse` → the
//! shared-memory table (register, unregister, memory references resolved,
//! read and written in place) → the response written back, with oracles on
//! the table's state that the worker target (`tee`) cannot see.
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
    Invoke, MemRef, OpResponse, OpenSession, Param, Request, Response, Status,
};
use devices::virtio::tee::shm::{self, queue_ranges, GuestRange, ShmTable};
use devices::virtio::tee::{Limits, FRAME_SIZE, QUEUE_SIZE};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmstack_fuzz::tee::{apply_step, Step};
use vmstack_fuzz::{
    guest_memory, write_data, write_indirect, Desc, FuzzQueue, GuestMemoryMmap, RingSetup,
    HIGH_SIZE,
};

#[derive(Arbitrary, Debug)]
struct Input {
    ring: RingSetup,
    /// Small limits reach the bounds quickly.
    small_limits: bool,
    data: Vec<u8>,
    indirect: Vec<Desc>,
    steps: Vec<Step>,
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
        apply_step(&mut fq, &mem, step, &ids);
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
