#!/bin/sh
# virtio-blk set-up errors, end to end: an image in use by another VMM (both
# for --rwdisk and --disk), a too-small image and one that is not whole
# sectors. Each refused VMM must exit 1 with one `error:` line (markers
# <tag>.rc and <tag>.log); the first VMM boots and powers off undisturbed.
. /lib/vmstack.sh
export VMM_TIMEOUT=90
run() {
    tag=$1
    shift
    run_vmm "$tag" "$@" --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
        --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz
}
img=/tmp/block-locked.img
rm -f "$img"
dd if=/dev/zero of="$img" bs=1M count=1 2>/dev/null || exit 1
run first --rwdisk "$img" > /tmp/block-first.log &
first=$!
# Give the first VMM time to open (and lock) the image.
sleep 3
run locked_rw --rwdisk "$img"
run locked_ro --disk "$img"
dd if=/dev/zero of=/tmp/block-tiny.img bs=100 count=1 2>/dev/null
run tiny --disk /tmp/block-tiny.img
dd if=/dev/zero of=/tmp/block-odd.img bs=1000 count=3 2>/dev/null
run odd --rwdisk /tmp/block-odd.img
wait "$first"
# The first VMM's markers (its guest's other lines are left out).
grep '^@@vmstack:' /tmp/block-first.log
