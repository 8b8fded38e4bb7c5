#!/bin/sh
# adb benchmark, test host side (`cargo xtask bench adb`, docs/adb.md):
# in each round, a raw vsock stream of MIB MiB into the guest (`vsock-test
# --raw` through the VMM's hybrid vsock socket to a guest `recv`) and an
# `adb push` of a MIB MiB file (adb client -> adb server -> the VMM's
# forwarded port 127.0.0.1:6522 (`--vsock ...,tcp=6522:5555`) -> guest
# adbd -> the guest's rootfs), alternately, in the same guest; then, to
# tell the transport from the guest's file writes, the same push to the
# guest's /dev/null, a raw stream whose guest receiver writes it to a file
# in the guest's rootfs like the push, and the push through `vmm
# adb-proxy` on 127.0.0.1:6520 instead (these three have no target: they
# tell adbd's share from the file system's, and the proxy's hop). Results
# are markers: raw_<r>_mibps, adb_<r>_mibps, null_<r>_mibps,
# rawfile_<r>_mibps, proxy_<r>_mibps, and where the test host's CPUs (one
# on x86_64, two on aarch64) went during each step: raw_<r>_cpu,
# adb_<r>_cpu, null_<r>_cpu, rawfile_<r>_cpu, proxy_<r>_cpu
# (clock ticks: busy and idle of the whole test host, the VMM's process
# with its vCPU threads, the proxy, the adb server; the rest of busy is
# the clients, kernel threads and interrupts; vmm_minflt: the VMM
# process's minor page faults, i.e. guest memory the test host backed for
# the first time; then KVM's exit,
# halt, wakeup and injection counts and halt-polling time of the step).
#
# Kernel command line: bench.rounds=R bench.mib=MIB bench.cpus=N (the
# guest's vCPUs).
. /lib/vmstack.sh
. /scenarios/adb-lib.sh
ROUNDS=$(cmdline_arg bench.rounds 3)
MIB=$(cmdline_arg bench.mib 64)
CPUS=$(cmdline_arg bench.cpus 1)
S=/tmp/bench-adb.sock
C=/tmp/bench-adb-ctl.sock
T=/tmp/bench-adb
mkdir -p $T
# pid_ticks PID: utime + stime of PID (0 if gone).
pid_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# pid_minflt PID: minor page faults of PID (0 if gone).
pid_minflt() {
    awk '{ print $10 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# KVM's statistics in the test host (debugfs, summed over its VMs; one VM
# runs here): exits of every kind, then port I/O, MMIO (virtio
# notifications), host-interrupt and interrupt-window exits, HLT exits,
# wakeups of a halted vCPU, interrupts injected, time spent polling
# before sleeping in HLT (ns).
KVM_STATS="exits io_exits mmio_exits irq_exits irq_window_exits halt_exits halt_wakeup irq_injections halt_poll_success_ns halt_poll_fail_ns"
grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
# kvm_stats: the KVM_STATS counters so far (0 where missing).
kvm_stats() {
    for k in $KVM_STATS; do
        cat "/sys/kernel/debug/kvm/$k" 2>/dev/null || echo 0
    done | tr '\n' ' '
}
# cpu_snapshot: busy idle vmm proxy server vmm_minflt (ticks so far), then
# the KVM_STATS counters.
cpu_snapshot() {
    set -- $(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    echo "$1 $2 $(pid_ticks "$vmm_pid") $(pid_ticks "$ADB_PROXY_PID") $(pid_ticks "$(pidof adb | awk '{ print $NF }')") $(pid_minflt "$vmm_pid") $(kvm_stats)"
}
# cpu_delta BEFORE AFTER: the ticks and counters between two snapshots as
# key=value (the poll times in ms).
cpu_delta() {
    echo "$1 | $2" | awk -v names="busy idle vmm proxy adb_server vmm_minflt $KVM_STATS" '{
        n = split(names, key, " ")
        out = ""
        for (i = 1; i <= n; i++) {
            d = $(n + 1 + i) - $i
            k = key[i]
            if (k ~ /_ns$/) { d = int(d / 1000000); sub(/_ns$/, "_ms", k) }
            out = out (i > 1 ? " " : "") k "=" d
        }
        print out
    }'
}
run_vmm vmm --cpus "$CPUS" --mem 512 --socket $C --vsock cid=3,socket=$S,tcp=6522:5555 \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=adbd adb.raw_rounds=$ROUNDS" /guest/vmlinuz &
vmm=$!
if ! adb_up $S; then
    mark adb_up failed
    vmm stop $C
    wait $vmm
    exit 1
fi
P=$ADB_SERIAL
D=127.0.0.1:6522
if ! adb_wait_device 60 $D; then
    mark adb_up "failed: $D"
    vmm stop $C
    wait $vmm
    exit 1
fi
for p in $(pidof vmm); do
    [ "$p" != "$ADB_PROXY_PID" ] && grep -q 'run' "/proc/$p/cmdline" 2>/dev/null && vmm_pid=$p
done
mark adb_up ok
mark bench_mib "$MIB"
mark bench_rounds "$ROUNDS"
head -c $((MIB * 1024 * 1024)) /dev/urandom > $T/file
# timed_push NAME ROUND SERIAL DEST SNAPSHOT: `adb -s SERIAL push` of the
# file to DEST, timed as the command's wall time; marks NAME_ROUND_mibps,
# _secs, _cpu (since SNAPSHOT), _client (adb's own last line) or _error.
timed_push() {
    t0=$(uptime_s)
    if timeout 300 adb -s "$3" push $T/file "$4" > $T/push 2>&1; then
        secs=$(elapsed_s "$t0")
        mark "${1}_${2}_cpu" "$(cpu_delta "$5" "$(cpu_snapshot)")"
        mark "${1}_${2}_secs" "$secs"
        mark "${1}_${2}_mibps" "$(awk -v m="$MIB" -v s="$secs" 'BEGIN { printf "%.2f\n", m / s }')"
    else
        mark "${1}_${2}_error" "$(tail -n 1 $T/push)"
    fi
    mark "${1}_${2}_client" "$(tail -n 1 $T/push)"
}
for r in $(seq "$ROUNDS"); do
    c0=$(cpu_snapshot)
    timeout 300 vsock-test connect-unix $S 6000 send "$MIB" --raw --retry 60 --tag "raw_$r" 2>&1 |
        mark_kv
    c1=$(cpu_snapshot)
    mark "raw_${r}_cpu" "$(cpu_delta "$c0" "$c1")"
    timed_push adb "$r" $D /data/bench-adb "$c1"
    adb -s $D shell rm -f /data/bench-adb
    timed_push null "$r" $D /dev/null "$(cpu_snapshot)"
    c3=$(cpu_snapshot)
    timeout 300 vsock-test connect-unix $S 6001 send "$MIB" --raw --retry 60 --tag "rawfile_$r" 2>&1 |
        mark_kv
    mark "rawfile_${r}_cpu" "$(cpu_delta "$c3" "$(cpu_snapshot)")"
    adb -s $D shell rm -f /data/bench-raw
    timed_push proxy "$r" $P /data/bench-adb "$(cpu_snapshot)"
    adb -s $D shell rm -f /data/bench-adb
done
vmm stop $C >/dev/null
wait $vmm
adb_down
rm -rf $T
