//! virtio-rng through the guest's stock driver (checks in
//! `vmstack_tests::assert::rng`). The arm64 run (`all_arch_arm64`) is slow:
//! `cargo xtask test` runs it only with `--all-arch`.

use vmstack_tests::assert::rng;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, rng::SCENARIOS),
    all_arch_arm64 => SharedRun::on(Arch::Aarch64, rng::SCENARIOS);
    tests: {
        rng_serves_dev_hwrng => rng::rng_serves_dev_hwrng,
    }
}
