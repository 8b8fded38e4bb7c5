//! CPUID normalisation and boot MSRs for each vCPU.
//!
//! Every vCPU gets KVM's supported CPUID (`KVM_GET_SUPPORTED_CPUID`) with
//! the changes below, made leaf by leaf by [`normalize_entries`] (a pure
//! function over the entry list, so each leaf is unit-tested); every leaf
//! not named here passes unchanged. The topology is one socket of
//! `cpu_count` single-threaded cores, APIC ID = vCPU index. docs/x86_64.md
//! has the same table for users.
//!
//! | leaf | change | why |
//! |---|---|---|
//! | 0x1 | EBX: CLFLUSH line 64 B, `cpu_count` logical IDs, initial APIC ID; ECX: PDCM off, TSC-deadline on if KVM emulates it, HYPERVISOR on; EDX: HTT if more than one vCPU | the guest's APIC/TSC setup and topology; TSC-deadline is never in the supported list (KVM reports it as `KVM_CAP_TSC_DEADLINE_TIMER`), without it Linux programs the slower one-shot LAPIC timer |
//! | 0x4 | EAX[25:14] sharing: L1/L2 per core, L3 by all vCPUs; EAX[31:26] cores - 1 | cache sharing that matches our topology instead of the host's |
//! | 0xb, 0x1f | level 0 SMT (1 thread), level 1 core (`cpu_count`), higher levels invalid; EDX x2APIC ID | the host's values describe the host's sockets |
//! | 0xd | components not enabled in XCR0/XSS zeroed; subleaf 0 ECX = the largest end of an enabled component | sizes consistent with the enabled bits (EBX of subleaves 0/1 is rewritten by KVM from the guest's XCR0/XSS) |
//! | 0x40000000 | "KVMKVMKVM" signature, present even if KVM did not list it | the guest finds kvmclock and the PV features in 0x40000001 |
//! | 0x80000008 | ECX: cores - 1, APIC ID size | AMD's view of the same topology |
//! | 0x8000001d | as 0x4 (EAX[25:14]) | AMD's cache topology leaf |
//! | 0x8000001e | EAX extended APIC ID, EBX core ID / 1 thread, ECX one node | AMD's extended APIC ID leaf |

use kvm_bindings::{kvm_cpuid_entry2, kvm_msr_entry, CpuId, Msrs};

/// Errors building CPUID or MSR lists.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// KVM's MSR list wrapper rejected the entries.
    #[error("cannot build the boot MSR list: {0:?}")]
    Msrs(vmm_sys_util::fam::Error),
    /// KVM's CPUID list wrapper rejected the entries.
    #[error("cannot build the CPUID list: {0:?}")]
    Cpuid(vmm_sys_util::fam::Error),
}

/// What the normalisation needs to know about one vCPU and the host's KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuTopology {
    /// This vCPU's index, also its APIC ID.
    pub cpu_index: u8,
    /// Number of vCPUs of the VM.
    pub cpu_count: u8,
    /// Whether KVM emulates the TSC-deadline timer (`KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_XSAVE: u32 = 0xd;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const EBX_CLFLUSH_64_BYTES: u32 = 8 << 8;
const ECX_PDCM: u32 = 1 << 15;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Topology level types in leaves 0xb/0x1f.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the entry depends on ECX (the subleaf).
const FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// Size of the legacy XSAVE area plus the XSAVE header.
const XSAVE_LEGACY_AND_HEADER: u32 = 512 + 64;

/// Bits needed to number `count` items.
fn bits_for(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Returns KVM's supported CPUID normalised for one vCPU (see the module
/// documentation for what changes).
pub fn normalize(supported: &CpuId, topo: VcpuTopology) -> Result<CpuId, CpuidError> {
    let mut entries = supported.as_slice().to_vec();
    normalize_entries(&mut entries, topo);
    CpuId::from_entries(&entries).map_err(CpuidError::Cpuid)
}

/// Normalises a CPUID entry list in place, leaf by leaf.
pub fn normalize_entries(entries: &mut Vec<kvm_cpuid_entry2>, topo: VcpuTopology) {
    ensure_hypervisor_leaf(entries);
    normalize_xsave(entries);
    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => feature_info(entry, topo),
            LEAF_CACHE_PARAMS => cache_sharing(entry, topo, true),
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => extended_topology(entry, topo),
            LEAF_HYPERVISOR => hypervisor_signature(entry),
            LEAF_AMD_SIZE_IDS => amd_size_ids(entry, topo),
            LEAF_AMD_CACHE_TOPOLOGY => cache_sharing(entry, topo, false),
            LEAF_AMD_EXT_APIC_ID => amd_extended_apic_id(entry, topo),
            _ => {}
        }
    }
}

