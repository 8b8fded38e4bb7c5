#!/bin/sh
# virtio-console to a file (guest: console-out). console=hvc0 comes after the
# default console=ttyS0, so the guest's /dev/console is hvc0 and its /init
# output lands in the file. After the VMM exits the file is summarized
# (hvc0_* markers) and shown through `guest_lines hvc0-file` (its markers
# as hvc0-file.guest.*; kernel log and bulk lines only counted).
. /lib/vmstack.sh
log=/tmp/hvc0.log
rm -f "$log"
VMM_TIMEOUT=100 run_vmm vmm --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --console "type=file,path=$log" \
    --params "console=hvc0 guest.scenario=console-out" /guest/vmlinuz
rc=$?
mark hvc0_file_bytes "$(wc -c < "$log")"
mark hvc0_kernel_lines "$(grep -c '^\[' "$log")"
mark hvc0_bulk_lines "$(tr -d '\r' < "$log" | grep -c '^bulk-')"
mark hvc0_bulk_md5 "$(tr -d '\r' < "$log" | grep '^bulk-' | md5sum | cut -d' ' -f1)"
tr -d '\r' < "$log" | grep -v -e '^\[' -e '^bulk-' | guest_lines hvc0-file
exit $rc
