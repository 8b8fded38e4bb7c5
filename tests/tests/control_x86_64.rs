//! The VMM's control plane with a real guest in the nested test host: the
//! ACPI power button, guest power requests held for an arbiter (hold,
//! resume-as-reboot, allow) and S3 suspend/resume. `#[ignore]`d like the
//! other nested tests: `cargo xtask test` runs them.

use vmm_protocol::{Event, PowerRequestKind, Status, VmState};
use vmstack_tests::scenario::SharedRun;

static RUN: SharedRun = SharedRun::new(&["power-button", "arbiter", "suspend"]);

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn power_button_shuts_the_guest_down_gracefully() {
    RUN.section("power-button", 0)
        .expect("READY-FOR-BUTTON")
        .expect("power button pressed")
        .expect("key_type=1 key_code=116")
        .expect("GOT-POWER-KEY")
        .expect("vmm: exit reason: poweroff");
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn held_poweroff_is_virtually_off_then_boots_again_on_resume() {
    let s = RUN.section("arbiter", 0);
    s.expect_event(Event::PowerRequest {
        id: 1,
        kind: PowerRequestKind::Poweroff,
    })
    .expect("decide-1: decided")
    .expect(&format!(
        "status: {}",
        Status {
            state: VmState::VirtuallyOff,
            arbitrated: true,
            pending: 0,
            boots: 1,
            arbiters: 0,
        }
    ))
    .expect("status-after-2s: state=virtually-off")
    .expect("resume: resumed")
    .expect("restarting the VM")
    .expect_event(Event::PowerRequest {
        id: 2,
        kind: PowerRequestKind::Poweroff,
    })
    .expect("boots=2")
    .expect("decide-2: decided")
    .expect("vmm: exit reason: poweroff");
    let inits = s.result.output.matches("VMSTACK-GUEST-INIT-OK").count();
    if inits != 2 {
        s.fail(&format!("guest booted {inits} times, expected 2"));
    }
}

#[test]
#[ignore = "needs the nested test host: run `cargo xtask test`"]
fn suspend_is_held_until_resume_and_the_guest_continues() {
    let s = RUN.section("suspend", 0);
    s.expect("SUSPENDING")
        .expect_event(Event::PowerRequest {
            id: 1,
            kind: PowerRequestKind::Suspend,
        })
        .expect("status: state=suspended")
        .expect("resume: resumed")
        .expect("suspend_rc=0")
        .expect("RESUMED")
        .expect("vmm: exit reason: poweroff");
    // Nothing of the guest ran between the hold and the resume.
    let out = &s.result.output;
    let (Some(held), Some(resumed), Some(back)) = (
        out.find("status: state=suspended"),
        out.find("resuming-now"),
        out.find("RESUMED"),
    ) else {
        s.fail("markers missing");
    };
    if !(held < resumed && resumed < back) {
        s.fail("the guest resumed before the VMM was told to wake it");
    }
}
