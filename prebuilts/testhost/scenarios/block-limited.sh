#!/bin/sh
# virtio-blk rate limiters: two read-only disks, one limited in bandwidth
# (1 MiB/s), one in operations (50 requests/s). The guest
# (guest.scenario=block-limited) times direct reads from each; the test
# checks that neither is faster than its limit and both are near it.
. /lib/vmstack.sh
bw=/tmp/block-bw.img
ops=/tmp/block-ops.img
rm -f "$bw" "$ops"
truncate -s 16M "$bw" "$ops" || exit 1
VMM_TIMEOUT=100 run_vmm vmm --disk "$bw,bw=1M:1000" --disk "$ops,ops=50:1000" \
    --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=block-limited" /guest/vmlinuz
