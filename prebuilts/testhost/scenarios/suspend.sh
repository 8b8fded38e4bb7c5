#!/bin/sh
# ACPI S3 from the guest, held by the VMM as "suspended" until resumed.
S=/tmp/suspend.sock
/bin/vmm run --cpus 2 --mem 256 --socket $S --power-arbiter \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=suspend" /guest/vmlinuz 2>&1 &
pid=$!
wait_pending() {
    for i in $(seq 120); do
        s=$(vmm status $S 2>/dev/null)
        case "$s" in *pending=1*) echo "status: $s"; return 0 ;; esac
        kill -0 $pid 2>/dev/null || return 1
        sleep 1
    done
    return 1
}
wait_pending || { echo "no suspend request held"; kill $pid; exit 1; }
echo "decide-1: $(vmm decide $S 1 allow)"
echo "status: $(vmm status $S)"
sleep 2
echo "resuming-now"
echo "resume: $(vmm resume $S)"
wait_pending || { echo "no poweroff request after resume"; kill $pid; exit 1; }
echo "decide-2: $(vmm decide $S 2 allow)"
wait $pid
