//! The system manager (`sysmgr`) with real VMs in the nested test host: an
//! android-role and a cluster-role VMM (launched by sysmgr, each with
//! `--power-arbiter`), the MCU simulator, and `vhal-test` as Android's side
//! of the VHAL power handshake over vsock. Scenarios
//! `prebuilts/testhost/scenarios/sysmgr.sh` ((b), (c), (a) with (e)) and
//! `sysmgr-deadline.sh` ((d)). `#[ignore]`d like the other nested tests:
//! `cargo xtask test` runs them.

use std::time::Duration;

use vmstack_tests::scenario::{Section, SharedRun};

/// Two guests share the outer machine's one vCPU: each boot takes ~20 s.
static RUN: SharedRun =
    SharedRun::with_timeout(&["sysmgr", "sysmgr-deadline"], Duration::from_secs(420));

/// Asserts that `a` occurs before `b` in the section's output.
fn before(s: &Section<'_>, a: &str, b: &str) {
    let out = &s.result.output;
    match (out.find(a), out.find(b)) {
        (Some(x), Some(y)) if x < y => {}
        (x, y) => s.fail(&format!("expected {a:?} ({x:?}) before {b:?} ({y:?})")),
    }
}

/// Lines of the `sysmgr events` table (the decision log) in the output.
fn events(s: &Section<'_>) -> String {
    let out = &s.result.output;
    let Some(start) = out.find("---- sysmgr events") else {
        s.fail("no sysmgr events table");
    };
    out[start..]
        .lines()
        .take_while(|l| !l.contains(".out| ") && !l.contains(".log| "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn two_vm_b_android_reboot_restarts_only_its_vm() {
    let s = RUN.section("sysmgr", 0);
    s.expect("step t=")
        .expect("android: user runs reboot")
        .expect("request 1: restart VM (android asked to reboot: restart its VM only)")
        .expect("b-android: state=running arbitrated=true pending=0 boots=2")
        .expect("b-cluster: state=running arbitrated=true pending=0 boots=1");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn two_vm_c_android_poweroff_is_held_while_the_cluster_needs_the_system() {
    let s = RUN.section("sysmgr", 0);
    s.expect("android: user runs poweroff")
        .expect("hold virtually off (the system stays on (ignition on, vehicle in use)")
        .expect("c-cluster: state=running arbitrated=true pending=0 boots=1")
        .expect("c-held-android: state=virtually-off")
        .expect("c-status| android  android  virtually off (Poweroff)")
        .expect("android: resume VM (ignition on: bring back the VM held at its power-off")
        .expect("c-android: state=running arbitrated=true pending=0 boots=3");
    before(
        &s,
        "c-held-android: state=virtually-off",
        "c-android: state=running",
    );
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn two_vm_a_ignition_off_handshake_then_cluster_deadline_then_power_off() {
    let s = RUN.section("sysmgr", 0);
    let ev = events(&s);
    for needle in [
        "android: AP_POWER_STATE_REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY) (ignition off",
        "android: request 3: allow (shutdown under way: allow android's poweroff)",
        "android: AP_POWER_STATE_REQ FINISHED",
        "cluster: hard stop (cluster cluster's deadline",
        "MCU: power off (every guest is off and the vehicle is not in use: power off)",
    ] {
        if !ev.contains(needle) {
            s.fail(&format!("{needle:?} not in the decision log"));
        }
    }
    if ev.matches("SHUTDOWN_POSTPONE(5000 ms) granted").count() != 2 {
        s.fail("expected two granted postpones");
    }
    if ev.contains("SHUTDOWN_IMMEDIATELY") {
        s.fail("the postponing android guest was escalated");
    }
    before(&s, "android: request 3: allow", "cluster: hard stop");
    before(&s, "cluster: hard stop", "MCU: power off");
    s.expect("vhal: REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY)")
        .expect("vhal: REPORT SHUTDOWN_START")
        .expect("mcu.out| mcu: <- POWER_OFF wake_after_s=0")
        .expect("step t=")
        .expect("system powered off");
    // Both VMMs are gone at the end.
    s.expect("a-android-vmm: error: cannot talk to the VMM")
        .expect("a-cluster-vmm: error: cannot talk to the VMM");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn two_vm_e_kill_9_of_sysmgr_mid_shutdown_then_restart_completes_it() {
    let s = RUN.section("sysmgr", 0);
    s.expect("sysmgr killed with -9")
        .expect("sysmgr restarted")
        .expect("sysmgr-2.out| ")
        .expect("resumed from ")
        .expect("system powered off");
    // The restarted daemon attached to the VMMs the first one launched and
    // took over the handshake: the second postpone and SHUTDOWN_START went
    // to it, and the log (both daemons' records) still verifies: `sysmgr
    // status` after the end replays it.
    let out = &s.result.output;
    let second = out
        .lines()
        .filter(|l| l.starts_with("sysmgr-2.out| "))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "android: attached to its VMM",
        "cluster: attached to its VMM",
        "SHUTDOWN_START",
        "MCU: power off",
    ] {
        if !second.contains(needle) {
            s.fail(&format!("{needle:?} not in the restarted daemon's output"));
        }
    }
    s.expect("final-status| daemon: not running (state replayed from")
        .expect("final-status| system: powering off");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn two_vm_d_android_that_stops_postponing_is_escalated_and_hard_stopped() {
    let s = RUN.section("sysmgr-deadline", 0);
    let ev = events(&s);
    for needle in [
        "SHUTDOWN_POSTPONE(5000 ms) granted",
        "android: AP_POWER_STATE_REQ SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY) (android stopped postponing",
        "android: hard stop (android did not start its shutdown after SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY) in time)",
        "MCU: power off",
    ] {
        if !ev.contains(needle) {
            s.fail(&format!("{needle:?} not in the decision log"));
        }
    }
    s.expect("vhal: stops answering")
        .expect("vhal: REQ SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY)")
        .expect("mcu.out| mcu: <- POWER_OFF");
    before(
        &s,
        "SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY) (android stopped",
        "android: hard stop",
    );
}

/// The Android side goes through binder: kernel binder in the guest
/// (`rsb_hub`, `sysmgr-binderd`), RPC binder over vsock to `sysmgr`; the
/// binder CLI in the guest lists the service, calls it, requests a
/// shutdown, and `watch` prints the callbacks while the arbiter drives the
/// handshake.
#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn two_vm_android_side_through_kernel_binder_and_rpc_binder() {
    let s = RUN.section("sysmgr", 0);
    s.expect("binder: sysmgr up")
        .expect("cli-list| 1\tsysmgr: [vmstack.sysmgr.ISystemManager]")
        .expect("cli-state| SystemState {")
        .expect("vhal: binder service sysmgr found");
    s.expect("cli-request| (void)")
        .expect("android sends SHUTDOWN_REQUEST [3]")
        .expect("the ignition is on, so the head unit stays on");
    s.expect("watch| onApPowerStateReq ON [0, 0]")
        .expect("watch| onApPowerStateReq SHUTDOWN_PREPARE(SHUTDOWN_ONLY) [1, 3]");
    let out = &s.result.output;
    if !out.contains("ISystemManager on ") {
        s.fail("sysmgr did not serve ISystemManager over RPC binder");
    }
}
