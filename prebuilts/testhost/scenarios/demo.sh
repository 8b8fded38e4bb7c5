#!/bin/sh
# `cargo xtask demo`: the system this project is for, in the nested test
# host. sysmgr (the power arbiter) launches an android-role and a
# cluster-role guest, each in its own VMM; the MCU simulator turns the
# ignition off and on; android postpones its shutdown (VHAL
# SHUTDOWN_POSTPONE) and shuts down while the cluster stays up; ignition on
# brings android back; the driver leaves and the system powers off. Last,
# Trusty: a guest stores a secret through /dev/tee0 (virtio-tee to
# trustyd) and reads it back in a new VMM.
#
# Output: `@@vmstack:demo.*` markers (/lib/vmstack.sh), which
# xtask/src/demo.rs shows live and turns into the summary
# (xtask/src/demo_report.rs): the plan, then per act its header, what
# happens (`say`), its checks (`check`: PASS or FAIL with the time) and
# the `sysmgr status` / `sysmgr events` tables; at the end the decision
# log. The guests' consoles, the daemons' journals and the MCU's output
# stay in files under /tmp/demo; only when a check fails are they printed
# (sysmgr-lib.sh's `dump_logs`), with the state and the whole decision log.
# Times are on the arbiter's clock (t=0: sysmgr start).
#
# The android guest's side goes through binder (guest scenario
# sysmgr-android: kernel binder, sysmgr-binderd, RPC binder to sysmgr);
# `vmbinder watch` in the guest is shown beside the decisions.
#
# Adding a part (a TEE call, adb): one `title_<name>=` line and one
# `act_<name>` function below (actions, `say`s and `check`s; return
# non-zero on the first failed check), and <name> in ACTS where it belongs.
SCEN=demo
. /scenarios/sysmgr-lib.sh
. /scenarios/adb-lib.sh
# The android guest also runs adbd (act adb_shell).
ANDROID_PARAMS=android.adbd=1

# ---- helpers ---------------------------------------------------------------

# dm KEY VALUE: the marker demo.KEY=VALUE (/lib/vmstack.sh).
dm() { mark "demo.$1" "$2"; }
# dm_lines KEY: every line of stdin as a demo.KEY marker.
dm_lines() { mark_lines "demo.$1"; }

say() { dm say "$(t)|$*"; }
# The library's steps (e.g. `mcu ignition off`) are things to say.
step() { say "$*"; }

uptime_s() { cut -d. -f1 /proc/uptime; }

# check SECS TEXT CMD...: runs CMD about once a second until it succeeds,
# for at most SECS seconds; marks TEXT as PASS (with the time it became
# true) or FAIL. Says every 30 s that it is still waiting.
check() {
    _secs=$1
    _text=$2
    shift 2
    _from=$(uptime_s)
    _said=$_from
    until "$@" >/dev/null 2>&1; do
        _now=$(uptime_s)
        if [ $((_now - _from)) -ge "$_secs" ]; then
            dm check "FAIL|$(t)|$_text (not within $_secs s)"
            return 1
        fi
        if [ $((_now - _said)) -ge 30 ]; then
            _said=$_now
            dm wait "$(t)|still waiting ($((_now - _from)) s): $_text"
        fi
        sleep 1
    done
    dm check "PASS|$(t)|$_text"
}

