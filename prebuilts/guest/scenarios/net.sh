#!/bin/sh
# virtio-net through the stock virtio_net driver: eth0 192.168.100.2/24 on the
# test host's tap (192.168.100.1), ping, then TCP both ways with sha256 on
# both ends (see the test host's virtio-net scenario for the other side).
. /lib/vmstack.sh
HOST=192.168.100.1
mib=$(cmdline_arg net.mib 100)
# Kernel messages on the console could split our lines.
dmesg -n 1
uptime_s() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk "BEGIN { printf \"%.1f\", $2 - $1 }"; }
# Progress is printed as it comes; the results, as markers, at the end in
# one block (the test host's kernel could split a line printed meanwhile).
say() { echo "net: $1=$2"; mark "$1" "$2" >> /tmp/results; }

[ -e /sys/class/net/eth0 ] || { echo "net: no eth0"; exit 1; }
say net_driver "$(basename "$(readlink /sys/class/net/eth0/device/driver)")"
say net_mac "$(cat /sys/class/net/eth0/address)"
say net_features "$(cat /sys/class/net/eth0/device/features)"

say net_ping_warmup "$(eth0_up "$HOST")"
ping -c 3 "$HOST" > /tmp/ping.out
cat /tmp/ping.out
say net_ping_summary "$(grep 'packets transmitted' /tmp/ping.out)"

head -c 1048576 /dev/urandom > /tmp/chunk
gen() {
    i=0
    while [ "$i" -lt "$mib" ]; do cat /tmp/chunk; i=$((i + 1)); done
}
say guest_tx_sha256 "$(gen | sha256sum | cut -d' ' -f1)"

# /proc/net/dev: iface: rx bytes packets errs drop fifo frame compressed
# multicast, tx bytes packets errs ...
counters() {
    grep eth0: /proc/net/dev | tr ':' ' ' |
        awk -v p="@@vmstack:$1" '{ print p "_rx_bytes=" $2; print p "_rx_packets=" $3; print p "_rx_errors=" $4;
                         print p "_tx_bytes=" $10; print p "_tx_packets=" $11; print p "_tx_errors=" $12 }'
}

t0=$(uptime_s)
gen | timeout 600 nc "$HOST" 5001
say net_g2h_rc "$?"
t1=$(uptime_s)
say net_g2h_mib "$mib"
say net_g2h_seconds "$(elapsed "$t0" "$t1")"
counters net_after_g2h >> /tmp/results

printf '#!/bin/sh\nexec sha256sum > /tmp/rx.sha\n' > /tmp/rx.sh
chmod +x /tmp/rx.sh
t0=$(uptime_s)
timeout 600 nc "$HOST" 5002 -e /tmp/rx.sh
say net_h2g_rc "$?"
t1=$(uptime_s)
say net_h2g_mib "$mib"
say net_h2g_seconds "$(elapsed "$t0" "$t1")"
[ -s /tmp/rx.sha ] && say guest_rx_sha256 "$(cut -d' ' -f1 /tmp/rx.sha)"
counters net >> /tmp/results

cat /tmp/results
