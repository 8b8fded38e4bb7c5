#!/bin/sh
# virtio-blk, read-only disk with a 20-byte id: the guest
# (guest.scenario=block-ro) reads the serial and the contents and tries to
# write; the image must be unchanged. The VMM runs under its own, shorter
# timeout so that the host can hash the image after it.
. /lib/vmstack.sh
img=/tmp/block-ro.img
rm -f "$img"
dd if=/dev/urandom of="$img" bs=1M count=8 2>/dev/null || exit 1
mark host_ro_sha256_before "$(sha256sum "$img" | cut -d' ' -f1)"
VMM_TIMEOUT=100 run_vmm vmm --disk "$img,id=vmstack-ro-disk-0001" --cpus 1 --mem 256 \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=block-ro" /guest/vmlinuz
rc=$?
mark host_ro_sha256_after "$(sha256sum "$img" | cut -d' ' -f1)"
exit $rc
