#!/bin/sh
# Device benchmark, test host side: our VMM and QEMU -M microvm boot the same
# guest (guest.scenario=bench-devices) with a virtio-blk disk on the same
# tmpfs image and a virtio-net card on a tap; ours also gets vsock. Peers
# measured here in the same run: dd on the image itself, and vsock-test over
# a plain unix socket pair (vsock and the pair: `vsock-test --raw`, the
# transport alone, no per-byte checksum work). Needs the extra initramfs of `cargo xtask bench
# devices` (QEMU and its libraries); see docs/benchmarks.md.
#
# Kernel command line: bench.blk_mib=N bench.net_mib=N bench.vsock_mib=N
# bench.rounds=R. Results: "@@BDEV <who>.<metric>=<value>" lines (MiB/s),
# one per round; "@@BDEV-INFO key=value"; "@@BDEV-DONE" at the end.
QEMU=/usr/bin/qemu-system-x86_64
if [ ! -x "$QEMU" ]; then
    echo "bench-devices: QEMU missing: this scenario runs only under \`cargo xtask bench devices\`"
    exit 1
fi
. /lib/vmstack.sh
BLK=$(cmdline_arg bench.blk_mib 256)
NET=$(cmdline_arg bench.net_mib 32)
VS=$(cmdline_arg bench.vsock_mib 64)
ROUNDS=$(cmdline_arg bench.rounds 1)
read -r printk_level _ < /proc/sys/kernel/printk
dmesg -n 1
IMG=/tmp/bench-disk.img
S=/tmp/bench-vsock.sock
T=/tmp/bench-out
TAP=vmtap0
MAC=52:54:00:12:34:56
MEM=256
PARAMS="quiet guest.scenario=bench-devices bench.blk_mib=$BLK bench.net_mib=$NET"
rm -rf $T
mkdir -p $T
now() { cut -d' ' -f1 /proc/uptime; }
mibps() { awk -v m="$1" -v a="$2" -v b="$3" 'BEGIN { d = b - a; if (d <= 0) d = 0.01; printf "%.1f", m / d }'; }
# Host-side lines are collected in a file and printed when no guest shares
# the console.
res() { echo "@@BDEV $1=$2" >> $T/results; }
flush() { [ -f $T/results ] && cat $T/results; rm -f $T/results; }

echo "@@BDEV-INFO qemu=$($QEMU --version | head -n 1 | tr ' ' '_')"
echo "@@BDEV-INFO kernel=$(uname -r)"
echo "@@BDEV-INFO sizes=blk:${BLK}MiB,net:${NET}MiB,vsock:${VS}MiB,rounds:$ROUNDS,mem:${MEM}MiB,cpus:1"
echo "@@BDEV-INFO mem_total_kib=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"

# The image, fully allocated in tmpfs.
dd if=/dev/zero of=$IMG bs=1M count="$BLK" 2>/dev/null || { echo "bench-devices: cannot create $IMG"; exit 1; }
printf '#!/bin/sh\nexec cat > /dev/null\n' > /tmp/sink.sh
chmod +x /tmp/sink.sh

# Brings the tap up once the VMM has created it (background).
tap_up() {
    wait_path -e "/sys/class/net/$TAP" 600
    ip addr add 192.168.100.1/24 dev "$TAP" && ip link set "$TAP" up ||
        echo "@@BDEV $1.tap_error=cannot_configure_$TAP" >> $T/results
}

# The host ends of the guest's TCP transfers (one-shot listeners).
net_listeners() {
    nc -l -p 5001 -e /tmp/sink.sh &
    nc1=$!
    dd if=/dev/zero bs=64k count=$((NET * 16)) 2>/dev/null | nc -l -p 5002 &
    nc2=$!
}

