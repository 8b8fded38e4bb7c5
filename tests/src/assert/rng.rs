//! virtio-rng through the guest's stock `virtio_rng` driver (scenario
//! `virtio-rng`).

use super::{guest, VMM};
use crate::scenario::SharedRun;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["virtio-rng"];

/// `/dev/hwrng` is served by our device and its bytes look random.
pub fn rng_serves_dev_hwrng(run: &SharedRun) {
    let s = run.section("virtio-rng", 0);
    s.expect_eq(&guest(VMM, "init"), "ok")
        .expect_eq(&guest(VMM, "rng_current"), "virtio_rng.0")
        .expect_vmm_exit(VMM, "poweroff", 0);
    assert_eq!(
        s.number(&guest(VMM, "hwrng_bytes")),
        65536,
        "bytes read from /dev/hwrng"
    );
    // 4 KiB of random bytes hit (nearly) every byte value.
    let distinct = s.number(&guest(VMM, "hwrng_distinct_bytes"));
    if distinct < 200 {
        s.fail(&format!("only {distinct} distinct byte values in 4 KiB"));
    }
}
