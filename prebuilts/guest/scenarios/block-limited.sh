#!/bin/sh
# virtio-blk rate limiters (host side: block-limited): vda is limited to
# 1 MiB/s (1 MiB at once), vdb to 50 requests/s (50 at once). Direct reads
# (no page cache, no readahead): 4 MiB in 64 KiB requests from vda, 200
# requests of 4 KiB from vdb. Each should take about 3 s.
. /lib/vmstack.sh
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# stat_field DEV N: field N of /sys/block/DEV/stat (1: reads completed,
# 3: sectors read).
stat_field() { awk -v n="$2" '{ print $n }' "/sys/block/$1/stat"; }

# timed_read KEY DEV BS COUNT FIELD NAME: a direct read of COUNT blocks of
# BS from DEV; marks KEY_dd_rc, KEY_seconds and, as KEY_NAME, how much
# stat_field DEV FIELD grew meanwhile.
timed_read() {
    before=$(stat_field "$2" "$5")
    a=$(now)
    dd if="/dev/$2" of=/dev/null bs="$3" count="$4" iflag=direct 2>/dev/null
    mark "${1}_dd_rc" "$?"
    b=$(now)
    mark "${1}_seconds" "$(elapsed "$a" "$b")"
    mark "${1}_$6" "$(( $(stat_field "$2" "$5") - before ))"
}

timed_read bw vda 64k 64 3 sectors
timed_read ops vdb 4k 200 1 requests
