//! Minimal ACPI tables for a hardware-reduced ACPI x86_64 guest.
//!
//! The guest gets an RSDP, an XSDT, a FADT, a DSDT and a MADT, laid out one
//! after the other (16-byte aligned) from [`RSDP_START`] up to, at most,
//! [`ACPI_AREA_END`]:
//!
//! ```text
//! RSDP_START  RSDP (rev 2) ──> XSDT
//!             DSDT         \_S5_ and \_S3_ sleep packages
//!             MADT         local APICs, one I/O APIC
//!             FADT ──> DSDT; reset, sleep control and sleep status registers
//!             XSDT ──> FADT, MADT
//! ```
//!
//! The FADT sets `HW_REDUCED_ACPI`, so Linux uses no PM1 blocks, GPEs or
//! SCI: `poweroff` writes `(SLP_TYP << 2) | SLP_EN` to the sleep control
//! port (with `SLP_TYP` taken from the first element of `\_S5_`) and `reboot`
//! writes [`ACPI_RESET_VALUE`] to the reset port. Both are I/O ports the VMM
//! traps.
//!
//! Tables are built with the rust-vmm `acpi_tables` crate, which computes
//! lengths and checksums; the tests at the bottom decode the guest memory
//! with hand-written field offsets taken from the ACPI 6.5 specification.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Method, Name, Notify, Package, Path,
    ResourceTemplate, Scope, IO, ZERO,
};
use acpi_tables::fadt::{FADTBuilder, Flags, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use super::layout::{
    ACPI_AREA_END, ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_PORT, ACPI_SLP_TYP_S3, ACPI_SLP_TYP_S5, APIC_START, IOAPIC_START,
    POWER_BUTTON_GSI, RSDP_START, SERIAL_IRQ, SERIAL_PORT_BASE,
};

/// Largest number of vCPUs the MADT describes.
///
/// Local APIC ids are the vCPU indices `0..num_cpus`, the I/O APIC takes id
/// `num_cpus`, and id 255 is the xAPIC broadcast id, so 254 is the limit.
pub const MAX_CPUS: u8 = 254;

/// OEM ID in every table header and in the RSDP.
const OEM_ID: [u8; 6] = *b"VMSTK ";
/// OEM table ID in every table header.
const OEM_TABLE_ID: [u8; 8] = *b"VMSTACK ";
/// OEM revision in every table header.
const OEM_REVISION: u32 = 1;
/// FADT "Hypervisor Vendor Identity" (ACPI 6.0+).
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"VMSTACK\0";

/// DSDT revision; 2 or more means AML integers are 64 bits wide.
const DSDT_REVISION: u8 = 2;
/// MADT revision (ACPI 6.2 - 6.4).
const MADT_REVISION: u8 = 5;

/// FADT `IAPC_BOOT_ARCH` bit 2: no VGA hardware, don't probe for it.
const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// FADT `IAPC_BOOT_ARCH` bit 5: no CMOS RTC. The VMM emulates none (the
/// guest's wall clock comes from kvmclock); without this bit Linux probes
/// ports 0x70/0x71, reads 0xff ("update in progress") and waits seconds for
/// an RTC that never answers.
const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// FADT `SCI_INT`. Ignored in hardware-reduced mode (there is no SCI), but 9
/// is what PC firmware reports.
const SCI_INT: u16 = 9;

/// Size of the header common to all system description tables.
const SDT_HEADER_LEN: u32 = 36;
/// Offset of the MADT "Local Interrupt Controller Address" field.
const MADT_LOCAL_APIC_ADDR_OFFSET: usize = 36;
/// Offset of the MADT "Flags" field.
const MADT_FLAGS_OFFSET: usize = 40;
/// Length of the MADT before its interrupt controller structures.
const MADT_HEADER_LEN: u32 = 44;
/// MADT flag: the system also has dual 8259 PICs (KVM's in-kernel PIC).
const MADT_PCAT_COMPAT: u32 = 1;

/// Alignment of each table in guest memory.
const TABLE_ALIGN: u64 = 16;

// The tables' 32-bit address fields (FADT DSDT, MADT APIC addresses) need
// these below 4 GiB.
const _: () = assert!(ACPI_AREA_END <= 1 << 32);
const _: () = assert!(APIC_START < 1 << 32 && IOAPIC_START < 1 << 32);

/// Errors building or writing ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The vCPU count is 0 or larger than [`MAX_CPUS`].
    #[error("cannot describe {0} vCPUs in the MADT: must be between 1 and {max}", max = MAX_CPUS)]
    TooManyCpus(u8),
    /// Writing a table into guest memory failed.
    #[error("failed to write ACPI tables to guest memory")]
    Write(#[source] GuestMemoryError),
    /// The tables would extend past [`ACPI_AREA_END`].
    #[error("ACPI tables would end at {end:#x}, past the end of the ACPI area at {limit:#x}", limit = ACPI_AREA_END)]
    TablesTooLarge {
        /// Exclusive end address the tables would need.
        end: u64,
    },
}

/// Writes RSDP, XSDT, FADT, DSDT and MADT for `num_cpus` vCPUs into `mem`, starting at
/// `layout::RSDP_START` and ending before `layout::ACPI_AREA_END`; returns the RSDP address.
///
/// # Errors
///
/// [`AcpiError::TooManyCpus`] if `num_cpus` is 0 or above [`MAX_CPUS`],
/// [`AcpiError::TablesTooLarge`] if the tables don't fit in the ACPI area and
/// [`AcpiError::Write`] if `mem` doesn't cover the area.
pub fn setup_acpi_tables<M: GuestMemory>(
    mem: &M,
    num_cpus: u8,
    virtio_devices: &[VirtioMmioAcpi],
) -> Result<GuestAddress, AcpiError> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(AcpiError::TooManyCpus(num_cpus));
    }

    let mut area = AcpiArea::new();

    // Tables are placed in dependency order, so each one's pointers are known
    // when it is built; the RSDP is reserved first because it has a fixed home.
    let rsdp_addr = area.reserve(Rsdp::len())?;
    debug_assert_eq!(rsdp_addr.0, RSDP_START);

    let dsdt = to_bytes(&build_dsdt(virtio_devices));
    let dsdt_addr = area.reserve(dsdt.len())?;

    let madt = to_bytes(&build_madt(num_cpus));
    let madt_addr = area.reserve(madt.len())?;

    let fadt = to_bytes(&build_fadt(dsdt_addr));
    let fadt_addr = area.reserve(fadt.len())?;

    let xsdt = to_bytes(&build_xsdt(&[fadt_addr, madt_addr]));
    let xsdt_addr = area.reserve(xsdt.len())?;

    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr.0));

    for (bytes, addr) in [
        (&rsdp, rsdp_addr),
        (&dsdt, dsdt_addr),
        (&madt, madt_addr),
        (&fadt, fadt_addr),
        (&xsdt, xsdt_addr),
    ] {
        mem.write_slice(bytes, addr).map_err(AcpiError::Write)?;
    }

    Ok(rsdp_addr)
}

