//! Boot to the guest's `/init` and the guest's own power-off and reboot
//! (scenarios `boot-poweroff`, `boot-reboot`).

use vmm_protocol::VmmExitCode;

use super::{guest, VMM};
use crate::scenario::SharedRun;
use crate::Arch;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["boot-poweroff", "boot-reboot"];

/// The x86_64 test host's: [`SCENARIOS`] and the ELF kernel's `boot-elf`.
pub const X86_64_SCENARIOS: &[&str] = &["boot-poweroff", "boot-reboot", "boot-elf"];

/// The log line of a kernel filled behind the guest
/// (`vmm/src/arch/kernel_fill.rs`).
const KERNEL_FILLED: &str = "kernel filled behind the guest";

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
        // The `Image` was filled behind the running guest (the VMM runs
        // as root in the test host: it may open the userfaultfd).
        s.expect_log(VMM, KERNEL_FILLED);
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

/// x86_64: the guest boots from the ELF `vmlinux`, its segments filled
/// behind the running guest, to `/init` twice in one VMM process (a held
/// poweroff, `resume`, the second poweroff allowed): each boot's fill ran
/// to its end and the guest ran the kernel it filled.
pub fn elf_kernel_is_filled_behind_the_guest_on_every_boot(run: &SharedRun) {
    let s = run.section("boot-elf", 0);
    s.expect_contains("resume", "resumed")
        .expect_log(VMM, "restarting the VM")
        .expect_count(&guest(VMM, "init"), 2)
        .expect_vmm_exit(VMM, "poweroff", 0);
    let fills = s
        .all(&format!("{VMM}.log"))
        .into_iter()
        .filter(|l| l.contains(KERNEL_FILLED))
        .count();
    if fills != 2 {
        s.fail(&format!(
            "{fills} {KERNEL_FILLED:?} log lines, expected 2 (one per boot)"
        ));
    }
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
