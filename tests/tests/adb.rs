//! adb into a guest (Debian's adb client, `vmm adb-proxy` or the VMM's
//! own forwarded TCP port, our guest adbd over vsock) in the x86_64 test host; checks in
//! `vmstack_tests::assert::adb`. `#[ignore]`d like every nested test:
//! `cargo xtask test` runs it.

use vmstack_tests::assert::adb;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, adb::SCENARIOS)
        .scenario_timeout(adb::SCENARIO_TIMEOUT);
    tests: {
        connects_and_lists_the_device => adb::connects_and_lists_the_device,
        the_proxy_runs_sandboxed_without_capabilities =>
            adb::the_proxy_runs_sandboxed_without_capabilities,
        shell_returns_exit_status_and_both_streams =>
            adb::shell_returns_exit_status_and_both_streams,
        two_shells_run_at_once => adb::two_shells_run_at_once,
        push_and_pull_64_mib_keep_the_checksum => adb::push_and_pull_64_mib_keep_the_checksum,
        the_vmms_own_forwarded_port_serves_adb => adb::the_vmms_own_forwarded_port_serves_adb,
        malformed_packets_close_only_their_connection =>
            adb::malformed_packets_close_only_their_connection,
        reboot_is_a_power_request_the_arbiter_allows =>
            adb::reboot_is_a_power_request_the_arbiter_allows,
    }
}
