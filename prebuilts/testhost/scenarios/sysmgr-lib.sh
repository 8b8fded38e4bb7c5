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
# sysmgr switches to its sandbox user (65534) and creates the guests' RPC
# binder sockets beside their vsock sockets; the MCU simulator's socket
# must let it connect (umask 0: mode 0777).
mkdir -p $D
chown 65534:65534 $D
# write_policy's guests run their VMMs as users of their own (`vmm_user`,
# docs/security.md): android 10001, cluster 10002, each with its sockets in
# its own directory (0770, its uid and group), which sysmgr (a member of
# both groups) reaches and the other guest's VMM does not.
A_USER=10001
C_USER=10002
A_DIR=$D/android
C_DIR=$D/cluster
mkdir -p $A_DIR $C_DIR
chown $A_USER:$A_USER $A_DIR
chown $C_USER:$C_USER $C_DIR
chmod 770 $A_DIR $C_DIR
A_CTL=$A_DIR/vmm.ctl
A_VSOCK=$A_DIR/vmm.vsock
C_CTL=$C_DIR/vmm.ctl

# vmm_user_line ID, vmm_user_flags ID: the `vmm_user` line of a guest
# whose VMM runs as ID:ID, and the VMM flags that go with it (its own user,
# its sockets shared with its group, sysmgr's uid 65534 admitted as a
# peer), as the start of a TOML array's items.
vmm_user_line() { [ -n "$1" ] && echo "vmm_user = \"$1:$1\""; }
vmm_user_flags() {
    [ -n "$1" ] && printf '"--sandbox-user", "%s:%s", "--socket-group", "%s", "--allow-peer-uid", "65534", ' "$1" "$1" "$1"
}

# android_guest CTL VSOCK MEM PARAMS [USER]: the `[[guest]]` table of an
# android-role VMM launched by sysmgr (1 vCPU, MEM MiB, vsock CID 3),
# control socket CTL, vsock socket VSOCK, PARAMS after console=ttyS0 on
# its kernel command line; with USER, the VMM runs as USER:USER.
android_guest() {
    cat <<GUEST
[[guest]]
name = "android"
role = "android"
control_socket = "$1"
vsock_socket = "$2"
$(vmm_user_line "$5")
launch = ["/bin/vmm", "run", $(vmm_user_flags "$5")"--cpus", "1", "--mem", "$3", "--socket", "$1", "--power-arbiter", "--vsock", "cid=3,socket=$2", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 $4", "/guest/vmlinuz"]
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

$(android_guest "$A_CTL" "$A_VSOCK" 192 "guest.scenario=sysmgr-android vhal.script=$1${ANDROID_PARAMS:+ $ANDROID_PARAMS}" $A_USER)

[[guest]]
name = "cluster"
role = "cluster"
shutdown_deadline_ms = 8000
control_socket = "$C_CTL"
$(vmm_user_line $C_USER)
launch = ["/bin/vmm", "run", $(vmm_user_flags $C_USER)"--cpus", "1", "--mem", "192", "--socket", "$C_CTL", "--power-arbiter", "--initrd", "/guest/initramfs.cpio.gz", "--params", "console=ttyS0 guest.scenario=sysmgr-cluster", "/guest/vmlinuz"]
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

# as_uid ID CMD: runs CMD (a simple command) as uid and group ID, adding
# a `uid-ID` entry to /etc/passwd and /etc/group on first use.
as_uid() {
    grep -q "^uid-$1:" /etc/passwd 2>/dev/null || echo "uid-$1:x:$1:$1::/tmp:/bin/sh" >> /etc/passwd
    grep -q "^uid-$1:" /etc/group 2>/dev/null || echo "uid-$1:x:$1:" >> /etc/group
    su -s /bin/sh "uid-$1" -c "$2"
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
