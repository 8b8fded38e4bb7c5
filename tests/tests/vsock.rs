//! virtio-vsock end to end (checks in `vmstack_tests::assert::vsock`). The
//! arm64 run (`all_arch_arm64`) is slow: `cargo xtask test` runs it only
//! with `--all-arch`.

use vmstack_tests::assert::vsock;
use vmstack_tests::scenario::SharedRun;
use vmstack_tests::Arch;

vmstack_tests::nested_tests! {
    x86_64 => SharedRun::on(Arch::X86_64, vsock::SCENARIOS),
    all_arch_arm64 => SharedRun::on(Arch::Aarch64, vsock::SCENARIOS);
    tests: {
        guest_to_host_stream_100_mib => vsock::guest_to_host_stream_100_mib,
        host_to_guest_stream_100_mib => vsock::host_to_guest_stream_100_mib,
        sixty_four_concurrent_connections_each_way =>
            vsock::sixty_four_concurrent_connections_each_way,
        connections_to_nobody_are_refused_both_ways =>
            vsock::connections_to_nobody_are_refused_both_ways,
        vmm_cleans_up_its_socket => vsock::vmm_cleans_up_its_socket,
    }
}
