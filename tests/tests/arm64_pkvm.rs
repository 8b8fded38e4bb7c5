//! The VMM on arm64: inside the aarch64 test host (QEMU/TCG `-M
//! virt,virtualization=on`, Debian arm64 kernel with
//! `kvm-arm.mode=protected`) our static aarch64 VMM boots the Debian arm64
//! guest on pKVM. One outer boot runs the scenarios shared with x86_64
//! (same scripts, same assertions): boot + poweroff, boot + reboot, the
//! power button (a `gpio-keys` key on a PL061 instead of ACPI), a
//! poweroff held by the arbiter then restarted in-process (new VM, vCPUs and
//! vGIC), and the held suspend (PSCI SYSTEM_SUSPEND instead of ACPI S3).
//!
//! `#[ignore]`d like every nested test; `cargo xtask test` builds the
//! aarch64 VMM and images and runs them. By hand:
//! `cargo xtask images --arch aarch64` (with the VMM built by
//! `cargo build --release --target aarch64-unknown-linux-musl -p vmm`), then
//! `cargo test -p vmstack-tests --test arm64_pkvm -- --include-ignored`.

use std::time::Duration;

use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

/// Each inner arm64 boot takes ~30 s under nested emulation.
static RUN: SharedRun = SharedRun::for_arch(
    Arch::Aarch64,
    &[
        "boot-poweroff",
        "boot-reboot",
        "power-button",
        "arbiter",
        "suspend",
        "binder-handshake",
    ],
    // The binder handshake boots a guest under sysmgr and runs a shutdown.
    Duration::from_secs(420),
);

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn host_runs_kvm_in_protected_mode() {
    let run = RUN.get();
    // 6.12 says "hVHE" on CPUs with VHE (QEMU's -cpu max), "nVHE" otherwise.
    let protected = run.console.lines().any(|l| {
        l.contains("kvm [")
            && (l.contains("Protected nVHE mode initialized successfully")
                || l.contains("Protected hVHE mode initialized successfully"))
    });
    if !protected {
        panic!(
            "{}",
            run.failure_report("the arm64 test host did not report pKVM (protected mode) in dmesg")
        );
    }
    assert!(run.console.contains("kvm-arm.mode=protected"));
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn poweroff_is_a_psci_system_off() {
    let s = RUN.section("boot-poweroff", 0);
    s.expect("Machine model: linux,dummy-virt")
        .expect("psci: PSCIv1.1 detected in firmware.")
        .expect("ttyS0 at MMIO 0x9000000")
        .expect("boot-timer: guest init reached after")
        .expect("VMSTACK-GUEST-INIT-OK")
        .expect("nproc=2")
        .expect("guest power request: poweroff")
        .expect("vmm: exit reason: poweroff");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn reboot_is_a_psci_system_reset() {
    RUN.section("boot-reboot", 32)
        .expect("VMSTACK-GUEST-INIT-OK")
        .expect("guest power request: reboot")
        .expect("vmm: exit reason: reboot");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn power_button_shuts_the_guest_down_gracefully() {
    // The assertions of control_x86_64.rs for the same scenario.
    RUN.section("power-button", 0)
        .expect("READY-FOR-BUTTON")
        .expect("power button pressed")
        .expect("GOT-POWER-KEY")
        .expect("vmm: exit reason: poweroff");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn held_poweroff_is_virtually_off_then_boots_again_on_resume() {
    // The assertions of control_x86_64.rs for the same scenario.
    let s = RUN.section("arbiter", 0);
    s.expect("event power-request id=1 kind=poweroff")
        .expect("decide-1: decided")
        .expect("status: state=virtually-off arbitrated=true pending=0 boots=1")
        .expect("status-after-2s: state=virtually-off")
        .expect("resume: resumed")
        .expect("restarting the VM")
        .expect("event power-request id=2 kind=poweroff")
        .expect("boots=2")
        .expect("decide-2: decided")
        .expect("vmm: exit reason: poweroff");
    let inits = s.result.output.matches("VMSTACK-GUEST-INIT-OK").count();
    if inits != 2 {
        s.fail(&format!("guest booted {inits} times, expected 2"));
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn system_suspend_is_held_until_resume_and_wakes_at_the_entry_point() {
    let s = RUN.section("suspend", 0);
    s.expect("mem_sleep=s2idle [deep]")
        .expect("SUSPENDING")
        .expect("guest suspended (resume at")
        .expect("event power-request id=1 kind=suspend")
        .expect("status: state=suspended")
        .expect("resume: resumed")
        .expect("waking the guest at")
        .expect("suspend_rc=0")
        .expect("RESUMED")
        .expect("vmm: exit reason: poweroff");
    let out = &s.result.output;
    let (Some(held), Some(resumed), Some(back)) = (
        out.find("status: state=suspended"),
        out.find("resuming-now"),
        out.find("RESUMED"),
    ) else {
        s.fail("markers missing");
    };
    if !(held < resumed && resumed < back) {
        s.fail("the guest resumed before the VMM was told to wake it");
    }
}

/// The VHAL power handshake through binder on pKVM: the android guest's
/// `vhal-binder-test` on kernel binder (`rsb_hub`, `sysmgr-binderd`), RPC
/// binder over vsock to `sysmgr` in the arm64 test host.
#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn the_vhal_handshake_through_kernel_binder_and_rpc_binder() {
    let s = RUN.section("binder-handshake", 0);
    s.expect("binder: sysmgr up")
        .expect("cli-list| 1\tsysmgr: [vmstack.sysmgr.ISystemManager]")
        .expect("vhal: REPORT WAIT_FOR_VHAL")
        .expect("binder-handshake: android up, ON through binder")
        .expect("vhal: REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY)")
        .expect("watch| onApPowerStateReq SHUTDOWN_PREPARE(SHUTDOWN_ONLY) [1, 3]")
        .expect("vhal: REPORT SHUTDOWN_START")
        .expect("AP_POWER_STATE_REQ FINISHED")
        .expect("binder-handshake: system powered off");
}
