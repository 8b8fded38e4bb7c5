#!/bin/sh
# The Android role under sysmgr (tests/tests/sysmgr_x86_64.rs): Android's
# side of the VHAL power handshake as a kernel-binder client of `sysmgr`
# (vhal-binder-test: it postpones, reports SHUTDOWN_START and powers off as
# scripted by vhal.script= on the kernel command line), reaching the host's
# sysmgr through sysmgr-binderd and RPC binder over vsock; the binder CLI
# (vmbinder) lists the service, calls it and watches its callbacks; user
# actions come from the test host on vsock port 4101 (one line: reboot or
# poweroff, run as the user would).
. /scenarios/binder-lib.sh
script=postpone:5000,postpone:5000,start
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vhal.script=*) script="${arg#vhal.script=}" ;;
    esac
done
echo "ANDROID-UP"
binder_up
vmbinder list | sed 's/^/cli-list| /'
vmbinder call sysmgr getSystemState | sed 's/^/cli-state| /'
vmbinder watch | sed 's/^/watch| /' &
vhal-binder-test --script "$script" &
while true; do
    cmd=$(vhal-test wait-line --port 4101)
    echo "android: user runs $cmd"
    case "$cmd" in
        reboot) reboot -f ;;
        poweroff) poweroff -f ;;
        request-shutdown)
            vmbinder call sysmgr requestShutdown SHUTDOWN_PARAM_SHUTDOWN_ONLY 2>&1 | sed 's/^/cli-request| /' ;;
    esac
done
