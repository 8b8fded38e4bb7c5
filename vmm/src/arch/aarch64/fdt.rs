//! The device tree an arm64 guest boots with: memory, CPUs (PSCI), the
//! in-kernel GICv3, the architected timer, the UART, the PL061 GPIO with the
//! power key (`gpio-keys`, as on QEMU `virt`), the virtio-mmio devices and
//! `/chosen` (command line, initrd, console).
//!
//! Interrupts are edge-triggered: devices raise them through irqfds, which
//! KVM delivers as a pulse (a level-triggered line would drop back before
//! the guest saw it).

use vm_fdt::FdtWriter;

use super::boot::BootError;
use super::layout;

/// `interrupts` cell: shared peripheral interrupt.
const GIC_SPI: u32 = 0;
/// `interrupts` cell: private peripheral interrupt.
const GIC_PPI: u32 = 1;
/// `interrupts` cell: edge, low to high.
const IRQ_TYPE_EDGE_RISING: u32 = 1;
/// `interrupts` cell: level, active high.
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// phandle of the GIC, the interrupt parent of everything.
const GIC_PHANDLE: u32 = 1;
/// phandle of the fixed clock the PL061 (an AMBA device) needs.
const APB_CLOCK_PHANDLE: u32 = 2;
/// phandle of the PL061.
const GPIO_PHANDLE: u32 = 3;
/// `linux,code` of the power key (`KEY_POWER`).
const KEY_POWER: u32 = 116;
/// Input clock of the 16550A (the PC's 1.8432 MHz; only divisors matter).
const SERIAL_CLOCK_HZ: u32 = 1_843_200;

/// One virtio-mmio device in the device tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioFdt {
    /// Base address of its register window.
    pub base: u64,
    /// Size of the window.
    pub size: u64,
    /// Its SPI number.
    pub spi: u32,
}

/// What the device tree describes.
#[derive(Debug, Clone)]
pub struct FdtConfig<'a> {
    /// Number of vCPUs.
    pub num_cpus: u8,
    /// Guest RAM in bytes (from [`layout::RAM_START`]).
    pub mem_size: u64,
    /// Kernel command line.
    pub cmdline: &'a str,
    /// Start and size of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// The virtio-mmio devices.
    pub virtio: &'a [VirtioMmioFdt],
}

/// The `reg` of vCPU `index` in `/cpus`: its MPIDR affinity as KVM sets it
/// (Aff0 = index % 16, Aff1 = index / 16).
pub fn cpu_mpidr(index: u8) -> u32 {
    (u32::from(index >> 4) << 8) | u32::from(index & 0xf)
}

fn irq(kind: u32, number: u32, flags: u32) -> [u32; 3] {
    [kind, number, flags]
}

