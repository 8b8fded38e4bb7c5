#!/bin/sh
# virtio-blk, read-only disk with a 20-byte id: the guest
# (guest.scenario=block-ro) reads the serial and the contents and tries to
# write; the image must be unchanged. The VMM runs under its own, shorter
# timeout so that the host can hash the image after it.
img=/tmp/block-ro.img
rm -f "$img"
dd if=/dev/urandom of="$img" bs=1M count=8 2>/dev/null || exit 1
echo "host_ro_sha256_before=$(sha256sum "$img" | cut -d' ' -f1)"
timeout -s KILL 100 /bin/vmm run --disk "$img,id=vmstack-ro-disk-0001" --cpus 1 --mem 256 \
    --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=block-ro" /guest/vmlinuz 2>&1
rc=$?
echo "host_ro_sha256_after=$(sha256sum "$img" | cut -d' ' -f1)"
exit $rc
