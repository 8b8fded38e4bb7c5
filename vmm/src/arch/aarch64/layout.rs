//! The aarch64 guest physical memory map and interrupt numbers.
//!
//! Devices sit below 2 GiB, RAM starts at 2 GiB (as on QEMU `virt`,
//! Firecracker and crosvm), so a 32-bit device address never aliases RAM.
//!
//! ```text
//! 0x0000_0000 +-------------------------------+
//!             | (unused)                      |
//! 0x0800_0000 | GICv3 distributor (64 KiB)    |
//! 0x080a_0000 | GICv3 redistributors          |  128 KiB per vCPU
//! 0x0900_0000 | 16550A UART (ns16550a)        |  SPI 1
//! 0x0901_0000 | boot timer (one byte)         |
//! 0x0902_0000 | PL061 GPIO (power key)        |  SPI 2
//! 0x0a00_0000 | virtio-mmio devices, 4 KiB    |  SPI 16, 17, ...
//! 0x8000_0000 +-------------------------------+  RAM
//!             | kernel Image (2 MiB aligned)  |
//!     ...     |                               |
//!             | initrd (page aligned)         |
//! end - 2 MiB | device tree (at most 2 MiB)   |
//! ```

/// Guest physical address of the GICv3 distributor.
pub const GIC_DIST_BASE: u64 = 0x0800_0000;
/// Size of the GICv3 distributor frame.
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// Guest physical address of the first GICv3 redistributor.
pub const GIC_REDIST_BASE: u64 = 0x080a_0000;
/// Size of one vCPU's redistributor (RD_base + SGI_base frames).
pub const GIC_REDIST_SIZE_PER_CPU: u64 = 0x2_0000;
/// Address of the UART.
pub const SERIAL_BASE: u64 = 0x0900_0000;
/// Size of the UART's MMIO window.
pub const SERIAL_SIZE: u64 = 0x1000;
/// Address of the boot timer (the guest writes [`BOOT_TIMER_MAGIC`] there).
pub const BOOT_TIMER_BASE: u64 = 0x0901_0000;
/// Value the guest's `/init` writes to [`BOOT_TIMER_BASE`].
pub const BOOT_TIMER_MAGIC: u8 = 123;
/// Address of the PL061 GPIO controller whose line [`POWER_KEY_LINE`] is
/// the guest's power key (`gpio-keys`, `KEY_POWER`).
pub const GPIO_BASE: u64 = 0x0902_0000;
/// Size of the PL061's MMIO window.
pub const GPIO_SIZE: u64 = 0x1000;
/// The GPIO line of the power key.
pub const POWER_KEY_LINE: u8 = 3;
/// First address handed to virtio-mmio devices.
pub const VIRTIO_MMIO_START: u64 = 0x0a00_0000;
/// Start of guest RAM.
pub const RAM_START: u64 = 0x8000_0000;
/// The most vCPUs whose redistributors fit below the UART.
pub const MAX_CPUS: u8 = ((SERIAL_BASE - GIC_REDIST_BASE) / GIC_REDIST_SIZE_PER_CPU) as u8;

/// Largest device tree the kernel accepts (arm64 booting.rst: 2 MiB); it
/// gets the last 2 MiB of RAM.
pub const FDT_MAX_SIZE: u64 = 0x20_0000;
/// Alignment of the kernel's load base (arm64 booting.rst).
pub const KERNEL_ALIGN: u64 = 0x20_0000;
/// Page size used to align the initrd.
pub const PAGE_SIZE: u64 = 0x1000;

/// The UART's interrupt: SPI number (INTID 32 + this). With KVM's default
/// routing an irqfd's GSI is the SPI number.
pub const SERIAL_SPI: u32 = 1;
/// The PL061's interrupt: SPI number.
pub const GPIO_SPI: u32 = 2;
/// SPI of the first virtio-mmio device; the next get the following ones.
pub const VIRTIO_MMIO_SPI_START: u32 = 16;
/// Interrupt lines the vGIC gets: 32 private (SGIs, PPIs) + 96 SPIs. A
/// multiple of 32, as KVM requires.
pub const GIC_NR_IRQS: u32 = 128;
/// SPIs available to virtio devices: from [`VIRTIO_MMIO_SPI_START`] up to
/// the last SPI.
pub const VIRTIO_MMIO_SPI_END: u32 = GIC_NR_IRQS - 32;

/// Architected timer PPIs (INTID - 16), in the device tree's order: secure
/// physical, non-secure physical, virtual, hypervisor physical.
pub const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// The virtual maintenance interrupt of the GIC (PPI 9).
pub const GIC_MAINTENANCE_PPI: u32 = 9;

const _: () =
    assert!(VIRTIO_MMIO_SPI_START > SERIAL_SPI && VIRTIO_MMIO_SPI_START < VIRTIO_MMIO_SPI_END);
const _: () = assert!(BOOT_TIMER_BASE >= SERIAL_BASE + SERIAL_SIZE);
const _: () = assert!(GPIO_BASE > BOOT_TIMER_BASE && VIRTIO_MMIO_START >= GPIO_BASE + GPIO_SIZE);
const _: () = assert!(GPIO_SPI > SERIAL_SPI && GPIO_SPI < VIRTIO_MMIO_SPI_START);
