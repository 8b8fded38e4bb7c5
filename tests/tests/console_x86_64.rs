//! virtio-console (guest `hvc0`, stock `virtio_console` driver) with each
//! host backend, inside the nested x86_64 test host (one outer boot shared
//! by the tests here). `#[ignore]`d like the boot tests: `cargo xtask test`
//! runs them.

use vmstack_tests::scenario::{Section, SharedRun};
use vmstack_tests::Arch;

/// This file's test host. `arm64_virtio.rs` includes this file as a module
/// and re-runs its tests on arm64 under its own `ARCH`.
#[allow(dead_code)]
const ARCH: Arch = Arch::X86_64;

static RUN: SharedRun = SharedRun::on(
    crate::ARCH,
    &["console-file", "console-unix", "console-stdio"],
);

/// Checks that `key=` has the same value as `other_key=`.
fn same(s: &Section<'_>, key: &str, other_key: &str) {
    let (a, b) = (s.value(key), s.value(other_key));
    if a != b {
        s.fail(&format!("{key}={a} but {other_key}={b}"));
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn file_backend_gets_the_guest_console_and_direct_writes() {
    let s = RUN.section("console-file", 0);
    // /init's own output (its /dev/console is hvc0) and a line written to
    // /dev/hvc0 by the guest scenario, both read back from the file.
    s.expect("hvc0-file: VMSTACK-GUEST-INIT-OK")
        .expect("hvc0-file: VMSTACK-HVC0-DIRECT-OK")
        .expect("vmm: exit reason: poweroff");
    // hvc0 is a kernel console too.
    if s.number("hvc0_kernel_lines") == 0 {
        s.fail("no kernel log lines in the hvc0 file");
    }
    // 5000 lines written in one go arrive complete and in order.
    assert_eq!(s.number("hvc0_bulk_lines"), 5000, "bulk lines in the file");
    same(&s, "hvc0_bulk_md5", "bulk_md5");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn unix_backend_carries_input_and_output() {
    let s = RUN.section("console-unix", 0);
    // The client's line reached the guest's /dev/hvc0 (reported on the
    // serial port) and the guest's answer on hvc0 reached the client.
    s.expect("serial-guest-got=VMSTACK-HOST-TO-GUEST-4711")
        .expect("hvc0-client: hvc0-guest-got=VMSTACK-HOST-TO-GUEST-4711")
        .expect("hvc0-client: VMSTACK-GUEST-INIT-OK")
        .expect("client_rc=0")
        .expect("vmm: exit reason: poweroff");
    if s.result.contains("left behind") {
        s.fail("the console socket was not removed when the VMM exited");
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn stdio_backend_takes_stdin_from_the_serial_port() {
    let s = RUN.section("console-stdio", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("serial-guest-got=VMSTACK-STDIN-TO-GUEST-0815")
        .expect("hvc0-guest-got=VMSTACK-STDIN-TO-GUEST-0815")
        .expect("vmm: exit reason: poweroff");
}