# cpu_sampler PID FILE: appends /proc/PID/stat (marked "P ") and every
# thread's stat to FILE every 0.2 s while PID lives (background).
cpu_sampler() {
    : > "$2"
    while [ -d "/proc/$1" ]; do
        { printf 'P '; cat "/proc/$1/stat"; cat /proc/"$1"/task/*/stat; } >> "$2" 2>/dev/null
        sleep 0.2
    done
}
# cpu_report WHO FILE: "@@BDEV-INFO WHO.cpu=total:S,<thread>:S,..." (CPU
# seconds, user + system, each thread's last sample; threads of the same
# name added up; total is the whole process, exited threads included).
cpu_report() {
    [ -s "$2" ] || return
    awk -v who="$1" '{
        o = index($0, "("); c = index($0, ") ");
        comm = substr($0, o + 1, c - o - 1); gsub(/[ ,:=]/, "_", comm);
        split(substr($0, c + 2), f, " ");
        t = (f[12] + f[13]) / 100; tid = $1;
        if ($1 == "P") { if (t > total) total = t; next }
        if (!(tid in cpu)) { order[++n] = tid; name[tid] = comm }
        if (t > cpu[tid]) cpu[tid] = t
    } END {
        for (i = 1; i <= n; i++) {
            k = name[order[i]];
            if (!(k in sum)) korder[++m] = k;
            sum[k] += cpu[order[i]]
        }
        line = "total:" total;
        for (i = 1; i <= m; i++) line = line "," korder[i] ":" sum[korder[i]];
        print "@@BDEV-INFO " who ".cpu=" line
    }' "$2" >> $T/results
}

host_peers() {
    t0=$(now)
    dd if=/dev/zero of=$IMG bs=1M count="$BLK" conv=notrunc 2>/dev/null
    res host.blk_write_mibps "$(mibps "$BLK" "$t0" "$(now)")"
    # The read is four passes: one takes ~0.2 s, against /proc/uptime's 10 ms.
    t0=$(now)
    for _ in 1 2 3 4; do dd if=$IMG of=/dev/null bs=1M count="$BLK" 2>/dev/null; done
    res host.blk_read_mibps "$(mibps "$((BLK * 4))" "$t0" "$(now)")"
    vsock-test listen-unix /tmp/bench-pair recv --raw --tag up > $T/pair 2>&1 &
    p=$!
    vsock-test connect-unix-raw /tmp/bench-pair send "$VS" --raw --retry 10 --tag up_send > /dev/null 2>&1
    wait $p
    v=$(sed -n 's/^up_mibps=//p' $T/pair)
    if [ -n "$v" ]; then res unix.pair_mibps "$v"; else res unix.pair_error "$(tr '\n ' '__' < $T/pair)"; fi
    flush
}

run_ours() {
    net_listeners
    rm -f "$S" "${S}_5000"
    as_vmm_user timeout 400 vsock-test listen-unix "${S}_5000" recv --raw --tag g2h > $T/vs_g2h 2>&1 &
    vs_rx=$!
    /bin/vmm run --cpus 1 --mem $MEM --rwdisk $IMG --net "tap=$TAP,mac=$MAC" \
        --vsock cid=3,socket=$S --initrd /guest/initramfs.cpio.gz \
        --params "$PARAMS bench.vmm=ours bench.vsock_mib=$VS" /guest/vmlinuz 2> $T/vmm.err &
    vmm=$!
    cpu_sampler $vmm $T/cpu-ours &
    tap_up ours &
    # Host -> guest: retried until the guest listens (after its other tests).
    timeout 400 vsock-test connect-unix $S 6000 send "$VS" --raw --retry 380 --tag h2g_send > $T/vs_h2g 2>&1 &
    vs_tx=$!
    wait $vmm
    rc=$?
    kill $vs_rx $vs_tx $nc1 $nc2 2>/dev/null
    wait 2>/dev/null
    v=$(sed -n 's/^g2h_mibps=//p' $T/vs_g2h)
    if [ -n "$v" ]; then res ours.vsock_g2h_mibps "$v"; else res ours.vsock_g2h_error "$(tr '\n ' '__' < $T/vs_g2h)"; fi
    [ "$rc" = 0 ] || { res ours.vmm_rc "$rc"; tail -n 5 $T/vmm.err; }
    cpu_report ours $T/cpu-ours
    flush
}

run_qemu() {
    net_listeners
    timeout 400 $QEMU -M microvm -accel kvm -cpu host -smp 1 -m $MEM \
        -name bench,debug-threads=on -nodefaults -no-user-config -display none -no-reboot -serial stdio \
        -bios /usr/share/qemu/bios-microvm.bin \
        -kernel /guest/vmlinuz -initrd /guest/initramfs.cpio.gz \
        -append "console=ttyS0 reboot=acpi panic=-1 pci=off $PARAMS bench.vmm=qemu bench.vsock_mib=0" \
        -drive id=d0,file=$IMG,format=raw,if=none,cache=writeback,aio=threads \
        -device virtio-blk-device,drive=d0 \
        -netdev tap,id=n0,ifname=$TAP,script=no,downscript=no \
        -device virtio-net-device,netdev=n0,mac=$MAC < /dev/null 2> $T/qemu.err &
    q=$!
    cpu_sampler $q $T/cpu-qemu &
    tap_up qemu &
    wait $q
    rc=$?
    kill $nc1 $nc2 2>/dev/null
    wait 2>/dev/null
    [ "$rc" = 0 ] || { res qemu.rc "$rc"; tail -n 5 $T/qemu.err; }
    cpu_report qemu $T/cpu-qemu
    flush
}

r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "bench-devices: round $r of $ROUNDS at $(now) s"
    host_peers
    echo "bench-devices: our VMM at $(now) s"
    run_ours
    echo "bench-devices: QEMU microvm at $(now) s"
    run_qemu
    r=$((r + 1))
done
echo "bench-devices: finished at $(now) s"
echo "@@BDEV-DONE"
dmesg -n "$printk_level"
exit 0
