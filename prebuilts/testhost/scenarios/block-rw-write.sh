#!/bin/sh
# virtio-blk, first boot: an 80 MiB zeroed image in tmpfs attached read-write;
# the guest (guest.scenario=block-write) writes a 64 MiB pattern and prints
# its sha256. block-rw-read (next, same test host boot) checks the image.
img=/tmp/block-rw.img
rm -f "$img"
dd if=/dev/zero of="$img" bs=1M count=80 2>/dev/null || exit 1
# The serial the device derives without id=: st_dev and st_ino in hex.
printf 'host_expected_serial=%x-%x\n' $(stat -c '%d %i' "$img")
exec /bin/vmm run --rwdisk "$img" --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=block-write" /guest/vmlinuz 2>&1
