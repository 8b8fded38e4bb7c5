//! virtio-tee through the guest's TEE subsystem and our `virtio_tee`
//! module to `trustyd` (checks in `vmstack_tests::assert::tee`). The arm64
//! run (`all_arch_arm64`, with Debian's stock libteec) is slow: `cargo
//! xtask test` runs it only with `--all-arch`.

use vmstack_tests::assert::tee;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, tee::SCENARIOS)
        .scenario_timeout(tee::SCENARIO_TIMEOUT),
    all_arch_arm64 => SharedRun::on(Arch::Aarch64, tee::SCENARIOS)
        .scenario_timeout(tee::SCENARIO_TIMEOUT_ARM64);
    tests: {
        virtio_tee_module_loads_without_a_device => tee::virtio_tee_module_loads_without_a_device,
        dev_tee0_reaches_trustyds_echo_ta => tee::dev_tee0_reaches_trustyds_echo_ta,
        storage_survives_a_vm_power_off_and_a_new_vmm =>
            tee::storage_survives_a_vm_power_off_and_a_new_vmm,
        gatekeeper_enroll_verify_wrong_password_and_throttle =>
            tee::gatekeeper_enroll_verify_wrong_password_and_throttle,
        hwkey_derives_a_stable_key_per_guest => tee::hwkey_derives_a_stable_key_per_guest,
        two_guests_cannot_reach_each_others_storage_or_sessions =>
            tee::two_guests_cannot_reach_each_others_storage_or_sessions,
        a_flipped_byte_on_the_host_fails_the_next_read =>
            tee::a_flipped_byte_on_the_host_fails_the_next_read,
        an_old_copy_put_back_is_detected => tee::an_old_copy_put_back_is_detected,
    }
}
