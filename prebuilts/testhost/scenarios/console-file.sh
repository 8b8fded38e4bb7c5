#!/bin/sh
# virtio-console to a file (guest: console-out). console=hvc0 comes after the
# default console=ttyS0, so the guest's /dev/console is hvc0 and its /init
# output lands in the file. After the VMM exits the file is summarized and
# printed with a "hvc0-file: " prefix (kernel log lines only counted).
log=/tmp/hvc0.log
rm -f "$log"
timeout -s KILL 100 /bin/vmm run --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --console "type=file,path=$log" \
    --params "console=hvc0 guest.scenario=console-out" /guest/vmlinuz 2>&1
rc=$?
echo "hvc0_file_bytes=$(wc -c < "$log")"
echo "hvc0_kernel_lines=$(grep -c '^\[' "$log")"
echo "hvc0_bulk_lines=$(tr -d '\r' < "$log" | grep -c '^bulk-')"
echo "hvc0_bulk_md5=$(tr -d '\r' < "$log" | grep '^bulk-' | md5sum | cut -d' ' -f1)"
tr -d '\r' < "$log" | grep -v -e '^\[' -e '^bulk-' | sed 's/^/hvc0-file: /'
exit $rc
