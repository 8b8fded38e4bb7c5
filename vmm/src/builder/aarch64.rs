//! The aarch64 half of the recipe: vCPUs and the in-kernel GICv3 first (so
//! device irqfds land on an initialized vGIC), kernel `Image` and initrd,
//! the UART, boot timer and power-key GPIO on MMIO; after the virtio
//! devices, the device tree and the boot vCPU's registers.

use std::sync::{Arc, Mutex};

use devices::legacy::pl061::PL061_RANGE_LEN;
use devices::legacy::{BootTimer, Pl061, PowerButton, SerialDevice};
use devices::Bus;
use kvm_bindings::kvm_vcpu_init;
use kvm_ioctls::{DeviceFd, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use super::{BuildContext, BuildError, BuiltVm, Machine, Platform};
use crate::arch::aarch64::{self as arch, layout};
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vm::Vm;

/// The aarch64 platform, as set up before the virtio devices.
pub(super) struct Arm64Platform {
    vcpus: Vec<(VcpuFd, kvm_vcpu_init)>,
    /// Kept open for the VM's lifetime.
    _gic: DeviceFd,
    plan: arch::boot::BootPlan,
    kernel_fill: Option<crate::arch::kernel_fill::KernelFill>,
    serial: Arc<Mutex<SerialDevice>>,
    power_button: PowerButton,
}

/// How long the power key stays down per press (gpio-keys debounces for
/// 5 ms, then reads the line).
const KEY_PRESS: std::time::Duration = std::time::Duration::from_millis(100);

/// The power button: line [`layout::POWER_KEY_LINE`] of `gpio` goes high,
/// and low again [`KEY_PRESS`] later (a key press and release).
fn power_key(gpio: Arc<Mutex<Pl061>>) -> PowerButton {
    PowerButton::with_action(move || {
        let set = |gpio: &Mutex<Pl061>, high| {
            if let Ok(mut g) = gpio.lock() {
                g.set_input(layout::POWER_KEY_LINE, high);
            }
        };
        set(&gpio, true);
        let gpio = gpio.clone();
        let released = sandbox::thread::spawn("power-key", move || {
            std::thread::sleep(KEY_PRESS);
            set(&gpio, false);
        });
        if let Err(e) = released {
            tracing::warn!("power key stays pressed: cannot spawn its release: {e}");
        }
    })
}

impl Platform for Arm64Platform {
    /// The UART is the 8250 driver's ttyS0, as on x86.
    const DEFAULT_CMDLINE: &'static str = "console=ttyS0 panic=-1";

    /// Creates vCPUs and the vGIC, enables PSCI SYSTEM_SUSPEND, loads kernel
    /// and initrd, and puts the UART and boot timer on `mmio`.
    fn new(ctx: &BuildContext<'_>, vm: &Vm, mmio: &mut Bus) -> Result<Self, BuildError> {
        let config = ctx.config;
        if config.cpus > layout::MAX_CPUS {
            return Err(BuildError::Unsupported(
                "more vCPUs than GIC redistributors fit (aarch64: at most 123)",
            ));
        }
        let mut vcpus = Vec::with_capacity(usize::from(config.cpus));
        for id in 0..config.cpus {
            let fd = super::create_vcpu_fd(vm, id)?;
            let kvi = arch::kvm::vcpu_init(vm.fd(), id)
                .map_err(|source| BuildError::VcpuSetup { id, source })?;
            fd.vcpu_init(&kvi).map_err(|source| VcpuError::Setup {
                id,
                what: "KVM_ARM_VCPU_INIT",
                source,
            })?;
            vcpus.push((fd, kvi));
        }
        let gic = arch::kvm::create_gic(vm.fd(), config.cpus).map_err(BuildError::Gic)?;
        arch::kvm::enable_system_suspend(vm.fd());

        let mem_size = config.mem_mib << 20;
        let mut initrd = ctx.host.initrd(config)?;
        // The boot files of an earlier boot (a restart) are unmapped with
        // its guest memory, unless a stuck worker still holds it.
        crate::arch::file_map::release_dropped_mappings();
        let (plan, kernel_fill) = arch::boot::load_kernel_and_initrd(
            vm.memory(),
            mem_size,
            &mut ctx.host.kernel(config)?,
            initrd.as_mut(),
            ctx.boot_files,
            ctx.host.user_faults(),
        )?;
        crate::arch::file_map::tie_mappings_to(vm.memory());

        let serial = Arc::new(Mutex::new(SerialDevice::new(
            super::irq_eventfd(vm, layout::SERIAL_SPI, "serial")?,
            ctx.host.serial_output(config)?,
        )));
        mmio.insert(serial.clone(), layout::SERIAL_BASE, layout::SERIAL_SIZE)?;
        mmio.insert(
            Arc::new(Mutex::new(BootTimer::new(
                ctx.start,
                layout::BOOT_TIMER_MAGIC,
            ))),
            layout::BOOT_TIMER_BASE,
            1,
        )?;
        let gpio_irq = super::irq_eventfd(vm, layout::GPIO_SPI, "power key")?;
        let gpio = Arc::new(Mutex::new(Pl061::new(gpio_irq)));
        mmio.insert(gpio.clone(), layout::GPIO_BASE, PL061_RANGE_LEN)?;
        Ok(Self {
            vcpus,
            _gic: gic,
            plan,
            kernel_fill,
            serial,
            power_button: power_key(gpio),
        })
    }

    /// Writes the device tree (announcing `virtio`) and points the boot
    /// vCPU at the kernel.
    fn finish(self, ctx: &BuildContext<'_>, machine: Machine) -> Result<BuiltVm, BuildError> {
        let Machine { vm, mmio, virtio } = machine;
        let config = ctx.config;
        let cmdline = arch::boot::build_cmdline(Self::DEFAULT_CMDLINE, &config.params)?;
        let cmdline = cmdline
            .as_cstring()
            .map_err(arch::boot::BootError::Cmdline)?;
        let fdt_devices: Vec<arch::fdt::VirtioMmioFdt> = virtio
            .iter()
            .map(|slot| arch::fdt::VirtioMmioFdt {
                base: slot.base,
                size: slot.size,
                spi: slot.gsi,
            })
            .collect();
        let blob = arch::fdt::create_fdt(&arch::fdt::FdtConfig {
            num_cpus: config.cpus,
            mem_size: config.mem_mib << 20,
            cmdline: &cmdline.to_string_lossy(),
            initrd: self.plan.initrd,
            virtio: &fdt_devices,
        })?;
        vm.memory()
            .write_slice(&blob, GuestAddress(self.plan.fdt))
            .map_err(|_| arch::boot::BootError::Write {
                what: "device tree",
            })?;

        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for (id, (fd, init)) in (0u8..).zip(self.vcpus) {
            if id == 0 {
                arch::kvm::set_boot_regs(&fd, self.plan.kernel, self.plan.fdt)
                    .map_err(|source| BuildError::VcpuSetup { id, source })?;
            }
            vcpus.push(Vcpu {
                id,
                fd,
                pio: Bus::new(),
                mmio: mmio.clone(),
                power: ctx.power.clone(),
                on_crash: ctx.on_crash.clone(),
                start: ctx.start,
                init,
            });
        }
        Ok(BuiltVm {
            vm,
            vcpus,
            serial: self.serial,
            acpi_pm: None,
            power_button: Some(self.power_button),
            serial_reads_stdin: false,
            kernel_fill: self.kernel_fill,
        })
    }
}