# Predicates for `check`. Android's side is checked in sysmgr's decision log
# (what it received and did) or journal, not on its console.
# Android's VHAL client answers AP_POWER_STATE_REQ ON with its report ON.
# That report changes nothing, so sysmgr keeps no decision record of it
# (docs/system-manager.md) and only says so in its journal:
# confirmed_on N: the journal has N such lines (one per boot of android).
VHAL_CONFIRMED_ON="android reports AP_POWER_STATE_REPORT [6, 0]"
confirmed_on() { [ "$(grep -cF "$VHAL_CONFIRMED_ON" $D/sysmgr-1.out 2>/dev/null)" -ge "$1" ]; }
records() { if [ -f $S/decisions.jsonl ]; then wc -l < $S/decisions.jsonl; else echo 0; fi; }
# act_events: the `sysmgr events` table of the records since the act began.
act_events() { sysmgr events --state-dir $S --last $(($(records) - ACT_RECORD0)) 2>&1; }
# logged NEEDLE [N]: the decision log since the act began has a row with
# NEEDLE (N times).
logged() { [ "$(act_events | grep -cF "$1")" -ge "${2:-1}" ]; }
# mcu_heard COMMAND N: the MCU simulator received COMMAND at least N times.
mcu_heard() { [ "$(count $D/mcu.out "<- $1")" -ge "$2" ]; }
# console GUEST TEXT N: the guest's console (its VMM's log) has TEXT N times.
console() { [ "$(count $S/$1.vmm.log "$2")" -ge "$3" ]; }
# vmm_is CTL PATTERN...: `vmm status` of that VMM matches every PATTERN.
vmm_is() {
    _s=$(vmm status "$1" 2>&1) || return 1
    shift
    for _p in "$@"; do
        case "$_s" in *"$_p"*) ;; *) return 1 ;; esac
    done
}
daemon_up() { sysmgr status --state-dir $S 2>/dev/null | grep -q "MCU connected"; }
launched() { mcu_heard POWER_ON 1 && logged "android: start VM" && logged "cluster: start VM"; }
held_virtually_off() { logged "hold virtually off" && vmm_is $A_CTL state=virtually-off; }
booted_again() { confirmed_on 2 && vmm_is $A_CTL state=running boots=2; }

# show_watch: what `vmbinder watch` in the android guest printed: its binder
# listener's callbacks (kernel binder -> sysmgr-binderd -> RPC binder ->
# sysmgr), the guest's own view of the decisions in the tables above.
show_watch() {
    say "android's side through binder: \`vmbinder watch\` in the guest (kernel binder -> sysmgr-binderd -> RPC binder -> sysmgr)"
    sed -n 's/^.*@@vmstack:watch=//p' $S/android.vmm.log | tail -n 6 | dm_lines table
}
show_status() {
    say "sysmgr status"
    sysmgr status --state-dir $S 2>&1 | dm_lines table
}
show_events() {
    say "sysmgr events (this act)"
    act_events | dm_lines table
}

# use_arbiter_clock: from now on `t` is on the arbiter's clock, like the
# decision log's times: CLOCK_BOOTTIME (/proc/uptime) minus the origin the
# daemon writes to clock.json when it starts (waits for it up to 30 s).
use_arbiter_clock() {
    for _i in $(seq 30); do
        _o=$(sed -n 's/.*"origin_ms":\([0-9]*\).*/\1/p' $S/clock.json 2>/dev/null)
        if [ -n "$_o" ]; then
            T0=$(awk -v o="$_o" 'BEGIN{printf "%.3f", o / 1000}')
            return 0
        fi
        sleep 1
    done
}

# ---- the acts --------------------------------------------------------------

title_start="Start the power arbiter (sysmgr) and the MCU simulator"
act_start() {
    write_policy postpone:5000,postpone:5000,start
    start_mcu
    start_sysmgr 1
    use_arbiter_clock
    say "policy: android (role android: the VHAL power handshake) and cluster (role cluster: up while the vehicle is in use or the ignition is on), 1 vCPU / 192 MiB each, each in its own VMM launched by sysmgr"
    say "guest consoles: $S/android.vmm.log and cluster.vmm.log in the test host (shown here only if a check fails)"
    check 30 "sysmgr is running and connected to the MCU" daemon_up || return 1
    show_status
}

title_ignition_on="Ignition on, driver in the car: the MCU powers the system, sysmgr boots both guests"
act_ignition_on() {
    mcu in-use yes
    mcu ignition on
    check 30 "sysmgr told the MCU to power on (POWER_ON) and launched both VMMs" \
        launched || return 1
    check 300 "android booted: its VHAL client said WAIT_FOR_VHAL, got ON, confirmed ON" \
        confirmed_on 1 || return 1
    check 300 "cluster booted" console cluster @@vmstack:cluster=up 1 || return 1
    check 60 "android's binder CLI lists sysmgr on the guest's kernel binder (vmbinder list)" \
        console android "sysmgr: .vmstack.sysmgr.ISystemManager" 1 || return 1
    show_status
}

