//! Architecture-specific parts of building a VM. Each architecture is a module
//! with the same shape (`layout`, `boot`, vCPU setup); [`current`] is the one
//! this VMM was built for, and the few values the arch-neutral builder needs
//! are re-exported here.
//!
//! `aarch64`'s data-only parts (memory map, `Image` header, device tree) build
//! on every host so their unit tests run in x86_64 CI too.

pub mod aarch64;
pub mod file_map;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use self::aarch64 as current;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64 as current;

/// Address of the first virtio-mmio window.
pub const VIRTIO_MMIO_START: u64 = current::layout::VIRTIO_MMIO_START;

/// Interrupt lines (GSIs) for virtio-mmio devices: IOAPIC pins below the
/// power button on x86_64, SPIs with KVM's default GSI = SPI routing on
/// aarch64.
#[cfg(target_arch = "x86_64")]
pub const VIRTIO_MMIO_GSIS: std::ops::Range<u32> =
    current::layout::VIRTIO_MMIO_GSI_START..current::layout::POWER_BUTTON_GSI;
/// Interrupt lines (GSIs) for virtio-mmio devices: IOAPIC pins below the
/// power button on x86_64, SPIs with KVM's default GSI = SPI routing on
/// aarch64.
#[cfg(target_arch = "aarch64")]
pub const VIRTIO_MMIO_GSIS: std::ops::Range<u32> =
    current::layout::VIRTIO_MMIO_SPI_START..current::layout::VIRTIO_MMIO_SPI_END;
