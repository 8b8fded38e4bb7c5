//! The system manager (`sysmgr`) with real VMs: an android-role and a
//! cluster-role VMM (launched by sysmgr, each with `--power-arbiter`), the
//! MCU simulator, and `vhal-binder-test` as Android's side of the VHAL
//! power handshake, through the guest's kernel binder (`sysmgr-binderd`)
//! and RPC binder over vsock to `sysmgr`. Scenarios `sysmgr` ((b), (c), (a) with (e)) and
//! `sysmgr-deadline` ((d)); their markers are the `sysmgr events` table
//! (`events`), each daemon's output (`sysmgr-N`), the MCU's (`mcu`), the
//! final `sysmgr status` (`final-status`), `step`s, `vmm status` lines and
//! the guests' markers (`android.guest.*`, e.g. `vhal` lines).

use std::time::Duration;

use crate::scenario::{Section, SharedRun};

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["sysmgr", "sysmgr-deadline"];

/// Two guests share the outer machine's one vCPU: each boot takes ~20 s.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(420);

/// Asserts that the decision log has a line containing each of `needles`.
fn events_have(s: &Section<'_>, needles: &[&str]) {
    for needle in needles {
        s.expect_contains("events", needle);
    }
}

/// A `vmm status` line of a running, arbitrated VM with no request
/// pending that has booted `boots` times.
fn running_vm(boots: u32) -> String {
    format!("state=running arbitrated=true pending=0 boots={boots}")
}

/// (b) Android reboots while the vehicle is in use: only its VM restarts.
pub fn two_vm_b_android_reboot_restarts_only_its_vm(run: &SharedRun) {
    let s = run.section("sysmgr", 0);
    s.expect_contains("step", "both guests up")
        .expect_contains("android.guest.user_runs", "reboot")
        .expect_contains("b-android", &running_vm(2))
        .expect_contains("b-cluster", &running_vm(1));
    events_have(
        &s,
        &["android: request 1: restart VM (android asked to reboot: restart its VM only)"],
    );
}

/// Each guest's VMM runs as its own `vmm_user` (android 10001, cluster
/// 10002): the cluster's VMM user and the stack's shared sandbox user
/// (65534, without sysmgr's groups) reach none of the android guest's
/// sockets (its VMM's control and vsock sockets, sysmgr's binder socket
/// for it), while the android guest's own VMM user reaches its control
/// socket, and sysmgr (in both groups) drives both guests throughout.
pub fn two_vm_each_vmm_runs_as_its_guests_own_user(run: &SharedRun) {
    let s = run.section("sysmgr", 0);
    s.expect_contains("step", "both guests up")
        .expect_contains("iso-uids", "android 10001 cluster 10002")
        // The VMM's control and vsock sockets, sysmgr's binder socket for
        // the guest: shared with its group only.
        .expect_contains(
            "iso-modes",
            "660 10001 10001 660 10001 10001 660 65534 10001",
        )
        .expect_contains("iso-android-user", "state=running");
    for sock in ["vmm.ctl", "vmm.vsock", "vmm.vsock_4200"] {
        for user in ["cluster", "shared"] {
            s.expect_contains(&format!("iso-{user}-user-{sock}"), "Permission denied");
        }
    }
}

/// (c) Android powers off while the cluster needs the system: held
/// virtually off; ignition off and on brings it back.
pub fn two_vm_c_android_poweroff_is_held_while_the_cluster_needs_the_system(run: &SharedRun) {
    let s = run.section("sysmgr", 0);
    s.expect_contains("android.guest.user_runs", "poweroff")
        .expect_contains("c-cluster", &running_vm(1))
        .expect_contains("c-held-android", "state=virtually-off")
        .expect_contains("c-status", "android  android  virtually off (Poweroff)")
        .expect_contains("c-android", &running_vm(3))
        .expect_order(&[
            ("c-held-android", "state=virtually-off"),
            ("c-android", "state=running"),
        ]);
    events_have(
        &s,
        &[
            "hold virtually off (the system stays on (ignition on, vehicle in use)",
            "android: resume VM (ignition on: bring back the VM held at its power-off",
        ],
    );
}

