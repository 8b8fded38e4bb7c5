#!/bin/sh
# adb into a guest the way Cuttlefish does it (docs/adb.md): the guest's
# adbd on vsock port 5555 (guest.scenario=adbd), `vmm adb-proxy` on
# 127.0.0.1:6520, Debian's adb client here. Markers: the device list, a
# shell's exit status and output, two concurrent shells, a 64 MiB push and
# pull with sha256 sums, malformed packets from a raw client (adbd closes
# that connection) and from a fake device (the client rejects it) while
# the VMM and adbd keep serving, and `adb reboot` as the guest's power
# request that the arbiter (`vmm events --arbiter`) sees and allows, after
# which the same VMM boots the guest again and adb reconnects. The same
# adbd is also reached through the VMM's own forwarded port (`--vsock
# ...,tcp=6522:5555`, no proxy): a shell, a 16 MiB push and pull with
# sha256 sums, another user's client closed, and the port again after the
# reboot.
. /lib/vmstack.sh
. /scenarios/adb-lib.sh
S=/tmp/adb-vsock.sock
C=/tmp/adb-ctl.sock
T=/tmp/adb-test
PORT=6520
DIRECT=127.0.0.1:6522
MIB=64
mkdir -p $T
run_vmm vmm --cpus 2 --mem 512 --socket $C --power-arbiter --vsock cid=3,socket=$S,tcp=6522:5555 \
    --initrd /guest/initramfs.cpio.gz --params "console=ttyS0 guest.scenario=adbd" \
    /guest/vmlinuz &
vmm=$!
wait_for_socket $C || { mark adb_up no-control-socket; wait $vmm; exit 1; }
# The power arbiter (requests are held from the first boot: --power-arbiter).
vmm events --arbiter $C > $T/events 2>&1 &
arbiter=$!

finish() {
    vmm stop $C >/dev/null 2>&1
    wait $vmm
    kill $arbiter 2>/dev/null
    mark_lines arbiter < $T/events
    adb_down
    rm -rf $T
}

t0=$(uptime_s)
if ! adb_up $S $PORT; then
    mark adb_up failed
    finish
    exit 1
fi
D=$ADB_SERIAL
mark adb_up "ok after $(elapsed_s "$t0") s"
mark devices "$(adb devices -l | grep "^$D" | tr -s ' \t' ' ')"

# A command's stdout, stderr and exit status (shell protocol v2).
adb -s $D shell 'echo hi; echo oops >&2; exit 3' > $T/out 2> $T/err
mark shell_rc $?
mark shell_stdout "$(cat $T/out)"
mark shell_stderr "$(cat $T/err)"

# Two shells at once: each waits (at most 60 s) for a file the other makes.
adb -s $D shell 'touch /tmp/first-started; i=0; while [ ! -e /tmp/second-ran ]; do
    i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done; echo first-done' > $T/first 2>&1 &
first=$!
adb -s $D shell 'i=0; while [ ! -e /tmp/first-started ]; do
    i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done; touch /tmp/second-ran; echo second-done' \
    > $T/second 2>&1
mark concurrent_second "rc=$? $(cat $T/second)"
wait $first
mark concurrent_first "rc=$? $(cat $T/first)"

# push and pull, checksummed on both sides.
head -c $((MIB * 1024 * 1024)) /dev/urandom > $T/big
mark push_src_sha256 "$(sha256sum < $T/big | cut -d' ' -f1)"
t0=$(uptime_s)
adb -s $D push $T/big /data/adb-test/big > $T/push 2>&1
mark push_rc $?
mark push_secs "$(elapsed_s "$t0")"
mark push_output "$(tail -n 1 $T/push)"
mark push_guest_sha256 "$(adb -s $D shell sha256sum /data/adb-test/big | cut -d' ' -f1)"
rm -f $T/big
t0=$(uptime_s)
adb -s $D pull /data/adb-test/big $T/big.back > $T/pull 2>&1
mark pull_rc $?
mark pull_secs "$(elapsed_s "$t0")"
mark pull_output "$(tail -n 1 $T/pull)"
mark pull_sha256 "$(sha256sum < $T/big.back | cut -d' ' -f1)"
rm -f $T/big.back
adb -s $D shell rm -f /data/adb-test/big

