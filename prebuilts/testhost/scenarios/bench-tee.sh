#!/bin/sh
# `cargo xtask bench tee`, test host side: trustyd serves one guest on
# both paths (libtrusty over vsock on PATH_1, the host TEE protocol on the
# TEE socket) and vsock-test echoes on PATH_5000 (the raw vsock peer); our
# VMM runs the guest (guest.scenario=bench-tee) with --tee and --vsock,
# which times the round trips of each path in the same run.
#
# Kernel command line: bench.rounds=R bench.n=N bench.size=BYTES (passed
# on to the guest). Results: the guest's markers (vmm.guest.<path>_r<k>_us
# and friends, docs/benchmarks.md); the host's echo server's as
# echo_host_*.
. /lib/vmstack.sh
ROUNDS=$(cmdline_arg bench.rounds 5)
N=$(cmdline_arg bench.n 200)
SIZE=$(cmdline_arg bench.size 4096)
S=/tmp/bench-tee-vsock.sock
T=/tmp/bench-tee.sock
D=/tmp/bench-tee-state
H=/tmp/bench-tee-host
mkdir -p $H
mark bench_info "rounds=$ROUNDS n=$N size=$SIZE kernel=$(uname -r)"
trustyd run --state-dir $D --guest g=$S,tee=$T > $H/trustyd.log 2>&1 &
t=$!
wait_trustyd $T ${S}_1
as_vmm_user vsock-test listen-unix ${S}_5000 echo --count "$ROUNDS" --tag echo_host > $H/echo 2>&1 &
e=$!
run_vmm vmm --cpus 1 --mem 256 --tee socket=$T --vsock cid=3,socket=$S \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 quiet guest.scenario=bench-tee bench.rounds=$ROUNDS bench.n=$N bench.size=$SIZE" \
    /guest/vmlinuz
kill $t
wait $t
mark trustyd_rc $?
wait $e
mark echo_host_rc $?
mark_kv < $H/echo
tail -20 $H/trustyd.log | sed 's/^/trustyd: /'
exit 0
