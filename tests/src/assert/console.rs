//! virtio-console (guest `hvc0`, stock `virtio_console` driver) with each
//! host backend (scenarios `console-file`, `console-unix`, `console-stdio`).

use super::{guest, VMM};
use crate::scenario::SharedRun;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["console-file", "console-unix", "console-stdio"];

/// The file backend gets the guest's console (`/init`'s markers, the kernel
/// log) and what the guest writes to `/dev/hvc0`, complete and in order.
pub fn file_backend_gets_the_guest_console_and_direct_writes(run: &SharedRun) {
    let s = run.section("console-file", 0);
    // /init's own output (its /dev/console is hvc0) and a line written to
    // /dev/hvc0 by the guest scenario, both read back from the file.
    s.expect_eq(&guest("hvc0-file", "init"), "ok")
        .expect_eq(&guest("hvc0-file", "hvc0_direct"), "ok")
        .expect_vmm_exit(VMM, "poweroff", 0);
    // hvc0 is a kernel console too.
    if s.number("hvc0_kernel_lines") == 0 {
        s.fail("no kernel log lines in the hvc0 file");
    }
    // 5000 lines written in one go arrive complete and in order.
    assert_eq!(s.number("hvc0_bulk_lines"), 5000, "bulk lines in the file");
    s.expect_eq("hvc0_bulk_md5", s.value(&guest(VMM, "bulk_md5")));
}

/// The unix socket backend carries a client's line to the guest and the
/// guest's answer back.
pub fn unix_backend_carries_input_and_output(run: &SharedRun) {
    let s = run.section("console-unix", 0);
    // The client's line reached the guest's /dev/hvc0 (reported on the
    // serial port) and the guest's answer on hvc0 reached the client.
    s.expect_eq(&guest(VMM, "serial_got"), "VMSTACK-HOST-TO-GUEST-4711")
        .expect_eq(
            &guest("hvc0-client", "hvc0_got"),
            "VMSTACK-HOST-TO-GUEST-4711",
        )
        .expect_eq(&guest("hvc0-client", "init"), "ok")
        .expect_eq("client_rc", "0")
        .expect_vmm_exit(VMM, "poweroff", 0)
        // Removed when the VMM exited.
        .expect_absent("socket_left_behind");
}

/// The stdio backend takes the VMM's stdin (the serial port gets none).
pub fn stdio_backend_takes_stdin_from_the_serial_port(run: &SharedRun) {
    let s = run.section("console-stdio", 0);
    s.expect_eq(&guest(VMM, "init"), "ok")
        .expect_eq(&guest(VMM, "serial_got"), "VMSTACK-STDIN-TO-GUEST-0815")
        .expect_eq(&guest(VMM, "hvc0_got"), "VMSTACK-STDIN-TO-GUEST-0815")
        .expect_vmm_exit(VMM, "poweroff", 0);
}
