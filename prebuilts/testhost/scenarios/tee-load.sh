#!/bin/sh
# The guest loads virtio_tee (and Debian's tee.ko) with no virtio-tee device
# attached (guest.scenario=tee-load).
. /lib/vmstack.sh
run_vmm vmm --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=tee-load" /guest/vmlinuz
