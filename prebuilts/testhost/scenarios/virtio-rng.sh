#!/bin/sh
# The guest reads /dev/hwrng served by our virtio-rng (guest.scenario=rng).
. /lib/vmstack.sh
run_vmm vmm --rng --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=rng" /guest/vmlinuz
