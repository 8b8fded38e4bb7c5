//! libtrusty over vsock end to end: `trustyd` runs in the nested test host
//! next to our VMM; in the guest, `trusty-test` (tests/guest-tools, a
//! client on AOSP libtrusty's `tipc_connect("VSOCK:2:1", port)` shape)
//! reaches it through the guest's stock vsock driver, our virtio-vsock
//! device and the hybrid `PATH_1` socket. Halfway through, the test host
//! restarts `trustyd` (scenario `trusty`, both halves in
//! `prebuilts/{guest,testhost}/scenarios/trusty.sh`). `#[ignore]`d like
//! the other nested tests: `cargo xtask test` runs them.

use vmstack_tests::scenario::{Section, SharedRun};

static RUN: SharedRun = SharedRun::new(&["trusty"]);

fn section() -> Section<'static> {
    let s = RUN.section("trusty", 0);
    s.expect("VMSTACK-GUEST-INIT-OK")
        .expect("guest_trusty_done=1")
        .expect("vmm_rc=0");
    // Every guest and host tool reports failures as <tag>_error=.
    if let Some(line) = s.result.output.lines().find(|l| l.contains("_error=")) {
        s.fail(&format!("a step failed: {line}"));
    }
    s
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn echo_messages_up_to_the_vsock_limit_come_back() {
    let s = section();
    assert_eq!(s.number("echo_messages_ok"), 7);
    assert_eq!(s.number("echo_max_len"), 3840);
    assert_eq!(s.number("echo_after_messages_ok"), 7);
    eprintln!("echo: 7 messages in {} s", s.value("echo_secs"));
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn an_unknown_port_fails_tipc_connect() {
    let s = section();
    assert_eq!(s.number("refused_refused"), 1);
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn gatekeeper_enroll_verify_wrong_password_and_throttle() {
    let s = section();
    assert_eq!(s.number("gk_enroll_status"), 0);
    assert_eq!(s.number("gk_handle_len"), 58);
    assert_eq!(s.number("gk_verify_status"), 0);
    assert_eq!(s.number("gk_token_len"), 69);
    assert_eq!(s.number("gk_token_challenge_ok"), 1);
    assert_eq!(
        s.number("gk_wrong_invalid"),
        4,
        "failures 1-4: ERROR_INVALID"
    );
    assert_eq!(s.number("gk_fifth_wrong_status"), 2, "the 5th: ERROR_RETRY");
    assert_eq!(s.number("gk_fifth_wrong_retry_ms"), 30_000);
    // The right password inside the window is not checked.
    assert_eq!(s.number("gk_right_throttled_status"), 2);
    let left = s.number("gk_right_throttled_retry_ms");
    assert!(left > 0 && left <= 30_000, "{left}");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn a_trustyd_restart_keeps_the_failure_record_and_the_device_secret() {
    let s = section();
    assert_eq!(
        s.number("trustyd_first_rc"),
        0,
        "SIGTERM ends trustyd cleanly"
    );
    assert_eq!(s.number("trustyd_second_rc"), 0);
    if s.result.contains("trustyd_socket_left_behind=1") {
        s.fail("trustyd left its socket behind");
    }
    // A fresh trustyd without the record would verify the right password
    // (status 0); the restart took a few seconds of the 30 s window.
    assert_eq!(s.number("gk_after_restart_status"), 2, "still throttled");
    let left = s.number("gk_after_restart_retry_ms");
    assert!(left > 0 && left < 30_000, "{left}");
    assert_eq!(s.value("hwkey_before_key"), s.value("hwkey_after_key"));
    assert_eq!(s.value("hwkey_before_key").len(), 64, "32-byte key");
    assert_eq!(s.number("hwkey_before_kdf_version"), 1);
    assert!(s.number("gk_blobs") >= 1, "failure records on disk");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn sockets_and_state_are_private() {
    let s = section();
    assert_eq!(s.value("trustyd_socket_mode"), "600");
    assert_eq!(s.value("device_secret_mode"), "600");
    assert_eq!(s.value("state_dir_mode"), "700");
}
