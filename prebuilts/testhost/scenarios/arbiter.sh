#!/bin/sh
# Guest power requests held for an arbiter (here: the vmm CLI by hand):
# poweroff -> hold (virtually off) -> resume boots it again -> its second
# poweroff is allowed and the VMM exits 0.
S=/tmp/arbiter.sock
/bin/vmm run --cpus 1 --mem 256 --socket $S --power-arbiter \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz 2>&1 &
pid=$!
# Waits until a power request is pending; prints the status line.
wait_pending() {
    for i in $(seq 120); do
        s=$(vmm status $S 2>/dev/null)
        case "$s" in *pending=1*) echo "status: $s"; return 0 ;; esac
        kill -0 $pid 2>/dev/null || return 1
        sleep 1
    done
    return 1
}
wait_pending || { echo "no power request held"; kill $pid; exit 1; }
echo "decide-1: $(vmm decide $S 1 hold)"
echo "status: $(vmm status $S)"
sleep 2
echo "status-after-2s: $(vmm status $S)"
echo "resume: $(vmm resume $S)"
wait_pending || { echo "no second power request"; kill $pid; exit 1; }
echo "decide-2: $(vmm decide $S 2 allow)"
wait $pid
