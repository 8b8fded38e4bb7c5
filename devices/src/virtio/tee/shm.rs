//! Registered shared-memory regions: the guest's own pages, described as
//! lists of 4 KiB guest-physical frames, which the device reads and writes
//! in place.
//!
//! [`ShmTable::register`] checks every frame (aligned, inside guest RAM, not
//! overlapping a virtqueue) and the per-device bound on regions;
//! [`ShmTable::resolve`] turns a memory-reference parameter into the guest
//! segments it covers, checked against the region and `max_memref_size`.
//! The table holds at most `max_shm_regions` × `max_shm_frames` frame
//! addresses (256 × 512 × 8 bytes = 1 MiB with the default limits); nothing
//! is allocated in guest memory.

use std::collections::HashMap;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::chain::Segment;
use super::protocol::{MemRef, Param, ShmRegistration, Status, NUM_PARAMS};
use super::{Limits, FRAME_SIZE};
use crate::virtio::chain::pieces;
use crate::virtio::GuestMemoryMmap;

/// A range of guest-physical memory no frame may overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRange {
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub len: u64,
}

impl GuestRange {
    /// Whether `[addr, addr + len)` and this range share a byte.
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        let end = |a: u64, l: u64| u128::from(a) + u128::from(l);
        len > 0
            && self.len > 0
            && u128::from(addr) < end(self.start, self.len)
            && u128::from(self.start) < end(addr, len)
    }
}

/// The descriptor table, available ring and used ring of a split queue
/// (with the event-index fields), as ranges frames must not overlap.
pub fn queue_ranges<Q: QueueT>(queue: &Q) -> [GuestRange; 3] {
    let n = u64::from(queue.size());
    [
        GuestRange {
            start: queue.desc_table(),
            len: 16 * n,
        },
        GuestRange {
            start: queue.avail_ring(),
            len: 6 + 2 * n,
        },
        GuestRange {
            start: queue.used_ring(),
            len: 6 + 8 * n,
        },
    ]
}

/// Why a registration, unregistration or memory reference is refused;
/// [`ShmError::status`] is what the device answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShmError {
    /// `max_shm_regions` regions are registered.
    #[error("{0} regions are registered already (max_shm_regions)")]
    TableFull(u32),
    /// A frame address is not 4096-aligned.
    #[error("frame {0:#x} is not 4096-aligned")]
    Misaligned(u64),
    /// A frame is not entirely inside guest RAM.
    #[error("frame {0:#x} is not inside guest RAM")]
    OutsideMemory(u64),
    /// A frame overlaps a virtqueue.
    #[error("frame {0:#x} overlaps a virtqueue")]
    OverlapsQueue(u64),
    /// No region has the id.
    #[error("no registered region {0}")]
    UnknownRegion(u64),
    /// A memory reference reaches beyond its region.
    #[error("bytes {offset}+{size} are outside region {shm_id} of {region_size} bytes")]
    OutsideRegion {
        /// The region.
        shm_id: u64,
        /// The reference's offset.
        offset: u64,
        /// The reference's size.
        size: u64,
        /// The region's size.
        region_size: u64,
    },
    /// A memory reference larger than `max_memref_size`.
    #[error("memory reference of {0} bytes exceeds max_memref_size")]
    TooLarge(u64),
    /// Guest memory could not be accessed (cannot happen for checked frames).
    #[error("guest memory access failed at {0:#x}")]
    Access(u64),
}

impl ShmError {
    /// The status the device answers.
    pub fn status(&self) -> Status {
        match self {
            ShmError::TableFull(_) => Status::NoSpace,
            ShmError::Misaligned(_) | ShmError::OutsideMemory(_) | ShmError::OverlapsQueue(_) => {
                Status::BadAddress
            }
            ShmError::UnknownRegion(_) => Status::NotFound,
            ShmError::TooLarge(_) => Status::TooLarge,
            ShmError::OutsideRegion { .. } | ShmError::Access(_) => Status::Invalid,
        }
    }
}

/// One registered region.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    size: u64,
    offset: u32,
    frames: Box<[u64]>,
}

/// The registered regions of one device.
#[derive(Debug)]
pub struct ShmTable {
    regions: HashMap<u64, Region>,
    next_id: u64,
    max_regions: u32,
    max_memref_size: u64,
}

