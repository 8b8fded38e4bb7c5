#!/bin/sh
# Boot the guest (guest.scenario=demo) with our VMM on the nested KVM.
exec /bin/vmm run --cpus 2 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=demo" /guest/vmlinuz 2>&1
