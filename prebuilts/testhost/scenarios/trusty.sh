#!/bin/sh
# trustyd next to our VMM (guest.scenario=trusty): the guest's libtrusty-
# style client reaches trustyd over vsock; halfway through, the guest asks
# (port 5999) for a trustyd restart, which must keep gatekeeper's failure
# record and the device secret. Host-side results (key=value lines, as
# markers) go to files and are printed after the VMM exits, so they never
# interleave with the guest console.
. /lib/vmstack.sh
S=/tmp/trusty.sock
D=/tmp/trusty-state
T=/tmp/trusty-host
mkdir -p $T
trustyd run --state-dir $D --guest g=$S > $T/1-trustyd-first.log 2>&1 &
t1=$!
wait_trustyd ${S}_1
mark trustyd_socket_mode "$(stat -c %a ${S}_1)"
run_vmm vmm --cpus 1 --mem 256 --vsock cid=3,socket=$S --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=trusty" /guest/vmlinuz &
vmm=$!
# The guest's restart request, then the restart.
as_vmm_user timeout 240 vsock-test listen-unix ${S}_5999 recv --tag restart_req_host > $T/2-restart-req 2>&1
kill $t1
wait $t1
echo "trustyd_first_rc=$?" > $T/0-host
[ -e ${S}_1 ] && echo "trustyd_socket_left_behind=1" >> $T/0-host
trustyd run --state-dir $D --guest g=$S > $T/3-trustyd-second.log 2>&1 &
t2=$!
wait_trustyd ${S}_1
timeout 120 vsock-test connect-unix $S 6000 send 0 --retry 60 --tag restart_back_host > $T/4-restart-back 2>&1
wait $vmm
kill $t2
wait $t2
mark trustyd_second_rc $?
mark device_secret_mode "$(stat -c %a $D/device-secret)"
mark state_dir_mode "$(stat -c %a $D)"
mark gk_blobs "$(ls $D/guests/g/gk | grep -c blob)"
for f in $T/*; do
    echo "---- $f"
    mark_kv < "$f"
done
exit 0
