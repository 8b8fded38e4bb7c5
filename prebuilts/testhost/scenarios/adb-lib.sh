# adb helpers for test host scenarios (sourced, not a scenario; needs
# /lib/vmstack.sh): Debian's adb client reaches the guest's adbd (vsock
# port 5555) through `vmm adb-proxy` on 127.0.0.1 (docs/adb.md).
#
#   . /scenarios/adb-lib.sh
#   adb_up VSOCK_SOCKET [PORT]   # proxy, adb server, `adb connect`; waits
#                                # (at most 120 s) until the device is online
#   adb -s "$ADB_SERIAL" shell 'uname -a'
#   adb_down                     # stops the adb server and the proxy
#
# The guest runs `adbd` (guest.scenario=adbd does; any guest scenario may
# start `adbd &`).

# The client keeps its key and the server's log under $HOME and /tmp.
export HOME=/root

# uptime_s: seconds since boot (two decimals), for timing steps.
uptime_s() {
    cut -d' ' -f1 /proc/uptime
}

# elapsed_s T0: seconds since uptime T0.
elapsed_s() {
    awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f\n", b - a }'
}

# wait_for_socket PATH [TENTHS]: waits until PATH is a socket (default 10 s).
wait_for_socket() {
    for _i in $(seq "${2:-100}"); do
        [ -S "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

# adb_wait_device [SECONDS [SERIAL]]: (re)connects SERIAL (default
# $ADB_SERIAL) until `adb get-state` says `device` (default 120 s).
adb_wait_device() {
    _serial=${2:-$ADB_SERIAL}
    for _i in $(seq "${1:-120}"); do
        [ "$(adb -s "$_serial" get-state 2>/dev/null)" = device ] && return 0
        adb disconnect "$_serial" >/dev/null 2>&1
        adb connect "$_serial" >/dev/null 2>&1
        [ "$(adb -s "$_serial" get-state 2>/dev/null)" = device ] && return 0
        sleep 1
    done
    return 1
}

# adb_up VSOCK_SOCKET [PORT]: starts `vmm adb-proxy` for the VMM's vsock
# socket on 127.0.0.1:PORT (default 6520, Cuttlefish's), the adb server,
# and connects; sets ADB_SERIAL and ADB_PROXY_PID.
adb_up() {
    ADB_SERIAL=127.0.0.1:${2:-6520}
    ip link set lo up 2>/dev/null
    wait_for_socket "$1" || { echo "adb_up: no vsock socket $1"; return 1; }
    vmm adb-proxy --vsock-socket "$1" --port "${2:-6520}" >> /tmp/adb-proxy.log 2>&1 &
    ADB_PROXY_PID=$!
    adb start-server >/dev/null 2>&1
    adb_wait_device 120
}

# adb_down: stops the adb server and the proxy; the proxy's log lines
# become `adb_proxy` markers.
adb_down() {
    adb kill-server >/dev/null 2>&1
    [ -n "$ADB_PROXY_PID" ] && kill "$ADB_PROXY_PID" 2>/dev/null
    [ -f /tmp/adb-proxy.log ] && mark_lines adb_proxy < /tmp/adb-proxy.log
    rm -f /tmp/adb-proxy.log
}