impl ShmTable {
    /// An empty table with the device's `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            regions: HashMap::new(),
            next_id: 1,
            max_regions: limits.max_shm_regions,
            max_memref_size: u64::from(limits.max_memref_size),
        }
    }

    /// Registered regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region is registered.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Forgets every region (device reset).
    pub fn clear(&mut self) {
        self.regions.clear();
    }

    /// Registers `reg` (already checked for syntax by the parser) after
    /// checking each frame against guest memory and the `forbidden` ranges
    /// (the virtqueues); returns the new region's id (never 0).
    pub fn register(
        &mut self,
        mem: &GuestMemoryMmap,
        reg: ShmRegistration,
        forbidden: &[GuestRange],
    ) -> Result<u64, ShmError> {
        if self.regions.len() >= self.max_regions as usize {
            return Err(ShmError::TableFull(self.max_regions));
        }
        for &f in &reg.frames {
            if f % FRAME_SIZE != 0 {
                return Err(ShmError::Misaligned(f));
            }
            if f.checked_add(FRAME_SIZE).is_none()
                || !mem.check_range(GuestAddress(f), FRAME_SIZE as usize)
            {
                return Err(ShmError::OutsideMemory(f));
            }
            if forbidden.iter().any(|r| r.overlaps(f, FRAME_SIZE)) {
                return Err(ShmError::OverlapsQueue(f));
            }
        }
        // At most max_regions ids are taken, so this ends within
        // max_regions + 1 steps.
        let mut id = self.next_id;
        while id == 0 || self.regions.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.regions.insert(
            id,
            Region {
                size: reg.size,
                offset: reg.offset,
                frames: reg.frames.into_boxed_slice(),
            },
        );
        Ok(id)
    }

    /// Forgets region `shm_id`.
    pub fn unregister(&mut self, shm_id: u64) -> Result<(), ShmError> {
        self.regions
            .remove(&shm_id)
            .map(|_| ())
            .ok_or(ShmError::UnknownRegion(shm_id))
    }

    /// The guest segments of `m`'s bytes, in order (adjacent frames merged;
    /// empty for a size of 0).
    pub fn resolve(&self, m: &MemRef) -> Result<Vec<Segment>, ShmError> {
        let region = self
            .regions
            .get(&m.shm_id)
            .ok_or(ShmError::UnknownRegion(m.shm_id))?;
        if m.size > self.max_memref_size {
            return Err(ShmError::TooLarge(m.size));
        }
        match m.offset.checked_add(m.size) {
            Some(end) if end <= region.size => {}
            _ => {
                return Err(ShmError::OutsideRegion {
                    shm_id: m.shm_id,
                    offset: m.offset,
                    size: m.size,
                    region_size: region.size,
                })
            }
        }
        let mut segs: Vec<Segment> = Vec::new();
        // offset < 4096 and offset + m.offset + m.size <= 4096 * frames.
        let mut pos = u64::from(region.offset) + m.offset;
        let mut left = m.size;
        while left > 0 {
            let frame = region
                .frames
                .get(usize::try_from(pos / FRAME_SIZE).unwrap_or(usize::MAX))
                .copied()
                .ok_or(ShmError::Access(pos))?;
            let in_frame = pos % FRAME_SIZE;
            let n = (FRAME_SIZE - in_frame).min(left);
            let addr = frame + in_frame;
            match segs.last_mut() {
                Some(last) if last.addr.0 + u64::from(last.len) == addr => {
                    // n <= 4096 and a merged segment is at most
                    // max_memref_size (a u32) long.
                    last.len += n as u32;
                }
                _ => segs.push(Segment {
                    addr: GuestAddress(addr),
                    len: n as u32,
                }),
            }
            pos += n;
            left -= n;
        }
        Ok(segs)
    }

    /// Resolves every memory reference of a request's parameters (`None`
    /// for the other parameters), all or nothing.
    pub fn resolve_params(
        &self,
        params: &[Param; NUM_PARAMS],
    ) -> Result<[Option<Vec<Segment>>; NUM_PARAMS], ShmError> {
        let mut out: [Option<Vec<Segment>>; NUM_PARAMS] = Default::default();
        for (slot, p) in out.iter_mut().zip(params) {
            if let Param::MemRef(_, m) = p {
                *slot = Some(self.resolve(m)?);
            }
        }
        Ok(out)
    }
}

/// Reads the bytes of `segs` (a resolved memory reference) into `out`,
/// replacing its contents.
pub fn read_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    out: &mut Vec<u8>,
) -> Result<(), ShmError> {
    out.clear();
    for s in segs {
        let start = out.len();
        out.resize(start + s.len as usize, 0);
        mem.read_slice(&mut out[start..], s.addr)
            .map_err(|_| ShmError::Access(s.addr.0))?;
    }
    Ok(())
}

