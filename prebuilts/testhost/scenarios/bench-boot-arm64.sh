#!/bin/sh
# Boot benchmark in the arm64 pKVM test host (`cargo xtask bench boot --arch
# aarch64`, see docs/arm64.md and docs/benchmarks.md): our VMM vs QEMU
# -M virt under KVM, measured by /bin/bootbench (tests/bootbench, built for
# aarch64) with this kernel's KVM tracepoints: kvm_entry (first VM entry)
# and kvm_mmio on the guest /init's boot-timer write (MMIO 0x9010000).
# Needs the extra initramfs of that command (bootbench, Debian's arm64
# qemu-system-aarch64 and its shared libraries). Kernel command line:
# bench.runs=N, bench.mem=MiB (256), bench.timeout=seconds to /init per boot.
if [ ! -x /bin/bootbench ] || [ ! -x /usr/bin/qemu-system-aarch64 ]; then
    echo "bench-boot-arm64: /bin/bootbench or QEMU missing: this scenario runs only under \`cargo xtask bench boot --arch aarch64\`"
    exit 1
fi
grep -q ' /sys/kernel/tracing ' /proc/mounts || mount -t tracefs nodev /sys/kernel/tracing
. /lib/vmstack.sh
runs=$(cmdline_arg bench.runs 5)
mem=$(cmdline_arg bench.mem 256)
timeout=$(cmdline_arg bench.timeout 240)
exec /bin/bootbench --runs "$runs" --mem "$mem" --timeout "$timeout"