/// Hands out consecutive, aligned ranges of `RSDP_START..ACPI_AREA_END`.
struct AcpiArea {
    next: u64,
}

impl AcpiArea {
    fn new() -> Self {
        AcpiArea { next: RSDP_START }
    }

    /// Reserves `len` bytes and returns their start address.
    fn reserve(&mut self, len: usize) -> Result<GuestAddress, AcpiError> {
        let start = self.next;
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .unwrap_or(u64::MAX);
        if end > ACPI_AREA_END {
            return Err(AcpiError::TablesTooLarge { end });
        }
        self.next = end.next_multiple_of(TABLE_ALIGN);
        Ok(GuestAddress(start))
    }
}

/// Serializes a table.
fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// An empty system description table; `Sdt` keeps length and checksum right
/// as data is appended or written.
fn new_sdt(signature: [u8; 4], length: u32, revision: u8) -> Sdt {
    Sdt::new(
        signature,
        length,
        revision,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    )
}

/// A `Name(<name>, Package() { slp_typ, 0, 0, 0 })` sleep state object.
///
/// In hardware-reduced mode ACPICA takes `SLP_TYP` from the first element
/// only; the other three (PM1b `SLP_TYP` and two reserved) are 0.
fn sleep_state_aml(name: &str, slp_typ: u8, aml: &mut Vec<u8>) {
    let package = Package::new(vec![&slp_typ, &0u8, &0u8, &0u8]);
    Name::new(Path::new(name), &package).to_aml_bytes(aml);
}

