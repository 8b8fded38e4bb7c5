#!/bin/sh
# The Android role under sysmgr (tests/tests/sysmgr.rs): the VHAL
# power client on vsock port 4100 (vhal-test client: it postpones, reports
# SHUTDOWN_START and powers off as scripted by vhal.script= on the kernel
# command line), and user actions from the test host on vsock port 4101
# (one line: reboot or poweroff, run as the user would). vhal-test's lines
# become `vhal` markers.
. /lib/vmstack.sh
script=postpone:5000,postpone:5000,start
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vhal.script=*) script="${arg#vhal.script=}" ;;
    esac
done
mark android up
vhal-test client --port 4100 --script "$script" 2>&1 | mark_lines vhal &
while true; do
    cmd=$(vhal-test wait-line --port 4101)
    mark user_runs "$cmd"
    case "$cmd" in
        reboot) reboot -f ;;
        poweroff) poweroff -f ;;
    esac
done
