#!/bin/sh
# virtio-blk set-up errors, end to end: an image in use by another VMM (both
# for --rwdisk and --disk), a too-small image and one that is not whole
# sectors. Each refused VMM must exit 1 with one `error:` line; the first VMM
# boots and powers off undisturbed.
run() {
    timeout -s KILL 90 /bin/vmm run "$@" --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
        --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz 2>&1
}
img=/tmp/block-locked.img
rm -f "$img"
dd if=/dev/zero of="$img" bs=1M count=1 2>/dev/null || exit 1
run --rwdisk "$img" >/tmp/block-first.log &
first=$!
# Give the first VMM time to open (and lock) the image.
sleep 3
run --rwdisk "$img"
echo "locked_rw_rc=$?"
run --disk "$img"
echo "locked_ro_rc=$?"
dd if=/dev/zero of=/tmp/block-tiny.img bs=100 count=1 2>/dev/null
run --disk /tmp/block-tiny.img
echo "tiny_rc=$?"
dd if=/dev/zero of=/tmp/block-odd.img bs=1000 count=3 2>/dev/null
run --rwdisk /tmp/block-odd.img
echo "odd_rc=$?"
wait "$first"
echo "first_rc=$?"
sed 's/^/first: /' /tmp/block-first.log | grep -E 'first: (VMSTACK-GUEST-INIT-OK|vmm: exit reason)'
