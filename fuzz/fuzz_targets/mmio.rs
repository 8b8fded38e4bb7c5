//! The virtio-mmio transport: arbitrary register reads and writes (any
//! offset, any width) from a hostile driver, in front of a fake device with
//! oracles or one of the real devices (rng, console, block, net, vsock, tee).
//!
//! Besides raw accesses the input can use shortcuts a real driver would
//! take (feature negotiation, a well-formed queue layout, `DRIVER_OK`), so
//! activation, reset and reactivation are reached often. Oracles (fake
//! device): a device is only activated with `VIRTIO_F_VERSION_1` acked,
//! with features it offered, with one queue per declared queue, every
//! ready queue valid in guest memory, and never twice without a reset in
//! between. Nothing may panic or hang.

#![no_main]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arbitrary::Arbitrary;
use devices::bus::BusDevice;
use devices::virtio::block::Block;
use devices::virtio::console::{Console, ConsoleBackend};
use devices::virtio::mmio::MmioTransport;
use devices::virtio::net::{IoVecs, Net, NetBackend};
use devices::virtio::rng::Rng;
use devices::virtio::tee::{Limits, Tee};
use devices::virtio::vsock::Vsock;
use devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, VIRTIO_F_VERSION_1,
};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;
use vmstack_fuzz::tee::FuzzTeeService;
use vmstack_fuzz::{eventfd, guest_memory, scratch_dir, write_data, QUEUE_STRIDE};

/// A device that checks what the transport hands it.
struct FakeDevice {
    sizes: Vec<u16>,
    features: u64,
    config: Vec<u8>,
    active: Arc<AtomicBool>,
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        devices::virtio::device_type::RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Ok(offset) = usize::try_from(offset) else {
            return;
        };
        if let Some(dst) = self.config.get_mut(offset..) {
            let n = dst.len().min(data.len());
            dst[..n].copy_from_slice(&data[..n]);
        }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        assert!(
            !self.active.swap(true, Ordering::SeqCst),
            "activated twice without reset"
        );
        let acked = ctx.acked_features;
        assert!(
            acked & VIRTIO_F_VERSION_1 != 0,
            "activated without VERSION_1: {acked:#x}"
        );
        assert_eq!(
            acked & !(self.features | VIRTIO_F_VERSION_1),
            0,
            "unoffered features acked"
        );
        assert_eq!(ctx.queues.len(), self.sizes.len());
        assert_eq!(ctx.queue_events.len(), self.sizes.len());
        for (q, &max) in ctx.queues.iter().zip(&self.sizes) {
            assert_eq!(q.max_size(), max);
            if q.ready() {
                assert!(q.is_valid(&ctx.mem), "a ready queue is invalid");
            }
        }
        Ok(())
    }
    fn reset(&mut self) {
        assert!(
            self.active.swap(false, Ordering::SeqCst),
            "reset while inactive"
        );
    }
}

/// A net backend with nothing to receive that swallows every frame.
struct NullTap(EventFd);

