#!/bin/sh
# Debugging: where the time of our VMM's virtio-blk and vsock transfers goes
# in the test host (`cargo xtask bench devices-profile`, docs/benchmarks.md).
# Needs `perf` from the extra initramfs of that command. Two runs of our VMM
# with the bench-devices guest (blk only, then vsock only), each under
# `perf record -a -g`; every transfer's window is cut from the guest's
# timestamped result lines. Output per transfer:
#   @@PROF-WINDOW <name> <start>,<end>    (CLOCK_MONOTONIC seconds)
#   @@PROF-DATA <name> <base64 of gzip of `perf script` for the window>
# then @@PROF-DONE.
if ! command -v perf > /dev/null; then
    echo "profile-devices: perf missing: this scenario runs only under \`cargo xtask bench devices-profile\`"
    exit 1
fi
BLK=256
VS=64
FREQ=997
IMG=/tmp/bench-disk.img
S=/tmp/bench-vsock.sock
T=/tmp/prof-out
rm -rf $T
mkdir -p $T
now() { cut -d' ' -f1 /proc/uptime; }
read -r printk_level _ < /proc/sys/kernel/printk
dmesg -n 1
dd if=/dev/zero of=$IMG bs=1M count=$BLK 2>/dev/null || { echo "profile-devices: cannot create $IMG"; exit 1; }
echo "@@PROF-INFO perf=$(perf version | tr ' ' '_') freq=$FREQ"

# run NAME GUEST-PARAMS: one VMM run under perf; the guest's lines, each
# prefixed with the uptime it arrived at, go to $T/NAME.console.
run() {
    name=$1
    shift
    rm -f "$S" "${S}_5000"
    as_vmm_user timeout 400 vsock-test listen-unix "${S}_5000" recv --raw --tag g2h > $T/vs_g2h 2>&1 &
    rx=$!
    timeout 400 vsock-test connect-unix $S 6000 send "$VS" --raw --retry 380 --tag h2g_send > /dev/null 2>&1 &
    tx=$!
    perf record -a -g -k CLOCK_MONOTONIC -F $FREQ -o $T/$name.data > /dev/null 2> $T/$name.perf-err &
    pf=$!
    sleep 1
    timeout 400 /bin/vmm run --cpus 1 --mem 256 --rwdisk $IMG --vsock cid=3,socket=$S \
        --initrd /guest/initramfs.cpio.gz \
        --params "quiet guest.scenario=bench-devices bench.vmm=ours $*" /guest/vmlinuz 2> $T/vmm.err |
        while read -r line; do echo "$(now) $line"; done > $T/$name.console
    kill -INT $pf
    wait $pf
    kill $rx $tx 2> /dev/null
    wait 2> /dev/null
    grep '@@BDEV' $T/$name.console
    grep -q '@@BDEV ours.done=1' $T/$name.console || { echo "profile-devices: guest run $name failed:"; tail -n 5 $T/vmm.err; tail -n 3 $T/$name.perf-err; }
}
# window CONSOLE METRIC MIB [RATE]: "start,end" of the transfer whose result
# line is METRIC (its MiB/s, or RATE when given, dates the start).
window() {
    awk -v m="ours.$2" -v mib="$3" -v rate="$4" '$2 == "@@BDEV" {
        split($3, kv, "=");
        if (kv[1] == m) { r = (rate != "") ? rate : kv[2]; if (r > 0) printf "%.3f,%.3f", $1 - mib / r, $1 }
    }' "$1"
}
# emit NAME DATA WINDOW
emit() {
    [ -n "$3" ] || { echo "profile-devices: no window for $1"; return; }
    echo "@@PROF-WINDOW $1 $3"
    printf '@@PROF-DATA %s ' "$1"
    perf script -i "$2" --time "$3" -F comm,tid,ip,sym,dso 2> /dev/null | gzip -9 | base64 -w 0
    echo
}

run blk "bench.blk_mib=$BLK bench.net_mib=0 bench.vsock_mib=0"
run vsock "bench.blk_mib=0 bench.net_mib=0 bench.vsock_mib=$VS"
emit blk_write $T/blk.data "$(window $T/blk.console blk_write_mibps $BLK)"
emit blk_read $T/blk.data "$(window $T/blk.console blk_read_mibps $BLK)"
# guest -> host: the host receiver reports the rate; the guest's busy line
# marks the end.
g2h=$(sed -n 's/^g2h_mibps=//p' $T/vs_g2h)
if [ -n "$g2h" ]; then
    emit vsock_g2h $T/vsock.data "$(window $T/vsock.console vsock_g2h_mibps_guest_busy_pct $VS "$g2h")"
else
    echo "profile-devices: no window for vsock_g2h (host receiver: $(tr '\n' ' ' < $T/vs_g2h))"
fi
emit vsock_h2g $T/vsock.data "$(window $T/vsock.console vsock_h2g_mibps $VS)"
echo "@@PROF-DONE"
dmesg -n "$printk_level"
exit 0
