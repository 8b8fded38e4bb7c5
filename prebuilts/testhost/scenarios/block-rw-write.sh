#!/bin/sh
# virtio-blk, first boot: an 80 MiB zeroed image in tmpfs attached read-write;
# the guest (guest.scenario=block-write) writes a 64 MiB pattern and prints
# its sha256. block-rw-read (next, same test host boot) checks the image.
. /lib/vmstack.sh
img=/tmp/block-rw.img
rm -f "$img"
dd if=/dev/zero of="$img" bs=1M count=80 2>/dev/null || exit 1
# The serial the device derives without id=: st_dev and st_ino in hex.
mark host_expected_serial "$(printf '%x-%x' $(stat -c '%d %i' "$img"))"
run_vmm vmm --rwdisk "$img" --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=block-write" /guest/vmlinuz
