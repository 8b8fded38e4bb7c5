//! Boot to the guest's `/init` and the guest's own power-off and reboot
//! (scenarios `boot-poweroff`, `boot-reboot`).

use vmm_protocol::VmmExitCode;

use super::{guest, VMM};
use crate::scenario::SharedRun;
use crate::Arch;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["boot-poweroff", "boot-reboot"];

/// The guest boots with 2 vCPUs to its `/init` (the boot timer saw it)
/// and powers off (x86: ACPI; arm64: PSCI SYSTEM_OFF): the VMM exits 0
/// with reason `poweroff`.
pub fn poweroff(run: &SharedRun) {
    let s = run.section("boot-poweroff", 0);
    s.expect_eq(&guest(VMM, "init"), "ok")
        .expect_eq(&guest(VMM, "nproc"), "2")
        .expect_log(VMM, "boot-timer: guest init reached after")
        .expect_log(VMM, "guest power request: poweroff")
        .expect_vmm_exit(VMM, "poweroff", 0);
    if run.arch() == Arch::Aarch64 {
        // The guest kernel's view of our device tree.
        s.expect_kernel_message("Machine model: linux,dummy-virt")
            .expect_kernel_message("psci: PSCIv1.1 detected in firmware.")
            .expect_kernel_message("ttyS0 at MMIO 0x9000000");
    }
}

/// The guest reboots (x86: reset; arm64: PSCI SYSTEM_RESET): the VMM
/// exits 32 with reason `reboot`.
pub fn reboot(run: &SharedRun) {
    let reset = i32::from(VmmExitCode::Reset.code());
    run.section("boot-reboot", reset)
        .expect_eq(&guest(VMM, "init"), "ok")
        .expect_log(VMM, "guest power request: reboot")
        .expect_vmm_exit(VMM, "reboot", reset);
}

/// The arm64 test host runs KVM in protected mode (pKVM): its kernel says
/// so (the point of this check is that kernel message).
pub fn pkvm(run: &SharedRun) {
    let r = run.get();
    // 6.12 says "hVHE" on CPUs with VHE (QEMU's -cpu max), "nVHE" otherwise.
    let protected = r.console.lines().any(|l| {
        l.contains("kvm [")
            && (crate::marker::is_kernel_message(l, "Protected nVHE mode initialized successfully")
                || crate::marker::is_kernel_message(
                    l,
                    "Protected hVHE mode initialized successfully",
                ))
    });
    if !protected {
        panic!(
            "{}",
            r.failure_report("the arm64 test host did not report pKVM (protected mode) in dmesg")
        );
    }
    // The runner's own header line names the command line it booted.
    if !r.console.contains("kvm-arm.mode=protected") {
        panic!(
            "{}",
            r.failure_report("the test host was not booted with kvm-arm.mode=protected")
        );
    }
}
