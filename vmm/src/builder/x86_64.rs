//! The x86_64 half of the recipe: kernel and initrd, the legacy devices on
//! port I/O (COM1, i8042, ACPI power registers, boot timer, power button),
//! then ACPI tables, the zero page and the vCPUs.

use std::sync::{Arc, Mutex};

use devices::legacy::acpi_pm::ACPI_PM_RANGE_LEN;
use devices::legacy::i8042::I8042_RANGE_LEN;
use devices::legacy::{AcpiPmDevice, BootTimer, I8042Device, PowerButton, SerialDevice};
use devices::Bus;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;

use super::{BuildContext, BuildError, BuiltVm, Machine, Platform};
use crate::arch::x86_64::{self as arch, layout};
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;

/// The x86_64 platform, as set up before the virtio devices.
pub(super) struct X86Platform {
    kernel: arch::boot::LoadedKernel,
    initrd: Option<arch::boot::InitrdRegion>,
    pio: Bus,
    serial: Arc<Mutex<SerialDevice>>,
    acpi_pm: Arc<Mutex<AcpiPmDevice>>,
    power_button: PowerButton,
}

impl Platform for X86Platform {
    /// `reboot=acpi`: with hardware-reduced ACPI Linux would otherwise pick
    /// an EFI reboot, which needs firmware this VMM does not have.
    const DEFAULT_CMDLINE: &'static str = "console=ttyS0 reboot=acpi panic=-1 pci=off";

    /// Loads kernel and initrd and puts the legacy devices on port I/O.
    fn new(ctx: &BuildContext<'_>, vm: &Vm, _mmio: &mut Bus) -> Result<Self, BuildError> {
        let BuildContext {
            config,
            start,
            power,
            ..
        } = ctx;
        let mem = vm.memory();
        // The boot files of an earlier boot (a restart) are unmapped with
        // its guest memory, unless a stuck worker still holds it.
        crate::arch::file_map::release_dropped_mappings();
        let kernel = arch::boot::load_kernel(
            mem,
            &mut ctx.host.kernel(config)?,
            ctx.boot_files,
            ctx.host.user_faults(),
        )?;
        let initrd = match ctx.host.initrd(config)? {
            Some(mut file) => {
                let max = kernel
                    .setup_header
                    .map_or(0x7fff_ffff, |h| u64::from(h.initrd_addr_max));
                Some(arch::boot::load_initrd(
                    mem,
                    &mut file,
                    max,
                    ctx.boot_files,
                )?)
            }
            None => None,
        };
        crate::arch::file_map::tie_mappings_to(mem);
        // Legacy devices on the port I/O bus.
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            super::irq_eventfd(vm, layout::SERIAL_IRQ, "serial")?,
            ctx.host.serial_output(config)?,
        )));
        let button_irq = super::irq_eventfd(vm, layout::POWER_BUTTON_GSI, "power button")?;
        let power_button = PowerButton::new(button_irq);
        let acpi_pm = Arc::new(Mutex::new(AcpiPmDevice::new(
            power.clone(),
            layout::ACPI_SLP_TYP_S5,
            layout::ACPI_SLP_TYP_S3,
            layout::ACPI_RESET_VALUE,
        )));
        let mut pio = Bus::new();
        pio.insert(serial.clone(), u64::from(layout::SERIAL_PORT_BASE), 8)?;
        pio.insert(
            Arc::new(Mutex::new(I8042Device::new(power.clone()))),
            u64::from(layout::I8042_DATA_PORT),
            I8042_RANGE_LEN,
        )?;
        pio.insert(
            acpi_pm.clone(),
            u64::from(layout::ACPI_SLEEP_CONTROL_PORT),
            ACPI_PM_RANGE_LEN,
        )?;
        pio.insert(
            Arc::new(Mutex::new(BootTimer::new(*start, layout::BOOT_TIMER_MAGIC))),
            u64::from(layout::BOOT_TIMER_PORT),
            1,
        )?;
        Ok(Self {
            kernel,
            initrd,
            pio,
            serial,
            acpi_pm,
            power_button,
        })
    }

    /// ACPI tables (announcing `virtio`), the zero page, the reset vector
    /// and the vCPUs.
    fn finish(self, ctx: &BuildContext<'_>, machine: Machine) -> Result<BuiltVm, BuildError> {
        let Machine { vm, mmio, virtio } = machine;
        let config = ctx.config;
        let mem = vm.memory();
        let acpi_devices: Vec<arch::acpi::VirtioMmioAcpi> = virtio
            .iter()
            .map(|slot| arch::acpi::VirtioMmioAcpi {
                base: slot.base as u32,
                size: slot.size as u32,
                gsi: slot.gsi,
            })
            .collect();
        let rsdp = arch::acpi::setup_acpi_tables(mem, config.cpus, &acpi_devices)?;
        let cmdline = arch::boot::build_cmdline(Self::DEFAULT_CMDLINE, &config.params)?;
        arch::boot::setup_zero_page(mem, &cmdline, &self.kernel, self.initrd, rsdp)?;
        arch::boot::setup_reset_vector(mem)?;

        let supported_cpuid = ctx
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(BuildError::Cpuid)?;
        let tsc_deadline = ctx.kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
        let mut vcpus = Vec::with_capacity(usize::from(config.cpus));
        for id in 0..config.cpus {
            let fd = super::create_vcpu_fd(&vm, id)?;
            arch::configure_vcpu(
                &fd,
                mem,
                &supported_cpuid,
                id,
                config.cpus,
                tsc_deadline,
                self.kernel.entry,
            )
            .map_err(|source| BuildError::VcpuSetup { id, source })?;
            vcpus.push(Vcpu {
                id,
                fd,
                pio: self.pio.clone(),
                mmio: mmio.clone(),
                power: ctx.power.clone(),
                on_crash: ctx.on_crash.clone(),
                start: ctx.start,
            });
        }
        Ok(BuiltVm {
            vm,
            vcpus,
            serial: self.serial,
            acpi_pm: Some(self.acpi_pm),
            power_button: Some(self.power_button),
            serial_reads_stdin: false,
            kernel_fill: self.kernel.fill,
        })
    }
}