/// `\_SB_.COM1`: the 16550 UART with its I/O ports and IRQ.
///
/// Hardware-reduced ACPI has no legacy PIC, so Linux maps no ISA IRQs by
/// itself: the serial port gets its (edge, active-high) interrupt only
/// because this device declares it. Without it the 8250 driver can print
/// kernel messages by polling but user space output never leaves the guest.
fn com1_aml(aml: &mut Vec<u8>) {
    let hid = EISAName::new("PNP0501");
    let hid_name = Name::new(Path::new("_HID"), &hid);
    let uid = Name::new(Path::new("_UID"), &ZERO);
    let io = IO::new(SERIAL_PORT_BASE, SERIAL_PORT_BASE, 1, 8);
    let irq = Interrupt::new(true, true, false, false, SERIAL_IRQ);
    let resources = ResourceTemplate::new(vec![&io, &irq]);
    let crs = Name::new(Path::new("_CRS"), &resources);
    let device = Device::new(Path::new("COM1"), vec![&hid_name, &uid, &crs]);
    Scope::new(Path::new("\\_SB_"), vec![&device]).to_aml_bytes(aml);
}

/// A virtio-mmio device as the DSDT announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioAcpi {
    /// Base of the device's MMIO window.
    pub base: u32,
    /// Size of the window.
    pub size: u32,
    /// The device's interrupt (an IOAPIC GSI, edge-triggered, active high).
    pub gsi: u32,
}

/// `\_SB_.VRnn` devices with `_HID` "LNRO0005", which Linux's stock
/// `virtio_mmio` driver binds to (its ACPI match), so no kernel command line
/// is needed and, with hardware-reduced ACPI, the interrupt gets mapped.
fn virtio_mmio_aml(devices: &[VirtioMmioAcpi], aml: &mut Vec<u8>) {
    let hid = "LNRO0005";
    for (i, dev) in devices.iter().enumerate() {
        let hid_name = Name::new(Path::new("_HID"), &hid);
        let uid_value = i as u32;
        let uid = Name::new(Path::new("_UID"), &uid_value);
        let window = Memory32Fixed::new(true, dev.base, dev.size);
        let irq = Interrupt::new(true, true, false, false, dev.gsi);
        let resources = ResourceTemplate::new(vec![&window, &irq]);
        let crs = Name::new(Path::new("_CRS"), &resources);
        let name = format!("VR{:02X}", i & 0xff);
        let device = Device::new(Path::new(&name), vec![&hid_name, &uid, &crs]);
        Scope::new(Path::new("\\_SB_"), vec![&device]).to_aml_bytes(aml);
    }
}

/// `\_SB_.PWRB` (power button, `PNP0C0C`) and `\_SB_.GED0` (Generic Event
/// Device, `ACPI0013`) whose interrupt runs `_EVT`, which notifies PWRB with
/// 0x80 ("pressed"): the hardware-reduced way to have a power button.
fn power_button_aml(aml: &mut Vec<u8>) {
    let pwrb_hid = EISAName::new("PNP0C0C");
    let pwrb_hid_name = Name::new(Path::new("_HID"), &pwrb_hid);
    let pwrb = Device::new(Path::new("PWRB"), vec![&pwrb_hid_name]);

    let ged_hid = "ACPI0013";
    let ged_hid_name = Name::new(Path::new("_HID"), &ged_hid);
    let irq = Interrupt::new(true, true, false, false, POWER_BUTTON_GSI);
    let resources = ResourceTemplate::new(vec![&irq]);
    let crs = Name::new(Path::new("_CRS"), &resources);
    let target = Path::new("\\_SB_.PWRB");
    let pressed: u8 = 0x80;
    let notify = Notify::new(&target, &pressed);
    let evt = Method::new(Path::new("_EVT"), 1, true, vec![&notify]);
    let ged = Device::new(Path::new("GED0"), vec![&ged_hid_name, &crs, &evt]);
    Scope::new(Path::new("\\_SB_"), vec![&pwrb, &ged]).to_aml_bytes(aml);
}

