//! The VMM's control plane with a real guest: the power button (x86: ACPI;
//! arm64: a `gpio-keys` key on a PL061), guest power requests held for an
//! arbiter (hold, resume as a new boot, allow) and suspend to RAM held
//! until resume (x86: ACPI S3; arm64: PSCI SYSTEM_SUSPEND). Scenarios
//! `power-button`, `arbiter`, `suspend`.

use vmm_protocol::{Event, PowerRequestKind, Status, VmState};

use super::{guest, VMM};
use crate::scenario::SharedRun;
use crate::Arch;

/// Guest power request `id` of `kind`, as the VMM publishes it.
fn power_request(id: u64, kind: PowerRequestKind) -> Event {
    Event::PowerRequest { id, kind }
}

/// The scenarios of one shared test host boot.
pub const SCENARIOS: &[&str] = &["power-button", "arbiter", "suspend"];

/// A press reaches the guest as `KEY_POWER` and the guest powers off.
pub fn power_button_shuts_the_guest_down_gracefully(run: &SharedRun) {
    let s = run.section("power-button", 0);
    s.expect_contains(&guest(VMM, "button_device"), "/dev/input/event")
        .expect_log(VMM, "power button pressed")
        // EV_KEY (1), KEY_POWER (116).
        .expect_eq(&guest(VMM, "key_event"), "type=1 code=116")
        .expect_vmm_exit(VMM, "poweroff", 0);
    if s.number("presses") == 0 {
        s.fail("no `vmm power-button` succeeded");
    }
}

/// A held poweroff leaves the VM virtually off; `resume` boots it again in
/// the same process (new VM, vCPUs and interrupt controller) and the second
/// poweroff, allowed, ends the VMM.
pub fn held_poweroff_is_virtually_off_then_boots_again_on_resume(run: &SharedRun) {
    let s = run.section("arbiter", 0);
    let held = Status {
        state: VmState::VirtuallyOff,
        arbitrated: true,
        pending: 0,
        boots: 1,
        arbiters: 0,
    };
    s.expect_event(VMM, power_request(1, PowerRequestKind::Poweroff))
        .expect_contains("decide-1", "decided")
        .expect_contains("status", &held.to_string())
        .expect_contains("status-after-2s", "state=virtually-off")
        .expect_contains("resume", "resumed")
        .expect_log(VMM, "restarting the VM")
        .expect_event(VMM, power_request(2, PowerRequestKind::Poweroff))
        .expect_contains("pending", "boots=2")
        .expect_contains("decide-2", "decided")
        .expect_count(&guest(VMM, "init"), 2)
        .expect_vmm_exit(VMM, "poweroff", 0);
}

/// A suspend is held (vCPUs parked) until `resume`; then the guest
/// continues where it was and powers off later.
pub fn suspend_is_held_until_resume_and_the_guest_continues(run: &SharedRun) {
    let s = run.section("suspend", 0);
    s.expect_eq(&guest(VMM, "suspending"), "1")
        .expect_event(VMM, power_request(1, PowerRequestKind::Suspend))
        .expect_contains("status", "state=suspended")
        .expect_contains("resume", "resumed")
        .expect_eq(&guest(VMM, "suspend_rc"), "0")
        .expect_vmm_exit(VMM, "poweroff", 0)
        // Nothing of the guest ran between the hold and the resume.
        .expect_order(&[
            ("status", "state=suspended"),
            ("resuming-now", ""),
            (&guest(VMM, "resumed"), ""),
        ]);
    if run.arch() == Arch::Aarch64 {
        // PSCI SYSTEM_SUSPEND: the vCPU parks, then wakes at the entry point.
        s.expect_eq(&guest(VMM, "mem_sleep"), "s2idle [deep]")
            .expect_log(VMM, "guest suspended (resume at")
            .expect_log(VMM, "waking the guest at");
    }
}
