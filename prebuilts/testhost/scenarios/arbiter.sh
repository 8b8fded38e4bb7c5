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
decide_pending $S $pid 1 hold || { echo "no power request held"; exit 1; }
mark status "$(vmm status $S)"
sleep 2
mark status-after-2s "$(vmm status $S)"
mark resume "$(vmm resume $S)"
decide_pending $S $pid 2 allow || { echo "no second power request"; exit 1; }
wait $pid
