#!/bin/sh
# virtio-net: bring up eth0 (192.168.100.2/24) and ping the test host's tap
# (192.168.100.1); /init powers off afterwards. Used across restarts.
. /lib/vmstack.sh
HOST=192.168.100.1
dmesg -n 1
mark net_ping_warmup "$(eth0_up "$HOST")"
ping -c 3 "$HOST" > /tmp/ping.out
cat /tmp/ping.out
mark net_ping_summary "$(grep 'packets transmitted' /tmp/ping.out)"