# The VMM's own forwarded port: the same adbd without the proxy.
if adb_wait_device 60 $DIRECT; then
    mark direct_shell "$(adb -s $DIRECT shell 'echo direct-$((6 * 7))')"
    head -c $((16 * 1024 * 1024)) /dev/urandom > $T/mid
    mark direct_src_sha256 "$(sha256sum < $T/mid | cut -d' ' -f1)"
    adb -s $DIRECT push $T/mid /data/adb-test/mid > $T/push 2>&1
    mark direct_push "rc=$? $(tail -n 1 $T/push)"
    mark direct_guest_sha256 "$(adb -s $DIRECT shell sha256sum /data/adb-test/mid | cut -d' ' -f1)"
    adb -s $DIRECT pull /data/adb-test/mid $T/mid.back > $T/pull 2>&1
    mark direct_pull "rc=$? $(tail -n 1 $T/pull)"
    mark direct_pull_sha256 "$(sha256sum < $T/mid.back | cut -d' ' -f1)"
    adb -s $DIRECT shell rm -f /data/adb-test/mid
    rm -f $T/mid $T/mid.back
else
    mark direct_shell "not online"
fi
# Another user's client of the forwarded port is closed before it reaches
# the guest (the VMM checks who owns the client's socket; docs/vsock.md).
grep -q "^uid-4242:" /etc/passwd || echo "uid-4242:x:4242:4242::/tmp:/bin/sh" >> /etc/passwd
grep -q "^uid-4242:" /etc/group || echo "uid-4242:x:4242:" >> /etc/group
echo hello | timeout 30 su -s /bin/sh uid-4242 -c "nc 127.0.0.1 6522" > $T/other 2>&1
mark direct_other_user "rc=$? bytes=$(wc -c < $T/other)"

# The proxy's sandbox once it bridged (docs/security.md): started as root,
# it runs as the vsock socket's owner without any capability, every thread
# under its class's seccomp filter.
for f in Uid Gid CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp; do
    mark "proxy.$f" "$(awk -v k="$f:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' /proc/$ADB_PROXY_PID/status)"
done
mark proxy.threads "$(ls /proc/$ADB_PROXY_PID/task | wc -l)"
mark proxy.threads_seccomp "$(cat /proc/$ADB_PROXY_PID/task/*/status | grep -c '^Seccomp:[[:space:]]*2')"
mark proxy.socket_owner "$(stat -c '%u' $S)"

# Malformed packets from a raw client, after a valid CNXN: one with a bad
# magic, one announcing a 2 GiB payload. adbd answers the CNXN and closes
# the connection (its log says why); nc ends when it does.
CNXN='\103\116\130\116\001\000\000\001\000\020\000\000\007\000\000\000\000\000\000\000\274\261\247\261\150\157\163\164\072\072\000'
BAD_MAGIC='\117\120\105\116\001\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000'
TOO_LONG='\117\120\105\116\001\000\000\000\000\000\000\000\377\377\377\177\000\000\000\000\260\257\272\261'
for case in BAD_MAGIC TOO_LONG; do
    eval bad=\$$case
    printf "$CNXN$bad" | timeout 60 nc 127.0.0.1 $PORT > $T/raw 2>&1
    mark "raw_${case}" "rc=$? reply=$(head -c 4 $T/raw) bytes=$(wc -c < $T/raw)"
done
mark after_raw "$(adb -s $D shell echo still-serving)"

# A fake device (guest port 5556 sends bytes that are no adb packet): the
# client must not take it for a device.
vmm adb-proxy --vsock-socket $S --port 6521 --guest-port 5556 > $T/proxy2.log 2>&1 &
proxy2=$!
adb connect 127.0.0.1:6521 > $T/fake 2>&1
sleep 3
mark fake_device_state "$(adb -s 127.0.0.1:6521 get-state 2>&1 | head -n 1)"
adb disconnect 127.0.0.1:6521 >/dev/null 2>&1
kill $proxy2
mark after_fake "$(adb -s $D shell echo still-serving)"
mark vmm_status "$(vmm status $C)"

# adb reboot: the guest's own reboot, held for the arbiter, which allows it.
mark boot_id_1 "$(adb -s $D shell cat /proc/sys/kernel/random/boot_id)"
timeout 300 adb -s $D reboot > $T/reboot 2>&1 &
reboot=$!
id=
for _i in $(seq 120); do
    id=$(sed -n 's/^event power-request id=\([0-9]*\) kind=reboot$/\1/p' $T/events | head -n 1)
    [ -n "$id" ] && break
    sleep 1
done
mark decide "$(vmm decide $C "${id:-0}" allow 2>&1)"
wait $reboot
mark reboot_rc "$? $(cat $T/reboot)"
t0=$(uptime_s)
if adb_wait_device 180; then
    mark after_reboot "online after $(elapsed_s "$t0") s"
    mark boot_id_2 "$(adb -s $D shell cat /proc/sys/kernel/random/boot_id)"
    # The forwarded port outlives the guest's reboot (the VMM keeps it).
    adb_wait_device 60 $DIRECT
    mark direct_after_reboot "$(adb -s $DIRECT shell cat /proc/sys/kernel/random/boot_id)"
else
    mark after_reboot failed
fi
finish
exit 0