/// The DSDT: the COM1 serial port, the power button, the virtio-mmio devices and the `\_S5_`
/// (soft off) and `\_S3_` (suspend to RAM) sleep states.
fn build_dsdt(virtio_devices: &[VirtioMmioAcpi]) -> Sdt {
    let mut aml = Vec::new();
    com1_aml(&mut aml);
    power_button_aml(&mut aml);
    virtio_mmio_aml(virtio_devices, &mut aml);
    sleep_state_aml("_S5_", ACPI_SLP_TYP_S5, &mut aml);
    sleep_state_aml("_S3_", ACPI_SLP_TYP_S3, &mut aml);

    let mut dsdt = new_sdt(*b"DSDT", SDT_HEADER_LEN, DSDT_REVISION);
    dsdt.append_slice(&aml);
    dsdt
}

/// The MADT: one enabled local APIC per vCPU (ACPI processor UID = APIC id =
/// vCPU index) and KVM's in-kernel I/O APIC with GSIs 0-23.
///
/// There are deliberately no Interrupt Source Overrides: KVM's default GSI
/// routing sends ISA IRQ n to I/O APIC pin n, including the in-kernel PIT
/// on IRQ 0 (unlike real PCs and QEMU, which wire it to pin 2), and the
/// legacy devices use the ISA defaults (edge-triggered, active high) that
/// Linux assumes for IRQs 0-15 without overrides. There is no SCI to
/// override either, because the platform is hardware-reduced.
fn build_madt(num_cpus: u8) -> Sdt {
    let mut structures = Vec::new();
    for cpu in 0..num_cpus {
        ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled).to_aml_bytes(&mut structures);
    }
    // The I/O APIC id follows the local APIC ids so all APIC ids are unique.
    IoApic::new(num_cpus, IOAPIC_START as u32, 0).to_aml_bytes(&mut structures);

    let mut madt = new_sdt(*b"APIC", MADT_HEADER_LEN, MADT_REVISION);
    madt.write_u32(MADT_LOCAL_APIC_ADDR_OFFSET, APIC_START as u32);
    madt.write_u32(MADT_FLAGS_OFFSET, MADT_PCAT_COMPAT);
    madt.append_slice(&structures);
    madt
}

/// A one-byte System I/O register at `port`.
fn io_port_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}

/// The FADT (revision 6.5, 276 bytes) of a hardware-reduced platform with
/// ACPI reset and sleep registers in I/O space.
fn build_fadt(dsdt_addr: GuestAddress) -> FADT {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup);
    // Both DSDT pointers are set (to the same address): X_DSDT for ACPI 2.0+
    // readers, DSDT for older ones. The builder's setters clear the other.
    fadt.dsdt = (dsdt_addr.0 as u32).into();
    fadt.x_dsdt = dsdt_addr.0.into();
    fadt.sci_int = SCI_INT.into();
    fadt.iapc_boot_arch =
        (IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT).into();
    fadt.reset_reg = io_port_register(ACPI_RESET_PORT);
    fadt.reset_value = ACPI_RESET_VALUE;
    fadt.sleep_control_reg = io_port_register(ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_port_register(ACPI_SLEEP_STATUS_PORT);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    fadt.finalize()
}