title_ignition_off="Ignition off, driver still in the car: android postpones, then shuts down; the cluster stays up"
act_ignition_off() {
    mcu ignition off
    check 30 "sysmgr asked android to shut down: SHUTDOWN_PREPARE(SHUTDOWN_ONLY)" \
        logged "android: AP_POWER_STATE_REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY)" || return 1
    check 60 "android postponed twice (SHUTDOWN_POSTPONE 5000 ms), both granted" \
        logged "SHUTDOWN_POSTPONE(5000 ms) granted" 2 || return 1
    check 60 "android reported SHUTDOWN_START" \
        logged "android reported SHUTDOWN_START" || return 1
    check 60 "android powered off; sysmgr held its VM virtually off (the vehicle is in use)" \
        held_virtually_off || return 1
    check 10 "the cluster kept running, never restarted" \
        vmm_is $C_CTL state=running boots=1 || return 1
    check 10 "android's binder listener got SHUTDOWN_PREPARE(SHUTDOWN_ONLY) (vmbinder watch)" \
        console android "onApPowerStateReq SHUTDOWN_PREPARE(SHUTDOWN_ONLY)" 1 || return 1
    show_events
    show_watch
    show_status
}

title_ignition_on_again="Ignition on again: sysmgr brings android back; the cluster never stopped"
act_ignition_on_again() {
    mcu ignition on
    check 30 "sysmgr resumed android's VM (its OS had shut down: it boots again)" \
        logged "android: resume VM" || return 1
    check 300 "android booted again (its VMM's second boot): WAIT_FOR_VHAL, ON, ON" \
        booted_again || return 1
    check 10 "the cluster kept running, never restarted" \
        vmm_is $C_CTL state=running boots=1 || return 1
    show_events
    show_status
}

title_power_off="The driver leaves, ignition off: android shuts down, the cluster stops at its deadline, the MCU cuts the power"
act_power_off() {
    mcu in-use no
    mcu ignition off
    check 30 "sysmgr asked android to shut down: SHUTDOWN_PREPARE(SHUTDOWN_ONLY)" \
        logged "android: AP_POWER_STATE_REQ SHUTDOWN_PREPARE(SHUTDOWN_ONLY)" || return 1
    check 60 "android postponed twice (SHUTDOWN_POSTPONE 5000 ms), both granted" \
        logged "SHUTDOWN_POSTPONE(5000 ms) granted" 2 || return 1
    check 60 "android powered off; sysmgr allowed it (nothing needs the system)" \
        logged "allow (shutdown under way: allow android's poweroff)" || return 1
    check 60 "sysmgr stopped the cluster at its deadline" \
        logged "cluster: hard stop" || return 1
    check 60 "sysmgr told the MCU to power off (POWER_OFF)" mcu_heard POWER_OFF 1 || return 1
    show_events
    show_status
}

title_tee_secret="Trusty through the guest kernel's TEE subsystem: a guest keeps a secret in secure storage across a VM restart"
TEE=$D/tee
# tee_vm STEP: one VM run with virtio-tee (guest.scenario=tee-secret,
# tee.demo=STEP); its console in $TEE/STEP.console, its log in
# $TEE/STEP.vmm.log.
tee_vm() {
    say "a VMM with --tee socket=$TEE/tee.sock boots the guest (tee.demo=$1)"
    timeout 240 /bin/vmm run --cpus 1 --mem 192 --tee socket=$TEE/tee.sock \
        --initrd /guest/initramfs.cpio.gz \
        --params "console=ttyS0 guest.scenario=tee-secret tee.demo=$1" /guest/vmlinuz \
        > $TEE/$1.console 2> $TEE/$1.vmm.log
    say "$(tail -n 1 $TEE/$1.vmm.log)"
}
# tee_said STEP KEY: the value of the guest's marker KEY in run STEP.
tee_said() { sed -n "s/^@@vmstack:$2=//p" $TEE/$1.console | head -n 1 | tr -d '\r'; }
tee_up() { [ -S $TEE/tee.sock ]; }
tee_stored() {
    case "$(tee_said store tee_devices)" in *tee0*) ;; *) return 1 ;; esac
    [ "$(tee_said store store_result)" = 0 ] && [ -n "$(tee_said store secret)" ] \
        && grep -q "vmm: exit reason: poweroff" $TEE/store.vmm.log
}
tee_no_plaintext() {
    [ -n "$(ls $TEE/state/guests/demo/td/*.blob 2>/dev/null)" ] \
        && ! grep -rqF "$(tee_said store secret)" $TEE/state
}
tee_read_back() {
    [ "$(tee_said read read_result)" = 0 ] && [ "$(tee_said read read_text)" = "$(tee_said store secret)" ]
}
# tee_failed: the guests' consoles and the VMMs' and trustyd's logs (the
# failure output, like sysmgr-lib.sh's dump_logs), then stop trustyd.
tee_failed() {
    for r in store read; do
        [ -f $TEE/$r.console ] && guest_lines tee-$r < $TEE/$r.console
        [ -f $TEE/$r.vmm.log ] && mark_lines tee-$r-vmm < $TEE/$r.vmm.log
    done
    mark_lines trustyd < $TEE/trustyd.log
    kill $TEE_PID 2>/dev/null
    return 1
}
act_tee_secret() {
    mkdir -p $TEE
    trustyd run --state-dir $TEE/state --guest demo=,tee=$TEE/tee.sock > $TEE/trustyd.log 2>&1 &
    TEE_PID=$!
    check 30 "trustyd (the Trusty service) is up: a TEE socket for guest \"demo\"" tee_up || tee_failed || return 1
    say "the guest's kernel: Debian's tee.ko and our virtio_tee driver (virtio device 46) give /dev/tee0; the VMM forwards its sessions and invocations to trustyd"
    tee_vm store
    check 5 "the guest found /dev/tee0, generated a random secret, stored it in Trusty's secure storage (TA com.android.trusty.storage.client.td) and powered off" \
        tee_stored || tee_failed || return 1
    say "the secret: $(tee_said store secret)"
    check 5 "on the host, trustyd's state holds the secret only encrypted (no plaintext copy in $TEE/state)" \
        tee_no_plaintext || tee_failed || return 1
    tee_vm read
    check 5 "a new VMM booted the guest again: it read the same secret back through /dev/tee0" \
        tee_read_back || tee_failed || return 1
    say "read back: $(tee_said read read_text)"
    kill $TEE_PID
    wait $TEE_PID
}

