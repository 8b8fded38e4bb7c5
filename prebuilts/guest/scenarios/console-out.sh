#!/bin/sh
# virtio-console output (guest.scenario=console-out), run with console=hvc0
# last so that /dev/console (and /init's output) is hvc0: a marker written to
# /dev/hvc0 itself, then 5000 numbered lines whose checksum goes to the serial
# port, for the test host to compare with what reached the VMM's backend.
. /lib/vmstack.sh
mark guest_consoles "$(cut -d' ' -f1 /proc/consoles | tr '\n' ' ')" > /dev/ttyS0
mark hvc0_direct ok > /dev/hvc0
seq 1 5000 | sed 's/^/bulk-/' > /dev/hvc0
mark bulk_md5 "$(seq 1 5000 | sed 's/^/bulk-/' | md5sum | cut -d' ' -f1)" > /dev/ttyS0
