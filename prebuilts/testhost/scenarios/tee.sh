#!/bin/sh
# trustyd next to our VMM; the guest reaches it through --tee with its own
# kernel's TEE subsystem and the out-of-tree virtio_tee driver
# (guest.scenario=tee). trustyd's log is printed after the VMM exits.
. /lib/vmstack.sh
T=/tmp/tee.sock
D=/tmp/tee-state
trustyd run --state-dir $D --guest g=,tee=$T > /tmp/trustyd-tee.log 2>&1 &
t=$!
i=0
while [ ! -S $T ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -S $T ] || mark trustyd_no_socket $T
run_vmm vmm --cpus 1 --mem 256 --tee socket=$T --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=tee" /guest/vmlinuz
kill $t
wait $t
mark trustyd_rc $?
sed 's/^/trustyd: /' /tmp/trustyd-tee.log | tail -20
exit 0
