#!/bin/sh
# Device benchmark, guest side (guest.scenario=bench-devices), the same script
# under our VMM and under QEMU microvm; the test host side is
# prebuilts/testhost/scenarios/bench-devices.sh, the driver
# `cargo xtask bench devices` (docs/benchmarks.md).
#
# Kernel command line: bench.vmm=NAME (prefix of the result lines),
# bench.blk_mib=N, bench.net_mib=N, bench.vsock_mib=N (0: skip).
# Results: "@@BDEV <vmm>.<metric>=<value>" lines, MiB/s.
#   blk: sequential write then read of /dev/vda with O_DIRECT, 1 MiB blocks;
#   net: TCP with busybox nc to the test host's tap address, guest->host
#        (port 5001) then host->guest (port 5002), timed here;
#   vsock: `vsock-test --raw` (no checksum work), guest->host to host
#          port 5000 (the host's receiver reports),
#          then host->guest on guest port 6000 (our receiver reports).
. /lib/vmstack.sh
HOST=192.168.100.1
VMM=$(cmdline_arg bench.vmm unknown)
BLK=$(cmdline_arg bench.blk_mib 0)
NET=$(cmdline_arg bench.net_mib 0)
VS=$(cmdline_arg bench.vsock_mib 0)
dmesg -n 1
now() { cut -d' ' -f1 /proc/uptime; }
# mibps MIB T0 T1
mibps() { awk -v m="$1" -v a="$2" -v b="$3" 'BEGIN { d = b - a; if (d <= 0) d = 0.01; printf "%.1f", m / d }'; }
res() { echo "@@BDEV $VMM.$1=$2"; }
# How busy the guest's vCPU was during a transfer (100 - idle - iowait, in
# %, from /proc/stat): near 100 means the guest itself is the bottleneck,
# low means it waits for the device or the host.
cpu_snap() {
    read -r _ u n s i w q sq st _ < /proc/stat
    echo "$((u + n + s + q + sq + st)) $((i + w))"
}
busy() { # busy NAME "SNAP-BEFORE"
    set -- "$1" $2 $(cpu_snap)
    res "${1}_guest_busy_pct" "$(awk -v b0="$2" -v i0="$3" -v b1="$4" -v i1="$5" \
        'BEGIN { d = (b1 - b0) + (i1 - i0); if (d <= 0) d = 1; printf "%.0f", 100 * (b1 - b0) / d }')"
}
# dd_timed NAME MIB dd-args...: runs dd, reports MiB/s (or the failure).
dd_timed() {
    name=$1 mib=$2
    shift 2
    c0=$(cpu_snap)
    t0=$(now)
    if dd "$@" bs=1M count="$mib" 2>/tmp/dd.err; then
        t1=$(now)
        res "$name" "$(mibps "$mib" "$t0" "$t1")"
        busy "$name" "$c0"
    else
        res "${name}_error" "$(tail -n 1 /tmp/dd.err | tr ' ' '_')"
    fi
}

# ios FIELD: requests completed on vda so far (/sys/block/vda/stat field 1
# = reads, 5 = writes).
ios() { set -- "$1" $(cat /sys/block/vda/stat); shift "$1"; echo "$1"; }
# per_mib NAME FIELD BEFORE: the requests each MiB took, as the guest's
# block layer split the 1 MiB O_DIRECT blocks for the device.
per_mib() { res "$1_requests_per_mib" "$(awk -v a="$3" -v b="$(ios "$2")" -v m="$BLK" 'BEGIN { printf "%.2f", (b - a) / m }')"; }

if [ "$BLK" -gt 0 ]; then
    if [ -b /dev/vda ]; then
        res blk_size_mib "$(($(cat /sys/block/vda/size) / 2048))"
        res blk_max_sectors_kb "$(cat /sys/block/vda/queue/max_sectors_kb)"
        res blk_max_segments "$(cat /sys/block/vda/queue/max_segments)"
        w0=$(ios 5)
        dd_timed blk_write_mibps "$BLK" if=/dev/zero of=/dev/vda oflag=direct
        per_mib blk_write 5 "$w0"
        r0=$(ios 1)
        dd_timed blk_read_mibps "$BLK" if=/dev/vda of=/dev/null iflag=direct
        per_mib blk_read 1 "$r0"
    else
        res blk_error no_/dev/vda
    fi
fi

if [ "$NET" -gt 0 ]; then
    if eth0_up "$HOST" >/dev/null 2>&1; then
        printf '#!/bin/sh\nexec cat > /dev/null\n' > /tmp/sink.sh
        chmod +x /tmp/sink.sh
        c0=$(cpu_snap)
        t0=$(now)
        if dd if=/dev/zero bs=64k count=$((NET * 16)) 2>/dev/null | timeout 300 nc "$HOST" 5001; then
            res net_g2h_mibps "$(mibps "$NET" "$t0" "$(now)")"
            busy net_g2h_mibps "$c0"
        else
            res net_g2h_error nc_failed
        fi
        c0=$(cpu_snap)
        t0=$(now)
        if timeout 300 nc "$HOST" 5002 -e /tmp/sink.sh; then
            res net_h2g_mibps "$(mibps "$NET" "$t0" "$(now)")"
            busy net_h2g_mibps "$c0"
        else
            res net_h2g_error nc_failed
        fi
    else
        res net_error no_eth0
    fi
fi

if [ "$VS" -gt 0 ]; then
    c0=$(cpu_snap)
    timeout 300 vsock-test connect-vsock 2 5000 send "$VS" --raw --retry 20 --tag vs_g2h > /tmp/vs1 2>&1
    busy vsock_g2h_mibps "$c0"
    timeout 300 vsock-test listen-vsock 6000 recv --raw --tag vs_h2g > /tmp/vs2 2>&1
    v=$(sed -n 's/^vs_h2g_mibps=//p' /tmp/vs2)
    if [ -n "$v" ]; then res vsock_h2g_mibps "$v"; else res vsock_h2g_error "$(tr '\n ' '__' < /tmp/vs2)"; fi
    grep -q '^vs_g2h_bytes=' /tmp/vs1 || res vsock_g2h_error "$(tr '\n ' '__' < /tmp/vs1)"
fi
res done 1
