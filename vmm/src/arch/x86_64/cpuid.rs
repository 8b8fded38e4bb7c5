//! CPUID and MSR setup for each vCPU.

use kvm_bindings::{kvm_msr_entry, CpuId, Msrs};

/// Errors building CPUID or MSR lists.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// KVM's MSR list wrapper rejected the entries.
    #[error("cannot build the boot MSR list: {0:?}")]
    Msrs(vmm_sys_util::fam::Error),
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Topology level types in leaves 0xb/0x1f.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `count` items.
fn bits_for(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Patches KVM's supported CPUID for vCPU `cpu_id` of `num_cpus`: APIC IDs,
/// one socket with `num_cpus` single-threaded cores, and the hypervisor bit.
pub fn patch_cpuid(cpuid: &mut CpuId, cpu_id: u8, num_cpus: u8) {
    let apic_id = u32::from(cpu_id);
    let cpus = u32::from(num_cpus);
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (cpus << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if num_cpus > 1 {
                    entry.edx |= EDX_HTT;
                }
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
                entry.edx = apic_id;
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = (LEVEL_TYPE_SMT << 8) | entry.index;
                    }
                    1 => {
                        entry.eax = bits_for(cpus);
                        entry.ebx = cpus;
                        entry.ecx = (LEVEL_TYPE_CORE << 8) | entry.index;
                    }
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
            }
            LEAF_AMD_SIZE_IDS => {
                // ECX[7:0]: number of cores - 1; ECX[15:12]: APIC ID size.
                entry.ecx = (entry.ecx & !0xf0ff) | (bits_for(cpus) << 12) | (cpus - 1);
            }
            _ => {}
        }
    }
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 0x1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 0x6;

/// MSR values a vCPU starts with (zeroed syscall MSRs, fast strings, and
/// write-back MTRR default so the guest does not run uncached).
pub fn boot_msrs() -> Result<Msrs, CpuidError> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    Msrs::from_entries(&[
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ])
    .map_err(CpuidError::Msrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn apic_ids_and_topology_are_patched() {
        let mut cpuid = CpuId::from_entries(&[
            leaf(LEAF_FEATURES, 0),
            leaf(LEAF_EXT_TOPOLOGY, 0),
            leaf(LEAF_EXT_TOPOLOGY, 1),
            leaf(LEAF_EXT_TOPOLOGY, 2),
            leaf(LEAF_AMD_SIZE_IDS, 0),
        ])
        .unwrap();
        patch_cpuid(&mut cpuid, 3, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert!(e[1..4].iter().all(|l| l.edx == 3));
        assert_eq!((e[2].eax, e[2].ebx), (2, 4));
        assert_eq!(e[3].ebx, 0);
        assert_eq!(e[4].ecx & 0xff, 3);
    }

    #[test]
    fn bits_for_counts() {
        assert_eq!([1, 2, 3, 4, 5, 255].map(bits_for), [0, 1, 2, 2, 3, 8]);
    }

    #[test]
    fn msrs_include_mtrr_write_back() {
        let msrs = boot_msrs().unwrap();
        assert!(msrs
            .as_slice()
            .iter()
            .any(|m| m.index == MSR_MTRR_DEF_TYPE && m.data == MTRR_ENABLE_WB));
    }
}
