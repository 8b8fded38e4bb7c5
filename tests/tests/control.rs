//! The VMM's control plane with a real guest (power button, power requests
//! held for an arbiter, suspend held until resume), in the x86_64 test host
//! and in the arm64 pKVM test host (checks in
//! `vmstack_tests::assert::control`). `#[ignore]`d like every nested test:
//! `cargo xtask test` runs them.

use vmstack_tests::assert::control;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, control::SCENARIOS),
    arm64 => SharedRun::on(Arch::Aarch64, control::SCENARIOS);
    tests: {
        power_button_shuts_the_guest_down_gracefully =>
            control::power_button_shuts_the_guest_down_gracefully,
        held_poweroff_is_virtually_off_then_boots_again_on_resume =>
            control::held_poweroff_is_virtually_off_then_boots_again_on_resume,
        suspend_is_held_until_resume_and_the_guest_continues =>
            control::suspend_is_held_until_resume_and_the_guest_continues,
    }
}
