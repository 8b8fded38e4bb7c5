#!/bin/sh
# sysmgr scenario (d): an android guest that stops postponing is escalated
# to SHUTDOWN_PREPARE(SHUTDOWN_IMMEDIATELY) and hard-stopped at its
# deadline; then the cluster's deadline, then POWER_OFF.
SCEN=sysmgr-deadline
. /scenarios/sysmgr-lib.sh
write_policy postpone:5000,hang
start_mcu
start_sysmgr 1
mcu ignition on
wait_for $S/android.vmm.log "vhal: REQ ON" 180 || { finish; exit 1; }
wait_for $S/cluster.vmm.log @@vmstack:cluster=up 120 || { finish; exit 1; }
step "both guests up"
mcu ignition off
wait_for $S/android.vmm.log "SHUTDOWN_IMMEDIATELY" 60 || { finish; exit 1; }
step "escalated"
wait_for $D/mcu.out "<- POWER_OFF" 120 || { finish; exit 1; }
step "system powered off"
finish
exit 0
