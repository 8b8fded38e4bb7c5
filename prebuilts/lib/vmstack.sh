# Marker helpers (and a few more: the kernel command line, ping) shared by
# the guest and the test host scripts (sourced, as /lib/vmstack.sh in both
# initramfs images). See docs/testing.md, "Markers".
#
# A marker is a console line `@@vmstack:<key>=<value>` (optionally after a
# kernel log timestamp `[ 12.345678] `, for markers written to /dev/kmsg).
# The nested tests (tests/src/marker.rs) look only at markers. What a guest
# prints reaches the test host's console only through `guest_lines`, which
# moves the guest's markers into the `<tag>.guest.` namespace and prefixes
# every other guest line with `<tag>| `: a guest cannot print a marker of
# the test host's scenario or of the VMM's log.

# mark KEY VALUE...: prints the marker KEY=VALUE.
mark() {
    _k=$1
    shift
    echo "@@vmstack:$_k=$*"
}

# mark_lines KEY: every line of stdin as a KEY marker. (awk, flushed per
# line: run_vmm's two writers may share a file, where sed would write
# 4 KiB blocks that split lines.)
mark_lines() {
    awk -v key="$1" '{ print "@@vmstack:" key "=" $0; fflush() }'
}

# mark_kv [PREFIX]: stdin `key=value` lines (vsock-test, vhal-test) as
# markers PREFIXkey=value; other lines are printed as they are.
mark_kv() {
    sed -E "s/^([A-Za-z0-9_.-]+=)/@@vmstack:$1\\1/"
}

# guest_lines TAG: a guest's console (stdin) on the test host's console:
# its markers as TAG.guest.<key>, every other line after `TAG| `.
guest_lines() {
    awk -v tag="$1" '{
        if (sub(/^(\[[^]]*\] )?@@vmstack:/, "@@vmstack:" tag ".guest.")) print; else print tag "| " $0
        fflush()
    }'
}

# run_vmm TAG ARGS...: `/bin/vmm run ARGS` (under `timeout -s KILL
# $VMM_TIMEOUT` if set), live on the console: the guest's serial output
# (the VMM's stdout) through `guest_lines TAG`, each line of the VMM's log
# (its stderr) as a TAG.log marker; then TAG.rc=<exit status>. Returns the
# VMM's exit status.
run_vmm() {
    _tag=$1
    shift
    _fifo=/tmp/.vmm-$_tag-$$.log
    rm -f "$_fifo" "$_fifo.rc"
    mkfifo "$_fifo" || return 125
    mark_lines "$_tag.log" < "$_fifo" &
    _log=$!
    {
        ${VMM_TIMEOUT:+timeout -s KILL "$VMM_TIMEOUT"} /bin/vmm run "$@" 2> "$_fifo"
        echo $? > "$_fifo.rc"
    } | guest_lines "$_tag"
    wait "$_log"
    _rc=$(cat "$_fifo.rc" 2>/dev/null)
    rm -f "$_fifo" "$_fifo.rc"
    mark "$_tag.rc" "${_rc:=125}"
    return "$_rc"
}

# run_held_guest NAME CPUS SCENARIO [KERNEL]: run_vmm (tag vmm) in the
# background, booting the test guest (CPUS vCPUs, 256 MiB,
# guest.scenario=SCENARIO, KERNEL or /guest/vmlinuz) with its power
# requests held for an arbiter (--power-arbiter) at the control socket
# S=/tmp/NAME.sock; sets S, and pid to the job's PID.
run_held_guest() {
    S=/tmp/$1.sock
    run_vmm vmm --cpus "$2" --mem 256 --socket "$S" --power-arbiter \
        --initrd /guest/initramfs.cpio.gz \
        --params "console=ttyS0 guest.scenario=$3" "${4:-/guest/vmlinuz}" &
    # shellcheck disable=SC2034 # for the caller
    pid=$!
}

# wait_pending SOCKET PID: waits (at most 120 s) until the VMM at SOCKET
# holds a guest power request for its arbiter, and marks its status line
# as `pending`; fails if process PID (the VMM's run_vmm) ends first.
wait_pending() {
    for _i in $(seq 120); do
        _s=$(vmm status "$1" 2>/dev/null)
        case "$_s" in *pending=1*) mark pending "$_s"; return 0 ;; esac
        kill -0 "$2" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

# decide_pending SOCKET PID N DECISION: wait_pending SOCKET PID, then
# `vmm decide SOCKET N DECISION`, marked as decide-N; if no request comes,
# kills PID and fails.
decide_pending() {
    wait_pending "$1" "$2" || { kill "$2"; return 1; }
    mark "decide-$3" "$(vmm decide "$1" "$3" "$4")"
}

# cmdline_arg KEY DEFAULT: the value of the last KEY=VALUE on the kernel
# command line (the scenarios' parameters, e.g. bench.rounds=3), else
# DEFAULT.
cmdline_arg() {
    _v=$2
    for _a in $(cat /proc/cmdline); do
        case "$_a" in "$1"=*) _v=${_a#"$1"=} ;; esac
    done
    echo "$_v"
}

# wait_ping HOST: pings HOST until it answers, at most 30 times (~30 s: the
# test host brings its end of the link up while the guest boots); prints
# how many pings went unanswered.
wait_ping() {
    _n=0
    until ping -c 1 -W 1 "$1" >/dev/null 2>&1; do
        _n=$((_n + 1))
        [ "$_n" -ge 30 ] && break
    done
    echo "$_n"
}

# eth0_up HOST (guest): eth0 as 192.168.100.2/24 on the test host's tap,
# up; then wait_ping HOST (prints its count). Fails if eth0 cannot be
# configured.
eth0_up() {
    ip addr add 192.168.100.2/24 dev eth0 && ip link set eth0 up || return 1
    wait_ping "$1"
}

# wait_path TEST PATH [TENTHS]: waits until `test TEST PATH` holds (-S: a
# socket, -e: anything), looking every 0.1 s, at most TENTHS times
# (default 100: 10 s); fails if it never does.
wait_path() {
    _i=0
    while ! test "$1" "$2"; do
        [ "$_i" -ge "${3:-100}" ] && return 1
        sleep 0.1
        _i=$((_i + 1))
    done
}

# wait_trustyd SOCKET...: waits for each socket trustyd serves (wait_path
# -S); marks trustyd_no_socket for one that never appears.
wait_trustyd() {
    for _s in "$@"; do
        wait_path -S "$_s" || mark trustyd_no_socket "$_s"
    done
}

# The uid/gid a VMM started as root switches to once sandboxed (its
# default --sandbox-user; docs/security.md). Host programs a guest connects
# to (the PATH_<port> listeners of the VMM's vsock socket) run as that user,
# so that the VMM can reach their sockets.
VMM_USER_ID=65534

# as_vmm_user CMD...: runs CMD (a simple command, words without quoting)
# as the VMM's sandbox user, adding a `vmm-sandbox` entry to /etc/passwd and
# /etc/group on first use (test host only).
as_vmm_user() {
    grep -q '^vmm-sandbox:' /etc/passwd 2>/dev/null ||
        echo "vmm-sandbox:x:$VMM_USER_ID:$VMM_USER_ID::/tmp:/bin/sh" >> /etc/passwd
    grep -q '^vmm-sandbox:' /etc/group 2>/dev/null ||
        echo "vmm-sandbox:x:$VMM_USER_ID:" >> /etc/group
    su -s /bin/sh vmm-sandbox -c "$*"
}
