//! virtio-net over a tap (checks in `vmstack_tests::assert::net`). x86_64
//! only: the arm64 images have no tap/virtio-net set-up yet.

use vmstack_tests::assert::net;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, net::SCENARIOS)
        .scenario_timeout(net::SCENARIO_TIMEOUT);
    tests: {
        guest_driver_binds_with_offloads => net::guest_driver_binds_with_offloads,
        guest_pings_the_host => net::guest_pings_the_host,
        tcp_guest_to_host_is_bit_exact => net::tcp_guest_to_host_is_bit_exact,
        tcp_host_to_guest_is_bit_exact => net::tcp_host_to_guest_is_bit_exact,
        guest_saw_no_receive_errors => net::guest_saw_no_receive_errors,
        tap_survives_an_in_process_restart => net::tap_survives_an_in_process_restart,
        tap_errors_are_one_line_and_exit_1 => net::tap_errors_are_one_line_and_exit_1,
    }
}
