#!/bin/sh
# Guest power requests held for an arbiter (here: the vmm CLI by hand):
# poweroff -> hold (virtually off) -> resume boots it again -> its second
# poweroff is allowed and the VMM exits 0.
. /lib/vmstack.sh
S=/tmp/arbiter.sock
run_vmm vmm --cpus 1 --mem 256 --socket $S --power-arbiter \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz &
pid=$!
wait_pending $S $pid || { echo "no power request held"; kill $pid; exit 1; }
mark decide-1 "$(vmm decide $S 1 hold)"
mark status "$(vmm status $S)"
sleep 2
mark status-after-2s "$(vmm status $S)"
mark resume "$(vmm resume $S)"
wait_pending $S $pid || { echo "no second power request"; kill $pid; exit 1; }
mark decide-2 "$(vmm decide $S 2 allow)"
wait $pid
