//! virtio-rng: descriptor chains → buffers filled from getrandom, through
//! the worker's own queue processing.
//!
//! The guest posts batches of chains (well-linked or raw); after each
//! batch the worker serves the queue. Nothing may panic, hang or write
//! outside guest memory, and the used index may only advance by the chains
//! the worker popped.

#![no_main]

use arbitrary::Arbitrary;
use devices::virtio::rng::fuzzing::RngWorker;
use devices::virtio::rng::QUEUE_SIZE;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmstack_fuzz::{guest_memory, interrupt, write_indirect, Batch, Desc, FuzzQueue, RingSetup};

#[derive(Arbitrary, Debug)]
struct Input {
    ring: RingSetup,
    indirect: Vec<Desc>,
    batches: Vec<Batch>,
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    write_indirect(&mem, &input.indirect);
    let (mut fq, queue) = FuzzQueue::new(&mem, 0, QUEUE_SIZE, &input.ring);
    let mut worker = RngWorker::new(mem.clone(), interrupt(), queue);
    let used_ring = fq.used_ring();
    let used_idx = |mem: &vmstack_fuzz::GuestMemoryMmap| -> u16 {
        mem.read_obj(GuestAddress(used_ring + 2))
            .expect("used ring in memory")
    };
    let mut published = 0u16;
    for batch in input.batches.iter().take(16) {
        fq.apply(&mem, batch);
        let popped = worker.process_queue();
        // The device publishes at most the chains it popped (a head beyond
        // the queue cannot be returned), and nothing else: its own write of
        // the used index comes after any buffer fill, so guest buffers
        // aliasing the ring cannot hide a mismatch.
        let idx = used_idx(&mem);
        let new = idx.wrapping_sub(published);
        assert!(
            usize::from(new) <= popped,
            "{new} published, {popped} popped"
        );
        published = idx;
    }
});
