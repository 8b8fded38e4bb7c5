//! virtio-tee through the guest's TEE subsystem and our `virtio_tee`
//! module to `trustyd` (checks in `vmstack_tests::assert::tee`). The arm64
//! run (`all_arch_arm64`, with Debian's stock libteec) is slow: `cargo
//! xtask test` runs it only with `--all-arch`.

use vmstack_tests::assert::tee;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, tee::SCENARIOS),
    all_arch_arm64 => SharedRun::on(Arch::Aarch64, tee::SCENARIOS);
    tests: {
        virtio_tee_module_loads_without_a_device => tee::virtio_tee_module_loads_without_a_device,
        dev_tee0_reaches_trustyds_echo_ta => tee::dev_tee0_reaches_trustyds_echo_ta,
    }
}
