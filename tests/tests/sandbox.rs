//! The VMM's sandbox with a real guest (checks in
//! `vmstack_tests::assert::sandbox`): a forbidden system call from each
//! thread class kills the VMM naming it; after start-up the VMM holds no
//! capability and a second local uid cannot use its control socket.
//! `#[ignore]`d like every nested test: `cargo xtask test` runs them.

use vmstack_tests::assert::sandbox;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, sandbox::SCENARIOS);
    tests: {
        a_forbidden_call_from_each_thread_class_kills_the_vmm_naming_it =>
            sandbox::a_forbidden_call_from_each_thread_class_kills_the_vmm_naming_it,
        the_vmm_holds_no_capability_and_a_second_uid_cannot_connect =>
            sandbox::the_vmm_holds_no_capability_and_a_second_uid_cannot_connect,
    }
}
