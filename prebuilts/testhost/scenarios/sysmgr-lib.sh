# Shared by the sysmgr-* scenarios (sourced, not a scenario; set SCEN
# first): a policy with an android-role and a cluster-role VMM (1 vCPU,
# 192 MiB each) launched by sysmgr, the MCU simulator fed through a FIFO,
# and wait helpers. Everything lives in /tmp/$SCEN. Results are markers
# (/lib/vmstack.sh): `step`, the `sysmgr events` table as `events`, every
# line of the daemons' and the MCU's output as `sysmgr-N` and `mcu`, the
# guests' consoles through `guest_lines android|cluster`.
. /lib/vmstack.sh
D=/tmp/$SCEN
rm -rf $D
S=$D/state
A_CTL=$D/android.ctl
A_VSOCK=$D/android.vsock
C_CTL=$D/cluster.ctl
# sysmgr switches to its sandbox user (65534) and creates the guests' RPC
# binder sockets beside their vsock sockets here; the MCU simulator's socket
# must let it connect (umask 0: mode 0777).
mkdir -p $D
chown 65534:65534 $D

# android_guest CTL VSOCK MEM PARAMS: the `[[guest]]` table of an
# android-role VMM launched by sysmgr (1 vCPU, MEM MiB, vsock CID 3),
# control socket CTL, vsock socket VSOCK, PARAMS after console=ttyS0 on
# its kernel command line.
android_guest() {
    cat <<GUEST
[[guest]]
name = "android"
role = "android"
control_socket = "$1"
vsock_socket = "$2"
launch = ["/bin/vmm", "run", "--cpus", "1", "--mem", "$3", "--socket", "$1", "--power-arbiter", "--vsock", "cid=3,socket=$2", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 $4", "/guest/vmlinuz"]
GUEST
}

# write_policy VHAL_SCRIPT: the policy of the android and cluster guests;
# $ANDROID_PARAMS, if set, is added to the android guest's kernel command
# line (the demo sets android.adbd=1).
write_policy() {
    cat > $D/policy.toml <<POLICY
[system]
shutdown_deadline_ms = 60000
postpone_watchdog_ms = 5000
max_postpone_ms = 5000
final_grace_ms = 8000
vm_exit_grace_ms = 8000
wake_hold_ms = 10000

$(android_guest "$A_CTL" "$A_VSOCK" 192 "guest.scenario=sysmgr-android vhal.script=$1${ANDROID_PARAMS:+ $ANDROID_PARAMS}")

[[guest]]
name = "cluster"
role = "cluster"
shutdown_deadline_ms = 8000
control_socket = "$C_CTL"
launch = ["/bin/vmm", "run", "--cpus", "1", "--mem", "192", "--socket", "$C_CTL", "--power-arbiter", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 guest.scenario=sysmgr-cluster", "/guest/vmlinuz"]
POLICY
}

T0=$(cut -d' ' -f1 /proc/uptime)
t() { awk -v a="$T0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN{printf "%.1f", b-a}'; }
step() { mark step "t=$(t)s: $*"; }

start_mcu() {
    mkfifo $D/mcu.in
    (umask 0; exec mcu-sim --socket $D/mcu.sock) < $D/mcu.in > $D/mcu.out 2>&1 &
    MCU=$!
    exec 3>$D/mcu.in
}
mcu() { echo "$*" >&3; step "mcu: $*"; }

# start_sysmgr N: the daemon, output in $D/sysmgr-N.out
start_sysmgr() {
    sysmgr run --policy $D/policy.toml --state-dir $S --mcu-socket $D/mcu.sock \
        > $D/sysmgr-$1.out 2>&1 &
    SM=$!
}

# count FILE PATTERN
count() { c=$(grep -c "$2" "$1" 2>/dev/null); echo "${c:-0}"; }

# wait_for FILE PATTERN SECS [N]: until PATTERN occurs N (default 1) times.
wait_for() {
    n=${4:-1}
    for i in $(seq "$3"); do
        [ "$(count "$1" "$2")" -ge "$n" ] && return 0
        sleep 1
    done
    echo "TIMEOUT after $3 s waiting for '$2' x$n in $1"
    return 1
}

# wait_vmm SOCKET PATTERN SECS: until `vmm status` matches.
wait_vmm() {
    for i in $(seq "$3"); do
        s=$(vmm status "$1" 2>/dev/null)
        case "$s" in *"$2"*) mark "vmm-status-$(basename "$1")" "$s"; return 0 ;; esac
        sleep 1
    done
    echo "TIMEOUT waiting for vmm status '$2' on $1"
    return 1
}

# stop_all: ends the daemon, then both VMMs and the MCU simulator.
stop_all() {
    kill $SM 2>/dev/null
    wait $SM 2>/dev/null
    for s in $A_CTL $C_CTL; do vmm stop $s >/dev/null 2>&1; done
    sleep 1
    kill $MCU 2>/dev/null
}

# dump_logs: the MCU's and every daemon's output as markers (`mcu`,
# `sysmgr-N`), each VMM's log with its guest's console through
# `guest_lines android|cluster`.
dump_logs() {
    mark_lines mcu < $D/mcu.out
    for f in $D/sysmgr-*.out; do
        [ -f "$f" ] && mark_lines "$(basename "$f" .out)" < "$f"
    done
    # The VMMs' logs and their guests' consoles share one file each.
    for g in android cluster; do
        [ -f $S/$g.vmm.log ] && guest_lines $g < $S/$g.vmm.log
    done
}

# finish: stop everything and print every log.
finish() {
    step "end"
    sysmgr status --state-dir $S --policy $D/policy.toml 2>&1
    sysmgr events --state-dir $S 2>&1 | mark_lines events
    stop_all
    # The whole log (every daemon's records) replays and verifies.
    sysmgr status --state-dir $S --policy $D/policy.toml 2>&1 | mark_lines final-status
    dump_logs
}
