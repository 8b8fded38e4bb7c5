#!/bin/sh
# x86_64: the guest booted from the ELF vmlinux, whose segments the VMM fills
# behind the running guest (vmm/src/arch/kernel_fill.rs). Its poweroff is
# held, `resume` boots it again in the same process (the kernel filled again
# through the kept userfaultfd), the second poweroff is allowed.
. /lib/vmstack.sh
[ -f /guest/vmlinux ] || { echo "boot-elf: no /guest/vmlinux (x86_64 test host only)"; exit 1; }
run_held_guest boot-elf 2 poweroff /guest/vmlinux
decide_pending $S $pid 1 hold || { echo "no power request held"; exit 1; }
mark resume "$(vmm resume $S)"
decide_pending $S $pid 2 allow || { echo "no second power request"; exit 1; }
wait $pid