/// Writes `data` into `segs` from their start, cut at their end; returns the
/// bytes written.
pub fn write_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    data: &[u8],
) -> Result<usize, ShmError> {
    let mut done = 0;
    for (part, s) in pieces(segs, data.len()) {
        done = part.end;
        mem.write_slice(&data[part], s.addr)
            .map_err(|_| ShmError::Access(s.addr.0))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::tee::protocol::Direction;
    use crate::virtio::test_utils::{guest_memory, DATA_START, TEST_MEM_SIZE};

    const L: Limits = Limits::DEFAULT;
    const F0: u64 = DATA_START;
    const F1: u64 = DATA_START + 0x3000;
    const QUEUE: GuestRange = GuestRange {
        start: 0x10_0000,
        len: 0x1000,
    };

    fn reg(size: u64, offset: u32, frames: &[u64]) -> ShmRegistration {
        ShmRegistration {
            size,
            offset,
            frames: frames.to_vec(),
        }
    }

    fn memref(shm_id: u64, offset: u64, size: u64) -> MemRef {
        MemRef {
            shm_id,
            offset,
            size,
        }
    }

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    #[test]
    fn resolve_walks_frames_from_the_offset() {
        let mem = guest_memory();
        let mut t = ShmTable::new(&L);
        // 5000 bytes from offset 100 of F0, continued in F1.
        let id = t
            .register(&mem, reg(5000, 100, &[F0, F1]), &[QUEUE])
            .unwrap();
        assert_ne!(id, 0);
        assert_eq!(
            t.resolve(&memref(id, 0, 5000)).unwrap(),
            vec![seg(F0 + 100, 3996), seg(F1, 1004)]
        );
        assert_eq!(t.resolve(&memref(id, 3996, 4)).unwrap(), vec![seg(F1, 4)]);
        assert_eq!(t.resolve(&memref(id, 5000, 0)).unwrap(), vec![]);
        // Adjacent frames merge into one segment.
        let id2 = t
            .register(&mem, reg(8192, 0, &[F0, F0 + 4096]), &[QUEUE])
            .unwrap();
        assert_eq!(
            t.resolve(&memref(id2, 10, 8000)).unwrap(),
            vec![seg(F0 + 10, 8000)]
        );
        // Reading and writing through the segments reaches guest memory.
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let segs = t.resolve(&memref(id, 0, 5000)).unwrap();
        assert_eq!(write_segments(&mem, &segs, &data).unwrap(), 5000);
        let mut tail = [0u8; 4];
        mem.read_slice(&mut tail, GuestAddress(F1 + 1000)).unwrap();
        assert_eq!(tail, data[4996..]);
        let mut back = Vec::new();
        read_segments(&mem, &segs, &mut back).unwrap();
        assert_eq!(back, data);
        // Writes are cut at the reference's end.
        let small = t.resolve(&memref(id, 0, 10)).unwrap();
        assert_eq!(write_segments(&mem, &small, &[0xee; 64]).unwrap(), 10);
        mem.read_slice(&mut tail, GuestAddress(F0 + 110)).unwrap();
        assert_eq!(tail, data[10..14], "byte 10 onwards untouched");
    }

    #[test]
    fn hostile_frames_are_refused() {
        let mem = guest_memory();
        let mut t = ShmTable::new(&L);
        let end = TEST_MEM_SIZE as u64;
        let cases = [
            (F0 + 8, ShmError::Misaligned(F0 + 8)),
            (end, ShmError::OutsideMemory(end)),
            (u64::MAX - 4095, ShmError::OutsideMemory(u64::MAX - 4095)),
            (QUEUE.start, ShmError::OverlapsQueue(QUEUE.start)),
        ];
        for (frame, want) in cases {
            let e = t
                .register(&mem, reg(4096, 0, &[F0, frame]), &[QUEUE])
                .unwrap_err();
            assert_eq!(e, want);
            assert_eq!(e.status(), Status::BadAddress);
        }
        // The frames right before and after the queue are fine.
        for f in [QUEUE.start - 4096, QUEUE.start + QUEUE.len] {
            let id = t.register(&mem, reg(4096, 0, &[f]), &[QUEUE]).unwrap();
            t.unregister(id).unwrap();
        }
        // A queue that starts inside a frame, or ends in it.
        let odd = GuestRange {
            start: F1 + 4000,
            len: 200,
        };
        assert_eq!(
            t.register(&mem, reg(4096, 0, &[F1 + 4096]), &[odd]),
            Err(ShmError::OverlapsQueue(F1 + 4096))
        );
        assert_eq!(
            t.register(&mem, reg(4096, 0, &[F1]), &[odd]),
            Err(ShmError::OverlapsQueue(F1))
        );
        assert!(t.is_empty(), "nothing registered by a refused request");
        // The real queue layout from a queue.
        let q = virtio_queue::Queue::new(256).unwrap();
        let ranges = queue_ranges(&q);
        assert_eq!(ranges[0].len, 4096);
        assert_eq!(ranges[1].len, 6 + 512);
        assert_eq!(ranges[2].len, 6 + 2048);
    }

    #[test]
    fn bounds_on_regions_and_references() {
        let mem = guest_memory();
        let limits = Limits {
            max_shm_regions: 3,
            ..L
        };
        let mut t = ShmTable::new(&limits);
        let ids: Vec<u64> = (0..3)
            .map(|_| t.register(&mem, reg(4096, 0, &[F0]), &[]).unwrap())
            .collect();
        let e = t.register(&mem, reg(4096, 0, &[F0]), &[]).unwrap_err();
        assert_eq!(e, ShmError::TableFull(3));
        assert_eq!(e.status(), Status::NoSpace);
        t.unregister(ids[1]).unwrap();
        let again = t.register(&mem, reg(4096, 0, &[F0]), &[]).unwrap();
        assert!(!ids.contains(&again), "ids are not reused at once");
        let e = t.unregister(ids[1]).unwrap_err();
        assert_eq!(e, ShmError::UnknownRegion(ids[1]));
        assert_eq!(e.status(), Status::NotFound);
        assert_eq!(
            t.resolve(&memref(ids[1], 0, 1)),
            Err(ShmError::UnknownRegion(ids[1]))
        );
        // References outside the region, overflowing, too large.
        let id = ids[0];
        for (offset, size) in [(0, 4097), (4096, 1), (1, u64::MAX), (u64::MAX, 2)] {
            let e = t.resolve(&memref(id, offset, size)).unwrap_err();
            assert!(
                matches!(e, ShmError::OutsideRegion { .. } | ShmError::TooLarge(_)),
                "{offset}+{size}: {e:?}"
            );
        }
        let e = t.resolve(&memref(id, 1, 4096)).unwrap_err();
        assert_eq!(e.status(), Status::Invalid);
        let big = u64::from(limits.max_memref_size) + 1;
        assert_eq!(t.resolve(&memref(id, 0, big)), Err(ShmError::TooLarge(big)));
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn ids_skip_zero_and_taken_ones_when_wrapping() {
        let mem = guest_memory();
        let mut t = ShmTable::new(&L);
        let first = t.register(&mem, reg(1, 0, &[F0]), &[]).unwrap();
        t.next_id = u64::MAX;
        assert_eq!(t.register(&mem, reg(1, 0, &[F0]), &[]).unwrap(), u64::MAX);
        let wrapped = t.register(&mem, reg(1, 0, &[F0]), &[]).unwrap();
        assert_ne!(wrapped, 0);
        assert_ne!(wrapped, first);
    }

    #[test]
    fn params_resolve_all_or_nothing() {
        let mem = guest_memory();
        let mut t = ShmTable::new(&L);
        let id = t.register(&mem, reg(100, 0, &[F0]), &[]).unwrap();
        let mut params = [Param::None; NUM_PARAMS];
        params[1] = Param::MemRef(Direction::Output, memref(id, 10, 20));
        let r = t.resolve_params(&params).unwrap();
        assert!(r[0].is_none() && r[2].is_none() && r[3].is_none());
        assert_eq!(r[1].as_deref(), Some(&[seg(F0 + 10, 20)][..]));
        params[3] = Param::MemRef(Direction::Input, memref(id + 1, 0, 1));
        assert_eq!(
            t.resolve_params(&params),
            Err(ShmError::UnknownRegion(id + 1))
        );
    }

    #[test]
    fn range_overlap_edges() {
        let r = GuestRange {
            start: 100,
            len: 10,
        };
        assert!(r.overlaps(109, 1));
        assert!(!r.overlaps(110, 1));
        assert!(r.overlaps(0, 101));
        assert!(!r.overlaps(0, 100));
        assert!(!r.overlaps(105, 0));
        assert!(GuestRange {
            start: u64::MAX,
            len: 1
        }
        .overlaps(u64::MAX, 1));
    }
}
