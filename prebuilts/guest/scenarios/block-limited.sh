#!/bin/sh
# virtio-blk rate limiters (host side: block-limited): vda is limited to
# 1 MiB/s (1 MiB at once), vdb to 50 requests/s (50 at once). Direct reads
# (no page cache, no readahead): 4 MiB in 64 KiB requests from vda, 200
# requests of 4 KiB from vdb. Each should take about 3 s.
. /lib/vmstack.sh
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
sectors_read() { awk '{ print $3 }' "/sys/block/$1/stat"; }

before=$(sectors_read vda)
a=$(now)
dd if=/dev/vda of=/dev/null bs=64k count=64 iflag=direct 2>/dev/null
mark bw_dd_rc "$?"
b=$(now)
mark bw_seconds "$(elapsed "$a" "$b")"
mark bw_sectors "$(( $(sectors_read vda) - before ))"

before=$(awk '{ print $1 }' /sys/block/vdb/stat)
a=$(now)
dd if=/dev/vdb of=/dev/null bs=4k count=200 iflag=direct 2>/dev/null
mark ops_dd_rc "$?"
b=$(now)
mark ops_seconds "$(elapsed "$a" "$b")"
mark ops_requests "$(( $(awk '{ print $1 }' /sys/block/vdb/stat) - before ))"
