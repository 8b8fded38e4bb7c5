//! The virtio-mmio transport (virtio 1.x "modern" register layout, version 2).
//!
//! One 4 KiB MMIO window per device. Queue notifications normally never reach
//! this code: the VMM registers an ioeventfd for `QueueNotify` with the queue
//! index as data match, so KVM signals the queue's eventfd directly. A write
//! that does arrive here (no ioeventfd, e.g. in tests) signals the same
//! eventfd.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateContext, GuestMemoryMmap, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;

/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of `QueueNotify`, for ioeventfd registration.
pub const NOTIFY_REG_OFFSET: u64 = 0x50;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
/// Vendor id reported to the guest ("VMST").
const VENDOR_ID: u32 = 0x5453_4d56;

mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio spec 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// A virtio device behind the virtio-mmio register interface.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue_events: Vec<EventFd>,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    acked_features: u64,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    /// Wraps `device`; `irqfd` raises its interrupt. Creates one
    /// notification eventfd per queue (see [`Self::queue_events`]).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irqfd: EventFd,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut queue_events = Vec::new();
        for &max in device.queue_max_sizes() {
            let queue = Queue::new(max).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e:?}"))
            })?;
            queues.push(queue);
            queue_events.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irqfd)),
            queue_events,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            acked_features: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        })
    }

    /// Per-queue notification eventfds, to register as ioeventfds.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The device's virtio type.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// Queue registers may only change before `DRIVER_OK` (and after
    /// `FEATURES_OK`, but drivers legitimately probe earlier).
    fn queue_config_allowed(&self) -> bool {
        self.status & status::DRIVER_OK == 0
    }

    fn read_u32(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_select as usize);
        match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_select {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                tracing::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_u32(&mut self, offset: u64, value: u32) {
        let allowed = self.queue_config_allowed();
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_select = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_select = value,
            reg::DRIVER_FEATURES => {
                if self.status & status::FEATURES_OK != 0 {
                    crate::guest_warn!("virtio-mmio: driver features written after FEATURES_OK");
                    return;
                }
                let shift = match self.driver_features_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xffff_ffffu64 << shift;
                self.acked_features = (self.acked_features & !mask) | (u64::from(value) << shift);
            }
            reg::QUEUE_SEL => self.queue_select = value,
            reg::QUEUE_NUM if allowed => {
                if let Some(q) = self.selected_queue() {
                    // Invalid sizes (0, > max, not a power of two) leave the
                    // queue invalid, so activation refuses it.
                    q.set_size(value as u16);
                }
            }
            reg::QUEUE_READY if allowed => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::QUEUE_NOTIFY => {
                if let Some(evt) = self.queue_events.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            reg::QUEUE_DESC_LOW if allowed => {
                self.with_queue(|q| q.set_desc_table_address(Some(value), None))
            }
            reg::QUEUE_DESC_HIGH if allowed => {
                self.with_queue(|q| q.set_desc_table_address(None, Some(value)))
            }
            reg::QUEUE_DRIVER_LOW if allowed => {
                self.with_queue(|q| q.set_avail_ring_address(Some(value), None))
            }
            reg::QUEUE_DRIVER_HIGH if allowed => {
                self.with_queue(|q| q.set_avail_ring_address(None, Some(value)))
            }
            reg::QUEUE_DEVICE_LOW if allowed => {
                self.with_queue(|q| q.set_used_ring_address(Some(value), None))
            }
            reg::QUEUE_DEVICE_HIGH if allowed => {
                self.with_queue(|q| q.set_used_ring_address(None, Some(value)))
            }
            _ => tracing::debug!("virtio-mmio: ignored write {value:#x} to {offset:#x}"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let new_bits = value & !self.status;
        if new_bits & status::FEATURES_OK != 0 {
            let offered = self.offered_features();
            let acked = self.acked_features;
            if acked & !offered != 0 || acked & VIRTIO_F_VERSION_1 == 0 {
                crate::guest_warn!(
                    "virtio-mmio: driver acked features {acked:#x} not within offered {offered:#x} or without VERSION_1; FEATURES_OK refused"
                );
                self.status = value & !status::FEATURES_OK;
                return;
            }
        }
        self.status = value;
        if new_bits & status::DRIVER_OK != 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let Some(ctx) = self.activate_context() else {
            self.fail();
            return;
        };
        match self.device.activate(ctx) {
            Ok(()) => self.activated = true,
            Err(e) => {
                crate::guest_warn!("virtio-mmio: activating device failed: {e}");
                self.fail();
            }
        }
    }

    /// What the device is activated with: its own copies of the queues and
    /// their eventfds (the transport keeps the layout for a later reset and
    /// reactivation). `None`, logged, when the driver's set-up is unusable or
    /// the eventfds cannot be copied.
    fn activate_context(&self) -> Option<ActivateContext> {
        if self.status & status::FEATURES_OK == 0 {
            crate::guest_warn!("virtio-mmio: DRIVER_OK without FEATURES_OK");
            return None;
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                crate::guest_warn!("virtio-mmio: queue {i} layout is invalid (size or addresses)");
                return None;
            }
        }
        let queue_events = self
            .queue_events
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .inspect_err(|e| crate::guest_error!("virtio-mmio: cannot clone queue eventfds: {e}"))
            .ok()?;
        let queues = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect::<Result<Vec<_>, _>>()
            .inspect_err(|e| crate::guest_warn!("virtio-mmio: invalid queue state: {e:?}"))
            .ok()?;
        Some(ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            queue_events,
            acked_features: self.acked_features,
        })
    }

    /// Marks the device as needing a reset and tells the driver.
    fn fail(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt.signal_config_changed();
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
            self.activated = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.acked_features = 0;
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.interrupt.ack(u32::MAX);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            tracing::debug!(
                "virtio-mmio: {}-byte read at {offset:#x} ignored",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_u32(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::debug!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            return;
        }
        self.write_u32(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{guest_memory, RecordingDevice};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    fn read(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    fn transport() -> (MmioTransport, RecordingDevice) {
        let device = RecordingDevice::new(&[16, 16]);
        let t = MmioTransport::new(
            Box::new(device.clone()),
            guest_memory(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        )
        .unwrap();
        (t, device)
    }

    /// Drives the driver side of initialization up to FEATURES_OK.
    fn negotiate(t: &mut MmioTransport, features: u64) {
        write(t, reg::STATUS, status::ACKNOWLEDGE);
        write(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write(t, reg::DRIVER_FEATURES_SEL, 0);
        write(t, reg::DRIVER_FEATURES, features as u32);
        write(t, reg::DRIVER_FEATURES_SEL, 1);
        write(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
        write(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, q: &MockSplitQueue<GuestMemoryMmap>) {
        write(t, reg::QUEUE_SEL, index);
        write(t, reg::QUEUE_NUM, 16);
        write(t, reg::QUEUE_DESC_LOW, q.desc_table_addr().0 as u32);
        write(t, reg::QUEUE_DESC_HIGH, 0);
        write(t, reg::QUEUE_DRIVER_LOW, q.avail_addr().0 as u32);
        write(t, reg::QUEUE_DRIVER_HIGH, 0);
        write(t, reg::QUEUE_DEVICE_LOW, q.used_addr().0 as u32);
        write(t, reg::QUEUE_DEVICE_HIGH, 0);
        write(t, reg::QUEUE_READY, 1);
    }

    #[test]
    fn identifies_as_modern_virtio_mmio() {
        let (mut t, _) = transport();
        assert_eq!(read(&mut t, reg::MAGIC), MAGIC_VALUE);
        assert_eq!(read(&mut t, reg::VERSION), 2);
        assert_eq!(read(&mut t, reg::DEVICE_ID), 4);
        write(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&mut t, reg::DEVICE_FEATURES), 1, "VERSION_1 offered");
        write(&mut t, reg::QUEUE_SEL, 1);
        assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 16);
        write(&mut t, reg::QUEUE_SEL, 7);
        assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 0);
    }

    #[test]
    fn full_init_activates_and_reset_deactivates() {
        let (mut t, device) = transport();
        let mem = guest_memory();
        let q0 = MockSplitQueue::create(&mem, GuestAddress(0x10000), 16);
        let q1 = MockSplitQueue::create(&mem, GuestAddress(0x20000), 16);
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        assert_ne!(read(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        setup_queue(&mut t, 0, &q0);
        setup_queue(&mut t, 1, &q1);
        write(&mut t, reg::STATUS, 0xf);
        assert_eq!(device.activations(), 1);
        assert_eq!(read(&mut t, reg::STATUS), 0xf);
        // Queue registers are frozen while running.
        write(&mut t, reg::QUEUE_SEL, 0);
        write(&mut t, reg::QUEUE_READY, 0);
        assert_eq!(read(&mut t, reg::QUEUE_READY), 1);
        write(&mut t, reg::STATUS, 0);
        assert_eq!(device.resets(), 1);
        assert_eq!(read(&mut t, reg::STATUS), 0);
        assert_eq!(read(&mut t, reg::QUEUE_READY), 0);
    }

    #[test]
    fn features_outside_the_offer_or_without_version_1_are_refused() {
        let (mut t, _) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1 | (1 << 40));
        assert_eq!(read(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        write(&mut t, reg::STATUS, 0);
        negotiate(&mut t, 0);
        assert_eq!(read(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn invalid_queue_layout_needs_reset_instead_of_activation() {
        let (mut t, device) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        write(&mut t, reg::QUEUE_SEL, 0);
        write(&mut t, reg::QUEUE_NUM, 16);
        // Descriptor table far outside guest memory.
        write(&mut t, reg::QUEUE_DESC_LOW, 0);
        write(&mut t, reg::QUEUE_DESC_HIGH, 0x10);
        write(&mut t, reg::QUEUE_READY, 1);
        write(&mut t, reg::STATUS, 0xf);
        assert_eq!(device.activations(), 0);
        assert_ne!(read(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(read(&mut t, reg::INTERRUPT_STATUS) & 2, 0);
    }

    #[test]
    fn driver_ok_without_features_ok_fails() {
        let (mut t, device) = transport();
        write(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(device.activations(), 0);
        assert_ne!(read(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn odd_sized_and_unaligned_accesses_are_ignored() {
        let (mut t, _) = transport();
        let mut byte = [0xffu8; 1];
        t.read(reg::MAGIC, &mut byte);
        assert_eq!(byte, [0]);
        t.write(reg::STATUS, &[1]);
        assert_eq!(read(&mut t, reg::STATUS), 0);
        t.write(reg::STATUS + 1, &[1, 0, 0, 0]);
        assert_eq!(read(&mut t, reg::STATUS), 0);
        write(&mut t, reg::QUEUE_NOTIFY, 99);
        write(&mut t, 0x0ff0, 1);
    }

    #[test]
    fn notify_register_signals_the_queue_event() {
        let (mut t, _) = transport();
        write(&mut t, reg::QUEUE_NOTIFY, 1);
        assert_eq!(t.queue_events()[1].read().unwrap(), 1);
    }

    #[test]
    fn interrupt_ack_clears_status() {
        let (mut t, _) = transport();
        t.interrupt.signal_used_queue();
        assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 1);
        write(&mut t, reg::INTERRUPT_ACK, 1);
        assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 0);
    }
}
