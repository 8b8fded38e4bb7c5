//! Architecture-specific parts of building a VM. Each architecture is a module
//! with the same shape (`layout`, `boot`, vCPU setup); [`current`] is the one
//! this VMM was built for, and the few values the arch-neutral builder needs
//! are re-exported here.
//!
//! `aarch64`'s data-only parts (memory map, `Image` header, device tree) build
//! on every host so their unit tests run in x86_64 CI too.

pub mod aarch64;
pub mod file_map;
pub mod kernel_fill;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use self::aarch64 as current;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64 as current;

/// A KVM ioctl of a vCPU or interrupt-controller set-up step failed
/// (both architectures' `VcpuSetupError::Kvm`).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct KvmStepError {
    /// Which step failed.
    pub what: &'static str,
    /// The KVM error.
    pub source: kvm_ioctls::Error,
}

/// The kernel command line of at most `max_size` bytes: `default_args`,
/// then each of the user's parameters (both architectures build it alike).
pub fn kernel_cmdline(
    max_size: usize,
    default_args: &str,
    user_params: &[String],
) -> Result<linux_loader::cmdline::Cmdline, linux_loader::cmdline::Error> {
    let mut cmdline = linux_loader::cmdline::Cmdline::new(max_size)?;
    cmdline.insert_str(default_args)?;
    for p in user_params {
        cmdline.insert_str(p)?;
    }
    Ok(cmdline)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_joins_defaults_and_params_within_the_size() {
        let params = ["quiet".to_string(), "a=b".to_string()];
        let c = kernel_cmdline(2048, "console=ttyS0", &params).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 quiet a=b"
        );
        assert!(kernel_cmdline(16, "console=ttyS0", &params).is_err());
    }
}
