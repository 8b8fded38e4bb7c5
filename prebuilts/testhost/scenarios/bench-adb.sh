#!/bin/sh
# adb benchmark, test host side (`cargo xtask bench adb`, docs/adb.md):
# in each round, a raw vsock stream of MIB MiB into the guest (`vsock-test
# --raw` through the VMM's hybrid vsock socket to a guest `recv`) and an
# `adb push` of a MIB MiB file (adb client -> adb server -> vmm adb-proxy
# -> hybrid vsock -> guest adbd -> the guest's rootfs), alternately, in the
# same guest. Results are markers: raw_<r>_mibps, adb_<r>_mibps.
#
# Kernel command line: bench.rounds=R bench.mib=MIB.
. /lib/vmstack.sh
. /scenarios/adb-lib.sh
ROUNDS=3
MIB=64
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bench.rounds=*) ROUNDS="${arg#bench.rounds=}" ;;
        bench.mib=*) MIB="${arg#bench.mib=}" ;;
    esac
done
S=/tmp/bench-adb.sock
C=/tmp/bench-adb-ctl.sock
T=/tmp/bench-adb
mkdir -p $T
run_vmm vmm --cpus 2 --mem 512 --socket $C --vsock cid=3,socket=$S \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=adbd adb.raw_rounds=$ROUNDS" /guest/vmlinuz &
vmm=$!
if ! adb_up $S; then
    mark adb_up failed
    vmm stop $C
    wait $vmm
    exit 1
fi
D=$ADB_SERIAL
mark adb_up ok
mark bench_mib "$MIB"
mark bench_rounds "$ROUNDS"
head -c $((MIB * 1024 * 1024)) /dev/urandom > $T/file
for r in $(seq "$ROUNDS"); do
    timeout 300 vsock-test connect-unix $S 6000 send "$MIB" --raw --retry 60 --tag "raw_$r" 2>&1 |
        mark_kv
    t0=$(uptime_s)
    if timeout 300 adb -s $D push $T/file /data/bench-adb > $T/push 2>&1; then
        secs=$(elapsed_s "$t0")
        mark "adb_${r}_secs" "$secs"
        mark "adb_${r}_mibps" "$(awk -v m="$MIB" -v s="$secs" 'BEGIN { printf "%.2f\n", m / s }')"
    else
        mark "adb_${r}_error" "$(tail -n 1 $T/push)"
    fi
    mark "adb_${r}_client" "$(tail -n 1 $T/push)"
    adb -s $D shell rm -f /data/bench-adb
done
vmm stop $C >/dev/null
wait $vmm
adb_down
rm -rf $T
