#!/bin/sh
# virtio-net across an in-process restart (guest.scenario=net-ping): each boot
# brings up eth0, pings us and powers off. As the power arbiter this script
# restarts the VM after the first poweroff and allows the second. The tap the
# VMM created must survive the restart (same interface, still configured), so
# the second boot pings without any help from us.
. /lib/vmstack.sh
# Quiet the kernel on the console for the run (it would split lines).
read -r printk_level _ < /proc/sys/kernel/printk
dmesg -n 1
S=/tmp/net-arbiter.sock
TAP=vmtap0
run_vmm vmm --net "tap=$TAP" --cpus 1 --mem 256 --socket $S --power-arbiter \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=net-ping" /guest/vmlinuz &
pid=$!
# Our lines go to a file, printed after the VMM exits: the guest console
# shares this terminal and would interleave with them.
log() { echo "$*" >> /tmp/net-restart.log; }
log_mark() { mark "$@" >> /tmp/net-restart.log; }
rm -f /tmp/net-restart.log

wait_path -e "/sys/class/net/$TAP" 300
ip addr add 192.168.100.1/24 dev "$TAP" && ip link set "$TAP" up || log "host: cannot configure $TAP"
first=$(cat "/sys/class/net/$TAP/ifindex")

wait_pending $S $pid >> /tmp/net-restart.log || { log "host: no first power request"; kill $pid; }
log_mark decide-1 "$(vmm decide $S 1 restart 2>&1)"
wait_pending $S $pid >> /tmp/net-restart.log || { log "host: no second power request"; kill $pid; }
second=$(cat "/sys/class/net/$TAP/ifindex" 2>/dev/null)
log_mark tap_ifindex_first "$first"
log_mark tap_ifindex_second "$second"
log_mark decide-2 "$(vmm decide $S 2 allow 2>&1)"
wait $pid
rc=$?
cat /tmp/net-restart.log
dmesg -n "$printk_level"
exit $rc
