//! The system manager with two real VMs, the MCU simulator and the VHAL
//! handshake (checks in `vmstack_tests::assert::sysmgr`). x86_64 only.

use vmstack_tests::assert::sysmgr;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, sysmgr::SCENARIOS)
        .scenario_timeout(sysmgr::SCENARIO_TIMEOUT);
    tests: {
        two_vm_b_android_reboot_restarts_only_its_vm =>
            sysmgr::two_vm_b_android_reboot_restarts_only_its_vm,
        two_vm_each_vmm_runs_as_its_guests_own_user =>
            sysmgr::two_vm_each_vmm_runs_as_its_guests_own_user,
        two_vm_c_android_poweroff_is_held_while_the_cluster_needs_the_system =>
            sysmgr::two_vm_c_android_poweroff_is_held_while_the_cluster_needs_the_system,
        two_vm_a_ignition_off_handshake_then_cluster_deadline_then_power_off =>
            sysmgr::two_vm_a_ignition_off_handshake_then_cluster_deadline_then_power_off,
        two_vm_e_kill_9_of_sysmgr_mid_shutdown_then_restart_completes_it =>
            sysmgr::two_vm_e_kill_9_of_sysmgr_mid_shutdown_then_restart_completes_it,
        two_vm_d_android_that_stops_postponing_is_escalated_and_hard_stopped =>
            sysmgr::two_vm_d_android_that_stops_postponing_is_escalated_and_hard_stopped,
        two_vm_android_side_through_kernel_binder_and_rpc_binder =>
            sysmgr::two_vm_android_side_through_kernel_binder_and_rpc_binder,
    }
}
