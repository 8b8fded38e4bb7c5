//! virtio-console with each host backend (checks in
//! `vmstack_tests::assert::console`). The arm64 run (`all_arch_arm64`) is
//! slow: `cargo xtask test` runs it only with `--all-arch`.

use vmstack_tests::assert::console;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, console::SCENARIOS),
    all_arch_arm64 => SharedRun::on(Arch::Aarch64, console::SCENARIOS);
    tests: {
        file_backend_gets_the_guest_console_and_direct_writes =>
            console::file_backend_gets_the_guest_console_and_direct_writes,
        unix_backend_carries_input_and_output => console::unix_backend_carries_input_and_output,
        stdio_backend_takes_stdin_from_the_serial_port =>
            console::stdio_backend_takes_stdin_from_the_serial_port,
    }
}