/// Leaf 0x1: APIC ID, logical processor count and CLFLUSH size in EBX;
/// TSC-deadline (when KVM emulates it), HYPERVISOR on and PDCM off in ECX
/// (PDCM would send the guest to IA32_PERF_CAPABILITIES, which we do not
/// model); HTT in EDX when there is more than one vCPU.
fn feature_info(entry: &mut kvm_cpuid_entry2, topo: VcpuTopology) {
    let apic_id = u32::from(topo.cpu_index);
    let cpus = u32::from(topo.cpu_count);
    entry.ebx = (entry.ebx & 0xff) | EBX_CLFLUSH_64_BYTES | (cpus << 16) | (apic_id << 24);
    entry.ecx |= ECX_HYPERVISOR;
    entry.ecx &= !ECX_PDCM;
    if topo.tsc_deadline {
        entry.ecx |= ECX_TSC_DEADLINE;
    } else {
        entry.ecx &= !ECX_TSC_DEADLINE;
    }
    if cpus > 1 {
        entry.edx |= EDX_HTT;
    } else {
        entry.edx &= !EDX_HTT;
    }
}

/// Leaves 0x4 (Intel) and 0x8000001d (AMD), one subleaf per cache: EAX[7:5]
/// is the cache level, EAX[25:14] how many logical processors share it
/// minus one: 0 for L1/L2 (one thread per core), every vCPU for L3 and up.
/// Intel's EAX[31:26] is the number of cores in the package minus one.
fn cache_sharing(entry: &mut kvm_cpuid_entry2, topo: VcpuTopology, intel: bool) {
    const SHARING_MASK: u32 = 0xfff << 14;
    const CORES_MASK: u32 = 0x3f << 26;
    let cpus = u32::from(topo.cpu_count.max(1));
    let cache_type = entry.eax & 0x1f;
    if cache_type == 0 {
        return; // no more caches
    }
    let level = (entry.eax >> 5) & 0x7;
    let sharing = if level >= 3 { cpus - 1 } else { 0 };
    entry.eax = (entry.eax & !SHARING_MASK) | ((sharing & 0xfff) << 14);
    if intel {
        entry.eax = (entry.eax & !CORES_MASK) | (((cpus - 1).min(0x3f)) << 26);
    }
}

/// Leaves 0xb and 0x1f: level 0 is SMT with one thread per core, level 1 the
/// cores (`cpu_count`, shift = bits to number them), later levels invalid;
/// EDX is the x2APIC ID in every subleaf.
fn extended_topology(entry: &mut kvm_cpuid_entry2, topo: VcpuTopology) {
    let cpus = u32::from(topo.cpu_count);
    entry.edx = u32::from(topo.cpu_index);
    match entry.index {
        0 => {
            entry.eax = 0;
            entry.ebx = 1;
            entry.ecx = LEVEL_TYPE_SMT << 8;
        }
        1 => {
            entry.eax = bits_for(cpus);
            entry.ebx = cpus;
            entry.ecx = (LEVEL_TYPE_CORE << 8) | 1;
        }
        index => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = index & 0xff;
        }
    }
}

/// Leaf 0xd: a component (subleaf 2..63) not enabled by subleaf 0's
/// EDX:EAX (XCR0) or subleaf 1's EDX:ECX (IA32_XSS) is zeroed, so the guest
/// never sizes state it cannot enable; subleaf 0's ECX (largest XSAVE area
/// for every XCR0 component) is recomputed from the remaining user
/// components. EBX of subleaves 0 and 1 (size for the current XCR0 / XCR0 |
/// XSS) is left alone: KVM rewrites it from the guest's own XCR0 and XSS.
fn normalize_xsave(entries: &mut [kvm_cpuid_entry2]) {
    let find = |entries: &[kvm_cpuid_entry2], index| {
        entries
            .iter()
            .position(|e| e.function == LEAF_XSAVE && e.index == index)
    };
    let Some(main) = find(entries, 0) else {
        return;
    };
    let xcr0 = u64::from(entries[main].eax) | (u64::from(entries[main].edx) << 32);
    let xss = find(entries, 1).map_or(0, |i| {
        u64::from(entries[i].ecx) | (u64::from(entries[i].edx) << 32)
    });
    let mut user_end = XSAVE_LEGACY_AND_HEADER;
    for entry in entries.iter_mut() {
        if entry.function != LEAF_XSAVE || entry.index < 2 {
            continue;
        }
        let bit = 1u64.checked_shl(entry.index).unwrap_or(0);
        if (xcr0 | xss) & bit == 0 {
            (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0);
        } else if xcr0 & bit != 0 {
            user_end = user_end.max(entry.ebx.saturating_add(entry.eax));
        }
    }
    entries[main].ecx = user_end;
}

