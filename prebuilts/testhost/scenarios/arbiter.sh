#!/bin/sh
# Guest power requests held for an arbiter (here: the vmm CLI by hand):
# poweroff -> hold (virtually off) -> resume boots it again -> its second
# poweroff is allowed and the VMM exits 0.
. /lib/vmstack.sh
run_held_guest arbiter 1 poweroff
decide_pending $S $pid 1 hold || { echo "no power request held"; exit 1; }
mark status "$(vmm status $S)"
sleep 2
mark status-after-2s "$(vmm status $S)"
mark resume "$(vmm resume $S)"
decide_pending $S $pid 2 allow || { echo "no second power request"; exit 1; }
wait $pid
