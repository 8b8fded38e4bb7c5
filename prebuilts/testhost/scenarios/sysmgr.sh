#!/bin/sh
# sysmgr with two VMs (tests/tests/sysmgr.rs), one continuous drive:
#  (b) android reboots while the vehicle is in use: only its VM restarts;
#  (c) android powers off while the cluster needs the system: held
#      virtually off; ignition off/on brings it back;
#  (a) ignition off: SHUTDOWN_PREPARE, two postpones, SHUTDOWN_START,
#      poweroff; the cluster until its own deadline; then POWER_OFF;
#  (e) during (a), sysmgr is killed with -9 after the first postpone and
#      restarted; the shutdown completes.
SCEN=sysmgr
. /scenarios/sysmgr-lib.sh
write_policy postpone:5000,postpone:5000,start
start_mcu
start_sysmgr 1
mcu in-use yes
mcu ignition on
wait_for $S/android.vmm.log "vhal: REQ ON" 180 || { finish; exit 1; }
wait_for $S/cluster.vmm.log @@vmstack:cluster=up 120 || { finish; exit 1; }
step "both guests up"

# Each VMM runs as its guest's own user (vmm_user): the uids of their
# processes; the cluster's VMM user reaches none of the android guest's
# sockets (its control and vsock sockets, sysmgr's binder socket for it),
# nor does the stack's shared sandbox user (65534 without sysmgr's
# groups); the android guest's own VMM user reaches its control socket.
mark iso-modes "$(stat -c '%a %u %g' $A_CTL $A_VSOCK ${A_VSOCK}_4200 | tr '\n' ' ')"
mark iso-uids "android $(stat -c %u /proc/$(cat $S/android.pid)) cluster $(stat -c %u /proc/$(cat $S/cluster.pid))"
for sock in $A_CTL $A_VSOCK ${A_VSOCK}_4200; do
    mark "iso-cluster-user-$(basename $sock)" "$(as_uid $C_USER "vmm status $sock" 2>&1)"
    mark "iso-shared-user-$(basename $sock)" "$(as_uid 65534 "vmm status $sock" 2>&1)"
done
mark iso-android-user "$(as_uid $A_USER "vmm status $A_CTL" 2>&1)"

# The binder CLI in the android guest asks for a shutdown (SHUTDOWN_REQUEST)
# while the ignition is on: the arbiter notes it and keeps the head unit on.
vhal-test send-line $A_VSOCK 4101 request-shutdown --retry 30
wait_for $S/android.vmm.log "@@vmstack:cli-request=" 60 || { finish; exit 1; }
step "android requested a shutdown"

# (b)
vhal-test send-line $A_VSOCK 4101 reboot --retry 30
wait_for $S/android.vmm.log @@vmstack:android=up 180 2 || { finish; exit 1; }
wait_for $S/android.vmm.log "vhal: REPORT WAIT_FOR_VHAL" 120 2 || { finish; exit 1; }
step "android rebooted"
mark b-android "$(vmm status $A_CTL)"
mark b-cluster "$(vmm status $C_CTL)"

# (c)
vhal-test send-line $A_VSOCK 4101 poweroff --retry 30
wait_vmm $A_CTL state=virtually-off 120 || { finish; exit 1; }
step "android held virtually off"
mark c-cluster "$(vmm status $C_CTL)"
mcu ignition off
sleep 3
mark c-held-android "$(vmm status $A_CTL)"
sysmgr status --state-dir $S | mark_lines c-status
mcu ignition on
wait_for $S/android.vmm.log @@vmstack:android=up 180 3 || { finish; exit 1; }
wait_for $S/android.vmm.log "vhal: REPORT WAIT_FOR_VHAL" 120 3 || { finish; exit 1; }
step "android back"
mark c-android "$(vmm status $A_CTL)"

# (a) + (e)
mcu in-use no
mcu ignition off
wait_for $S/android.vmm.log "REPORT SHUTDOWN_POSTPONE" 120 1 || { finish; exit 1; }
kill -9 $SM
step "sysmgr killed with -9 (pid $SM)"
start_sysmgr 2
step "sysmgr restarted (pid $SM)"
wait_for $D/mcu.out "<- POWER_OFF" 180 || { finish; exit 1; }
step "system powered off"
mark a-android-vmm "$(vmm status $A_CTL 2>&1)"
mark a-cluster-vmm "$(vmm status $C_CTL 2>&1)"
finish
exit 0
