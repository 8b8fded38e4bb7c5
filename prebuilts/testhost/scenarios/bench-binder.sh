#!/bin/sh
# `cargo xtask bench binder`: sysmgr with one android guest; the guest
# times getSystemState through binder and a raw vsock echo (host port
# 5000, vsock-test echo) and prints `bench: ...` lines.
SCEN=bench-binder
. /scenarios/sysmgr-lib.sh
count=$(cmdline_arg bench.count 1000)
android_guest "$D/a.ctl" "$D/a.vsock" 256 "guest.scenario=bench-binder bench.count=$count" > "$D/policy.toml"
as_vmm_user vsock-test listen-unix $D/a.vsock_5000 echo --count 1 > $D/echo.out 2>&1 &
start_mcu
start_sysmgr 1
echo "ignition on" >&3
for i in $(seq 600); do
    grep -q "@@BENCH-BINDER-DONE\|@@vmstack:binder=sysmgr not registered" $S/android.vmm.log 2>/dev/null && break
    sleep 1
done
grep "bench: \|@@vmstack:binder\|vhal-binder-test:" $S/android.vmm.log
grep -q "@@BENCH-BINDER-DONE" $S/android.vmm.log || {
    echo "bench-binder: the guest did not finish"
    sed 's/^/android| /' $S/android.vmm.log | tail -40
    sed 's/^/sysmgr| /' $D/sysmgr-1.out | tail -20
    exit 1
}
exit 0