/// Builds the flattened device tree blob.
pub fn create_fdt(config: &FdtConfig<'_>) -> Result<Vec<u8>, BootError> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", config.cmdline)?;
    fdt.property_string("stdout-path", &format!("/uart@{:x}", layout::SERIAL_BASE))?;
    if let Some((start, size)) = config.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", start + size)?;
    }
    fdt.end_node(chosen)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", layout::RAM_START))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[layout::RAM_START, config.mem_size])?;
    fdt.end_node(memory)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for index in 0..config.num_cpus {
        let mpidr = cpu_mpidr(index);
        let cpu = fdt.begin_node(&format!("cpu@{mpidr:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        // Secondaries start powered off; the guest brings them up with
        // PSCI CPU_ON, which KVM handles in the kernel.
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u32("reg", mpidr)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    // KVM implements PSCI 1.x behind HVC (SYSTEM_SUSPEND only once the VMM
    // enabled KVM_CAP_ARM_SYSTEM_SUSPEND).
    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    let redist_size = layout::GIC_REDIST_SIZE_PER_CPU * u64::from(config.num_cpus);
    let gic = fdt.begin_node(&format!("intc@{:x}", layout::GIC_DIST_BASE))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_array_u64(
        "reg",
        &[
            layout::GIC_DIST_BASE,
            layout::GIC_DIST_SIZE,
            layout::GIC_REDIST_BASE,
            redist_size,
        ],
    )?;
    fdt.property_u32("#redistributor-regions", 1)?;
    fdt.property_array_u32(
        "interrupts",
        &irq(GIC_PPI, layout::GIC_MAINTENANCE_PPI, IRQ_TYPE_LEVEL_HIGH),
    )?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(gic)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_null("always-on")?;
    let cells: Vec<u32> = layout::TIMER_PPIS
        .iter()
        .flat_map(|ppi| irq(GIC_PPI, *ppi, IRQ_TYPE_LEVEL_HIGH))
        .collect();
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.end_node(timer)?;

    let uart = fdt.begin_node(&format!("uart@{:x}", layout::SERIAL_BASE))?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[layout::SERIAL_BASE, layout::SERIAL_SIZE])?;
    fdt.property_u32("clock-frequency", SERIAL_CLOCK_HZ)?;
    fdt.property_u32("reg-shift", 0)?;
    fdt.property_u32("reg-io-width", 1)?;
    fdt.property_array_u32(
        "interrupts",
        &irq(GIC_SPI, layout::SERIAL_SPI, IRQ_TYPE_EDGE_RISING),
    )?;
    fdt.end_node(uart)?;

    // The power key: line POWER_KEY_LINE of a PL061, reported by gpio-keys.
    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", 24_000_000)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(APB_CLOCK_PHANDLE)?;
    fdt.end_node(clock)?;
    let gpio = fdt.begin_node(&format!("pl061@{:x}", layout::GPIO_BASE))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl061".into(), "arm,primecell".into()],
    )?;
    fdt.property_array_u64("reg", &[layout::GPIO_BASE, layout::GPIO_SIZE])?;
    fdt.property_array_u32(
        "interrupts",
        &irq(GIC_SPI, layout::GPIO_SPI, IRQ_TYPE_EDGE_RISING),
    )?;
    fdt.property_null("gpio-controller")?;
    fdt.property_u32("#gpio-cells", 2)?;
    fdt.property_u32("clocks", APB_CLOCK_PHANDLE)?;
    fdt.property_string("clock-names", "apb_pclk")?;
    fdt.property_phandle(GPIO_PHANDLE)?;
    fdt.end_node(gpio)?;
    let keys = fdt.begin_node("gpio-keys")?;
    fdt.property_string("compatible", "gpio-keys")?;
    let key = fdt.begin_node("poweroff")?;
    fdt.property_string("label", "GPIO Key Poweroff")?;
    fdt.property_u32("linux,code", KEY_POWER)?;
    fdt.property_array_u32(
        "gpios",
        &[GPIO_PHANDLE, u32::from(layout::POWER_KEY_LINE), 0],
    )?;
    fdt.end_node(key)?;
    fdt.end_node(keys)?;

    for dev in config.virtio {
        let node = fdt.begin_node(&format!("virtio_mmio@{:x}", dev.base))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u64("reg", &[dev.base, dev.size])?;
        fdt.property_array_u32("interrupts", &irq(GIC_SPI, dev.spi, IRQ_TYPE_EDGE_RISING))?;
        fdt.property_null("dma-coherent")?;
        fdt.end_node(node)?;
    }

    fdt.end_node(root)?;
    let blob = fdt.finish()?;
    if blob.len() as u64 > layout::FDT_MAX_SIZE {
        return Err(BootError::FdtTooLarge(blob.len()));
    }
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn find(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn blob_has_header_and_every_node() {
        let virtio = [
            VirtioMmioFdt {
                base: layout::VIRTIO_MMIO_START,
                size: 0x1000,
                spi: 16,
            },
            VirtioMmioFdt {
                base: layout::VIRTIO_MMIO_START + 0x1000,
                size: 0x1000,
                spi: 17,
            },
        ];
        let blob = create_fdt(&FdtConfig {
            num_cpus: 2,
            mem_size: 256 << 20,
            cmdline: "console=ttyS0 guest.scenario=poweroff",
            initrd: Some((0x8f00_0000, 0x10_0000)),
            virtio: &virtio,
        })
        .unwrap();
        assert_eq!(be32(&blob, 0), 0xd00d_feed, "FDT magic");
        assert_eq!(be32(&blob, 4) as usize, blob.len(), "totalsize");
        for name in [
            &b"cpu@0\0"[..],
            b"cpu@1\0",
            b"memory@80000000\0",
            b"intc@8000000\0",
            b"uart@9000000\0",
            b"virtio_mmio@a000000\0",
            b"virtio_mmio@a001000\0",
            b"psci\0",
            b"timer\0",
            b"console=ttyS0 guest.scenario=poweroff\0",
            b"arm,gic-v3\0",
            b"ns16550a\0",
            b"virtio,mmio\0",
            b"hvc\0",
            b"linux,initrd-start\0",
            b"/uart@9000000\0",
            b"pl061@9020000\0",
            b"arm,pl061\0",
            b"gpio-keys\0",
            b"apb_pclk\0",
        ] {
            assert!(
                find(&blob, name),
                "{:?} missing",
                String::from_utf8_lossy(name)
            );
        }
        assert!(!find(&blob, b"cpu@2\0"));
        // initrd-end = start + size, as a big-endian u64 property value.
        assert!(find(&blob, &0x8f10_0000u64.to_be_bytes()));
    }

    #[test]
    fn no_initrd_means_no_initrd_properties() {
        let blob = create_fdt(&FdtConfig {
            num_cpus: 1,
            mem_size: 128 << 20,
            cmdline: "",
            initrd: None,
            virtio: &[],
        })
        .unwrap();
        assert!(!find(&blob, b"linux,initrd-start"));
        assert!(!find(&blob, b"virtio_mmio@"));
    }

    #[test]
    fn mpidr_follows_kvm() {
        assert_eq!(cpu_mpidr(0), 0);
        assert_eq!(cpu_mpidr(15), 15);
        assert_eq!(cpu_mpidr(16), 0x100);
        assert_eq!(cpu_mpidr(33), 0x201);
    }
}
