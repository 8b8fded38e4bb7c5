//! Virtio devices exercised by the guest's stock kernel drivers, inside the
//! nested x86_64 test host (one outer boot shared by the tests here).
//! `#[ignore]`d like the boot tests: `cargo xtask test` runs them.

use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

/// This file's test host. `arm64_virtio.rs` includes this file as a module
/// and re-runs its tests on arm64 under its own `ARCH`.
#[allow(dead_code)]
const ARCH: Arch = Arch::X86_64;

static RUN: SharedRun = SharedRun::on(crate::ARCH, &["virtio-rng"]);

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn rng_serves_dev_hwrng() {
    let s = RUN.section("virtio-rng", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("rng_current=virtio_rng.0")
        .expect("vmm: exit reason: poweroff");
    assert_eq!(s.number("hwrng_bytes"), 65536, "bytes read from /dev/hwrng");
    // 4 KiB of random bytes hit (nearly) every byte value.
    let distinct = s.number("hwrng_distinct_bytes");
    if distinct < 200 {
        s.fail(&format!("only {distinct} distinct byte values in 4 KiB"));
    }
}
