//! Shared test fakes for virtio devices: guest memory, a device that records
//! its lifecycle, and a harness that activates a device on mock queues.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{
    device_type, ActivateContext, ActivateError, GuestMemoryMmap, Interrupt, VirtioDevice,
    VIRTIO_F_VERSION_1,
};

/// Descriptor flag: the chain continues at `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const VRING_DESC_F_WRITE: u16 = 2;

/// Size of the guest memory used by device tests (16 MiB from 0).
pub const TEST_MEM_SIZE: usize = 16 << 20;

/// Fresh guest memory for a test.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), TEST_MEM_SIZE)]).expect("test guest memory")
}

/// A device that only counts activations and resets.
#[derive(Clone)]
pub struct RecordingDevice {
    sizes: Vec<u16>,
    activations: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
}

impl RecordingDevice {
    /// A device with queues of the given maximum sizes.
    pub fn new(sizes: &[u16]) -> Self {
        Self {
            sizes: sizes.to_vec(),
            activations: Arc::default(),
            resets: Arc::default(),
        }
    }

    /// How often the device was activated.
    pub fn activations(&self) -> usize {
        self.activations.load(Ordering::SeqCst)
    }

    /// How often the device was reset.
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }
}

impl VirtioDevice for RecordingDevice {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&mut self, _ctx: ActivateContext) -> Result<(), ActivateError> {
        self.activations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn reset(&mut self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

/// A driver-side harness: guest memory, one mock queue per device queue,
/// and the device activated on them.
pub struct DeviceHarness<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// Driver views of the queues.
    pub queues: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
    /// Notification eventfds (the driver's kick).
    pub queue_events: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
}

/// Where mock queue `i` lives in test memory.
fn queue_base(i: usize) -> GuestAddress {
    GuestAddress(0x10_0000 + (i as u64) * 0x10_0000)
}

/// Where descriptor data buffers start in test memory.
pub const DATA_START: u64 = 0x80_0000;

impl<'a> DeviceHarness<'a> {
    /// Activates `device` on fresh queues of size `queue_size`.
    pub fn activate(
        mem: &'a GuestMemoryMmap,
        device: &mut dyn VirtioDevice,
        queue_size: u16,
    ) -> Self {
        let count = device.queue_max_sizes().len();
        let queues: Vec<_> = (0..count)
            .map(|i| MockSplitQueue::create(mem, queue_base(i), queue_size))
            .collect();
        let device_queues: Vec<Queue> = queues
            .iter()
            .map(|q| q.create_queue().expect("mock queue"))
            .collect();
        let queue_events: Vec<EventFd> = (0..count)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
            .collect();
        let interrupt = Arc::new(Interrupt::new(
            EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"),
        ));
        device
            .activate(ActivateContext {
                mem: mem.clone(),
                interrupt: interrupt.clone(),
                queues: device_queues,
                queue_events: queue_events
                    .iter()
                    .map(|e| e.try_clone().expect("eventfd clone"))
                    .collect(),
                acked_features: device.features() | VIRTIO_F_VERSION_1,
            })
            .expect("activation");
        Self {
            mem,
            queues,
            queue_events,
            interrupt,
        }
    }

    /// Puts a chain of `(addr, len, flags)` descriptors on queue `q` at
    /// descriptor table index `first` (NEXT flags and links are filled in),
    /// publishes it and kicks the device.
    pub fn add_chain(&self, q: usize, first: u16, descs: &[(u64, u32, u16)]) {
        let last = descs.len().saturating_sub(1);
        let raw: Vec<(u64, u32, u16, u16)> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                if i < last {
                    (addr, len, flags | VRING_DESC_F_NEXT, first + i as u16 + 1)
                } else {
                    (addr, len, flags & !VRING_DESC_F_NEXT, 0)
                }
            })
            .collect();
        self.add_raw_chain(q, first, &raw);
    }

    /// Like [`Self::add_chain`] but with `(addr, len, flags, next)` exactly
    /// as given, for malformed chains (loops, bad links).
    ///
    /// Limit: at most `queue_size / 2 - 2` chains per queue and harness.
    /// virtio-queue 0.18's mock places the used ring `queue_size` bytes
    /// (not entries) after the avail ring, and never wraps the avail ring,
    /// so later avail entries overwrite used elements.
    pub fn add_raw_chain(&self, q: usize, first: u16, descs: &[(u64, u32, u16, u16)]) {
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .map(|&(addr, len, flags, next)| {
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        self.queues[q]
            .add_desc_chains(&raw, first)
            .expect("add chain");
        self.queue_events[q].write(1).expect("kick");
    }

    /// Waits until queue `q`'s used index reaches `idx` (or panics after 5 s).
    pub fn wait_used(&self, q: usize, idx: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let used = self.queues[q].used().idx().load();
            if used >= idx {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "used idx {used} never reached {idx}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The `(id, len)` of used element `i` of queue `q`.
    pub fn used_elem(&self, q: usize, i: u16) -> (u32, u32) {
        let elem = self.queues[q]
            .used()
            .ring()
            .ref_at(i as usize)
            .expect("used element")
            .load();
        (elem.id(), elem.len())
    }

    /// Reads `len` bytes of guest memory at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(addr))
            .expect("read guest memory");
        buf
    }
}
