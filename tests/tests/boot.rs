//! Boot to the guest's `/init`, guest poweroff and reboot, in the x86_64
//! test host and in the arm64 pKVM test host (checks in
//! `vmstack_tests::assert::boot`).
//!
//! Like every nested test these are `#[ignore]`d, so that plain
//! `cargo test --workspace` stays a unit-test run; `cargo xtask test`
//! builds the VMMs and images and runs them with `--include-ignored`. By
//! hand, after `cargo xtask images` (and `--arch aarch64`):
//! `cargo test -p vmstack-tests --test boot -- --include-ignored`. Without
//! images they fail with an instruction to run `cargo xtask test`.

use vmstack_tests::assert::boot;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, boot::X86_64_SCENARIOS),
    // Each inner arm64 boot takes ~30 s under nested emulation (several
    // times that on a loaded machine): 360 s per scenario.
    arm64 => SharedRun::on(Arch::Aarch64, boot::SCENARIOS);
    tests: {
        poweroff => boot::poweroff,
        reboot => boot::reboot,
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn arm64_host_runs_kvm_in_protected_mode() {
    boot::pkvm(&arm64::RUN);
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn x86_64_elf_kernel_is_filled_behind_the_guest_on_every_boot() {
    boot::elf_kernel_is_filled_behind_the_guest_on_every_boot(&x86_64::RUN);
}
