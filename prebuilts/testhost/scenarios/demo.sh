#!/bin/sh
# `cargo xtask demo`: boot the guest (guest.scenario=demo) with our VMM on
# the nested KVM; then the system manager with an android guest whose side
# of the power handshake goes through binder: `vmbinder watch` in the guest
# beside the arbiter's decisions (docs/android.md).
/bin/vmm run --cpus 2 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=demo" /guest/vmlinuz 2>&1

echo "==== demo: sysmgr and an android guest over binder"
D=/tmp/demo
S=$D/state
mkdir -p $D
cat > $D/policy.toml <<POLICY
[[guest]]
name = "android"
role = "android"
control_socket = "$D/a.ctl"
vsock_socket = "$D/a.vsock"
launch = ["/bin/vmm", "run", "--cpus", "1", "--mem", "192", "--socket", "$D/a.ctl", "--power-arbiter", "--vsock", "cid=3,socket=$D/a.vsock", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 guest.scenario=demo-android", "/guest/vmlinuz"]
POLICY
mkfifo $D/mcu.in
mcu-sim --socket $D/mcu.sock < $D/mcu.in > $D/mcu.out 2>&1 &
exec 3>$D/mcu.in
# Line by line (busybox grep/sed buffer a pipe): the arbiter's decisions.
sysmgr run --policy $D/policy.toml --state-dir $S --mcu-socket $D/mcu.sock 2>&1 |
    while IFS= read -r l; do
        case "$l" in *"INFO #"*|*"INFO     "*) echo "sysmgr| ${l#*INFO }" ;; esac
    done &
echo "ignition on" >&3
for i in $(seq 240); do
    [ -f $S/android.vmm.log ] && break
    sleep 1
done
# The guest's side: vmbinder list/watch and the handshake client.
tail -f $S/android.vmm.log |
    while IFS= read -r l; do
        case "$l" in *"android watch|"*|*"vhal: "*|*"Found "*|*"sysmgr: ["*) echo "$l" ;; esac
    done &
for i in $(seq 240); do
    grep -q "vhal: REPORT ON" $S/android.vmm.log 2>/dev/null && break
    sleep 1
done
sleep 2
echo "==== demo: ignition off"
echo "ignition off" >&3
for i in $(seq 120); do
    grep -q "<- POWER_OFF" $D/mcu.out 2>/dev/null && break
    sleep 1
done
sleep 1
grep "<-" $D/mcu.out | sed 's/^/mcu| /'
echo "==== demo: done"
