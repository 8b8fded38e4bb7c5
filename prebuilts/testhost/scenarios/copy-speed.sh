#!/bin/sh
# Debugging: how fast the emulated test host copies memory (no VMM).
t() { cut -d' ' -f1 /proc/uptime; }
mib() { awk -v m="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", m / (b - a) }'; }
grep -o -w 'erms\|fsrm\|rep_good' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
t0=$(t); dd if=/dev/zero of=/dev/null bs=1M count=1024 2>/dev/null; echo "zero_to_null_mibps=$(mib 1024 "$t0" "$(t)")"
t0=$(t); dd if=/dev/zero of=/tmp/f bs=1M count=256 2>/dev/null; echo "zero_to_tmpfs_mibps=$(mib 256 "$t0" "$(t)")"
t0=$(t); dd if=/tmp/f of=/dev/null bs=1M 2>/dev/null; echo "tmpfs_to_null_mibps=$(mib 256 "$t0" "$(t)")"
rm -f /tmp/f
vsock-test listen-unix /tmp/pair recv --raw --tag pair &
vsock-test connect-unix-raw /tmp/pair send 256 --raw --retry 10 --tag s >/dev/null
wait
