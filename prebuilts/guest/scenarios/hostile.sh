#!/bin/sh
# A hostile guest (testhost scenario hostile-guest): every boot floods the
# console, unassigned MMIO, the host's vsock ports and the power path, then
# asks to reboot (or power off: the arbiter restarts it either way while
# the cluster is needed) and does it all again. Its markers are for the
# log only; the checks are on the host side.
. /lib/vmstack.sh
mark hostile up
# Console: hostile.console_lines lines of 100 bytes (the VMM's stdout, the
# log sysmgr keeps and rotates).
LINES=$(cmdline_arg hostile.console_lines 1000)
awk -v n="$LINES" 'BEGIN {
    for (i = 0; i < n; i++) printf "flood %06d %s\n", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
}'
mark hostile console_done
# Unassigned MMIO (the 32-bit gap below the virtio-mmio devices): every
# write is an exit the VMM answers with a rate-limited warning.
MMIO=$(cmdline_arg hostile.mmio 150)
i=0
while [ $i -lt "$MMIO" ]; do
    devmem 0xc0001000 32 0x$i 2>/dev/null
    devmem 0xc0002000 32 >/dev/null 2>&1
    i=$((i + 1))
done
mark hostile_mmio_writes "$i"
# vsock: connections the host holds open (port 5100), then a loop of
# refused ones (nothing listens on 5101).
HELD=$(cmdline_arg hostile.held 48)
for i in $(seq "$HELD"); do
    vsock-test connect-vsock 2 5100 recv --tag held >/dev/null 2>&1 &
done
REFUSED=$(cmdline_arg hostile.refused 60)
for i in $(seq "$REFUSED"); do
    vsock-test connect-vsock 2 5101 recv --tag refused >/dev/null 2>&1
done
mark hostile_vsock_connects "$((HELD + REFUSED))"
# Power: alternate reboot and poweroff by the boot's random id.
case "$(cut -c1 /proc/sys/kernel/random/boot_id)" in
    [0-7]) mark hostile_power reboot; reboot -f ;;
    *) mark hostile_power poweroff; poweroff -f ;;
esac
while true; do sleep 60; done
