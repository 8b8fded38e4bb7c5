//! The x86_64 guest physical memory map and I/O port assignments.
//!
//! ```text
//! 0x0000_0000 +---------------------------+
//!             | real-mode IVT / BDA       |
//! 0x0000_0500 | GDT                       |
//! 0x0000_0520 | IDT                       |
//! 0x0000_7000 | boot_params (zero page)   |
//! 0x0000_8ff0 | boot stack top            |
//! 0x0000_9000 | PML4, PDPTE, PDE tables   |
//! 0x0002_0000 | kernel command line       |
//! 0x0009_fc00 | EBDA (reserved)           |
//! 0x000e_0000 | RSDP + ACPI tables        |  (reserved in e820)
//! 0x000f_fff0 | reset-vector stub         |  (reserved in e820)
//! 0x0010_0000 | kernel (HIMEM_START)      |
//!     ...     | RAM, initrd near the top  |
//! 0xc000_0000 +---------------------------+  MMIO gap (1 GiB)
//! 0xd000_0000 | virtio-mmio devices       |
//! 0xfec0_0000 | IOAPIC                    |
//! 0xfee0_0000 | local APIC                |
//! 0x1_0000_0000 RAM above 4 GiB, if any   |
//! ```

/// Where the GDT is written for the 64-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// Where an empty IDT is written for the 64-bit entry.
pub const BOOT_IDT_START: u64 = 0x520;
/// The Linux boot protocol's `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page map used for the identity mapping at boot.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity mapping.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages) of the boot identity mapping.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line address.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line accepted (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// The RSDP lives here, inside the BIOS area Linux scans for it.
pub const RSDP_START: u64 = 0xe0000;
/// End (exclusive) of the area that holds the RSDP and all ACPI tables.
pub const ACPI_AREA_END: u64 = 0xf_0000;
/// The x86 reset vector (`f000:fff0`), where a BIOS reboot jumps. The VMM
/// puts a tiny stub there that writes the ACPI reset register.
pub const RESET_VECTOR: u64 = 0xf_fff0;
/// Where the kernel is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap: no RAM between here and 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First address handed to virtio-mmio devices.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// GSI of the ACPI Generic Event Device that carries power-button presses.
///
/// Above 15 on purpose: KVM also routes GSIs 0-15 to its legacy PIC, and a
/// press during early boot (before Linux programs the IOAPIC) would reach the
/// guest through the unprogrammed PIC as a bogus exception vector.
pub const POWER_BUTTON_GSI: u32 = 23;
/// First GSI handed to virtio-mmio devices (0-4 are legacy: timer, COM1...).
pub const VIRTIO_MMIO_GSI_START: u32 = 5;
/// Number of pins on KVM's in-kernel IOAPIC (GSIs 0-23).
pub const IOAPIC_NUM_PINS: u32 = 24;
/// Address of the in-kernel IOAPIC.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Address of the local APICs.
pub const APIC_START: u64 = 0xfee0_0000;

/// COM1 serial port base.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// COM1 interrupt line (GSI).
pub const SERIAL_IRQ: u32 = 4;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command/status port; writing 0xfe there resets the machine.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// ACPI hardware-reduced sleep control register (FADT `X_SLEEP_CONTROL_REG`).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// ACPI hardware-reduced sleep status register (FADT `X_SLEEP_STATUS_REG`).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// ACPI reset register (FADT `RESET_REG`).
pub const ACPI_RESET_PORT: u16 = 0x604;
/// Value the guest writes to [`ACPI_RESET_PORT`] to reset.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// `SLP_TYP` value of `\_S5_` (soft off) in the DSDT.
pub const ACPI_SLP_TYP_S5: u8 = 5;
/// `SLP_TYP` value of `\_S3_` (suspend to RAM) in the DSDT.
pub const ACPI_SLP_TYP_S3: u8 = 3;
/// The boot-timer port: the guest's `/init` writes one byte here.
pub const BOOT_TIMER_PORT: u16 = 0x4f0;
/// Value the guest writes to [`BOOT_TIMER_PORT`] (same as Firecracker's).
pub const BOOT_TIMER_MAGIC: u8 = 123;

// Virtio GSIs run from VIRTIO_MMIO_GSI_START up to (not including) the power
// button's, which is the IOAPIC's last pin.
const _: () =
    assert!(VIRTIO_MMIO_GSI_START < POWER_BUTTON_GSI && POWER_BUTTON_GSI < IOAPIC_NUM_PINS);
