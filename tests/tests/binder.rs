//! The VHAL power handshake through kernel binder and RPC binder on the
//! arm64 pKVM test host (checks in `vmstack_tests::assert::binder`; the
//! x86_64 path runs inside the two-VM `sysmgr` tests).

use vmstack_tests::assert::binder;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    arm64 => SharedRun::on(Arch::Aarch64, binder::SCENARIOS)
        .scenario_timeout(std::time::Duration::from_secs(600));
    tests: {
        the_vhal_handshake_through_kernel_binder_and_rpc_binder =>
            binder::the_vhal_handshake_through_kernel_binder_and_rpc_binder,
    }
}
