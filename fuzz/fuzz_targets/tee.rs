//! virtio-tee: the device's worker (`TeeWorker::process_requests` and
//! `process_replies`) in front of a TEE service that answers at once
//! (`vmstack_fuzz::tee::FuzzTeeService`, which checks what it gets).
//!
//! The guest posts structured requests (open, invoke with values and
//! memory references into registered regions, cancel, close, register,
//! unregister; a byte flipped at will) and raw batches; the service may die
//! after a number of operations. Nothing may panic, hang or touch memory
//! outside the guest's; the device publishes no more chains than it popped;
//! the service sees invokes, cancels and closes only for its own sessions,
//! no close while an invoke runs on the session, and memory references of
//! at most `max_memref_size`.

#![no_main]

use arbitrary::Arbitrary;
use devices::virtio::tee::fuzzing::TeeWorker;
use devices::virtio::tee::{Limits, QUEUE_SIZE};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmstack_fuzz::tee::{apply_step, FuzzTeeService, Step};
use vmstack_fuzz::{
    guest_memory, interrupt, write_data, write_indirect, Desc, FuzzQueue, RingSetup,
};

#[derive(Arbitrary, Debug)]
struct Input {
    ring: RingSetup,
    /// Small limits reach the bounds quickly.
    small_limits: bool,
    /// The service dies after this many operations.
    fail_after: Option<u8>,
    data: Vec<u8>,
    indirect: Vec<Desc>,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    write_data(&mem, &input.data);
    write_indirect(&mem, &input.indirect);
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
    let (mut fq, queue) = FuzzQueue::new(&mem, 0, QUEUE_SIZE, &input.ring);
    let service = FuzzTeeService::new(&limits, input.fail_after.map(usize::from));
    let mut worker = TeeWorker::new(
        mem.clone(),
        interrupt(),
        queue,
        limits,
        Box::new(service),
        true,
    );
    let used_ring = fq.used_ring();
    let used_idx = |mem: &vmstack_fuzz::GuestMemoryMmap| -> u16 {
        mem.read_obj(GuestAddress(used_ring + 2))
            .expect("used ring in memory")
    };
    // Regions get ids from 1, in order.
    let ids: Vec<u64> = (1..=8).collect();
    let (mut popped, mut published, mut last_idx) = (0u64, 0u64, 0u16);
    for step in input.steps.iter().take(24) {
        apply_step(&mut fq, &mem, step, &ids);
        popped += worker.process_requests() as u64;
        // Replies, and the replies those cause (a cancel ends a WAIT).
        worker.process_replies();
        worker.process_replies();
        let idx = used_idx(&mem);
        published += u64::from(idx.wrapping_sub(last_idx));
        last_idx = idx;
        assert!(
            published <= popped,
            "{published} published, {popped} popped"
        );
    }
});
