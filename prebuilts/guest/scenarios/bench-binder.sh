#!/bin/sh
# `cargo xtask bench binder` (guest side): getSystemState through kernel
# binder + sysmgr-binderd + RPC binder to the host's sysmgr, next to a raw
# vsock echo to the test host, in the same boot (vhal-binder-test bench).
. /scenarios/binder-lib.sh
count=1000
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bench.count=*) count="${arg#bench.count=}" ;;
    esac
done
binder_up || exit 1
vhal-binder-test bench --count "$count" --echo-port 5000
echo "@@BENCH-BINDER-DONE"
