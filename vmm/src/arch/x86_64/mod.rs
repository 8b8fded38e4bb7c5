//! x86_64: memory map, ACPI, Linux boot protocol and vCPU registers.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod elf;
pub mod layout;
pub mod regs;

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Errors configuring an x86_64 vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuSetupError {
    /// A KVM ioctl failed.
    #[error(transparent)]
    Kvm(#[from] crate::arch::KvmStepError),
    /// Writing page tables or the GDT failed.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// Building the CPUID or MSR list failed.
    #[error(transparent)]
    Cpuid(#[from] cpuid::CpuidError),
    /// KVM refused some of the boot MSRs.
    #[error("KVM accepted only {set} of {wanted} boot MSRs")]
    Msrs {
        /// MSRs accepted.
        set: usize,
        /// MSRs requested.
        wanted: usize,
    },
}

/// Local APIC register offsets and delivery modes for LINT0/LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn set_apic_delivery_mode(regs: &mut [libc::c_char], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as libc::c_char;
    }
}

/// Sets up vCPU `id` of `num_cpus` to enter the kernel at `entry` in 64-bit
/// mode (application processors wait for INIT/SIPI in the in-kernel APIC).
/// `tsc_deadline`: KVM emulates the TSC-deadline timer
/// (`KVM_CAP_TSC_DEADLINE_TIMER`), so CPUID advertises it.
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    supported_cpuid: &CpuId,
    id: u8,
    num_cpus: u8,
    tsc_deadline: bool,
    entry: GuestAddress,
) -> Result<(), VcpuSetupError> {
    let kvm = |what| move |source| VcpuSetupError::Kvm(crate::arch::KvmStepError { what, source });
    let topology = cpuid::VcpuTopology {
        cpu_index: id,
        cpu_count: num_cpus,
        tsc_deadline,
    };
    let cpuid = cpuid::normalize(supported_cpuid, topology)?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;

    let msrs = cpuid::boot_msrs()?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if set != msrs.as_slice().len() {
        return Err(VcpuSetupError::Msrs {
            set,
            wanted: msrs.as_slice().len(),
        });
    }

    let sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&regs::setup_sregs(mem, sregs)?)
        .map_err(kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs::boot_regs(entry))
        .map_err(kvm("KVM_SET_REGS"))?;
    vcpu.set_fpu(&regs::boot_fpu())
        .map_err(kvm("KVM_SET_FPU"))?;

    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    set_apic_delivery_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_apic_delivery_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_delivery_mode_is_replaced_in_place() {
        let mut regs = [0 as libc::c_char; 1024];
        regs[APIC_LVT0] = 0x10;
        regs[APIC_LVT0 + 1] = 0x05; // old mode 5, must be replaced
        regs[APIC_LVT0 + 2] = 0x01; // mask bit 16 untouched
        set_apic_delivery_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x10);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT0 + 2] as u8, 0x01);
    }
}
