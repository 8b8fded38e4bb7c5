#!/bin/sh
# Suspend to RAM from the guest (x86: ACPI S3; arm64: PSCI SYSTEM_SUSPEND),
# held by the VMM as "suspended" until resumed.
. /lib/vmstack.sh
run_held_guest suspend 2 suspend
decide_pending $S $pid 1 allow || { echo "no suspend request held"; exit 1; }
mark status "$(vmm status $S)"
sleep 2
mark resuming-now 1
mark resume "$(vmm resume $S)"
decide_pending $S $pid 2 allow || { echo "no poweroff request after resume"; exit 1; }
wait $pid
