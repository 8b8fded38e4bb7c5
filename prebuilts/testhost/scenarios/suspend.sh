#!/bin/sh
# Suspend to RAM from the guest (x86: ACPI S3; arm64: PSCI SYSTEM_SUSPEND),
# held by the VMM as "suspended" until resumed.
. /lib/vmstack.sh
S=/tmp/suspend.sock
run_vmm vmm --cpus 2 --mem 256 --socket $S --power-arbiter \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=suspend" /guest/vmlinuz &
pid=$!
decide_pending $S $pid 1 allow || { echo "no suspend request held"; exit 1; }
mark status "$(vmm status $S)"
sleep 2
mark resuming-now 1
mark resume "$(vmm resume $S)"
decide_pending $S $pid 2 allow || { echo "no poweroff request after resume"; exit 1; }
wait $pid
