#!/bin/sh
# A hostile guest under sysmgr (tests/tests/hostile.rs; issue 18): guest
# `hostile` (role cluster, so that the arbiter restarts it after a reboot
# or a power-off while the vehicle is in use) floods its console, unassigned
# MMIO, vsock connections to the host and power requests, boot after boot;
# guest `served` (role other) runs a vsock echo server the test host probes
# every few seconds meanwhile. Marks the sizes of the hostile guest's VMM
# logs, of sysmgr's state directory and of the daemon's log against their
# caps, the hostile guest's boots and own counts (what its floods managed),
# the refused requests sysmgr journalled but did not record, and every
# probe's answer.
SCEN=hostile
. /scenarios/sysmgr-lib.sh
H_CTL=$D/hostile.ctl
H_VSOCK=$D/hostile.vsock
V_CTL=$D/served.ctl
V_VSOCK=$D/served.vsock
# The caps under test: 32 KiB per VMM log file, one old file.
LOG_MAX=32768
LOG_KEEP=1
# The hostile guest prints 1000 lines of 100 bytes per boot: ~100 KiB,
# three times the cap of a file.
cat > $D/policy.toml <<POLICY
[system]
shutdown_deadline_ms = 60000

[[guest]]
name = "hostile"
role = "cluster"
shutdown_deadline_ms = 8000
control_socket = "$H_CTL"
launch = ["/bin/vmm", "run", "--cpus", "1", "--mem", "160", "--socket", "$H_CTL", "--power-arbiter", "--vsock", "cid=3,socket=$H_VSOCK", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 guest.scenario=hostile hostile.console_lines=1000", "/guest/vmlinuz"]

[[guest]]
name = "served"
role = "other"
control_socket = "$V_CTL"
launch = ["/bin/vmm", "run", "--cpus", "1", "--mem", "160", "--socket", "$V_CTL", "--power-arbiter", "--vsock", "cid=4,socket=$V_VSOCK", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 guest.scenario=served", "/guest/vmlinuz"]
POLICY
# The host end of the hostile guest's held connections (as the VMMs' user,
# which the VMM's listener check wants).
as_vmm_user "timeout 600 vsock-test listen-unix ${H_VSOCK}_5100 recv --count 1000 --tag held" > $D/held.out 2>&1 &
start_mcu
sysmgr run --policy $D/policy.toml --state-dir $S --mcu-socket $D/mcu.sock \
    --vmm-log-max-bytes $LOG_MAX --vmm-log-keep $LOG_KEEP > $D/sysmgr-1.out 2>&1 &
SM=$!
mcu in-use yes
mcu ignition on

# boots SOCKET: the VMM's boot count (0 when it does not answer).
boots() {
    b=$(vmm status "$1" 2>/dev/null | sed -n 's/.*boots=\([0-9]*\).*/\1/p')
    echo "${b:-0}"
}
# probe N: one echo round trip through the served guest, at most 10 s.
probe() {
    t0=$(cut -d' ' -f1 /proc/uptime)
    out=$(timeout 10 vsock-test connect-unix $V_VSOCK 7000 rtt 64 1 --retry 5 --tag p 2>&1)
    t1=$(cut -d' ' -f1 /proc/uptime)
    ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%d", (b-a)*1000}')
    case "$out" in
        *p_error*|"") mark "probe-$1" "fail ${ms}ms $(echo "$out" | tr '\n' ' ')" ;;
        *) mark "probe-$1" "ok ${ms}ms" ;;
    esac
}

# The served guest first: its echo server answers.
for i in $(seq 180); do
    grep -q "@@vmstack:served=up" $S/served.vmm.log 2>/dev/null && break
    sleep 1
