#!/bin/sh
# `cargo xtask bench tee`, guest side: per round, N timed round trips of
# each path, in a rotating order (test host side: prebuilts/testhost/
# scenarios/bench-tee.sh):
#   raw    vsock-test rtt: SIZE bytes to the test host's echo server over
#          vsock (host cid 2, port 5000) and back;
#   tee    tee-test bench: /dev/tee0, echo TA, a SIZE-byte memory
#          reference in, one out (virtio-tee to trustyd);
#   trusty trusty-test bench: libtrusty's echo over vsock (VSOCK:2:1), a
#          message of min(SIZE, 3840) bytes, libtrusty's largest.
# Every sample is printed (<path>_r<k>_us); cargo xtask bench tee takes the
# percentiles.
. /lib/vmstack.sh
ROUNDS=5
N=200
SIZE=4096
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bench.rounds=*) ROUNDS="${arg#bench.rounds=}" ;;
        bench.n=*) N="${arg#bench.n=}" ;;
        bench.size=*) SIZE="${arg#bench.size=}" ;;
    esac
done
TSIZE=$SIZE
[ "$TSIZE" -gt 3840 ] && TSIZE=3840
mark trusty_size "$TSIZE"
run_raw() { timeout 300 vsock-test connect-vsock 2 5000 rtt "$SIZE" "$N" --retry 30 --tag "raw_r$1" 2>&1 | mark_kv; }
run_tee() { timeout 300 tee-test bench "$SIZE" "$N" --tag "tee_r$1" 2>&1 | mark_kv; }
run_trusty() { timeout 300 trusty-test bench VSOCK:2:1 "$TSIZE" "$N" --tag "trusty_r$1" 2>&1 | mark_kv; }
r=1
while [ "$r" -le "$ROUNDS" ]; do
    case $((r % 3)) in
        1) run_raw $r; run_tee $r; run_trusty $r ;;
        2) run_tee $r; run_trusty $r; run_raw $r ;;
        0) run_trusty $r; run_raw $r; run_tee $r ;;
    esac
    r=$((r + 1))
done
mark bench_tee_done 1
