//! The KVM VM: guest memory, and on x86_64 the in-kernel interrupt
//! controllers and PIT (aarch64 creates its GIC after the vCPUs, in
//! `arch::aarch64::kvm`).

use kvm_bindings::kvm_userspace_memory_region;
#[cfg(target_arch = "x86_64")]
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Errors creating the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM_CREATE_VM failed.
    #[error("cannot create the KVM VM: {0}")]
    Create(kvm_ioctls::Error),
    /// Allocating guest memory failed.
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    Memory {
        /// Requested size.
        mib: u64,
        /// The allocation error.
        source: vm_memory::mmap::FromRangesError,
    },
    /// Registering guest memory with KVM failed.
    #[error("cannot register guest memory with KVM: {0}")]
    RegisterMemory(kvm_ioctls::Error),
    /// Setting up the in-kernel irqchip, PIT or TSS failed.
    #[error("cannot set up {what}: {source}")]
    Setup {
        /// Which step failed.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
}

/// Where KVM puts the real-mode TSS on Intel (three pages below 4 GiB, inside
/// the MMIO gap so no RAM is lost).
#[cfg(target_arch = "x86_64")]
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// A VM with its guest memory registered.
pub struct Vm {
    fd: VmFd,
    memory: GuestMemoryMmap,
}

impl Vm {
    /// Creates the VM (on x86_64 with its interrupt controllers and PIT)
    /// and registers RAM at `ranges`.
    pub fn new(kvm: &Kvm, ranges: &[(vm_memory::GuestAddress, usize)]) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        #[cfg(target_arch = "x86_64")]
        {
            let setup = |what| move |source| VmError::Setup { what, source };
            fd.set_tss_address(KVM_TSS_ADDRESS)
                .map_err(setup("the TSS address"))?;
            fd.create_irq_chip()
                .map_err(setup("the in-kernel irqchip"))?;
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            fd.create_pit2(pit).map_err(setup("the in-kernel PIT"))?;
        }

        let mib = ranges.iter().map(|r| r.1 as u64).sum::<u64>() >> 20;
        let memory = GuestMemoryMmap::from_ranges(ranges)
            .map_err(|source| VmError::Memory { mib, source })?;
        advise_huge_pages(&memory);
        for (slot, region) in memory.iter().enumerate() {
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mmap owned by `memory`, which this
            // struct keeps alive for as long as the VM fd exists, and slots do
            // not overlap because `from_ranges` rejects overlapping ranges.
            unsafe { fd.set_user_memory_region(region_desc) }.map_err(VmError::RegisterMemory)?;
        }
        Ok(Self { fd, memory })
    }

    /// The KVM VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }
}

/// Asks for transparent huge pages on guest RAM (`MADV_HUGEPAGE`), as QEMU
/// and Cloud Hypervisor do: on a host whose THP mode is `madvise` (Ubuntu's
/// and Android's kernels) guest memory would otherwise be 4 KiB pages, and
/// a guest on 4 KiB host pages boots markedly slower under nested
/// virtualization (docs/notes/2026-12-05-boot-profile.md). Where THP is
/// `always` this changes nothing; where it is `never` or absent the call
/// fails and the memory stays as it is (logged, not an error).
fn advise_huge_pages(memory: &GuestMemoryMmap) {
    for region in memory.iter() {
        // SAFETY: the range is exactly one live anonymous mapping owned by
        // `memory`; MADV_HUGEPAGE only changes how the kernel backs it, never
        // its contents.
        let rc = unsafe {
            libc::madvise(
                region.as_ptr().cast(),
                region.len() as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "MADV_HUGEPAGE on {} MiB of guest RAM: {}",
                region.len() >> 20,
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    /// The `VmFlags` of the mapping that contains `addr`, from
    /// `/proc/self/smaps`.
    fn vm_flags(addr: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            if let Some((start, end)) = range {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = (start..end).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.split_whitespace().map(str::to_string).collect();
                }
            }
        }
        panic!("no mapping contains {addr:#x}");
    }

    #[test]
    #[cfg_attr(
        target_arch = "aarch64",
        ignore = "needs a native kernel: under qemu-user, how `cargo xtask test` runs the aarch64 unit tests, madvise and /proc/self/smaps are emulated (run with --ignored on an arm64 host)"
    )]
    fn guest_ram_is_advised_to_use_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("skipped: this kernel has no transparent huge pages");
            return;
        }
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let addr = memory.iter().next().unwrap().as_ptr() as usize;
        // `hg`: MADV_HUGEPAGE was applied (whatever the host's THP mode).
        assert!(!vm_flags(addr).contains(&"hg".to_string()));
        advise_huge_pages(&memory);
        assert!(
            vm_flags(addr).contains(&"hg".to_string()),
            "{:?}",
            vm_flags(addr)
        );
    }
}
