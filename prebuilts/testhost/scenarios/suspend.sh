#!/bin/sh
# Suspend to RAM from the guest (x86: ACPI S3; arm64: PSCI SYSTEM_SUSPEND),
# held by the VMM as "suspended" until resumed.
. /lib/vmstack.sh
S=/tmp/suspend.sock
run_vmm vmm --cpus 2 --mem 256 --socket $S --power-arbiter \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=suspend" /guest/vmlinuz &
pid=$!
wait_pending $S $pid || { echo "no suspend request held"; kill $pid; exit 1; }
mark decide-1 "$(vmm decide $S 1 allow)"
mark status "$(vmm status $S)"
sleep 2
mark resuming-now 1
mark resume "$(vmm resume $S)"
wait_pending $S $pid || { echo "no poweroff request after resume"; kill $pid; exit 1; }
mark decide-2 "$(vmm decide $S 2 allow)"
wait $pid
