//! The KVM side of an arm64 VM: the in-kernel GICv3, vCPU init (PSCI 0.2+,
//! secondaries powered off), boot registers, and PSCI SYSTEM_SUSPEND.

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, kvm_enable_cap,
    kvm_vcpu_init, PSR_MODE_EL1h, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2,
    KVM_CAP_ARM_SYSTEM_SUSPEND, KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR,
    KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_REG_ARM64, KVM_REG_ARM_CORE,
    KVM_REG_SIZE_U64, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VcpuFd, VmFd};

use super::layout;

/// Errors setting up the GIC or a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuSetupError {
    /// A KVM ioctl failed.
    #[error(transparent)]
    Kvm(#[from] crate::arch::KvmStepError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuSetupError {
    move |source| VcpuSetupError::Kvm(crate::arch::KvmStepError { what, source })
}

/// PSTATE bits: D, A, I, F masked.
const PSTATE_DAIF: u64 = 0x3c0;
/// PSTATE at entry: EL1 with SP_EL1, all exceptions masked (booting.rst).
pub const BOOT_PSTATE: u64 = PSTATE_DAIF | PSR_MODE_EL1h as u64;

/// `KVM_{GET,SET}_ONE_REG` id of the 64-bit core register at byte `offset`
/// of `struct kvm_regs`.
const fn core_reg(offset: u64) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4)
}

/// General-purpose register `xN`.
const fn xreg(n: u64) -> u64 {
    core_reg(n * 8)
}
/// The program counter (`regs.pc`, after 31 x-registers and `sp`).
const PC: u64 = core_reg(32 * 8);
/// PSTATE (`regs.pstate`).
const PSTATE: u64 = core_reg(33 * 8);

/// Creates the in-kernel GICv3 for `num_cpus` vCPUs (call after creating
/// the vCPUs) and initializes it.
pub fn create_gic(vm: &VmFd, num_cpus: u8) -> Result<DeviceFd, VcpuSetupError> {
    let mut device = kvm_create_device {
        type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
        fd: 0,
        flags: 0,
    };
    let gic = vm
        .create_device(&mut device)
        .map_err(kvm("KVM_CREATE_DEVICE (GICv3)"))?;
    let dist: u64 = layout::GIC_DIST_BASE;
    let redist: u64 = layout::GIC_REDIST_BASE;
    let nr_irqs: u32 = layout::GIC_NR_IRQS;
    debug_assert!(num_cpus <= layout::MAX_CPUS);
    for (group, attr, addr, what) in [
        (
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            u64::from(KVM_VGIC_V3_ADDR_TYPE_DIST),
            &dist as *const u64 as u64,
            "GIC distributor address",
        ),
        (
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            u64::from(KVM_VGIC_V3_ADDR_TYPE_REDIST),
            &redist as *const u64 as u64,
            "GIC redistributor address",
        ),
        (
            KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
            0,
            &nr_irqs as *const u32 as u64,
            "GIC interrupt count",
        ),
        (
            KVM_DEV_ARM_VGIC_GRP_CTRL,
            u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
            0,
            "GIC init",
        ),
    ] {
        // `addr` points at `dist`, `redist` or `nr_irqs`, which outlive the
        // ioctl inside `set_device_attr`.
        gic.set_device_attr(&kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr,
        })
        .map_err(kvm(what))?;
    }
    Ok(gic)
}

/// Asks KVM to hand PSCI SYSTEM_SUSPEND to the VMM
/// (`KVM_EXIT_SYSTEM_EVENT`/`KVM_SYSTEM_EVENT_SUSPEND`); without it KVM
/// does not advertise SYSTEM_SUSPEND and the guest has no suspend-to-RAM.
/// Returns whether KVM accepted.
pub fn enable_system_suspend(vm: &VmFd) -> bool {
    let cap = kvm_enable_cap {
        cap: KVM_CAP_ARM_SYSTEM_SUSPEND,
        ..Default::default()
    };
    match vm.enable_cap(&cap) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "KVM_CAP_ARM_SYSTEM_SUSPEND unavailable ({e}): the guest cannot suspend"
            );
            false
        }
    }
}

/// The `KVM_ARM_VCPU_INIT` argument for vCPU `id`: the host's preferred
/// target with PSCI 0.2+ (KVM then implements PSCI 1.x); every vCPU but the
/// first starts powered off until the guest's PSCI CPU_ON.
pub fn vcpu_init(vm: &VmFd, id: u8) -> Result<kvm_vcpu_init, VcpuSetupError> {
    let mut kvi = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut kvi)
        .map_err(kvm("KVM_ARM_PREFERRED_TARGET"))?;
    kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    if id > 0 {
        kvi.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
    }
    Ok(kvi)
}

fn set_reg(vcpu: &VcpuFd, id: u64, value: u64, what: &'static str) -> Result<(), VcpuSetupError> {
    vcpu.set_one_reg(id, &value.to_le_bytes())
        .map(|_| ())
        .map_err(kvm(what))
}

fn get_reg(vcpu: &VcpuFd, id: u64, what: &'static str) -> Result<u64, VcpuSetupError> {
    let mut bytes = [0u8; 8];
    vcpu.get_one_reg(id, &mut bytes).map_err(kvm(what))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Points the (initialized) boot vCPU at the kernel: PC = `entry`, x0 =
/// the device tree, EL1h with DAIF masked.
pub fn set_boot_regs(vcpu: &VcpuFd, entry: u64, fdt: u64) -> Result<(), VcpuSetupError> {
    enter_at(vcpu, entry, fdt)
}

fn enter_at(vcpu: &VcpuFd, pc: u64, x0: u64) -> Result<(), VcpuSetupError> {
    set_reg(vcpu, PSTATE, BOOT_PSTATE, "set PSTATE")?;
    set_reg(vcpu, PC, pc, "set PC")?;
    set_reg(vcpu, xreg(0), x0, "set x0")?;
    for n in 1..4 {
        set_reg(vcpu, xreg(n), 0, "clear x1-x3")?;
    }
    Ok(())
}

/// The PSCI SYSTEM_SUSPEND call's arguments: where the guest resumes
/// (x1) and the context id it gets back in x0 (x2).
pub fn suspend_args(vcpu: &VcpuFd) -> Result<(u64, u64), VcpuSetupError> {
    Ok((
        get_reg(vcpu, xreg(1), "read x1")?,
        get_reg(vcpu, xreg(2), "read x2")?,
    ))
}

/// Wakes a vCPU that called SYSTEM_SUSPEND the way PSCI specifies: a reset
/// vCPU (`KVM_ARM_VCPU_INIT` again: MMU and caches off) entering `entry`
/// at EL1h with `context` in x0.
pub fn wake_at(
    vcpu: &VcpuFd,
    kvi: &kvm_vcpu_init,
    entry: u64,
    context: u64,
) -> Result<(), VcpuSetupError> {
    let mut kvi = *kvi;
    kvi.features[0] &= !(1 << KVM_ARM_VCPU_POWER_OFF);
    vcpu.vcpu_init(&kvi)
        .map_err(kvm("KVM_ARM_VCPU_INIT (wake)"))?;
    enter_at(vcpu, entry, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_register_ids_match_the_kernel() {
        // Values from the KVM API docs (arm64 core registers).
        assert_eq!(xreg(0), 0x6030_0000_0010_0000);
        assert_eq!(xreg(1), 0x6030_0000_0010_0002);
        assert_eq!(PC, 0x6030_0000_0010_0040);
        assert_eq!(PSTATE, 0x6030_0000_0010_0042);
        assert_eq!(BOOT_PSTATE, 0x3c5);
    }
}
