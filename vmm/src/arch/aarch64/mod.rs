//! aarch64: memory map, arm64 `Image` boot, the device tree, the in-kernel
//! GICv3 and vCPU setup (PSCI).
//!
//! `layout`, `boot` and `fdt` are plain data and build (and are unit-tested)
//! on every host; the KVM calls in `kvm` exist only on aarch64.
#![cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]

pub mod boot;
pub mod fdt;
#[cfg(target_arch = "aarch64")]
pub mod kvm;
pub mod layout;

#[cfg(target_arch = "aarch64")]
pub use kvm::VcpuSetupError;
