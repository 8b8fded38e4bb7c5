#!/bin/sh
# `cargo xtask bench binder`: sysmgr with one android guest; the guest
# times getSystemState through binder and a raw vsock echo (host port
# 5000, vsock-test echo) and prints `bench: ...` lines.
D=/tmp/bench-binder
S=$D/state
# sysmgr switches to its sandbox user (65534) and creates the guests' RPC
# binder sockets beside their vsock sockets here; the MCU simulator's socket
# must let it connect (umask 0: mode 0777).
mkdir -p $D
chown 65534:65534 $D
count=1000
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bench.count=*) count="${arg#bench.count=}" ;;
    esac
done
cat > $D/policy.toml <<POLICY
[[guest]]
name = "android"
role = "android"
control_socket = "$D/a.ctl"
vsock_socket = "$D/a.vsock"
launch = ["/bin/vmm", "run", "--cpus", "1", "--mem", "256", "--socket", "$D/a.ctl", "--power-arbiter", "--vsock", "cid=3,socket=$D/a.vsock", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 guest.scenario=bench-binder bench.count=$count", "/guest/vmlinuz"]
POLICY
as_vmm_user vsock-test listen-unix $D/a.vsock_5000 echo --count 1 > $D/echo.out 2>&1 &
mkfifo $D/mcu.in
(umask 0; exec mcu-sim --socket $D/mcu.sock) < $D/mcu.in > $D/mcu.out 2>&1 &
exec 3>$D/mcu.in
sysmgr run --policy $D/policy.toml --state-dir $S --mcu-socket $D/mcu.sock > $D/sysmgr.out 2>&1 &
echo "ignition on" >&3
for i in $(seq 600); do
    grep -q "@@BENCH-BINDER-DONE\|@@vmstack:binder=sysmgr not registered" $S/android.vmm.log 2>/dev/null && break
    sleep 1
done
grep "bench: \|@@vmstack:binder\|vhal-binder-test:" $S/android.vmm.log
grep -q "@@BENCH-BINDER-DONE" $S/android.vmm.log || {
    echo "bench-binder: the guest did not finish"
    sed 's/^/android| /' $S/android.vmm.log | tail -40
    sed 's/^/sysmgr| /' $D/sysmgr.out | tail -20
    exit 1
}
exit 0
