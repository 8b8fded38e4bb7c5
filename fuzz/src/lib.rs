//! Shared pieces of the fuzz targets: guest memory and split virtqueues laid
//! out from fuzz input, the way a hostile guest driver would lay them out.
//!
//! Guest memory (every target uses the same map):
//!
//! ```text
//! 0x00000  queue i at i * 0x4000: descriptor table (+0), avail ring (+0x1000),
//!          used ring (+0x2000); at most 4 queues
//! 0x10000  INDIRECT_BASE: descriptors written here for indirect tables
//! 0x20000  DATA_BASE: the input's data bytes, then per-target structures
//! 0xfffff  end of the first region
//!          a 4 KiB hole (no memory)
//! 0x101000 a second 64 KiB region, so buffers can straddle the hole
//! ```
//!
//! Descriptors name addresses symbolically ([`Addr`]) so that most of them
//! land in memory the target filled, while [`Addr::Raw`] keeps every
//! hostile address reachable. A [`Batch`] either posts well-linked chains
//! (the `NEXT` flags and links are filled in) or writes raw descriptor table
//! entries and avail ring heads, loops, bad indices and all.

pub mod tee;

use arbitrary::Arbitrary;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// Guest memory as the devices see it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Size of the first memory region.
pub const MEM_SIZE: u64 = 0x10_0000;
/// Start of the second region (after a 4 KiB hole).
pub const HIGH_START: u64 = MEM_SIZE + 0x1000;
/// Size of the second region.
pub const HIGH_SIZE: u64 = 0x1_0000;
/// Bytes reserved for each queue's rings.
pub const QUEUE_STRIDE: u64 = 0x4000;
/// Where indirect descriptor tables are written.
pub const INDIRECT_BASE: u64 = 0x1_0000;
/// Where the input's data bytes are written.
pub const DATA_BASE: u64 = 0x2_0000;

/// Descriptor flag: the chain continues at `next`.
pub const F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const F_INDIRECT: u16 = 4;

/// The buffer of `len` bytes at `at` as chain buffers `(addr, len, flags)`:
/// one, or two cut after `cut` bytes when `0 < cut < len`.
pub fn split_buffer(at: u64, len: u64, cut: u64, flags: u16) -> Vec<(u64, u32, u16)> {
    if cut == 0 || cut >= len {
        vec![(at, len as u32, flags)]
    } else {
        vec![
            (at, cut as u32, flags),
            (at + cut, (len - cut) as u32, flags),
        ]
    }
}

/// Fresh guest memory: both regions, zeroed.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), MEM_SIZE as usize),
        (GuestAddress(HIGH_START), HIGH_SIZE as usize),
    ])
    .expect("fuzz guest memory")
}

/// Writes `data` at [`DATA_BASE`] (cut at the end of the first region).
pub fn write_data(mem: &GuestMemoryMmap, data: &[u8]) {
    let n = data.len().min((MEM_SIZE - DATA_BASE) as usize);
    mem.write_slice(&data[..n], GuestAddress(DATA_BASE))
        .expect("data fits the first region");
}

/// [`guest_memory`] with `data` at [`DATA_BASE`] ([`write_data`]) and the
/// indirect table `indirect` at [`INDIRECT_BASE`] ([`write_indirect`]).
pub fn guest_memory_with(data: &[u8], indirect: &[Desc]) -> GuestMemoryMmap {
    let mem = guest_memory();
    write_data(&mem, data);
    write_indirect(&mem, indirect);
    mem
}

/// A guest address, mostly inside memory the target filled.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    /// `DATA_BASE + n`.
    Data(u16),
    /// `DATA_BASE + 16 * n`: anywhere up to past the end of the first
    /// region, into the hole and the second region.
    Far(u16),
    /// The `n`-th descriptor slot of the indirect area.
    Indirect(u8),
    /// Inside the queue rings (a buffer aliasing the rings).
    Ring(u16),
    /// The end of the first region minus `n` (straddles the hole for
    /// lengths above `n`).
    EndMinus(u16),
    /// Anything.
    Raw(u64),
}

