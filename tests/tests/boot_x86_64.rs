//! End-to-end boot tests of the VMM inside the nested x86_64 test host.
//!
//! These tests are `#[ignore]`d so that plain `cargo test --workspace` stays a
//! unit-test run; `cargo xtask test` builds the VMM and the images and runs them
//! with `--include-ignored`. Run by hand (after `cargo xtask images`):
//! `cargo test -p vmstack-tests --test boot_x86_64 -- --include-ignored`.
//! Without images they fail with an instruction to run `cargo xtask test`.
//!
//! One outer boot runs the scenarios `boot-poweroff,boot-reboot` and is shared
//! by all tests here.

use vmm_protocol::VmmExitCode;
use vmstack_tests::scenario::SharedRun;

static RUN: SharedRun = SharedRun::new(&["boot-poweroff", "boot-reboot"]);

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn poweroff() {
    RUN.section("boot-poweroff", 0)
        .expect("VMSTACK-GUEST-INIT-OK")
        .expect("nproc=2")
        .expect("vmm: exit reason: poweroff");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn reboot() {
    RUN.section("boot-reboot", VmmExitCode::Reset.code().into())
        .expect("VMSTACK-GUEST-INIT-OK")
        .expect("vmm: exit reason: reboot");
}