done
sleep 2
probe 0
step "served guest up"
# The hostile guest's own counts (its markers in the VMM logs sysmgr
# keeps): the logs rotate with every boot's flood, so they are read every
# second and the largest value of each is kept (for
# hostile_suspend_unanswered, the worst boot).
GUEST_KEYS="hostile_mmio_writes hostile_pio_bytes hostile_vsock_held hostile_vsock_refused hostile_suspend_requests hostile_suspend_unanswered"
scan_guest() {
    for k in $GUEST_KEYS; do
        v=$(grep -h -o "@@vmstack:$k=[0-9]*" $S/hostile.vmm.log* 2>/dev/null | cut -d= -f2 | sort -n | tail -1)
        eval "cur=\${seen_$k:-0}"
        if [ -n "$v" ] && [ "$v" -gt "$cur" ]; then eval "seen_$k=$v"; fi
    done
}
# Then until the hostile guest has booted three times and its counts were
# seen, and the served guest was probed at least 5 times (a stall of the
# emulated test host costs probes, not floods), or 420 s: a probe every 5 s.
n=1
i=0
deadline=$(( $(cut -d' ' -f1 /proc/uptime | cut -d. -f1) + 420 ))
while [ "$(cut -d' ' -f1 /proc/uptime | cut -d. -f1)" -lt $deadline ]; do
    scan_guest
    [ "$(boots $H_CTL)" -ge 3 ] && [ "${seen_hostile_suspend_requests:-0}" -gt 0 ] &&
        [ "$n" -gt 5 ] && break
    if [ $((i % 5)) -eq 0 ]; then
        probe $n
        n=$((n + 1))
    fi
    i=$((i + 1))
    sleep 1
done
scan_guest
for k in $GUEST_KEYS; do eval "mark guest.$k \${seen_$k:-0}"; done
step "hostile guest booted $(boots $H_CTL) times"
mark hostile_boots "$(boots $H_CTL)"
probe $n
mark probes "$n"
# Sizes against the caps.
mark log_cap "$LOG_MAX"
for f in $S/hostile.vmm.log*; do
    mark "log_file.$(basename "$f")" "$(wc -c < "$f")"
done
mark log_files "$(ls $S/hostile.vmm.log* | wc -l)"
mark state_bytes "$(find $S -type f -exec cat {} + | wc -c)"
mark state_files "$(ls $S | tr '\n' ' ')"
mark sysmgr_log_bytes "$(wc -c < $D/sysmgr-1.out)"
mark decision_lines "$(wc -l < $S/decisions.jsonl)"
grep -h -c "unhandled MMIO write" $S/hostile.vmm.log* | awk '{ s += $1 } END { print s + 0 }' | mark_lines mmio_warnings_kept
grep -h "similar lines suppressed" $S/hostile.vmm.log* | tail -1 | mark_lines suppressed
# The refused suspends: journalled by sysmgr as inputs that change nothing,
# never decision records.
mark idle_inputs "$(grep -c "hostile requests suspend.*changes nothing" $D/sysmgr-1.out)"
mark suspend_records "$(grep -c '"kind":"suspend"' $S/decisions.jsonl)"
# The hostile guest's final requests (reboot, poweroff) that became
# records: one per boot when they are coalesced (Linux's reboot path writes
# the reset register, then pulses the i8042 reset ten times).
mark final_records "$(grep -c -E '"guest":"hostile","request_id":[0-9]+,"kind":"(reboot|poweroff)"' $S/decisions.jsonl)"
mark served_vmm "$(vmm status $V_CTL 2>&1)"
# The log keeper of the hostile guest's VMM: confined once its log is open.
for p in /proc/[0-9]*; do
    if tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q "vmm-log --path $S/hostile.vmm.log "; then
        for f in Uid CapEff CapBnd NoNewPrivs; do
            mark "keeper.$f" "$(awk -v k="$f:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' $p/status)"
        done
    fi
done
A_CTL=$H_CTL
C_CTL=$V_CTL
step "end"
sysmgr events --state-dir $S 2>&1 | tail -40 | mark_lines events
stop_all
mark_lines held < $D/held.out
for f in $D/sysmgr-*.out; do tail -50 "$f" | mark_lines "$(basename "$f" .out)"; done
tail -30 $S/served.vmm.log | guest_lines served
tail -30 $S/hostile.vmm.log | guest_lines hostile
exit 0
