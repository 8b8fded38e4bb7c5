//! Assembles a VM from a [`VmConfig`], in one readable recipe:
//! KVM → memory → platform (kernel/initrd, the architecture's own devices)
//! → virtio devices → firmware tables and vCPUs.
//!
//! The platform steps are per architecture, each an implementation of the
//! [`Platform`] trait (`builder/x86_64.rs`: port I/O legacy devices, ACPI,
//! zero page; `builder/aarch64.rs`: vGIC, UART on MMIO, device tree); both
//! get what they need from one [`BuildContext`]. Everything else here is
//! shared.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::legacy::{AcpiPmDevice, PowerButton, SerialDevice};
use devices::virtio::block::{Block, DiskError};
use devices::virtio::console::{Console, ConsoleBackend};
use devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE, NOTIFY_REG_OFFSET};
use devices::virtio::net::{Net, NetLimiters, TapError};
use devices::virtio::rate_limiter::{RateLimit, RateLimiter};
use devices::virtio::rng::Rng;
use devices::virtio::tee::{Limits as TeeLimits, Tee, TrustyBackend, TrustyError};
use devices::virtio::vsock::{Vsock, VsockError};
use devices::virtio::VirtioDevice;
use devices::{Bus, BusError, PowerEventSink};
use kvm_ioctls::IoEventAddress;
use vmm_sys_util::eventfd::EventFd;

use kvm_ioctls::Kvm;

use crate::arch::file_map::BootFiles;
use crate::arch::{self, current as arch_impl};
use crate::config::{ConsoleConfig, SerialOutput, VmConfig};
use crate::event::{PowerGate, VmEvent};
use crate::resources::HostResources;
use crate::vstate::kvm::KvmError;
use crate::vstate::vcpu::{Vcpu, VcpuCrash, VcpuError};
use crate::vstate::vm::{Vm, VmError};

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// The platform of the architecture this VMM is built for (the one place
/// that picks an architecture's implementation).
#[cfg(target_arch = "aarch64")]
type Native = self::aarch64::Arm64Platform;
#[cfg(target_arch = "x86_64")]
type Native = self::x86_64::X86Platform;

/// Kernel parameters every guest gets, before the user's `--params`.
pub const DEFAULT_CMDLINE: &str = Native::DEFAULT_CMDLINE;

/// Called once if a vCPU fails.
type OnCrash = Arc<dyn Fn(VcpuCrash) + Send + Sync>;

/// What every step of building one boot of the VM reads.
struct BuildContext<'a> {
    /// The VM's description.
    config: &'a VmConfig,
    /// The host resources, opened once (kernel, initrd, serial file, ...).
    host: &'a HostResources,
    /// `/dev/kvm` (x86_64 reads the supported CPUID from it).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    kvm: &'a Kvm,
    /// The VMM's start time (for the boot timer).
    start: Instant,
    /// Where devices and vCPUs deliver the guest's power requests.
    power: PowerEventSink,
    /// What a failing vCPU calls.
    on_crash: OnCrash,
    /// Which boot files are mapped instead of copied.
    boot_files: BootFiles,
}

/// One architecture's half of the recipe: what comes before the virtio
/// devices (kernel, initrd, the architecture's own devices) and what comes
/// after them (firmware tables that announce every device, the vCPUs).
trait Platform: Sized {
    /// Kernel parameters every guest of this architecture gets, before the
    /// user's `--params`.
    const DEFAULT_CMDLINE: &'static str;

