#!/bin/sh
# The Android role under sysmgr (tests/tests/sysmgr.rs): Android's side of
# the VHAL power handshake as a kernel-binder client of `sysmgr`
# (vhal-binder-test: it postpones, reports SHUTDOWN_START and powers off as
# scripted by vhal.script= on the kernel command line), reaching the host's
# sysmgr through sysmgr-binderd and RPC binder over vsock; the binder CLI
# (vmbinder) lists the service, calls it and watches its callbacks; user
# actions come from the test host on vsock port 4101 (one line: reboot,
# poweroff or request-shutdown, run as the user would). The tools' lines
# become markers: `vhal`, `binder`, `cli-list`, `cli-state`, `watch`,
# `cli-request`.
. /lib/vmstack.sh
. /scenarios/binder-lib.sh
script=$(cmdline_arg vhal.script postpone:5000,postpone:5000,start)
mark android up
# android.adbd=1 (the demo): adbd on vsock port 5555, as an Android guest
# has it; its lines become `adbd` markers.
if [ "$(cmdline_arg android.adbd 0)" = 1 ]; then
    mkdir -p /dev/pts /data
    mount -t devpts devpts /dev/pts 2>/dev/null || mark adbd_devpts failed
    mark adbd_boot_id "$(cat /proc/sys/kernel/random/boot_id)"
    adbd 2>&1 | mark_lines adbd &
fi
binder_up
vmbinder list 2>&1 | mark_lines cli-list
vmbinder call sysmgr getSystemState 2>&1 | mark_lines cli-state
vmbinder watch 2>&1 | mark_lines watch &
vhal-binder-test --script "$script" 2>&1 | mark_lines vhal &
while true; do
    cmd=$(vhal-test wait-line --port 4101)
    mark user_runs "$cmd"
    case "$cmd" in
        reboot) reboot -f ;;
        poweroff) poweroff -f ;;
        request-shutdown)
            vmbinder call sysmgr requestShutdown SHUTDOWN_PARAM_SHUTDOWN_ONLY 2>&1 | mark_lines cli-request ;;
    esac
done
