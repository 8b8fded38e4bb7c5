//! Shared test fakes for virtio devices: guest memory, a device that records
//! its lifecycle, a driver-side harness that activates a device on mock
//! queues, and the lifecycle tests every device runs
//! ([`virtio_lifecycle_tests!`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueT;
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
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const VRING_DESC_F_INDIRECT: u16 = 4;

/// Descriptors `(addr, len, flags)` as the queue's walker yields them,
/// linked with NEXT except the last.
pub fn chain(descs: &[(u64, u32, u16)]) -> Vec<SplitDescriptor> {
    let last = descs.len().saturating_sub(1);
    descs
        .iter()
        .enumerate()
        .map(|(i, &(a, l, f))| {
            let flags = if i < last { f | VRING_DESC_F_NEXT } else { f };
            SplitDescriptor::new(a, l, flags, i as u16 + 1)
        })
        .collect()
}

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
    fn activate(&mut self, _ctx: ActivateContext) -> Result<(), ActivateError> {
        self.activations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn reset(&mut self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

/// A driver-side harness: guest memory, one mock queue per device queue,
/// their kick eventfds and the device's interrupt.
///
/// Limit: at most `queue_size / 2 - 1` chains per queue and harness.
/// virtio-queue 0.18's mock places the used ring `queue_size` bytes (not
/// entries) after the avail ring, and never wraps the avail ring, so later
/// avail entries overwrite used elements.
pub struct DeviceHarness<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// Driver views of the queues.
    pub queues: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
    /// Notification eventfds (the driver's kick).
    pub queue_events: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// Next free descriptor slot per queue, for [`Self::post`].
    cursors: Vec<Cell<u16>>,
    queue_size: u16,
}

/// Where mock queue `i` lives in test memory.
fn queue_base(i: usize) -> GuestAddress {
    GuestAddress(0x10_0000 + (i as u64) * 0x10_0000)
}

/// Where descriptor data buffers start in test memory.
pub const DATA_START: u64 = 0x80_0000;

impl<'a> DeviceHarness<'a> {
    /// `count` fresh queues of size `queue_size` (at most 7 queues), not yet
    /// handed to a device.
    pub fn new(mem: &'a GuestMemoryMmap, count: usize, queue_size: u16) -> Self {
        assert!(count <= 7, "queue rings would overlap the data area");
        Self {
            mem,
            queues: (0..count)
                .map(|i| MockSplitQueue::create(mem, queue_base(i), queue_size))
                .collect(),
            queue_events: (0..count)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
                .collect(),
            interrupt: Arc::new(Interrupt::new(
                EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"),
            )),
            cursors: (0..count).map(|_| Cell::new(0)).collect(),
            queue_size,
        }
    }

    /// What the transport hands a device at `DRIVER_OK`: the mock queues
    /// (ready), the kick eventfds, the interrupt and `acked_features`.
    pub fn context(&self, acked_features: u64) -> ActivateContext {
        ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues: self
                .queues
                .iter()
                .map(|q| q.create_queue().expect("mock queue"))
                .collect(),
            queue_events: self
                .queue_events
                .iter()
                .map(|e| e.try_clone().expect("eventfd clone"))
                .collect(),
            acked_features,
        }
    }

    /// Activates `device` on fresh queues of size `queue_size`, the driver
    /// accepting every offered feature.
    pub fn activate(
        mem: &'a GuestMemoryMmap,
        device: &mut dyn VirtioDevice,
        queue_size: u16,
    ) -> Self {
        let h = Self::new(mem, device.queue_max_sizes().len(), queue_size);
        device
            .activate(h.context(device.features() | VIRTIO_F_VERSION_1))
            .expect("activation");
        h
    }

    /// Reserves `n` consecutive descriptor slots of queue `q` (for
    /// [`Self::add_raw_chain`]); returns the first.
    pub fn reserve(&self, q: usize, n: u16) -> u16 {
        let first = self.cursors[q].get();
        assert!(
            first + n <= self.queue_size,
            "queue {q} has no {n} free slots"
        );
        self.cursors[q].set(first + n);
        first
    }

    /// Posts a chain of `(addr, len, flags)` descriptors on queue `q` in the
    /// next free slots (see [`Self::add_chain`]); returns its head.
    pub fn post(&self, q: usize, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.reserve(q, descs.len() as u16);
        self.add_chain(q, head, descs);
        head
    }

    /// Publishes `head` on queue `q`'s avail ring as is (any value, e.g. one
    /// beyond the queue) and kicks.
    pub fn publish_head(&self, q: usize, head: u16) {
        let avail = self.queues[q].avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % self.queue_size))
            .expect("avail slot")
            .store(head);
        avail.idx().store(idx.wrapping_add(1));
        self.queue_events[q].write(1).expect("kick");
    }

    /// Waits until the chain with head `head` comes back on queue `q` (or
    /// panics after 5 s); returns its used length.
    pub fn wait_for_head(&self, q: usize, head: u16) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let used = self.queues[q].used().idx().load();
            if let Some((_, len)) = (0..used)
                .map(|i| self.used_elem(q, i))
                .find(|&(id, _)| id == u32::from(head))
            {
                return len;
            }
            assert!(
                Instant::now() < deadline,
                "chain {head} never came back on queue {q}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Posts several chains of `(addr, len, flags)` descriptors on queue
    /// `q` and publishes them together with one kick, as a driver that
    /// queues a batch (the device sees them all at once); returns their
    /// heads.
    pub fn post_batch(&self, q: usize, chains: &[Vec<(u64, u32, u16)>]) -> Vec<u16> {
        let heads: Vec<u16> = chains
            .iter()
            .map(|descs| {
                let first = self.reserve(q, descs.len() as u16);
                for (i, d) in chain(descs).into_iter().enumerate() {
                    let next = if i + 1 < descs.len() {
                        first + i as u16 + 1
                    } else {
                        0
                    };
                    let d = SplitDescriptor::new(d.addr().0, d.len(), d.flags(), next);
                    self.queues[q]
                        .desc_table()
                        .store(first + i as u16, RawDescriptor::from(d))
                        .expect("descriptor slot");
                }
                first
            })
            .collect();
        let avail = self.queues[q].avail();
        let idx = avail.idx().load();
        for (i, &head) in heads.iter().enumerate() {
            let slot = usize::from(idx.wrapping_add(i as u16) % self.queue_size);
            avail.ring().ref_at(slot).expect("avail slot").store(head);
        }
        avail.idx().store(idx.wrapping_add(heads.len() as u16));
        self.queue_events[q].write(1).expect("kick");
        heads
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

    /// Waits until the used-ring interrupt bit is set (or panics after 5 s).
    /// A worker publishes the used index before it raises the interrupt, so
    /// a test that saw [`Self::wait_used`] return must still wait for this.
    pub fn wait_used_interrupt(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.interrupt.status() & 1 == 0 {
            assert!(
                Instant::now() < deadline,
                "the used-ring interrupt was never raised"
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

/// What the shared lifecycle tests ([`virtio_lifecycle_tests!`]) need to
/// know about a device.
pub trait LifecycleTest: VirtioDevice + Sized {
    /// What must live as long as the device (a temporary image, the other
    /// end of its backend).
    type Fixture;
    /// Queues the driver may leave unset (the device never needs them).
    const OPTIONAL_QUEUES: &'static [usize] = &[];
    /// A fresh, inactive device.
    fn create() -> (Self, Self::Fixture);
    /// Whether the device's worker runs.
    fn is_active(&self) -> bool;
    /// Has the activated device serve one good request through `h` (with
    /// [`DeviceHarness::post`]; the queues may hold chains the device has
    /// not taken yet) and checks the answer. Data buffers go at
    /// [`PROBE_AREA`].
    fn assert_serves(fixture: &mut Self::Fixture, h: &DeviceHarness);
}

/// Where [`LifecycleTest::assert_serves`] puts its buffers.
pub const PROBE_AREA: u64 = DATA_START + 0x40_0000;

/// Declares the shared lifecycle tests for `$device` (which implements
/// [`LifecycleTest`]) in a module `lifecycle`, like crosvm's
/// `suspendable_virtio_tests!`: activation with missing or not-ready queues
/// fails with a clear error and leaves the device usable; activate, reset
/// and activate again works; a reset of an inactive device does nothing;
/// hostile chains on every queue do not stop the device.
macro_rules! virtio_lifecycle_tests {
    ($device:ty) => {
        $crate::virtio::test_utils::virtio_lifecycle_tests!(
            $device:
            missing_queues_are_refused_clearly,
            unready_queues_are_refused_clearly,
            activate_reset_activate_serves,
            reset_of_an_inactive_device_does_nothing,
            hostile_chains_on_every_queue_do_not_stop_the_device,
        );
    };
    // One `#[test]` per body in [`lifecycle_tests`], of the same name.
    ($device:ty: $($test:ident,)+) => {
        mod lifecycle {
            use super::*;

            $(
                #[test]
                fn $test() {
                    $crate::virtio::test_utils::lifecycle_tests::$test::<$device>();
                }
            )+
        }
    };
}
pub(crate) use virtio_lifecycle_tests;

/// The bodies of [`virtio_lifecycle_tests!`].
pub mod lifecycle_tests {
    use super::*;

    /// Queue size of the lifecycle tests' harnesses.
    const SIZE: u16 = 64;
    /// Where hostile chains point (inside guest memory, apart from probes).
    const HOSTILE: u64 = DATA_START + 0x60_0000;

    fn acked<D: LifecycleTest>(device: &D) -> u64 {
        device.features() | VIRTIO_F_VERSION_1
    }

    /// A good activation after failed ones: the device still serves.
    fn serves_now<D: LifecycleTest>(device: &mut D, fixture: &mut D::Fixture) {
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, device, SIZE);
        assert!(device.is_active());
        D::assert_serves(fixture, &h);
        device.reset();
        assert!(!device.is_active());
    }

    /// Too few or too many queues or kick eventfds.
    pub fn missing_queues_are_refused_clearly<D: LifecycleTest>() {
        let (mut device, mut fixture) = D::create();
        let n = device.queue_max_sizes().len();
        let mem = guest_memory();
        let h = DeviceHarness::new(&mem, n, SIZE);
        let extra = DeviceHarness::new(&mem, n + 1, SIZE);
        let cases: [(&str, ActivateContext, usize); 4] = [
            (
                "one queue missing",
                {
                    let mut ctx = h.context(acked(&device));
                    ctx.queues.pop();
                    ctx.queue_events.pop();
                    ctx
                },
                n - 1,
            ),
            (
                "no queues",
                {
                    let mut ctx = h.context(acked(&device));
                    ctx.queues.clear();
                    ctx.queue_events.clear();
                    ctx
                },
                0,
            ),
            (
                "a kick eventfd missing",
                {
                    let mut ctx = h.context(acked(&device));
                    ctx.queue_events.pop();
                    ctx
                },
                n - 1,
            ),
            ("one queue too many", extra.context(acked(&device)), n + 1),
        ];
        for (what, ctx, got) in cases {
            let e = device.activate(ctx).expect_err(what);
            assert!(
                matches!(e, ActivateError::QueueCount { expected, got: g } if expected == n && g == got),
                "{what}: {e:?}"
            );
            assert_eq!(e.to_string(), format!("expected {n} queues, got {got}"));
            assert!(!device.is_active(), "{what}");
        }
        serves_now(&mut device, &mut fixture);
    }

    /// Each queue in turn not ready: refused unless the device lists it as
    /// optional.
    pub fn unready_queues_are_refused_clearly<D: LifecycleTest>() {
        let (mut device, mut fixture) = D::create();
        let n = device.queue_max_sizes().len();
        for index in 0..n {
            let mem = guest_memory();
            let h = DeviceHarness::new(&mem, n, SIZE);
            let mut ctx = h.context(acked(&device));
            ctx.queues[index].set_ready(false);
            let result = device.activate(ctx);
            if D::OPTIONAL_QUEUES.contains(&index) {
                assert!(result.is_ok(), "optional queue {index}: {result:?}");
                D::assert_serves(&mut fixture, &h);
                device.reset();
            } else {
                let e = result.expect_err("activated with a queue not ready");
                assert!(
                    matches!(e, ActivateError::QueueNotReady(i) if i == index),
                    "{e:?}"
                );
                assert_eq!(e.to_string(), format!("queue {index} is not ready"));
            }
            assert!(!device.is_active());
        }
        serves_now(&mut device, &mut fixture);
    }

    /// Two rounds of activate, serve, reset, each on fresh queues and
    /// memory (as after a guest reboot); then a reset more.
    pub fn activate_reset_activate_serves<D: LifecycleTest>() {
        let (mut device, mut fixture) = D::create();
        serves_now(&mut device, &mut fixture);
        serves_now(&mut device, &mut fixture);
        device.reset();
        assert!(!device.is_active());
    }

    /// Resetting a device that never ran changes nothing.
    pub fn reset_of_an_inactive_device_does_nothing<D: LifecycleTest>() {
        let (mut device, mut fixture) = D::create();
        device.reset();
        device.reset();
        assert!(!device.is_active());
        serves_now(&mut device, &mut fixture);
    }

    /// Posts chains no device can serve on queue `q`: buffers outside guest
    /// memory or straddling its end, zero and 4 GiB lengths (each both
    /// device-readable and device-writable), a descriptor loop, a link
    /// beyond the table, broken indirect tables and a head beyond the
    /// queue.
    pub fn post_hostile_chains(h: &DeviceHarness, q: usize) {
        let end = TEST_MEM_SIZE as u64;
        for flags in [0, VRING_DESC_F_WRITE] {
            h.post(q, &[(end + 0x1000, 64, flags)]);
            h.post(q, &[(end - 8, 64, flags)]);
            h.post(q, &[(HOSTILE, 0, flags)]);
            h.post(q, &[(HOSTILE, u32::MAX, flags)]);
        }
        let w_next = VRING_DESC_F_WRITE | VRING_DESC_F_NEXT;
        let first = h.reserve(q, 2);
        h.add_raw_chain(
            q,
            first,
            &[
                (HOSTILE, 8, w_next, first + 1),
                (HOSTILE + 8, 8, w_next, first),
            ],
        );
        let at = h.reserve(q, 1);
        h.add_raw_chain(q, at, &[(HOSTILE, 8, VRING_DESC_F_NEXT, u16::MAX)]);
        h.post(q, &[(end, 48, VRING_DESC_F_INDIRECT)]);
        h.post(q, &[(HOSTILE, 40, VRING_DESC_F_INDIRECT)]);
        h.publish_head(q, u16::MAX);
    }

    /// Hostile chains on every queue, then good requests.
    pub fn hostile_chains_on_every_queue_do_not_stop_the_device<D: LifecycleTest>() {
        let (mut device, mut fixture) = D::create();
        let mem = guest_memory();
        let h = DeviceHarness::activate(&mem, &mut device, SIZE);
        for q in 0..h.queues.len() {
            post_hostile_chains(&h, q);
        }
        D::assert_serves(&mut fixture, &h);
        D::assert_serves(&mut fixture, &h);
        assert!(device.is_active());
        device.reset();
        assert!(!device.is_active());
    }
}
