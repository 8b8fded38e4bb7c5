#!/bin/sh
# The Android guest's binder side (docs/android.md), sourced by scenarios:
# binder_up starts the service manager (rsbinder's rsb_hub) on the kernel's
# one binder device and sysmgr-binderd, which registers `sysmgr`
# (vmstack.sysmgr.ISystemManager) there and forwards it to the host's
# sysmgr over RPC binder over vsock (host cid 2, port 4200). What it finds
# are `binder` markers (`binder=sysmgr up`); sysmgr-binderd's log lines are
# `binderd` markers.
#
# Debian's kernel has binder_linux as a module (loaded by /init from
# modules.list) with one device, /dev/binder, and no binderfs; rsb_hub
# opens /dev/binderfs/<device>, so that path is a symlink.
. /lib/vmstack.sh
binder_up() {
    if [ ! -e /dev/binder ]; then
        mark binder "/dev/binder missing (binder_linux not loaded)"
        sysmgr-binderd 2>&1 | head -1 | mark_lines binderd
        return 1
    fi
    mkdir -p /dev/binderfs
    ln -sf /dev/binder /dev/binderfs/binder
    # One user, no other clients: no access policy (see docs/android.md).
    rsb_hub --insecure-allow-all > /tmp/rsb_hub.log 2>&1 &
    sysmgr-binderd 2>&1 | mark_lines binderd &
    for i in $(seq 60); do
        vmbinder check sysmgr 2>/dev/null | grep -q ': found' && { mark binder "sysmgr up"; return 0; }
        sleep 1
    done
    mark binder "sysmgr not registered after 60 s"
    mark_lines rsb_hub < /tmp/rsb_hub.log
    return 1
}
