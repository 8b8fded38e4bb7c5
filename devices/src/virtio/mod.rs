//! VIRTIO devices and the virtio-mmio transport.
//!
//! The seed's rule holds here: the guest's stock kernel drivers allocate every
//! buffer in guest memory; virtqueues carry only descriptors (metadata), and
//! devices read and write the guest's buffers in place.
//!
//! How a device runs, driven by the guest's writes to the transport's
//! `Status` register ([`lifecycle`] has the full diagram with the failure
//! paths):
//!
//! ```text
//!             driver writes Status |= DRIVER_OK
//!             (transport: FEATURES_OK set, every ready queue valid)
//!   Inactive ───────────────────────────────────────────► Active
//!   backend kept   VirtioDevice::activate → Lifecycle:     worker thread owns
//!      ▲           queues checked, worker built,           queues + backend,
//!      │           thread started (error: NEEDS_RESET)     runs event_loop
//!      │                                                       │
//!      └──────────── driver writes Status = 0 ────────────────┘
//!                    VirtioDevice::reset → Lifecycle: kill event,
//!                    thread joined, backend handed back
//! ```
//!
//! A device implements [`VirtioDevice`] with a [`Lifecycle`] for `activate`
//! and `reset`, and a [`Worker`] that [`event_loop`] runs on its own
//! thread; [`mmio::MmioTransport`] exposes it to the guest and negotiates
//! features. The worker waits on one eventfd per queue (KVM signals it
//! through an ioeventfd when the guest writes `QueueNotify`), on a kill
//! eventfd and on its own sources, and raises interrupts through
//! [`Interrupt`] (an irqfd). `docs/devices.md` has the recipe for adding a
//! device.

pub mod block;
pub mod chain;
pub mod console;
pub mod event_loop;
pub mod lifecycle;
pub mod limited_worker;
pub mod mmio;
pub mod net;
pub mod rate_limiter;
pub mod rng;
pub mod tee;
#[cfg(test)]
pub mod test_utils;
pub mod vsock;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

pub use event_loop::{NoToken, WaitContext, Worker, WorkerThread};
pub use lifecycle::{Activation, Lifecycle, StartError};

/// Guest memory as every device sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// `VIRTIO_F_VERSION_1`: a modern (virtio 1.x) device. Always offered and
/// required: this VMM has no legacy interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_RING_EVENT_IDX`: the driver and device suppress notifications
/// with the used/avail event fields.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Device type ids (virtio spec 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// TEE device.
    pub const TEE: u32 = 46;
}

/// `InterruptStatus` bit: a used buffer was added to a queue.
pub const INTERRUPT_USED_RING: u32 = 1;
/// `InterruptStatus` bit: the configuration space changed.
pub const INTERRUPT_CONFIG_CHANGED: u32 = 2;

/// A device's interrupt line: a status word the transport exposes to the
/// guest, and an irqfd that KVM turns into a guest interrupt.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// Wraps `irqfd` (registered with KVM for the device's GSI).
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// Tells the guest that used buffers are ready.
    pub fn signal_used_queue(&self) {
        self.signal(INTERRUPT_USED_RING);
    }

    /// Tells the guest that `queue` has used buffers, unless its driver
    /// suppressed the notification (`VIRTIO_F_EVENT_IDX` or the no-interrupt
    /// flag); on a used ring that cannot be read, it interrupts anyway (the
    /// driver will notice).
    pub fn notify_used(&self, queue: &mut Queue, mem: &GuestMemoryMmap) {
        if queue.needs_notification(mem).unwrap_or(true) {
            self.signal_used_queue();
        }
    }

    /// Tells the guest that the configuration space changed.
    pub fn signal_config_changed(&self) {
        self.signal(INTERRUPT_CONFIG_CHANGED);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            crate::guest_warn!("cannot raise virtio interrupt: {e}");
        }
    }

    /// The current `InterruptStatus`.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears `bits` (the guest's `InterruptACK`).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The irqfd, for tests that observe raised interrupts.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// What a device gets when the driver sets `DRIVER_OK`.
pub struct ActivateContext {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The device's interrupt.
    pub interrupt: std::sync::Arc<Interrupt>,
    /// The queues the driver set up, in index order (all of
    /// [`VirtioDevice::queue_max_sizes`]; unused ones are not ready).
    pub queues: Vec<Queue>,
    /// One notification eventfd per queue, same order.
    pub queue_events: Vec<EventFd>,
    /// Features the driver accepted.
    pub acked_features: u64,
}

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not set up a queue the device needs.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// Wrong number of queues or events.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues received.
        got: usize,
    },
    /// Starting the worker failed.
    #[error("cannot start the device worker: {0}")]
    Worker(io::Error),
    /// An earlier worker panicked and took the device's backend with it.
    #[error("the device's worker was lost earlier (it panicked); restart the VMM")]
    WorkerLost,
    /// The previous worker has not stopped yet (stuck in a host call).
    #[error("the device's previous worker has not stopped yet; reset the device again later")]
    WorkerBusy,
}

/// A VIRTIO device, independent of its transport.
pub trait VirtioDevice: Send {
    /// Virtio device type id ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered (the transport adds [`VIRTIO_F_VERSION_1`]);
    /// none by default.
    fn features(&self) -> u64 {
        0
    }
    /// Reads the device configuration space at `offset`; bytes beyond the
    /// configuration read as zero. By default there is no configuration
    /// space: everything reads as zero.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    /// Writes the device configuration space; ignored by default.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(
            "ignored config write of {} bytes at {offset:#x}",
            data.len()
        );
    }
    /// Starts serving the queues (the driver set `DRIVER_OK`). Devices
    /// forward this to their [`Lifecycle`].
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Stops serving (driver reset); the device must be activatable again.
    /// Devices forward this to their [`Lifecycle`].
    fn reset(&mut self);
}

/// Copies `config` bytes at `offset` into `data`, zero-filling the rest.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(offset..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_status_and_ack() {
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        irq.signal_used_queue();
        irq.signal_config_changed();
        assert_eq!(irq.status(), 3);
        assert_eq!(irq.irqfd().read().unwrap(), 2);
        irq.ack(INTERRUPT_USED_RING);
        assert_eq!(irq.status(), INTERRUPT_CONFIG_CHANGED);
    }

    #[test]
    fn config_reads_are_bounded() {
        let mut data = [0xffu8; 4];
        read_config_bytes(&[1, 2, 3], 1, &mut data);
        assert_eq!(data, [2, 3, 0, 0]);
        read_config_bytes(&[1, 2, 3], 100, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&[1, 2, 3], u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
