#!/bin/sh
# virtio-net over a tap (guest.scenario=net). The VMM creates vmtap0; once it
# exists this script gives it 192.168.100.1/24 and brings it up. The guest
# (192.168.100.2) pings us, then moves NET_MIB MiB each way over TCP:
#   guest -> host: port 5001, we hash what arrives (marker host_rx_sha256),
#   host -> guest: port 5002, we send a 1 MiB random chunk NET_MIB times and
#                  mark the hash of what we send (host_tx_sha256).
# The guest marks its own side (guest_tx_sha256, guest_rx_sha256).
. /lib/vmstack.sh
# Quiet the kernel on the console for the run (it would split lines).
read -r printk_level _ < /proc/sys/kernel/printk
dmesg -n 1
NET_MIB=100
TAP=vmtap0
uptime_s() { cut -d' ' -f1 /proc/uptime; }

rm -f /tmp/net-*
head -c 1048576 /dev/urandom > /tmp/net-chunk
gen() {
    i=0
    while [ "$i" -lt "$NET_MIB" ]; do cat /tmp/net-chunk; i=$((i + 1)); done
}
# nc -e runs this with the connection as stdin.
printf '#!/bin/sh\nexec sha256sum > /tmp/net-rx.sha\n' > /tmp/net-rx.sh
chmod +x /tmp/net-rx.sh

# One-shot listeners, ready before the guest exists.
nc -l -p 5001 -e /tmp/net-rx.sh &
rx_pid=$!
gen | nc -l -p 5002 &
tx_pid=$!

run_vmm vmm --net "tap=$TAP,mac=52:54:00:12:34:56" --cpus 1 --mem 256 \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=net net.mib=$NET_MIB" /guest/vmlinuz &
vmm_pid=$!

# The tap appears when the VMM has opened it; it must be up after that.
wait_path -e "/sys/class/net/$TAP" 300
# Our own lines are printed after the VMM exits: the guest console shares
# this terminal and would interleave with them.
if ip addr add 192.168.100.1/24 dev "$TAP" && ip link set "$TAP" up; then
    mark host_tap up > /tmp/net-log
else
    mark host_tap "cannot configure $TAP" > /tmp/net-log
fi
gen | sha256sum > /tmp/net-tx.sha

wait "$vmm_pid"
rc=$?
cat /tmp/net-log
mark host_tx_sha256 "$(cut -d' ' -f1 /tmp/net-tx.sha)"
[ -s /tmp/net-rx.sha ] && mark host_rx_sha256 "$(cut -d' ' -f1 /tmp/net-rx.sha)"
kill "$rx_pid" "$tx_pid" 2>/dev/null
dmesg -n "$printk_level"
exit "$rc"
