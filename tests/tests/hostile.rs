//! A hostile guest under `sysmgr` next to a well-behaved one (checks in
//! `vmstack_tests::assert::hostile`). x86_64 only.
//! `#[ignore]`d like every nested test: `cargo xtask test` runs them.

use vmstack_tests::assert::hostile;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, hostile::SCENARIOS)
        .scenario_timeout(hostile::SCENARIO_TIMEOUT);
    tests: {
        a_flooding_guest_stays_within_the_caps_and_the_other_guest_is_served =>
            hostile::a_flooding_guest_stays_within_the_caps_and_the_other_guest_is_served,
    }
}