impl AsRawFd for NullTap {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl NetBackend for NullTap {
    fn recv(&mut self, _bufs: &IoVecs) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn send(&mut self, bufs: &IoVecs) -> io::Result<usize> {
        Ok(bufs.len())
    }
    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum DeviceKind {
    Fake {
        shifts: Vec<u8>,
        features: u64,
        config: Vec<u8>,
    },
    Rng,
    Console,
    Block {
        read_only: bool,
    },
    Net,
    Vsock {
        cid: u64,
    },
    Tee,
}

/// Register offsets of the v2 layout, so most accesses hit one.
const REGS: [u64; 24] = [
    0x000, 0x004, 0x008, 0x00c, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050,
    0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0fc, 0x100,
];

#[derive(Arbitrary, Debug)]
enum Offset {
    Reg(u8),
    Config(u16),
    Raw(u64),
}

impl Offset {
    fn resolve(&self) -> u64 {
        match self {
            Offset::Reg(i) => REGS[usize::from(*i) % REGS.len()],
            Offset::Config(n) => 0x100 + u64::from(*n),
            Offset::Raw(o) => *o,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        at: Offset,
        len: u8,
    },
    Write {
        at: Offset,
        value: u64,
        len: u8,
    },
    /// ACKNOWLEDGE, DRIVER, the driver features, FEATURES_OK; `honest`
    /// keeps only offered features (read from the device) plus VERSION_1.
    Negotiate {
        features: u64,
        honest: bool,
    },
    /// A well-formed layout for queue `index` at its fuzz-memory slot.
    SetupQueue {
        index: u8,
        shift: u8,
        ready: bool,
    },
    /// Status |= DRIVER_OK.
    DriverOk,
    /// Status = 0.
    Reset,
}

#[derive(Arbitrary, Debug)]
struct Input {
    device: DeviceKind,
    data: Vec<u8>,
    ops: Vec<Op>,
}

fn write32(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn read32(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn device(kind: &DeviceKind) -> Option<Box<dyn VirtioDevice>> {
    Some(match kind {
        DeviceKind::Fake {
            shifts,
            features,
            config,
        } => {
            let sizes: Vec<u16> = shifts.iter().take(4).map(|s| 256 >> (s % 9)).collect();
            Box::new(FakeDevice {
                sizes,
                features: *features & !VIRTIO_F_VERSION_1,
                config: config.clone(),
                active: Arc::default(),
            })
        }
        DeviceKind::Rng => Box::new(Rng::new()),
        DeviceKind::Console => Box::new(Console::new(ConsoleBackend::output(Box::new(io::sink())))),
        DeviceKind::Block { read_only } => {
            let path = scratch_dir().join("mmio-disk.img");
            std::fs::write(&path, [0u8; 4096]).expect("fuzz image");
            Box::new(Block::open(&path, *read_only, None).expect("fuzz image opens"))
        }
        DeviceKind::Net => Box::new(Net::new(Box::new(NullTap(eventfd())), [2, 0, 0, 0, 0, 1])),
        DeviceKind::Tee => Box::new(Tee::new(
            Box::new(FuzzTeeService::new(&Limits::DEFAULT, None)),
            Limits::DEFAULT,
        )),
        DeviceKind::Vsock { cid } => {
            let path = scratch_dir().join("mmio-vsock.sock");
            Box::new(Vsock::new(*cid, &path).ok()?)
        }
    })
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    write_data(&mem, &input.data);
    let Some(dev) = device(&input.device) else {
        return;
    };
    let mut t = MmioTransport::new(dev, mem.clone(), eventfd()).expect("transport");
    for op in input.ops.iter().take(64) {
        match op {
            Op::Read { at, len } => {
                let mut buf = vec![0u8; usize::from(*len % 17)];
                t.read(at.resolve(), &mut buf);
            }
            Op::Write { at, value, len } => {
                let bytes = value.to_le_bytes();
                let n = usize::from(*len % 9);
                t.write(at.resolve(), &bytes[..n]);
            }
            Op::Negotiate { features, honest } => {
                let mut features = *features;
                if *honest {
                    write32(&mut t, 0x014, 0);
                    let lo = read32(&mut t, 0x010);
                    write32(&mut t, 0x014, 1);
                    let hi = read32(&mut t, 0x010);
                    features =
                        (features & (u64::from(hi) << 32 | u64::from(lo))) | VIRTIO_F_VERSION_1;
                }
                let features = &features;
                write32(&mut t, 0x070, 1);
                write32(&mut t, 0x070, 3);
                write32(&mut t, 0x024, 0);
                write32(&mut t, 0x020, *features as u32);
                write32(&mut t, 0x024, 1);
                write32(&mut t, 0x020, (*features >> 32) as u32);
                write32(&mut t, 0x070, 0xb);
            }
            Op::SetupQueue {
                index,
                shift,
                ready,
            } => {
                let index = u32::from(*index % 4);
                write32(&mut t, 0x030, index);
                let max = read32(&mut t, 0x034);
                let size = (max >> (shift % 9)).max(1);
                let base = u64::from(index) * QUEUE_STRIDE;
                write32(&mut t, 0x038, size);
                write32(&mut t, 0x080, base as u32);
                write32(&mut t, 0x084, 0);
                write32(&mut t, 0x090, (base + 0x1000) as u32);
                write32(&mut t, 0x094, 0);
                write32(&mut t, 0x0a0, (base + 0x2000) as u32);
                write32(&mut t, 0x0a4, 0);
                write32(&mut t, 0x044, u32::from(*ready));
            }
            Op::DriverOk => {
                let status = read32(&mut t, 0x070);
                write32(&mut t, 0x070, status | 4);
            }
            Op::Reset => write32(&mut t, 0x070, 0),
        }
    }
    // Dropping the transport stops any worker thread.
});
