//! libtrusty over vsock end to end: `trustyd` runs in the nested test host
//! next to our VMM; in the guest, `trusty-test` (tests/guest-tools, a
//! client on AOSP libtrusty's `tipc_connect("VSOCK:2:1", port)` shape)
//! reaches it through the guest's stock vsock driver, our virtio-vsock
//! device and the hybrid `PATH_1` socket. Halfway through, the test host
//! restarts `trustyd`. Scenario `trusty` (both halves in
//! `prebuilts/{guest,testhost}/scenarios/trusty.sh`); the guest's
//! `key=value` lines are markers `vmm.guest.*`, the test host's unprefixed.

use super::{guest, VMM};
use crate::scenario::{Section, SharedRun};

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["trusty"];

fn section(run: &SharedRun) -> Section<'_> {
    let s = run.section("trusty", 0);
    s.expect_eq(&guest(VMM, "init"), "ok")
        .expect_eq(&guest(VMM, "guest_trusty_done"), "1")
        .expect_vmm_exit(VMM, "poweroff", 0);
    // Every guest and host tool reports a failure as <tag>_error=.
    if let Some(m) = s.markers().iter().find(|m| m.key.ends_with("_error")) {
        s.fail(&format!("a step failed: {}={}", m.key, m.value));
    }
    s
}

/// The guest's marker `key`.
fn g(key: &str) -> String {
    guest(VMM, key)
}

/// Echo messages from 1 byte up to the vsock message limit come back
/// unchanged, before and after the restart.
pub fn echo_messages_up_to_the_vsock_limit_come_back(run: &SharedRun) {
    let s = section(run);
    assert_eq!(s.number(&g("echo_messages_ok")), 7);
    assert_eq!(s.number(&g("echo_max_len")), 3840);
    assert_eq!(s.number(&g("echo_after_messages_ok")), 7);
    eprintln!("echo: 7 messages in {} s", s.value(&g("echo_secs")));
}

/// A port no TA serves fails `tipc_connect`.
pub fn an_unknown_port_fails_tipc_connect(run: &SharedRun) {
    let s = section(run);
    assert_eq!(s.number(&g("refused_refused")), 1);
}

/// Gatekeeper: enroll, verify, four wrong passwords, the fifth throttled,
/// the right one refused inside the window.
pub fn gatekeeper_enroll_verify_wrong_password_and_throttle(run: &SharedRun) {
    let s = section(run);
    assert_eq!(s.number(&g("gk_enroll_status")), 0);
    assert_eq!(s.number(&g("gk_handle_len")), 58);
    assert_eq!(s.number(&g("gk_verify_status")), 0);
    assert_eq!(s.number(&g("gk_token_len")), 69);
    assert_eq!(s.number(&g("gk_token_challenge_ok")), 1);
    assert_eq!(
        s.number(&g("gk_wrong_invalid")),
        4,
        "failures 1-4: ERROR_INVALID"
    );
    assert_eq!(
        s.number(&g("gk_fifth_wrong_status")),
        2,
        "the 5th: ERROR_RETRY"
    );
    assert_eq!(s.number(&g("gk_fifth_wrong_retry_ms")), 30_000);
    // The right password inside the window is not checked.
    assert_eq!(s.number(&g("gk_right_throttled_status")), 2);
    let left = s.number(&g("gk_right_throttled_retry_ms"));
    assert!(left > 0 && left <= 30_000, "{left}");
}

/// A `trustyd` restart keeps gatekeeper's failure record and the device
/// secret (the hwkey-derived key is the same).
pub fn a_trustyd_restart_keeps_the_failure_record_and_the_device_secret(run: &SharedRun) {
    let s = section(run);
    assert_eq!(
        s.number("trustyd_first_rc"),
        0,
        "SIGTERM ends trustyd cleanly"
    );
    assert_eq!(s.number("trustyd_second_rc"), 0);
    s.expect_absent("trustyd_socket_left_behind");
    // A fresh trustyd without the record would verify the right password
    // (status 0); the restart took a few seconds of the 30 s window.
    assert_eq!(
        s.number(&g("gk_after_restart_status")),
        2,
        "still throttled"
    );
    let left = s.number(&g("gk_after_restart_retry_ms"));
    assert!(left > 0 && left < 30_000, "{left}");
    assert_eq!(
        s.value(&g("hwkey_before_key")),
        s.value(&g("hwkey_after_key"))
    );
    assert_eq!(s.value(&g("hwkey_before_key")).len(), 64, "32-byte key");
    assert_eq!(s.number(&g("hwkey_before_kdf_version")), 1);
    assert!(s.number("gk_blobs") >= 1, "failure records on disk");
}

/// The service's socket and secret are the owner's only.
pub fn sockets_and_state_are_private(run: &SharedRun) {
    let s = section(run);
    s.expect_eq("trustyd_socket_mode", "600")
        .expect_eq("device_secret_mode", "600")
        .expect_eq("state_dir_mode", "700");
}