impl Addr {
    /// The guest physical address.
    pub fn resolve(self) -> u64 {
        match self {
            Addr::Data(n) => DATA_BASE + u64::from(n),
            Addr::Far(n) => DATA_BASE + 16 * u64::from(n),
            Addr::Indirect(n) => INDIRECT_BASE + 16 * u64::from(n),
            Addr::Ring(n) => u64::from(n) % (4 * QUEUE_STRIDE),
            Addr::EndMinus(n) => MEM_SIZE - u64::from(n),
            Addr::Raw(a) => a,
        }
    }
}

/// A buffer length.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Len {
    /// 0..=255 bytes.
    Small(u8),
    /// `n` 512-byte sectors.
    Sectors(u8),
    /// 0..=65535 bytes.
    Medium(u16),
    /// Anything.
    Raw(u32),
}

impl Len {
    /// The length in bytes.
    pub fn resolve(self) -> u32 {
        match self {
            Len::Small(n) => u32::from(n),
            Len::Sectors(n) => u32::from(n) * 512,
            Len::Medium(n) => u32::from(n),
            Len::Raw(n) => n,
        }
    }
}

/// One descriptor as the fuzzer describes it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Desc {
    /// Buffer address.
    pub addr: Addr,
    /// Buffer length.
    pub len: Len,
    /// Low three bits: `NEXT`, `WRITE`, `INDIRECT`; bit 7 adds the unused
    /// high bits too.
    pub flags: u8,
    /// Next index (raw batches only; chains are linked automatically).
    pub next: u16,
}

impl Desc {
    fn raw_flags(&self) -> u16 {
        let mut f = u16::from(self.flags & 7);
        if self.flags & 0x80 != 0 {
            f |= 0xfff8;
        }
        f
    }
}

/// Writes one 16-byte descriptor at `at`.
pub fn write_desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..].copy_from_slice(&next.to_le_bytes());
    // Callers only pass addresses inside the first region.
    let _ = mem.write_slice(&raw, GuestAddress(at));
}

/// Writes `descs` as an indirect table at [`INDIRECT_BASE`] (raw links).
pub fn write_indirect(mem: &GuestMemoryMmap, descs: &[Desc]) {
    for (i, d) in descs.iter().take(4096).enumerate() {
        write_desc(
            mem,
            INDIRECT_BASE + 16 * i as u64,
            d.addr.resolve(),
            d.len.resolve(),
            d.raw_flags(),
            d.next,
        );
    }
}

/// How a queue is set up.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct RingSetup {
    /// Queue size is the device maximum shifted right by `shift % 9`
    /// (at least 1).
    pub shift: u8,
    /// Whether `VIRTIO_RING_F_EVENT_IDX` was negotiated.
    pub event_idx: bool,
    /// The avail ring's `flags`.
    pub avail_flags: u16,
    /// The avail ring's `used_event`.
    pub used_event: u16,
}

/// A batch of guest activity on one queue.
#[derive(Arbitrary, Debug, Clone)]
pub enum Batch {
    /// Well-linked chains: each inner list becomes one chain in consecutive
    /// descriptor slots (`NEXT` set on all but the last, `next` pointing at
    /// the following slot); the `WRITE` and `INDIRECT` flags are the
    /// fuzzer's.
    Chains(Vec<Vec<Desc>>),
    /// Raw descriptor table entries at the given slots (taken modulo the
    /// table size), then raw heads appended to the avail ring.
    Raw {
        /// `(slot, descriptor)` pairs.
        descs: Vec<(u16, Desc)>,
        /// Heads to publish (any value, including out-of-range ones).
        heads: Vec<u16>,
    },
    /// Sets the avail ring's `idx` to any value.
    AvailIdx(u16),
}

/// The driver's side of one split queue in fuzz memory.
#[derive(Debug)]
pub struct FuzzQueue {
    desc: u64,
    avail: u64,
    used: u64,
    size: u16,
    cursor: u16,
    avail_idx: u16,
    used_event: u16,
}