/// The XSDT, pointing at `tables`.
fn build_xsdt(tables: &[GuestAddress]) -> XSDT {
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in tables {
        xsdt.add_entry(table.0);
    }
    xsdt
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    // Field offsets from the ACPI 6.5 specification, independent of the
    // acpi_tables crate's structs.
    const RSDP_LEN: usize = 36;
    const RSDP_REVISION: usize = 15;
    const RSDP_LENGTH: usize = 20;
    const RSDP_XSDT_ADDRESS: usize = 24;
    const SDT_SIGNATURE: usize = 0;
    const SDT_LENGTH: usize = 4;
    const SDT_REVISION: usize = 8;
    const SDT_OEM_ID: usize = 10;
    const SDT_HEADER: usize = 36;
    const FADT_LEN: usize = 276;
    const FADT_DSDT: usize = 40;
    const FADT_IAPC_BOOT_ARCH: usize = 109;
    const FADT_FLAGS: usize = 112;
    const FADT_RESET_REG: usize = 116;
    const FADT_RESET_VALUE: usize = 128;
    const FADT_MINOR_VERSION: usize = 131;
    const FADT_X_DSDT: usize = 140;
    const FADT_SLEEP_CONTROL_REG: usize = 244;
    const FADT_SLEEP_STATUS_REG: usize = 256;
    const FADT_HYPERVISOR_VENDOR_ID: usize = 268;
    const FADT_FLAG_RESET_REG_SUP: u32 = 1 << 10;
    const FADT_FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

    /// `Name(_S5_, Package(){ 5, 0, 0, 0 })`: NameOp, NameSeg, PackageOp,
    /// PkgLength, NumElements, BytePrefix 5, ZeroOp x3.
    const S5_AML: [u8; 13] = [
        0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00,
    ];
    /// `Name(_S3_, Package(){ 3, 0, 0, 0 })`.
    const S3_AML: [u8; 13] = [
        0x08, b'_', b'S', b'3', b'_', 0x12, 0x07, 0x04, 0x0a, 0x03, 0x00, 0x00, 0x00,
    ];

    fn guest_memory() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes(bytes[offset..offset + 2].try_into().unwrap())
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    fn read(mem: &GuestMemoryMmap<()>, addr: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        bytes
    }

    /// Reads the table at `addr` over its declared length and checks its
    /// checksum, signature and OEM ID.
    fn read_table(mem: &GuestMemoryMmap<()>, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
        let header = read(mem, addr, SDT_HEADER);
        assert_eq!(&header[SDT_SIGNATURE..SDT_SIGNATURE + 4], signature);
        let table = read(mem, addr, u32_at(&header, SDT_LENGTH) as usize);
        assert_eq!(
            sum(&table),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        assert_eq!(&table[SDT_OEM_ID..SDT_OEM_ID + 6], b"VMSTK ");
        assert!(addr + table.len() as u64 <= ACPI_AREA_END);
        table
    }

    /// Checks a GAS for a one-byte I/O port register.
    fn assert_io_register(fadt: &[u8], offset: usize, port: u16) {
        let gas = &fadt[offset..offset + 12];
        assert_eq!(gas[0], 1, "space id: System I/O");
        assert_eq!(gas[1], 8, "bit width");
        assert_eq!(gas[2], 0, "bit offset");
        assert_eq!(u64_at(gas, 4), u64::from(port), "address");
    }

    /// All tables of a successful setup, checked for the basics.
    struct Tables {
        xsdt: (u64, Vec<u8>),
        fadt: (u64, Vec<u8>),
        dsdt: (u64, Vec<u8>),
        madt: (u64, Vec<u8>),
    }

    fn setup(num_cpus: u8) -> (GuestMemoryMmap<()>, Tables) {
        let mem = guest_memory();
        let rsdp_addr = setup_acpi_tables(&mem, num_cpus, &[]).unwrap();
        assert_eq!(rsdp_addr, GuestAddress(RSDP_START));

        let rsdp = read(&mem, RSDP_START, RSDP_LEN);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(rsdp[RSDP_REVISION], 2);
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
        assert_eq!(u32_at(&rsdp, RSDP_LENGTH) as usize, RSDP_LEN);
        assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");

        let xsdt_addr = u64_at(&rsdp, RSDP_XSDT_ADDRESS);
        let xsdt = read_table(&mem, xsdt_addr, b"XSDT");
        assert_eq!(xsdt.len(), SDT_HEADER + 2 * 8);
        let fadt_addr = u64_at(&xsdt, SDT_HEADER);
        let madt_addr = u64_at(&xsdt, SDT_HEADER + 8);
        let fadt = read_table(&mem, fadt_addr, b"FACP");
        let madt = read_table(&mem, madt_addr, b"APIC");
        let dsdt_addr = u64_at(&fadt, FADT_X_DSDT);
        let dsdt = read_table(&mem, dsdt_addr, b"DSDT");

        // No table overlaps the RSDP or another table.
        let mut ranges = [
            (RSDP_START, RSDP_START + RSDP_LEN as u64),
            (xsdt_addr, xsdt_addr + xsdt.len() as u64),
            (fadt_addr, fadt_addr + fadt.len() as u64),
            (dsdt_addr, dsdt_addr + dsdt.len() as u64),
            (madt_addr, madt_addr + madt.len() as u64),
        ];
        ranges.sort();
        for pair in ranges.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlap: {pair:x?}");
        }
        assert!(ranges[0].0 >= RSDP_START);
        assert!(ranges[ranges.len() - 1].1 <= ACPI_AREA_END);

        let tables = Tables {
            xsdt: (xsdt_addr, xsdt),
            fadt: (fadt_addr, fadt),
            dsdt: (dsdt_addr, dsdt),
            madt: (madt_addr, madt),
        };
        (mem, tables)
    }

    #[test]
    fn rsdp_and_xsdt() {
        let (_, tables) = setup(1);
        assert_eq!(tables.xsdt.1[SDT_REVISION], 1);
    }

    #[test]
    fn fadt() {
        let (_, tables) = setup(2);
        let fadt = &tables.fadt.1;
        assert_eq!(fadt.len(), FADT_LEN);
        assert_eq!(fadt[SDT_REVISION], 6);
        assert_eq!(fadt[FADT_MINOR_VERSION], 5);

        let flags = u32_at(fadt, FADT_FLAGS);
        assert_ne!(flags & FADT_FLAG_HW_REDUCED_ACPI, 0);
        assert_ne!(flags & FADT_FLAG_RESET_REG_SUP, 0);
        assert_eq!(u16_at(fadt, FADT_IAPC_BOOT_ARCH) & (1 << 2), 1 << 2);
        assert_eq!(
            u16_at(fadt, FADT_IAPC_BOOT_ARCH) & (1 << 5),
            1 << 5,
            "no CMOS RTC"
        );

        assert_io_register(fadt, FADT_RESET_REG, ACPI_RESET_PORT);
        assert_eq!(fadt[FADT_RESET_VALUE], ACPI_RESET_VALUE);
        assert_io_register(fadt, FADT_SLEEP_CONTROL_REG, ACPI_SLEEP_CONTROL_PORT);
        assert_io_register(fadt, FADT_SLEEP_STATUS_REG, ACPI_SLEEP_STATUS_PORT);

        assert_eq!(u64_at(fadt, FADT_X_DSDT), tables.dsdt.0);
        assert_eq!(u64::from(u32_at(fadt, FADT_DSDT)), tables.dsdt.0);
        assert_eq!(
            &fadt[FADT_HYPERVISOR_VENDOR_ID..FADT_HYPERVISOR_VENDOR_ID + 8],
            b"VMSTACK\0"
        );
    }

    #[test]
    fn dsdt_sleep_states() {
        let (_, tables) = setup(1);
        let dsdt = &tables.dsdt.1;
        assert_eq!(dsdt[SDT_REVISION], DSDT_REVISION);
        // The constants in the expected bytes are the layout's.
        assert_eq!((ACPI_SLP_TYP_S5, ACPI_SLP_TYP_S3), (5, 3));
        let aml = &dsdt[SDT_HEADER..];
        let sleep = &aml[aml.len() - S5_AML.len() - S3_AML.len()..];
        assert_eq!(&sleep[..S5_AML.len()], S5_AML);
        assert_eq!(&sleep[S5_AML.len()..], S3_AML);
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn dsdt_declares_the_power_button_behind_a_ged() {
        let (_, tables) = setup(1);
        let aml = &tables.dsdt.1[SDT_HEADER..];
        assert!(contains(aml, b"PWRB") && contains(aml, b"GED0"));
        assert!(contains(aml, b"ACPI0013"));
        // _HID EISAID("PNP0C0C").
        assert!(contains(
            aml,
            &[b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0c, 0x0c]
        ));
        // Method(_EVT, 1, Serialized) { Notify(\_SB_.PWRB, 0x80) }.
        assert!(contains(aml, b"_EVT"));
        assert!(contains(
            aml,
            &[0x86, b'\\', 0x2e, b'_', b'S', b'B', b'_', b'P', b'W', b'R', b'B', 0x0a, 0x80]
        ));
        // Its interrupt.
        assert!(contains(
            aml,
            &[
                0x89,
                0x06,
                0x00,
                0x03,
                0x01,
                POWER_BUTTON_GSI as u8,
                0x00,
                0x00,
                0x00
            ]
        ));
    }

    #[test]
    fn dsdt_declares_virtio_mmio_devices() {
        let mem = guest_memory();
        let devices = [
            VirtioMmioAcpi {
                base: 0xd000_0000,
                size: 0x1000,
                gsi: 5,
            },
            VirtioMmioAcpi {
                base: 0xd000_1000,
                size: 0x1000,
                gsi: 6,
            },
        ];
        setup_acpi_tables(&mem, 1, &devices).unwrap();
        let xsdt_addr = u64::from_le_bytes(read(&mem, RSDP_START + 24, 8).try_into().unwrap());
        let fadt_addr = u64::from(u32::from_le_bytes(
            read(&mem, xsdt_addr + 36, 4).try_into().unwrap(),
        ));
        let dsdt_addr = u64::from_le_bytes(read(&mem, fadt_addr + 140, 8).try_into().unwrap());
        let len = u32::from_le_bytes(read(&mem, dsdt_addr + 4, 4).try_into().unwrap());
        let dsdt = read(&mem, dsdt_addr, len as usize);
        assert_eq!(sum(&dsdt), 0, "DSDT checksum");
        assert!(contains(&dsdt, b"VR00") && contains(&dsdt, b"VR01"));
        assert!(contains(&dsdt, b"LNRO0005"));
        // Memory32Fixed: read-write, base 0xd0001000, length 0x1000.
        assert!(contains(
            &dsdt,
            &[0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00]
        ));
        // Extended interrupt, edge, active high: GSI 6.
        assert!(contains(
            &dsdt,
            &[0x89, 0x06, 0x00, 0x03, 0x01, 0x06, 0x00, 0x00, 0x00]
        ));
    }

    #[test]
    fn dsdt_declares_com1_with_its_ports_and_irq() {
        let (_, tables) = setup(1);
        let aml = &tables.dsdt.1[SDT_HEADER..];
        assert_eq!(aml[0], 0x10, "starts with a Scope: {aml:02x?}");
        assert!(contains(aml, b"_SB_"), "{aml:02x?}");
        assert!(contains(aml, b"COM1"));
        // _HID EISAID("PNP0501"), DWordPrefix + compressed id.
        assert!(contains(
            aml,
            &[b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01]
        ));
        // I/O port descriptor: decode16, 0x3f8..0x3f8, align 1, 8 ports.
        assert!(contains(
            aml,
            &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
        ));
        // Extended interrupt descriptor: consumer, edge, active high,
        // exclusive, one interrupt: GSI 4.
        assert!(contains(
            aml,
            &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00]
        ));
    }

    /// Checks the MADT of `num_cpus` vCPUs.
    fn check_madt(num_cpus: u8) {
        let (_, tables) = setup(num_cpus);
        let madt = &tables.madt.1;
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        assert_eq!(u64::from(u32_at(madt, 36)), APIC_START);
        assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");

        let mut lapic_ids = Vec::new();
        let mut ioapics = Vec::new();
        let mut offset = 44;
        while offset < madt.len() {
            let (kind, len) = (madt[offset], madt[offset + 1] as usize);
            let entry = &madt[offset..offset + len];
            match kind {
                0 => {
                    assert_eq!(len, 8);
                    assert_eq!(entry[2], entry[3], "processor UID = APIC id");
                    assert_eq!(u32_at(entry, 4), 1, "enabled");
                    lapic_ids.push(entry[3]);
                }
                1 => {
                    assert_eq!(len, 12);
                    ioapics.push((entry[2], u32_at(entry, 4), u32_at(entry, 8)));
                }
                other => panic!("unexpected MADT structure type {other}"),
            }
            offset += len;
        }
        assert_eq!(offset, madt.len());
        assert_eq!(lapic_ids, (0..num_cpus).collect::<Vec<_>>());
        assert_eq!(ioapics, [(num_cpus, IOAPIC_START as u32, 0)]);
    }

    #[test]
    fn madt_one_cpu() {
        check_madt(1);
    }

    #[test]
    fn madt_four_cpus() {
        check_madt(4);
    }

    #[test]
    fn madt_max_cpus() {
        check_madt(MAX_CPUS);
    }

    #[test]
    fn invalid_cpu_counts() {
        let mem = guest_memory();
        for n in [0, 255] {
            assert!(matches!(
                setup_acpi_tables(&mem, n, &[]),
                Err(AcpiError::TooManyCpus(m)) if m == n
            ));
        }
    }

    #[test]
    fn memory_not_covering_acpi_area() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(matches!(
            setup_acpi_tables(&mem, 1, &[]),
            Err(AcpiError::Write(_))
        ));
    }

    #[test]
    fn area_overflow() {
        let mut area = AcpiArea::new();
        let size = usize::try_from(ACPI_AREA_END - RSDP_START).unwrap();
        assert_eq!(area.reserve(size).unwrap(), GuestAddress(RSDP_START));
        assert!(matches!(
            area.reserve(1),
            Err(AcpiError::TablesTooLarge { end }) if end == ACPI_AREA_END + 1
        ));
    }
}
