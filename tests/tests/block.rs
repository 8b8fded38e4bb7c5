//! virtio-blk through the guest's stock `virtio_blk` driver (checks in
//! `vmstack_tests::assert::block`). The arm64 run (`all_arch_arm64`) is
//! slow: `cargo xtask test` runs it only with `--all-arch`.

use vmstack_tests::assert::block;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, block::SCENARIOS),
    all_arch_arm64 => SharedRun::on(Arch::Aarch64, block::SCENARIOS);
    tests: {
        rw_disk_keeps_a_64_mib_pattern_across_vmm_runs =>
            block::rw_disk_keeps_a_64_mib_pattern_across_vmm_runs,
        read_only_disk_refuses_writes_and_stays_unchanged =>
            block::read_only_disk_refuses_writes_and_stays_unchanged,
        get_id_reports_the_serial => block::get_id_reports_the_serial,
        disk_setup_errors_are_one_line_and_say_what_to_do =>
            block::disk_setup_errors_are_one_line_and_say_what_to_do,
        limited_disks_run_near_their_limits => block::limited_disks_run_near_their_limits,
    }
}
