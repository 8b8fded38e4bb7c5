#!/bin/sh
# The host presses the guest's ACPI power button until the guest shuts down.
. /lib/vmstack.sh
S=/tmp/button.sock
run_vmm vmm --cpus 2 --mem 256 --socket $S --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=button" /guest/vmlinuz &
pid=$!
# Pressed every 2 s until the VMM exits (at most 150 times: a guest that
# boots slowly, as on arm64 on a loaded machine, may take minutes).
presses=0
while kill -0 $pid 2>/dev/null && [ $presses -lt 150 ]; do
    sleep 2
    vmm power-button $S >/dev/null 2>&1 && presses=$((presses + 1))
done
wait $pid
rc=$?
mark presses "$presses"
exit $rc