title_adb_shell="adb into the android guest: Debian's adb client, \`vmm adb-proxy\` on 127.0.0.1:6520, the guest's adbd on vsock port 5555"
adb_online() { [ "$(adb -s "$ADB_SERIAL" get-state 2>/dev/null)" = device ]; }
adb_boot_id_matches() {
    _id=$(sed -n 2p $D/adb.out)
    [ -n "$_id" ] && grep -qF "adbd_boot_id=$_id" $S/android.vmm.log
}
act_adb_shell() {
    say "vmm adb-proxy --vsock-socket $A_VSOCK --port 6520 (Cuttlefish's port); adb connect 127.0.0.1:6520"
    adb_up $A_VSOCK > $D/adb-up.out 2>&1
    check 5 "adb lists the android guest as a device (adb devices)" adb_online || { adb_down; return 1; }
    adb -s "$ADB_SERIAL" shell 'uname -sr; cat /proc/sys/kernel/random/boot_id' > $D/adb.out 2>&1
    ADB_RC=$?
    check 5 "adb shell ran in the android guest: exit status 0 through the shell protocol" \
        test "$ADB_RC" -eq 0 || { adb_down; return 1; }
    say "adb shell 'uname -sr; cat /proc/sys/kernel/random/boot_id': $(tr '\n' ' ' < $D/adb.out)"
    check 5 "the shell ran in the android guest's kernel (its boot id, as the guest's console printed it)" \
        adb_boot_id_matches || { adb_down; return 1; }
    adb_down
}

ACTS="start ignition_on ignition_off ignition_on_again adb_shell power_off tee_secret"

# ---- main ------------------------------------------------------------------

n=0
for a in $ACTS; do
    n=$((n + 1))
    eval "dm plan \"$n|\$title_$a\""
done
ACT_N=0
result=PASS
for a in $ACTS; do
    ACT_N=$((ACT_N + 1))
    ACT_RECORD0=$(records)
    eval "dm act \"$ACT_N|\$(t)|\$title_$a\""
    if "act_$a"; then
        dm act-end "$ACT_N|$(t)|PASS"
    else
        dm act-end "$ACT_N|$(t)|FAIL"
        result=FAIL
        break
    fi
done

if [ $result = FAIL ]; then
    # What xtask shows after a failure: the state, the whole decision log as
    # a table, and (below) every log.
    sysmgr status --state-dir $S 2>&1 | mark_lines status
    sysmgr events --state-dir $S 2>&1 | mark_lines events
fi
# For the summary: every record of the decision log.
[ -f $S/decisions.jsonl ] && dm_lines log < $S/decisions.jsonl
stop_all
[ $result = FAIL ] && dump_logs
dm result $result
[ $result = PASS ]
