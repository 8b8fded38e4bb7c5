#!/bin/sh
# trustyd next to our VMM; the guest reaches it through --tee with its own
# kernel's TEE subsystem and the out-of-tree virtio_tee driver
# (guest.scenario=tee). trustyd's log is printed after the VMM exits.
# The VMM runs as the guest's own user (10021): trustyd shares the guest's
# TEE socket with that group and admits that uid (docs/security.md).
. /lib/vmstack.sh
T=/tmp/tee.sock
D=/tmp/tee-state
trustyd run --state-dir $D --guest g=,tee=$T,user=10021:10021 > /tmp/trustyd-tee.log 2>&1 &
t=$!
wait_trustyd $T
mark tee_socket "$(stat -c '%a %u %g' $T)"
run_vmm vmm --sandbox-user 10021:10021 --allow-peer-uid 65534 --cpus 1 --mem 256 \
    --tee socket=$T --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=tee" /guest/vmlinuz
kill $t
wait $t
mark trustyd_rc $?
sed 's/^/trustyd: /' /tmp/trustyd-tee.log | tail -20
exit 0
