//! libtrusty over vsock through our VMM to `trustyd` (checks in
//! `vmstack_tests::assert::trusty`).

use vmstack_tests::assert::trusty;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, trusty::SCENARIOS);
    tests: {
        echo_messages_up_to_the_vsock_limit_come_back =>
            trusty::echo_messages_up_to_the_vsock_limit_come_back,
        an_unknown_port_fails_tipc_connect => trusty::an_unknown_port_fails_tipc_connect,
        gatekeeper_enroll_verify_wrong_password_and_throttle =>
            trusty::gatekeeper_enroll_verify_wrong_password_and_throttle,
        a_trustyd_restart_keeps_the_failure_record_and_the_device_secret =>
            trusty::a_trustyd_restart_keeps_the_failure_record_and_the_device_secret,
        sockets_and_state_are_private => trusty::sockets_and_state_are_private,
    }
}
