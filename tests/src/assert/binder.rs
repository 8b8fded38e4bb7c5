//! The Android surface over binder (`docs/android.md`): the android guest's
//! side of the VHAL power handshake as a kernel-binder client
//! (`vhal-binder-test`) of `sysmgr-binderd`, which serves `sysmgr` on the
//! guest's kernel binder (with `rsb_hub` as the service manager) and
//! forwards over RPC binder over vsock to the host's `sysmgr`. Scenario
//! `binder-handshake` (one android guest under sysmgr; ignition on, then
//! off until the MCU powers off); the guest's markers are
//! `android.guest.*`.

use super::guest;
use crate::scenario::SharedRun;

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["binder-handshake"];

/// The handshake through kernel binder and RPC binder: the service is
/// listed, WAIT_FOR_VHAL gets ON, the ignition-off SHUTDOWN_PREPARE
/// reaches both the handshake client and `vmbinder watch`, and the
/// shutdown completes until the MCU powers off.
pub fn the_vhal_handshake_through_kernel_binder_and_rpc_binder(run: &SharedRun) {
    let a = |key: &str| guest("android", key);
    run.section("binder-handshake", 0)
        .expect_eq(&a("binder"), "sysmgr up")
        .expect_contains(&a("cli-list"), "sysmgr: [vmstack.sysmgr.ISystemManager]")
        .expect_contains(&a("vhal"), "vhal: REPORT WAIT_FOR_VHAL")
        .expect_contains("step", "android up, ON through binder")
        .expect_contains(&a("vhal"), "vhal: REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY)")
        .expect_contains(
            &a("watch"),
            "onApPowerStateReq SHUTDOWN_PREPARE(SHUTDOWN_ONLY) [1, 3]",
        )
        .expect_contains(&a("vhal"), "vhal: REPORT SHUTDOWN_START")
        .expect_contains("events", "AP_POWER_STATE_REQ FINISHED")
        .expect_contains("mcu", "<- POWER_OFF")
        .expect_contains("step", "system powered off");
}