impl FuzzQueue {
    /// Lays out queue `index` (at most 4) with the size `setup` asks for,
    /// and returns the device's [`Queue`], ready and valid.
    pub fn new(
        mem: &GuestMemoryMmap,
        index: usize,
        max_size: u16,
        setup: &RingSetup,
    ) -> (Self, Queue) {
        assert!(index < 4, "at most 4 fuzz queues");
        let base = index as u64 * QUEUE_STRIDE;
        let size = (max_size >> (setup.shift % 9)).max(1);
        let (desc, avail, used) = (base, base + 0x1000, base + 0x2000);
        let mut q = Queue::new(max_size).expect("device queue size");
        q.set_size(size);
        q.set_desc_table_address(Some(desc as u32), Some(0));
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q.set_event_idx(setup.event_idx);
        q.set_ready(true);
        assert!(q.is_valid(mem), "fuzz queue layout");
        let _ = mem.write_obj(setup.avail_flags, GuestAddress(avail));
        let fq = Self {
            desc,
            avail,
            used,
            size,
            cursor: 0,
            avail_idx: 0,
            used_event: setup.used_event,
        };
        fq.write_used_event(mem);
        (fq, q)
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest address of the used ring.
    pub fn used_ring(&self) -> u64 {
        self.used
    }

    fn write_used_event(&self, mem: &GuestMemoryMmap) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        let _ = mem.write_obj(self.used_event, GuestAddress(at));
    }

    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail_idx % self.size;
        let _ = mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * u64::from(slot)));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2));
    }

    /// Posts one well-linked chain of `(addr, len, flags)` buffers (flags
    /// without `NEXT`; it is added) in consecutive slots. Returns its head.
    pub fn add_chain(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, u16)]) -> u16 {
        let head = self.cursor;
        let n = bufs.len();
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let slot = self.cursor;
            let next = (slot + 1) % self.size;
            let flags = if i + 1 < n { flags | F_NEXT } else { flags };
            write_desc(
                mem,
                self.desc + 16 * u64::from(slot),
                addr,
                len,
                flags,
                next,
            );
            self.cursor = next;
        }
        if n == 0 {
            // An empty chain: publish a slot whose descriptor is left as is.
            self.cursor = (self.cursor + 1) % self.size;
        }
        self.publish(mem, head);
        head
    }

    /// Applies one batch.
    pub fn apply(&mut self, mem: &GuestMemoryMmap, batch: &Batch) {
        match batch {
            Batch::Chains(chains) => {
                for chain in chains {
                    let bufs: Vec<(u64, u32, u16)> = chain
                        .iter()
                        .take(usize::from(self.size))
                        .map(|d| (d.addr.resolve(), d.len.resolve(), d.raw_flags() & !F_NEXT))
                        .collect();
                    self.add_chain(mem, &bufs);
                }
            }
            Batch::Raw { descs, heads } => {
                for (slot, d) in descs {
                    let slot = slot % self.size;
                    write_desc(
                        mem,
                        self.desc + 16 * u64::from(slot),
                        d.addr.resolve(),
                        d.len.resolve(),
                        d.raw_flags(),
                        d.next,
                    );
                }
                for &h in heads.iter().take(usize::from(self.size)) {
                    self.publish(mem, h);
                }
            }
            Batch::AvailIdx(idx) => {
                self.avail_idx = *idx;
                let _ = mem.write_obj(*idx, GuestAddress(self.avail + 2));
            }
        }
    }
}

/// A directory private to this fuzz process (in `/dev/shm` when it exists),
/// for disk images and sockets; removed when the process exits normally.
pub fn scratch_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("vmstack-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz scratch directory");
        extern "C" fn cleanup() {
            if let Some(dir) = DIR.get() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registers a plain `extern "C" fn` without arguments.
        unsafe { libc::atexit(cleanup) };
        dir
    })
}

/// An eventfd, as the workers want for interrupts and kicks.
pub fn eventfd() -> vmm_sys_util::eventfd::EventFd {
    vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")
}

/// An interrupt on a fresh eventfd.
pub fn interrupt() -> std::sync::Arc<devices::virtio::Interrupt> {
    std::sync::Arc::new(devices::virtio::Interrupt::new(eventfd()))
}