/// Adds leaf 0x40000000 if KVM did not list it (it always does, this keeps
/// the signature independent of that).
fn ensure_hypervisor_leaf(entries: &mut Vec<kvm_cpuid_entry2>) {
    if !entries.iter().any(|e| e.function == LEAF_HYPERVISOR) {
        entries.push(kvm_cpuid_entry2 {
            function: LEAF_HYPERVISOR,
            ..Default::default()
        });
    }
}

/// Leaf 0x40000000: the KVM signature, and EAX (highest hypervisor leaf) at
/// least 0x40000001 when KVM's feature leaf is there.
fn hypervisor_signature(entry: &mut kvm_cpuid_entry2) {
    [entry.ebx, entry.ecx, entry.edx] = KVM_SIGNATURE;
    entry.eax = entry.eax.max(LEAF_KVM_FEATURES);
    entry.flags &= !FLAG_SIGNIFICANT_INDEX;
}

/// Leaf 0x80000008 ECX: number of cores minus one (bits 7:0) and the APIC ID
/// size (bits 15:12).
fn amd_size_ids(entry: &mut kvm_cpuid_entry2, topo: VcpuTopology) {
    let cpus = u32::from(topo.cpu_count.max(1));
    entry.ecx = (entry.ecx & !0xf0ff) | (bits_for(cpus) << 12) | (cpus - 1);
}

