//! virtio-blk: descriptor chains → `request::parse` → execution against a
//! real (tmpfs) image, through the worker's own queue processing.
//!
//! The guest lays out request headers and discard/write-zeroes ranges
//! (structured, so the parser's deeper paths are reached quickly) next to
//! raw data, then posts batches of chains; after each batch the worker
//! serves the queue. Nothing may panic, hang or touch memory outside the
//! guest's; the worker must keep serving after every hostile chain.
//!
//! Oracles on the image (filled with a pattern first, so a discard or
//! write of zeroes shows):
//! - every byte that changed during a batch lies inside the sectors of a
//!   write, discard or write-zeroes the worker accepted in that batch
//!   (seen through its observer, before execution): writes stay inside
//!   the requested sectors;
//! - those sectors lie inside the disk;
//! - a read-only image never changes, whatever the guest sends.

#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use devices::virtio::block::fuzzing::BlockWorker;
use devices::virtio::block::request::Operation;
use devices::virtio::block::{DiskImage, QUEUE_SIZE, SECTOR_SIZE};
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

/// Byte `i` of the image before the guest touches it.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(131) >> 3) as u8 | 1
}

fn image(sectors: u64) -> std::path::PathBuf {
    let path = scratch_dir().join("disk.img");
    let bytes: Vec<u8> = (0..sectors * SECTOR_SIZE).map(pattern).collect();
    std::fs::write(&path, bytes).expect("fuzz image");
    path
}

fn read_image(path: &std::path::Path, len: u64) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("fuzz image reopens");
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).expect("fuzz image reads back");
    buf
}

/// Byte ranges an operation may change.
fn ranges(op: &Operation) -> Vec<(u64, u64)> {
    let sectors = |first: u64, n: u64| (first * SECTOR_SIZE, (first + n) * SECTOR_SIZE);
    match op {
        Operation::Write { sector, data } => {
            let len: u64 = data.iter().map(|s| u64::from(s.len)).sum();
            vec![sectors(*sector, len.div_ceil(SECTOR_SIZE))]
        }
        Operation::Discard(r) | Operation::WriteZeroes(r) => r
            .iter()
            .map(|r| sectors(r.sector, u64::from(r.sectors)))
            .collect(),
        Operation::Read { .. } | Operation::Flush | Operation::GetId { .. } => vec![],
    }
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

    let sectors = 1 + u64::from(input.sectors);
    let size = sectors * SECTOR_SIZE;
    let path = image(sectors);
    let disk = DiskImage::open(&path, input.read_only, Some("fuzz")).expect("fuzz image opens");
    let (mut fq, queue) = FuzzQueue::new(&mem, 0, QUEUE_SIZE, &input.ring);
    let allowed: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let seen = allowed.clone();
    let mut worker = BlockWorker::new(mem.clone(), interrupt(), queue, Arc::new(disk))
        .with_observer(Box::new(move |op| {
            seen.lock().unwrap().extend(ranges(op));
        }));
    let original = read_image(&path, size);
    let mut before = original.clone();
    for batch in input.batches.iter().take(16) {
        fq.apply(&mem, batch);
        worker.process_queue();
        let after = read_image(&path, size);
        let mut allowed = allowed.lock().unwrap();
        for &(start, end) in allowed.iter() {
            assert!(
                end <= size,
                "the worker accepted an operation on bytes {start}..{end} of a {size}-byte disk"
            );
        }
        if input.read_only {
            // Nothing, not even an accepted operation, changes it.
            assert!(after == original, "a read-only image changed");
        }
        // Sector by sector with slice equality (one memcmp each), byte by
        // byte only inside a sector that changed: a byte loop over the
        // whole image (instrumented comparisons) was most of the run time.
        let sector = SECTOR_SIZE as usize;
        for (n, (a, b)) in before.chunks(sector).zip(after.chunks(sector)).enumerate() {
            if a == b {
                continue;
            }
            for (j, (x, y)) in a.iter().zip(b).enumerate() {
                let i = (n * sector + j) as u64;
                if x != y {
                    assert!(
                        allowed.iter().any(|&(s, e)| (s..e).contains(&i)),
                        "byte {i} of the image changed outside every accepted operation's sectors {allowed:?}"
                    );
                }
            }
        }
        allowed.clear();
        before = after;
    }
});
