//! virtio-blk: descriptor chains → `request::parse` → execution against a
//! real (tmpfs) image, through the worker's own queue processing.
//!
//! The guest lays out request headers and discard/write-zeroes ranges
//! (structured, so the parser's deeper paths are reached quickly) next to
//! raw data, then posts batches of chains; after each batch the worker
//! serves the queue. Nothing may panic, hang or touch memory outside the
//! guest's; the worker must keep serving after every hostile chain.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use devices::virtio::block::fuzzing::BlockWorker;
use devices::virtio::block::{DiskImage, QUEUE_SIZE};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmstack_fuzz::{
    guest_memory, interrupt, scratch_dir, write_data, Batch, FuzzQueue, RingSetup, DATA_BASE,
};

/// A request header written at `DATA_BASE + at`.
#[derive(Arbitrary, Debug)]
struct Header {
    at: u16,
    kind: Kind,
    sector: u64,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Raw(u32),
}

impl Kind {
    fn value(&self) -> u32 {
        match self {
            Kind::In => 0,
            Kind::Out => 1,
            Kind::Flush => 4,
            Kind::GetId => 8,
            Kind::Discard => 11,
            Kind::WriteZeroes => 13,
            Kind::Raw(v) => *v,
        }
    }
}

/// A discard/write-zeroes range written at `DATA_BASE + at`.
#[derive(Arbitrary, Debug)]
struct Range {
    at: u16,
    sector: u64,
    sectors: u32,
    flags: u32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    /// Image size: 1 + n sectors.
    sectors: u8,
    ring: RingSetup,
    data: Vec<u8>,
    headers: Vec<Header>,
    ranges: Vec<Range>,
    indirect: Vec<vmstack_fuzz::Desc>,
    batches: Vec<Batch>,
}

fn image(sectors: u64) -> std::path::PathBuf {
    let path = scratch_dir().join("disk.img");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("fuzz image");
    f.set_len(sectors * 512).expect("fuzz image size");
    path
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    write_data(&mem, &input.data);
    for h in &input.headers {
        let at = GuestAddress(DATA_BASE + u64::from(h.at));
        let _ = mem.write_obj(h.kind.value(), at);
        let _ = mem.write_obj(h.sector, GuestAddress(at.0 + 8));
    }
    for r in &input.ranges {
        let at = GuestAddress(DATA_BASE + u64::from(r.at));
        let _ = mem.write_obj(r.sector, at);
        let _ = mem.write_obj(r.sectors, GuestAddress(at.0 + 8));
        let _ = mem.write_obj(r.flags, GuestAddress(at.0 + 12));
    }
    vmstack_fuzz::write_indirect(&mem, &input.indirect);

    let path = image(1 + u64::from(input.sectors));
    let disk = DiskImage::open(&path, input.read_only, Some("fuzz")).expect("fuzz image opens");
    let (mut fq, queue) = FuzzQueue::new(&mem, 0, QUEUE_SIZE, &input.ring);
    let mut worker = BlockWorker::new(mem.clone(), interrupt(), queue, Arc::new(disk));
    for batch in input.batches.iter().take(16) {
        fq.apply(&mem, batch);
        worker.process_queue();
    }
});
