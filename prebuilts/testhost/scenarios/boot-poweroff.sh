#!/bin/sh
# Boot the guest (guest.scenario=poweroff) with our VMM on the nested KVM.
. /lib/vmstack.sh
run_vmm vmm --cpus 2 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --params "console=ttyS0 guest.scenario=poweroff" /guest/vmlinuz
