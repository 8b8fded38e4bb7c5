#!/bin/sh
# virtio-vsock end to end (guest.scenario=vsock): 100 MiB each way with
# checksums, 64 concurrent connections each way, refusals both ways, clean
# close. Host-side results (vsock-test's key=value lines, as markers) go to
# files and are printed after the VMM exits.
. /lib/vmstack.sh
S=/tmp/vsock.sock
T=/tmp/vsock-host
MIB=100
mkdir -p $T
# Guest->host listeners (PATH_port); nothing on port 5002.
as_vmm_user timeout 400 vsock-test listen-unix ${S}_5000 recv --tag g2h_recv > $T/1-g2h_recv 2>&1 &
as_vmm_user timeout 400 vsock-test listen-unix ${S}_5001 echo --count 64 --tag g2h_many_srv > $T/2-g2h_many_srv 2>&1 &
t0=$(cut -d' ' -f1 /proc/uptime)
run_vmm vmm --cpus 2 --mem 256 --vsock cid=3,socket=$S --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=vsock vsock.mib=$MIB" /guest/vmlinuz &
vmm=$!
# Host->guest: retried until the guest listens (refusals close without OK).
timeout 400 vsock-test connect-unix $S 6000 send $MIB --retry 300 --tag h2g_send > $T/3-h2g_send 2>&1
timeout 120 vsock-test connect-unix $S 6001 many 64 256 --retry 60 --tag h2g_many > $T/4-h2g_many 2>&1
# The guest is up and has no listener on 7000: closed without OK.
timeout 30 vsock-test connect-unix $S 7000 recv --tag h_refused > $T/5-h_refused 2>&1
# Done: the guest powers off once this empty stream ends.
timeout 120 vsock-test connect-unix $S 6002 send 0 --retry 60 --tag h_done_send > $T/6-h_done 2>&1
wait $vmm
mark vsock_run_secs "$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN{print b-a}')"
wait
cat $T/* | mark_kv
[ -e "$S" ] && mark socket_left_behind 1
exit 0
