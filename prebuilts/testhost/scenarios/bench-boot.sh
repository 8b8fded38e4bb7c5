#!/bin/sh
# Boot benchmark: our VMM vs QEMU -M microvm on the nested KVM, measured with
# this kernel's KVM tracepoints by /bin/bootbench (tests/bootbench). Needs the
# extra initramfs of `cargo xtask bench boot` (bootbench, QEMU and its
# libraries); see docs/benchmarks.md. Kernel command line: bench.runs=N.
if [ ! -x /bin/bootbench ] || [ ! -x /usr/bin/qemu-system-x86_64 ]; then
    echo "bench-boot: /bin/bootbench or QEMU missing: this scenario runs only under \`cargo xtask bench boot\`"
    exit 1
fi
grep -q ' /sys/kernel/tracing ' /proc/mounts || mount -t tracefs nodev /sys/kernel/tracing
. /lib/vmstack.sh
runs=$(cmdline_arg bench.runs 5)
exec /bin/bootbench --runs "$runs"