/// (a) Ignition off: SHUTDOWN_PREPARE, two postpones, SHUTDOWN_START,
/// Android's poweroff allowed; the cluster runs until its deadline; then
/// the MCU powers the system off.
pub fn two_vm_a_ignition_off_handshake_then_cluster_deadline_then_power_off(run: &SharedRun) {
    let s = run.section("sysmgr", 0);
    events_have(
        &s,
        &[
            "android: AP_POWER_STATE_REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY) (ignition off",
            "android: request 3: allow (shutdown under way: allow android's poweroff)",
            "android: AP_POWER_STATE_REQ FINISHED",
            "cluster: hard stop (cluster cluster's deadline",
            "MCU: power off (every guest is off and the vehicle is not in use: power off)",
        ],
    );
    let events = s.all("events");
    if events
        .iter()
        .filter(|l| l.contains("SHUTDOWN_POSTPONE(5000 ms) granted"))
        .count()
        != 2
    {
        s.fail("expected two granted postpones");
    }
    if events.iter().any(|l| l.contains("SHUTDOWN_IMMEDIATELY")) {
        s.fail("the postponing android guest was escalated");
    }
    s.expect_order(&[
        ("events", "android: request 3: allow"),
        ("events", "cluster: hard stop"),
        ("events", "MCU: power off"),
    ])
    .expect_contains(
        "android.guest.vhal",
        "vhal: REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY)",
    )
    .expect_contains("android.guest.vhal", "vhal: REPORT SHUTDOWN_START")
    .expect_contains("mcu", "mcu: <- POWER_OFF wake_after_s=0")
    .expect_contains("step", "system powered off")
    // Both VMMs are gone at the end.
    .expect_contains("a-android-vmm", "error: cannot talk to the VMM")
    .expect_contains("a-cluster-vmm", "error: cannot talk to the VMM");
}

/// (e) `kill -9` of sysmgr in the middle of the shutdown, then a restart:
/// the new daemon attaches to the running VMMs and completes it.
pub fn two_vm_e_kill_9_of_sysmgr_mid_shutdown_then_restart_completes_it(run: &SharedRun) {
    let s = run.section("sysmgr", 0);
    s.expect_contains("step", "sysmgr killed with -9")
        .expect_contains("step", "sysmgr restarted")
        .expect_contains("sysmgr-2", "resumed from ")
        .expect_contains("step", "system powered off");
    // The restarted daemon attached to the VMMs the first one launched and
    // took over the handshake: the second postpone and SHUTDOWN_START went
    // to it, and the log (both daemons' records) still verifies: `sysmgr
    // status` after the end replays it.
    for needle in [
        "android: attached to its VMM",
        "cluster: attached to its VMM",
        "SHUTDOWN_START",
        "MCU: power off",
    ] {
        s.expect_contains("sysmgr-2", needle);
    }
    s.expect_contains("final-status", "daemon: not running (state replayed from")
        .expect_contains("final-status", "system: powering off");
}

/// (d) An Android guest that stops postponing is escalated to
/// SHUTDOWN_IMMEDIATELY and hard-stopped at its deadline.
pub fn two_vm_d_android_that_stops_postponing_is_escalated_and_hard_stopped(run: &SharedRun) {
    let s = run.section("sysmgr-deadline", 0);
    events_have(
        &s,
        &[
            "SHUTDOWN_POSTPONE(5000 ms) granted",
            "android: AP_POWER_STATE_REQ SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY) (android stopped postponing",
            "android: hard stop (android did not start its shutdown after SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY) in time)",
            "MCU: power off",
        ],
    );
    s.expect_contains("android.guest.vhal", "vhal: stops answering")
        .expect_contains(
            "android.guest.vhal",
            "vhal: REQ SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY)",
        )
        .expect_contains("mcu", "mcu: <- POWER_OFF")
        .expect_order(&[
            (
                "events",
                "SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY) (android stopped",
            ),
            ("events", "android: hard stop"),
        ]);
}

/// The Android side goes through binder: kernel binder in the guest
/// (`rsb_hub`, `sysmgr-binderd`), RPC binder over vsock to `sysmgr`; the
/// binder CLI in the guest lists the service, calls it, requests a
/// shutdown (the ignition is on: the request changes nothing, so it is
/// journalled but not a record), and `watch` prints the callbacks while
/// the arbiter drives the handshake.
pub fn two_vm_android_side_through_kernel_binder_and_rpc_binder(run: &SharedRun) {
    let s = run.section("sysmgr", 0);
    s.expect_eq("android.guest.binder", "sysmgr up")
        .expect_contains(
            "android.guest.cli-list",
            "sysmgr: [vmstack.sysmgr.ISystemManager]",
        )
        .expect_contains("android.guest.cli-state", "SystemState {")
        .expect_contains("android.guest.vhal", "vhal: binder service sysmgr found")
        .expect_contains("android.guest.cli-request", "(void)")
        .expect_contains("step", "android requested a shutdown")
        .expect_contains("android.guest.watch", "onApPowerStateReq ON [0, 0]")
        .expect_contains(
            "android.guest.watch",
            "onApPowerStateReq SHUTDOWN_PREPARE(SHUTDOWN_ONLY) [1, 3]",
        )
        .expect_contains("sysmgr-1", "ISystemManager on ")
        .expect_contains(
            "sysmgr-1",
            "android sends SHUTDOWN_REQUEST [3]: changes nothing (not a log record)",
        )
        .expect_contains("sysmgr-1", "the ignition is on, so the head unit stays on");
    if s.position("events", "android sends SHUTDOWN_REQUEST")
        .is_some()
    {
        s.fail("the refused SHUTDOWN_REQUEST became a decision record");
    }
}