    /// Loads kernel and initrd and sets up the platform's own devices,
    /// putting MMIO ones on `mmio`.
    fn new(ctx: &BuildContext<'_>, vm: &Vm, mmio: &mut Bus) -> Result<Self, BuildError>;

    /// Writes the firmware tables announcing the `virtio` devices and
    /// creates the vCPUs, ready to run.
    fn finish(self, ctx: &BuildContext<'_>, machine: Machine) -> Result<BuiltVm, BuildError>;
}

/// The VM as the shared steps hand it to [`Platform::finish`].
struct Machine {
    /// The VM and its guest memory.
    vm: Vm,
    /// The MMIO bus, with every device on it.
    mmio: Bus,
    /// Where the virtio devices are, for the firmware tables.
    virtio: Vec<VirtioSlot>,
}

/// Errors assembling the VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// KVM is missing or unusable.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// Creating the VM or its memory failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Opening a boot file failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Loading the kernel or initrd or writing the zero page / device tree
    /// failed.
    #[error(transparent)]
    Boot(#[from] arch_impl::boot::BootError),
    /// Building ACPI tables failed.
    #[cfg(target_arch = "x86_64")]
    #[error(transparent)]
    Acpi(#[from] arch_impl::acpi::AcpiError),
    /// Creating the serial output failed.
    #[error("cannot create serial output {path}: {source}")]
    SerialOutput {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Creating an eventfd or registering an irqfd failed.
    #[error("cannot wire the {what} interrupt: {source}")]
    Irq {
        /// Which device.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A disk image cannot be used (missing, locked, badly sized, ...).
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A `--net` tap cannot be opened (missing, no permission, busy, ...).
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The `--vsock` socket cannot be bound (in use, not a socket, ...).
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// A `--vsock ...,tcp=PORT:GUEST_PORT` port is taken.
    #[error("127.0.0.1:{0} is in use (pick another PORT in --vsock ...,tcp=PORT:GUEST_PORT)")]
    VsockTcpInUse(u16),
    /// The `sock_diag` socket that tells who connects to a forwarded TCP
    /// port cannot be opened.
    #[error(
        "cannot open the sock_diag socket that checks who connects to --vsock tcp= ports: {0}"
    )]
    VsockTcpPeers(std::io::Error),
    /// The forwarded TCP ports' sockets cannot be duplicated for a boot.
    #[error("cannot duplicate the sockets of the --vsock tcp= ports: {0}")]
    VsockTcpDup(std::io::Error),
    /// A `--vsock ...,tcp=PORT:GUEST_PORT` port cannot be listened on.
    #[error("cannot listen on 127.0.0.1:{port} (--vsock ...,tcp={port}:GUEST_PORT): {source}")]
    VsockTcp {
        /// The port.
        port: u16,
        /// The error.
        source: std::io::Error,
    },
    /// The `--tee` service cannot be reached or refused this VMM.
    #[error(transparent)]
    Tee(#[from] TrustyError),
    /// The `--console` host side cannot be set up (file, socket, stdin).
    #[error("cannot set up the console on {what}: {source}")]
    Console {
        /// The file or socket path, or "stdin".
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A rate limiter's timer fd cannot be created.
    #[error("cannot create a rate limiter's timer: {0}")]
    RateLimiter(std::io::Error),
    /// An option whose device is not implemented yet.
    #[error("{0} is not supported by this build yet")]
    Unsupported(&'static str),
    /// More virtio devices than free interrupt lines.
    #[error("too many virtio devices: at most {} fit", arch::VIRTIO_MMIO_GSIS.len())]
    TooManyDevices,
    /// Wiring a virtio device's interrupt or notifications failed.
    #[error("cannot wire virtio device (type {kind}): {source}")]
    Virtio {
        /// Virtio device type.
        kind: u32,
        /// The error.
        source: std::io::Error,
    },
    /// Two devices were given overlapping ranges (a VMM bug).
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
    /// Reading supported CPUID failed.
    #[cfg(target_arch = "x86_64")]
    #[error("cannot read supported CPUID: {0}")]
    Cpuid(kvm_ioctls::Error),
    /// Creating a vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Creating the in-kernel GICv3 failed (aarch64).
    #[cfg(target_arch = "aarch64")]
    #[error("cannot set up the GICv3: {0}")]
    Gic(arch_impl::VcpuSetupError),
    /// Configuring a vCPU failed.
    #[error("cannot configure vCPU {id}: {source}")]
    VcpuSetup {
        /// vCPU index.
        id: u8,
        /// The error.
        source: arch_impl::VcpuSetupError,
    },
}

/// A fully built VM, ready to run.
pub struct BuiltVm {
    /// The VM; it owns guest memory and must outlive the vCPUs.
    pub vm: Vm,
    /// Configured vCPUs, not yet running.
    pub vcpus: Vec<Vcpu>,
    /// The serial console, for feeding host input.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The ACPI power registers, to report wake-up after a suspend (x86;
    /// an arm64 guest suspends through PSCI, woken in its vCPU).
    pub acpi_pm: Option<Arc<Mutex<AcpiPmDevice>>>,
    /// The ACPI power button (x86 only so far).
    pub power_button: Option<PowerButton>,
    /// Whether host stdin should be fed to the serial console.
    pub serial_reads_stdin: bool,
    /// The kernel's fill behind the guest, if it is filled that way;
    /// dropping it waits for the fill to end
    /// ([`crate::arch::kernel_fill`]).
    pub kernel_fill: Option<crate::arch::kernel_fill::KernelFill>,
}

/// A non-blocking eventfd registered as interrupt line `gsi` of `vm`
/// (`what` names the device in errors).
fn irq_eventfd(vm: &Vm, gsi: u32, what: &'static str) -> Result<EventFd, BuildError> {
    let irq_err = |source| BuildError::Irq { what, source };
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(irq_err)?;
    vm.fd()
        .register_irqfd(&irq, gsi)
        .map_err(|e| irq_err(std::io::Error::from_raw_os_error(e.errno())))?;
    Ok(irq)
}

/// `KVM_CREATE_VCPU` for vCPU `id` (both architectures create them alike).
fn create_vcpu_fd(vm: &Vm, id: u8) -> Result<kvm_ioctls::VcpuFd, VcpuError> {
    vm.fd()
        .create_vcpu(u64::from(id))
        .map_err(|source| VcpuError::Setup {
            id,
            what: "KVM_CREATE_VCPU",
            source,
        })
}

/// A device's rate limiter for `limit` (with its timer fd).
fn rate_limiter(limit: RateLimit) -> Result<RateLimiter, BuildError> {
    RateLimiter::new(limit).map_err(BuildError::RateLimiter)
}

/// The MAC address of the `index`-th `--net` without `mac=`: locally
/// administered, unicast, 52:54:00:12:34:56 for the first card.
fn default_mac(index: usize) -> [u8; 6] {
    [
        0x52,
        0x54,
        0x00,
        0x12,
        0x34,
        0x56_u8.wrapping_add(index as u8),
    ]
}

/// The console's stdin/stdout backend (`--console type=stdout`): input
/// from a duplicate of stdin, output to stdout, sized like the terminal.
fn stdio_console() -> Result<ConsoleBackend, BuildError> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| BuildError::Console {
            what: "stdin".into(),
            source,
        })?;
    Ok(ConsoleBackend::stream(
        File::from(stdin),
        Box::new(std::io::stdout()),
    ))
}

/// The size of the terminal on `fd`, if it is one.
fn terminal_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`, which outlives the
    // call; `fd` stays open for the duration of the borrow.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// One virtio-mmio device's window and interrupt line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VirtioSlot {
    base: u64,
    size: u64,
    gsi: u32,
}

/// Hands out virtio-mmio windows and GSIs, and remembers them for the
/// firmware tables (DSDT on x86_64, device tree on aarch64).
#[derive(Default)]
struct VirtioSlots {
    slots: Vec<VirtioSlot>,
}

impl VirtioSlots {
    fn next(&mut self) -> Result<(u64, u32), BuildError> {
        let index = self.slots.len() as u32;
        let gsi = arch::VIRTIO_MMIO_GSIS.start + index;
        if !arch::VIRTIO_MMIO_GSIS.contains(&gsi) {
            return Err(BuildError::TooManyDevices);
        }
        let base = arch::VIRTIO_MMIO_START + u64::from(index) * MMIO_WINDOW_SIZE;
        self.slots.push(VirtioSlot {
            base,
            size: MMIO_WINDOW_SIZE,
            gsi,
        });
        Ok((base, gsi))
    }
}

/// Puts `device` behind a virtio-mmio transport: irqfd for its GSI, one
/// ioeventfd per queue on `QueueNotify`, and its window on the MMIO bus.
fn attach_virtio(
    vm: &Vm,
    mmio: &mut Bus,
    slots: &mut VirtioSlots,
    device: Box<dyn VirtioDevice>,
) -> Result<(), BuildError> {
    let kind = device.device_type();
    let (base, gsi) = slots.next()?;
    let wire_err = |source| BuildError::Virtio { kind, source };
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(wire_err)?;
    vm.fd()
        .register_irqfd(&irqfd, gsi)
        .map_err(|e| wire_err(std::io::Error::from_raw_os_error(e.errno())))?;
    let transport = MmioTransport::new(device, vm.memory().clone(), irqfd).map_err(wire_err)?;
    for (index, event) in transport.queue_events().iter().enumerate() {
        vm.fd()
            .register_ioevent(
                event,
                &IoEventAddress::Mmio(base + NOTIFY_REG_OFFSET),
                index as u32,
            )
            .map_err(|e| wire_err(std::io::Error::from_raw_os_error(e.errno())))?;
    }
    tracing::debug!("virtio device type {kind} at {base:#x}, GSI {gsi}");
    mmio.insert(Arc::new(Mutex::new(transport)), base, MMIO_WINDOW_SIZE)?;
    Ok(())
}

/// Builds the VM described by `config`. Guest power requests and vCPU
/// failures are delivered to `events`, tagged with `boot` (the how-many-th
/// boot of this VM in the process); `start` is the VMM's start time.
pub fn build_vm(
    config: &VmConfig,
    host: &HostResources,
    start: Instant,
    events: Sender<VmEvent>,
    boot: u64,
) -> Result<BuiltVm, BuildError> {
    // KVM and guest memory.
    let kvm = host.kvm();
    let vm = Vm::new(
        kvm,
        &arch_impl::boot::guest_memory_ranges(config.mem_mib << 20),
    )?;
    let power_events = events.clone();
    let crash_events = events;
    let gate = Arc::new(PowerGate::default());
    let ctx = BuildContext {
        config,
        host,
        kvm,
        start,
        power: PowerEventSink::new(move |event| {
            // One event per kind in the channel at a time, however fast
            // the guest repeats its power step.
            if gate.admit(event) {
                // The receiver only goes away when the VMM is already exiting.
                let _ = power_events.send(VmEvent::Power {
                    boot,
                    event,
                    gate: gate.clone(),
                });
            }
        }),
        on_crash: Arc::new(move |crash| {
            let _ = crash_events.send(VmEvent::Vcpu { boot, crash });
        }),
        boot_files: BootFiles::from_env(),
    };

    // Kernel, initrd and the platform's own devices.
    let mut mmio = Bus::new();
    let platform = Native::new(&ctx, &vm, &mut mmio)?;

    // Virtio devices on the MMIO bus, announced through ACPI / the device tree.
    let mut virtio_slots = VirtioSlots::default();
    let devs = &config.devices;
    if let Some(rng) = &devs.rng {
        let device = Rng::new().with_rate_limiter(rate_limiter(rng.rate_limit)?);
        attach_virtio(&vm, &mut mmio, &mut virtio_slots, Box::new(device))?;
    }
    // Disks in configuration order: the first is /dev/vda.
    for (index, disk) in devs.disks.iter().enumerate() {
        let Some(image) = host.disk(index) else {
            return Err(BuildError::Unsupported("a disk that was not opened"));
        };
        let block = Block::shared(image).with_rate_limiter(rate_limiter(disk.rate_limit)?);
        attach_virtio(&vm, &mut mmio, &mut virtio_slots, Box::new(block))?;
    }
    // vsock: the host side listens on the kept unix socket and the kept
    // forwarded TCP ports.
    if let (Some(vsock), Some((path, listener))) = (&devs.vsock, host.vsock()?) {
        let mut device = Vsock::with_listener(vsock.cid, path, listener);
        if let Some(tcp) = host.vsock_tcp_forwards()? {
            device = device.with_tcp_forwards(tcp);
        }
        attach_virtio(&vm, &mut mmio, &mut virtio_slots, Box::new(device))?;
    }
    // The TEE device: connected (and greeted) now, so a missing trustyd is
    // a start-up error.
    if let Some(tee) = &devs.tee {
        let backend = TrustyBackend::connect(&tee.socket)?;
        let limits = TeeLimits {
            max_memref_size: TeeLimits::DEFAULT.max_memref_size.min(backend.max_memref()),
            ..TeeLimits::DEFAULT
        };
        let device = Tee::new(Box::new(backend), limits);
        attach_virtio(&vm, &mut mmio, &mut virtio_slots, Box::new(device))?;
    }
    // Network cards in configuration order: the first is eth0.
    for (index, net) in devs.nets.iter().enumerate() {
        let tap = host.tap(index, &net.tap)?;
        let mac = net.mac.unwrap_or_else(|| default_mac(index));
        let limiters = NetLimiters {
            rx: rate_limiter(net.rx_limit)?,
            tx: rate_limiter(net.tx_limit)?,
        };
        let device = Net::new(Box::new(tap), mac).with_rate_limiters(limiters);
        attach_virtio(&vm, &mut mmio, &mut virtio_slots, Box::new(device))?;
    }
    // The console (guest hvc0): its host side exists from now on, so a unix
    // socket accepts clients before the guest runs.
    if let Some(backend) = host.console(stdio_console)? {
        let console = Console::new(backend);
        let device = match (&devs.console, terminal_size(std::io::stdout().as_fd())) {
            (Some(ConsoleConfig::Stdout), Some((cols, rows))) => console.with_size(cols, rows),
            _ => console,
        };
        attach_virtio(&vm, &mut mmio, &mut virtio_slots, Box::new(device))?;
    }

    // Firmware tables (now that every device is known) and vCPUs.
    let machine = Machine {
        vm,
        mmio,
        virtio: virtio_slots.slots,
    };
    let built = platform.finish(&ctx, machine)?;
    Ok(BuiltVm {
        // Stdin goes to one device only: the console takes it when it is on
        // stdout too.
        serial_reads_stdin: config.serial.output == SerialOutput::Stdout
            && devs.console != Some(ConsoleConfig::Stdout),
        ..built
    })
}