/// Leaf 0x8000001e: EAX the extended APIC ID, EBX the core ID with one
/// thread per core (bits 15:8 = 0), ECX one node (node 0, one per package).
fn amd_extended_apic_id(entry: &mut kvm_cpuid_entry2, topo: VcpuTopology) {
    let id = u32::from(topo.cpu_index);
    entry.eax = id;
    entry.ebx = id & 0xff;
    entry.ecx = 0;
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

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn topo(cpu_index: u8, cpu_count: u8) -> VcpuTopology {
        VcpuTopology {
            cpu_index,
            cpu_count,
            tsc_deadline: true,
        }
    }

    fn one(mut e: kvm_cpuid_entry2, topo: VcpuTopology) -> kvm_cpuid_entry2 {
        let mut v = vec![e];
        normalize_entries(&mut v, topo);
        e = v[0];
        e
    }

    #[test]
    fn leaf_1_apic_id_count_clflush_and_flags() {
        let mut e = leaf(LEAF_FEATURES, 0);
        e.ebx = 0xffff_ff42; // brand index 0x42 kept
        e.ecx = ECX_PDCM;
        let e = one(e, topo(3, 4));
        assert_eq!(e.ebx, (3 << 24) | (4 << 16) | (8 << 8) | 0x42);
        assert_eq!(e.ecx & ECX_PDCM, 0);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn leaf_1_tsc_deadline_only_when_kvm_emulates_it_and_no_htt_for_one_cpu() {
        let mut e = leaf(LEAF_FEATURES, 0);
        e.ecx = ECX_TSC_DEADLINE;
        e.edx = EDX_HTT;
        let no_deadline = VcpuTopology {
            tsc_deadline: false,
            ..topo(0, 1)
        };
        let e = one(e, no_deadline);
        assert_eq!(e.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn leaf_4_cache_sharing_follows_the_vcpu_count() {
        let cache = |level: u32| {
            let mut e = leaf(LEAF_CACHE_PARAMS, level);
            // Type data/unified, host says 63 sharing, 31 cores.
            e.eax = 1 | (level << 5) | (63 << 14) | (31 << 26);
            e
        };
        let l1 = one(cache(1), topo(0, 4));
        let l3 = one(cache(3), topo(0, 4));
        assert_eq!((l1.eax >> 14) & 0xfff, 0);
        assert_eq!((l3.eax >> 14) & 0xfff, 3);
        assert_eq!(l1.eax >> 26, 3);
        assert_eq!(l1.eax & 0xff, 1 | (1 << 5));
        // The terminating null subleaf stays null.
        assert_eq!(one(leaf(LEAF_CACHE_PARAMS, 4), topo(0, 4)).eax, 0);
    }

    #[test]
    fn leaf_8000001d_cache_sharing_keeps_reserved_bits() {
        let mut e = leaf(LEAF_AMD_CACHE_TOPOLOGY, 3);
        e.eax = 3 | (3 << 5) | (15 << 14);
        let e = one(e, topo(1, 2));
        assert_eq!((e.eax >> 14) & 0xfff, 1);
        assert_eq!(e.eax >> 26, 0);
    }

    #[test]
    fn leaves_b_and_1f_describe_one_socket_of_single_thread_cores() {
        for function in [LEAF_EXT_TOPOLOGY, LEAF_V2_EXT_TOPOLOGY] {
            let mut v: Vec<_> = (0..3).map(|i| leaf(function, i)).collect();
            normalize_entries(&mut v, topo(3, 5));
            let v: Vec<_> = v.into_iter().filter(|e| e.function == function).collect();
            assert!(v.iter().all(|e| e.edx == 3));
            assert_eq!((v[0].eax, v[0].ebx, v[0].ecx), (0, 1, 1 << 8));
            assert_eq!((v[1].eax, v[1].ebx, v[1].ecx), (3, 5, (2 << 8) | 1));
            assert_eq!((v[2].eax, v[2].ebx, v[2].ecx), (0, 0, 2));
        }
    }

    #[test]
    fn leaf_d_zeroes_disabled_components_and_recomputes_the_maximum() {
        let mut main = leaf(LEAF_XSAVE, 0);
        main.eax = 0b111 | (1 << 9); // x87, SSE, AVX, PKRU
        main.ecx = 9999;
        let mut sup = leaf(LEAF_XSAVE, 1);
        sup.ecx = 1 << 11; // CET user in XSS
        let comp = |i: u32, size: u32, offset: u32| {
            let mut e = leaf(LEAF_XSAVE, i);
            (e.eax, e.ebx) = (size, offset);
            e
        };
        let mut v = vec![
            main,
            sup,
            comp(2, 256, 576),
            comp(5, 64, 1088), // opmask: not enabled
            comp(9, 8, 2688),  // PKRU
            comp(11, 16, 0),   // supervisor, enabled in XSS
            comp(17, 8192, 0), // not enabled anywhere
        ];
        normalize_entries(&mut v, topo(0, 1));
        let get = |i| {
            *v.iter()
                .find(|e| e.function == LEAF_XSAVE && e.index == i)
                .unwrap()
        };
        assert_eq!(get(0).ecx, 2696);
        assert_eq!((get(2).eax, get(2).ebx), (256, 576));
        assert_eq!((get(5).eax, get(5).ebx), (0, 0));
        assert_eq!(get(11).eax, 16);
        assert_eq!(get(17).eax, 0);
    }

    #[test]
    fn leaf_d_without_components_is_the_legacy_size() {
        let mut main = leaf(LEAF_XSAVE, 0);
        main.eax = 0b11;
        let mut v = vec![main];
        normalize_entries(&mut v, topo(0, 1));
        assert_eq!(v[0].ecx, XSAVE_LEGACY_AND_HEADER);
    }

    #[test]
    fn leaf_40000000_is_the_kvm_signature_added_if_missing() {
        let mut v = vec![leaf(LEAF_FEATURES, 0)];
        normalize_entries(&mut v, topo(0, 1));
        let h = v.iter().find(|e| e.function == LEAF_HYPERVISOR).unwrap();
        let mut sig = Vec::new();
        for r in [h.ebx, h.ecx, h.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        assert_eq!(h.eax, LEAF_KVM_FEATURES);
        // Present with a higher maximum leaf: kept.
        let mut e = leaf(LEAF_HYPERVISOR, 0);
        e.eax = 0x4000_0010;
        assert_eq!(one(e, topo(0, 1)).eax, 0x4000_0010);
    }

    #[test]
    fn leaf_80000008_counts_cores_and_apic_id_bits() {
        let mut e = leaf(LEAF_AMD_SIZE_IDS, 0);
        e.ecx = 0xffff_ffff;
        let e = one(e, topo(0, 4));
        assert_eq!(e.ecx & 0xff, 3);
        assert_eq!((e.ecx >> 12) & 0xf, 2);
        assert_eq!(e.ecx & 0xffff_0f00, 0xffff_0f00);
    }

    #[test]
    fn leaf_8000001e_extended_apic_id() {
        let mut e = leaf(LEAF_AMD_EXT_APIC_ID, 0);
        (e.eax, e.ebx, e.ecx) = (99, 0x0100, 0x0101);
        let e = one(e, topo(2, 4));
        assert_eq!((e.eax, e.ebx, e.ecx), (2, 2, 0));
    }

    #[test]
    fn other_leaves_pass_unchanged() {
        let mut e = leaf(0x7, 0);
        (e.eax, e.ebx, e.ecx, e.edx) = (1, 2, 3, 4);
        let mut v = vec![e];
        normalize_entries(&mut v, topo(1, 2));
        assert_eq!((v[0].eax, v[0].ebx, v[0].ecx, v[0].edx), (1, 2, 3, 4));
    }

    #[test]
    fn normalize_keeps_every_supported_entry() {
        let supported =
            CpuId::from_entries(&[leaf(LEAF_FEATURES, 0), leaf(LEAF_HYPERVISOR, 0)]).unwrap();
        let out = normalize(&supported, topo(0, 2)).unwrap();
        assert_eq!(out.as_slice().len(), 2);
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
