#!/bin/sh
# virtio-blk, second boot over block-rw-write's image, attached read-only:
# the host's sha256 of the first 64 MiB (the truth), a check that the last
# 16 MiB are zero (the guest discarded what it wrote there), then the guest
# (guest.scenario=block-read) reads the 64 MiB back.
. /lib/vmstack.sh
img=/tmp/block-rw.img
[ -f "$img" ] || { echo "block-rw-read: $img missing: run block-rw-write first"; exit 1; }
mark host_sha256_64m "$(dd if="$img" bs=1M count=64 2>/dev/null | sha256sum | cut -d' ' -f1)"
tail_sum=$(dd if="$img" bs=1M skip=64 2>/dev/null | sha256sum | cut -d' ' -f1)
zero_sum=$(dd if=/dev/zero bs=1M count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$tail_sum" = "$zero_sum" ] && mark host_tail_zero yes || mark host_tail_zero no
run_vmm vmm --disk "$img" --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=block-read" /guest/vmlinuz
