#!/bin/sh
# Boot benchmark: our VMM vs QEMU -M microvm on the nested KVM, measured with
# this kernel's KVM tracepoints by /bin/bootbench (tests/bootbench). Needs the
# extra initramfs of `cargo xtask bench boot` (bootbench, QEMU and its
# libraries); see docs/benchmarks.md. Kernel command line: bench.runs=N,
# bench.kernel=bzimage|elf|both|elf-ab|elf-fill-ab|bzimage-ab (elf: our VMM boots
# /guest/vmlinux (in the x86_64 test host initramfs); elf-ab: the ELF as by default
# and mapped; elf-fill-ab: the ELF as by default (filled behind the guest) and copied;
# bzimage-ab: the bzImage as by default and with every boot file copied).
if [ ! -x /bin/bootbench ] || [ ! -x /usr/bin/qemu-system-x86_64 ]; then
    echo "bench-boot: /bin/bootbench or QEMU missing: this scenario runs only under \`cargo xtask bench boot\`"
    exit 1
fi
grep -q ' /sys/kernel/tracing ' /proc/mounts || mount -t tracefs nodev /sys/kernel/tracing
. /lib/vmstack.sh
runs=$(cmdline_arg bench.runs 5)
kernel=$(cmdline_arg bench.kernel bzimage)
case "$kernel" in
    bzimage) exec /bin/bootbench --runs "$runs" ;;
    elf) exec /bin/bootbench --runs "$runs" --elf /guest/vmlinux --no-bzimage ;;
    both) exec /bin/bootbench --runs "$runs" --elf /guest/vmlinux ;;
    elf-ab) exec /bin/bootbench --runs "$runs" --elf /guest/vmlinux --no-bzimage --elf-map ;;
    elf-fill-ab) exec /bin/bootbench --runs "$runs" --elf /guest/vmlinux --no-bzimage --elf-copy ;;
    bzimage-ab) exec /bin/bootbench --runs "$runs" --bzimage-copy ;;
    *) echo "bench-boot: bench.kernel=$kernel: use bzimage, elf, both, elf-ab, elf-fill-ab or bzimage-ab"; exit 1 ;;
esac
