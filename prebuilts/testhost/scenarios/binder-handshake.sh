#!/bin/sh
# The VHAL power handshake through binder with one android guest (both
# architectures; tests/tests/binder.rs runs it on pKVM): sysmgr launches
# the guest, whose vhal-binder-test speaks kernel binder to
# sysmgr-binderd, which forwards over RPC binder over vsock to sysmgr.
# Ignition on: WAIT_FOR_VHAL -> ON; ignition off: SHUTDOWN_PREPARE, one
# postpone, SHUTDOWN_START, poweroff allowed, then the MCU's POWER_OFF.
# Steps are `step` markers; at the end `sysmgr events` (`events`), the
# MCU's and sysmgr's output (`mcu`, `sysmgr`) and the guest's console
# (`android| ` lines, its markers as `android.guest.*`).
. /lib/vmstack.sh
D=/tmp/binder-hs
S=$D/state
# sysmgr switches to its sandbox user (65534) and creates the guests' RPC
# binder sockets beside their vsock sockets here; the MCU simulator's socket
# must let it connect (umask 0: mode 0777).
mkdir -p $D
chown 65534:65534 $D
cat > $D/policy.toml <<POLICY
[system]
shutdown_deadline_ms = 60000
final_grace_ms = 15000

[[guest]]
name = "android"
role = "android"
control_socket = "$D/a.ctl"
vsock_socket = "$D/a.vsock"
launch = ["/bin/vmm", "run", "--cpus", "1", "--mem", "192", "--socket", "$D/a.ctl", "--power-arbiter", "--vsock", "cid=3,socket=$D/a.vsock", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 guest.scenario=sysmgr-android vhal.script=postpone:5000,start", "/guest/vmlinuz"]
POLICY
mkfifo $D/mcu.in
(umask 0; exec mcu-sim --socket $D/mcu.sock) < $D/mcu.in > $D/mcu.out 2>&1 &
exec 3>$D/mcu.in
sysmgr run --policy $D/policy.toml --state-dir $S --mcu-socket $D/mcu.sock > $D/sysmgr.out 2>&1 &
SM=$!
wait_for() {
    for i in $(seq "$3"); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 1
    done
    mark step "TIMEOUT after $3 s waiting for '$2' in $1"
    return 1
}
done_() {
    sysmgr events --state-dir $S 2>&1 | mark_lines events
    kill $SM 2>/dev/null
    mark_lines mcu < $D/mcu.out
    mark_lines sysmgr < $D/sysmgr.out
    [ -f $S/android.vmm.log ] && guest_lines android < $S/android.vmm.log
}
echo "ignition on" >&3
wait_for $S/android.vmm.log "vhal: REPORT ON" 400 || { done_; exit 1; }
mark step "android up, ON through binder"
echo "ignition off" >&3
wait_for $D/mcu.out "<- POWER_OFF" 300 || { done_; exit 1; }
mark step "system powered off"
done_
exit 0
