#!/bin/sh
# The VHAL power handshake through binder with one android guest (both
# architectures; tests/tests/binder.rs runs it on pKVM): sysmgr launches
# the guest, whose vhal-binder-test speaks kernel binder to
# sysmgr-binderd, which forwards over RPC binder over vsock to sysmgr.
# Ignition on: WAIT_FOR_VHAL -> ON; ignition off: SHUTDOWN_PREPARE, one
# postpone, SHUTDOWN_START, poweroff allowed, then the MCU's POWER_OFF.
# Uses sysmgr-lib.sh. Steps are `step` markers; at the end `sysmgr events`
# (`events`), the MCU's and sysmgr's output (`mcu`, `sysmgr-1`) and the
# guest's console (`android| ` lines, its markers as `android.guest.*`).
SCEN=binder-hs
. /scenarios/sysmgr-lib.sh
cat > $D/policy.toml <<POLICY
[system]
shutdown_deadline_ms = 60000
final_grace_ms = 15000

$(android_guest "$D/a.ctl" "$D/a.vsock" 192 "guest.scenario=sysmgr-android vhal.script=postpone:5000,start")
POLICY
start_mcu
start_sysmgr 1
# done_: the events, then every output (sysmgr-lib.sh's dump_logs).
done_() {
    sysmgr events --state-dir $S 2>&1 | mark_lines events
    kill $SM 2>/dev/null
    dump_logs
}
# The waits stay under the runner's 360 s per scenario on arm64, so that a
# guest that never gets there still leaves every log in the console.
mcu "ignition on"
wait_for $S/android.vmm.log "vhal: REPORT ON" 200 || { done_; exit 1; }
step "android up, ON through binder"
mcu "ignition off"
wait_for $D/mcu.out "<- POWER_OFF" 120 || { done_; exit 1; }
step "system powered off"
done_
exit 0
